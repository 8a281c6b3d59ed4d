"""Every error leaves as JSON with a stable code and a Japanese and an English message."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException

from mamori.backup import alarm
from mamori.errors import MamoriError
from mamori.ui.errors import is_ui, ui_error

log = logging.getLogger("mamori.web")


class BodyTooLarge(Exception):
    """Raised while a request body streams past its limit (see ``web/limits.py``)."""


_PYDANTIC_JA = {
    "missing": "必須項目です。",
    "extra_forbidden": "不明な項目です。",
    "string_too_long": "長すぎます。",
    "string_too_short": "入力してください。",
    "too_short": "少なくとも1件必要です。",
    "too_long": "件数が多すぎます。",
    "date_from_datetime_parsing": "日付が正しくありません（YYYY-MM-DD）。",
    "date_parsing": "日付が正しくありません（YYYY-MM-DD）。",
    "date_from_datetime_inexact": "日付が正しくありません（YYYY-MM-DD）。",
    "datetime_from_date_parsing": "日時が正しくありません。",
    "datetime_parsing": "日時が正しくありません。",
    "enum": "選択肢にない値です。",
    "literal_error": "選択肢にない値です。",
    "int_parsing": "整数を入力してください。",
    "int_type": "整数を入力してください。",
    "bool_parsing": "真偽値（true/false）を入力してください。",
    "bool_type": "真偽値（true/false）を入力してください。",
    "string_type": "文字列を入力してください。",
    "uuid_parsing": "IDの形式が正しくありません。",
    "greater_than_equal": "値が小さすぎます。",
    "less_than_equal": "値が大きすぎます。",
    "model_attributes_type": "オブジェクト（JSON）で入力してください。",
    "dict_type": "オブジェクト（JSON）で入力してください。",
    "list_type": "配列で入力してください。",
    "json_invalid": "JSONの形式が正しくありません。",
}

_HTTP_JA = {
    404: ("ページまたは記録が見つかりません。", "Not found."),
    405: ("この操作は許可されていません（メソッド違い）。", "Method not allowed."),
    413: ("送信データが大きすぎます。", "Request body too large."),
    415: ("この形式のデータは受け付けません。", "Unsupported media type."),
}


ERROR_CODE_SYSTEM = "urn:mamori:error"  # mamori's stable error codes, inside OperationOutcome


def error_body(
    code: str,
    ja: str,
    en: str,
    field: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "field": field, "message_ja": ja, "message_en": en}
    if details is not None:
        body["details"] = details
    return {"error": body}


def _respond(
    request: Request,
    body: dict[str, Any],
    status: int,
    headers: dict[str, str] | None = None,
    exc: BaseException | None = None,
) -> Response:
    """JSON error; on the FHIR API the same content as an OperationOutcome; on the web UI's
    pages the same message as a page (``ui.errors``)."""

    if is_ui(request):
        return ui_error(request, status, body["error"], exc)
    if request.url.path.startswith("/fhir/"):
        err = body["error"]
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": {
                        404: "not-found",
                        401: "login",
                        403: "forbidden",
                        413: "too-long",
                        429: "throttled",
                    }.get(status, "invalid")
                    if status < 500
                    else "exception",
                    "details": {
                        "coding": [{"system": ERROR_CODE_SYSTEM, "code": err["code"]}],
                        "text": f"{err['message_ja']} / {err['message_en']}",
                    },
                    **({"expression": [err["field"]]} if err.get("field") else {}),
                }
            ],
        }
        return JSONResponse(outcome, status, headers=headers, media_type="application/fhir+json")
    return JSONResponse(body, status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_details(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        etype = err.get("type", "")
        ctx = err.get("ctx") or {}
        ja = (
            ctx.get("ja")
            if etype == "mamori"
            else _PYDANTIC_JA.get(etype, "入力が正しくありません。")
        )
        out.append(
            {
                "field": _field(tuple(err.get("loc", ()))),
                "code": etype,
                "message_ja": ja,
                "message_en": err.get("msg", "Invalid input."),
            }
        )
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(MamoriError)
    async def _domain(request: Request, exc: MamoriError) -> Response:
        retry = getattr(exc, "retry_after", None)
        headers = {"retry-after": str(retry)} if retry else None
        return _respond(
            request, error_body(exc.code, exc.ja, exc.en, exc.field), exc.status, headers, exc
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        details = validation_details(list(exc.errors()))
        if any(d["code"] == "json_invalid" for d in details):
            return _respond(
                request,
                error_body(
                    "malformed_json",
                    "JSONの形式が正しくありません。",
                    "Malformed JSON body.",
                    "body",
                    details,
                ),
                400,
            )
        first = details[0] if details else {"field": None, "message_ja": "", "message_en": ""}
        return _respond(
            request,
            error_body(
                "invalid_input",
                f"{first['field']}: {first['message_ja']}",
                f"{first['field']}: {first['message_en']}",
                first["field"],
                details,
            ),
            422,
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        ja, en = _HTTP_JA.get(exc.status_code, ("エラーが発生しました。", str(exc.detail)))
        return _respond(
            request,
            error_body(f"http_{exc.status_code}", ja, en),
            exc.status_code,
            getattr(exc, "headers", None),
        )

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> Response:
        ja, en = _HTTP_JA[413]
        return _respond(request, error_body("body_too_large", ja, en), 413)

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> Response:
        log.warning("integrity error: %s", exc.orig)
        return _respond(
            request,
            error_body(
                "conflict",
                "同時に別の更新があり、保存できませんでした。もう一度お試しください。",
                "A concurrent change conflicted; nothing was saved.",
            ),
            409,
        )

    @app.exception_handler(OperationalError)
    async def _operational(request: Request, exc: OperationalError) -> Response:
        log.error("database error: %s", exc.orig)
        return _respond(
            request,
            error_body(
                "database_unavailable",
                "データベースに接続できません。何も保存されていません。",
                "The database is unavailable; nothing was saved.",
            ),
            503,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        if alarm.is_damage(exc):  # the database file stopped being a database while serving
            damaged = alarm.raise_alarm(request.app.state.settings, exc, "request")
            return _respond(
                request, error_body(damaged.code, damaged.ja, damaged.en), damaged.status
            )
        log.exception("unexpected error", exc_info=exc)
        return _respond(
            request,
            error_body(
                "internal_error",
                "内部エラーが発生しました。何も保存されていません。",
                "Internal error; nothing was saved.",
            ),
            500,
        )
