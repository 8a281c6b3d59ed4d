"""The API as a contract: every JSON and FHIR operation's OpenAPI entry declares the refusals it
can give, with the body they carry, so a client (and the fuzzer in
``tests/security/test_api_fuzz.py``) knows every answer in advance.

* JSON API: ``{"error": {"code", "field", "message_ja", "message_en", "details"?}}`` for 400
  (a body that is not JSON), 401 (no or bad credentials, a re-authentication needed), 403 (a
  permission, CSRF, break-the-glass),
  404 (a record absent or another clinic's: the same answer), 409 (a stale version, a record
  that fails its integrity check, a read-only copy), 413 (a body over the limit, writes only),
  422 (input the route refuses — also schema-valid input it cannot use, such as a search with
  no criteria) and 429 (sign-in throttling, on the sign-in routes).
* FHIR: the same refusals as an ``OperationOutcome`` in ``application/fhir+json``, which its
  successful answers use too.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

from mamori.web.routing import all_routes


class ErrorDetail(BaseModel):
    code: str
    field: str | None
    message_ja: str
    message_en: str
    details: list[dict[str, Any]] | None = None


class ErrorOut(BaseModel):
    """Every refusal of the JSON API."""

    error: ErrorDetail


class OutcomeIssue(BaseModel):
    severity: str
    code: str
    details: dict[str, Any] | None = None
    expression: list[str] | None = None


class OperationOutcome(BaseModel):
    """Every refusal of the FHIR API (FHIR R4 OperationOutcome)."""

    resourceType: Literal["OperationOutcome"] = Field(default="OperationOutcome")  # noqa: N815
    issue: list[OutcomeIssue]


WHY = {
    400: "JSONとして読めない本文 / a body that is not JSON",
    401: "認証が必要・失敗・再認証が必要 / not signed in, bad credentials, re-authentication",
    403: "権限なし・CSRF・緊急時アクセスが必要 / no permission, CSRF, break-the-glass needed",
    404: "存在しないか他院のもの（同じ答え） / absent or another clinic's (the same answer)",
    409: "版の競合・記録の整合性違反・読み取り専用コピー / stale version, integrity failure, "
    "read-only copy",
    413: "送信データが大きすぎる / request body too large",
    422: "入力が受け付けられない / input refused",
    429: "試行が多すぎる（時間をおいて） / too many attempts (retry later)",
}
BODY_METHODS = {"POST", "PUT", "PATCH"}


def _statuses(path: str, methods: set[str]) -> list[int]:
    codes = [401, 403, 404, 409, 422]
    if methods & BODY_METHODS:
        codes += [400, 413]
    if path.startswith("/api/v1/auth/"):
        codes.append(429)
    return sorted(codes)


def declare_responses(app: FastAPI) -> None:
    """Add the refusals to every ``/api/`` and ``/fhir/`` route's OpenAPI entry (before the
    document is first generated)."""
    for route in all_routes(list(app.routes)):
        fhir = route.path.startswith("/fhir/")
        if not (fhir or route.path.startswith("/api/")):
            continue
        declared: dict[int | str, dict[str, Any]] = {}
        for status in _statuses(route.path, set(route.methods or ())):
            # a FHIR route's response class is FHIR JSON: its refusals are declared in it too
            model = OperationOutcome if fhir else ErrorOut
            declared[status] = {"description": WHY[status], "model": model}
        route.responses = {**declared, **route.responses}
