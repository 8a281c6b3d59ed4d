"""Errors on the web UI's pages: the same codes and messages as the JSON API, shown as pages.

* not signed in / session expired → the sign-in page (with the reason), back to the page after
* break-the-glass needed → the break-the-glass dialog for that patient
* re-authentication needed → the re-authentication form, in place
* anything else → an error page (full page) or a message in the page's flash area (htmx)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response

from mamori.errors import BreakGlassRequired, MamoriError
from mamori.ui.render import go, html, lang_of, translator

API_PREFIXES = ("/api/", "/fhir/", "/healthz", "/static/")


def is_ui(request: Request) -> bool:
    path = request.url.path
    return not path.startswith(API_PREFIXES)


@dataclass
class UiError:
    ja: str
    en: str
    code: str = "error"
    details: list[dict[str, Any]] = field(default_factory=list)


def _htmx(request: Request) -> bool:
    return bool(request.headers.get("hx-request"))


def ui_error(
    request: Request, status: int, err: dict[str, Any], exc: BaseException | None = None
) -> Response:
    code = err.get("code", "error")
    if status == 401 and code != "reauth_required":
        reason = {"session_expired": "expired", "outside_maintenance_window": "window"}.get(
            code, "signin"
        )
        nxt = request.url.path if request.method == "GET" else "/"
        return go(request, f"/login?reason={reason}&next={quote(nxt)}")
    if isinstance(exc, BreakGlassRequired) and exc.patient_id is not None:
        nxt = request.url.path if request.method == "GET" else f"/patients/{exc.patient_id}"
        return go(request, f"/patients/{exc.patient_id}/break-glass?next={quote(nxt)}")
    error = UiError(err.get("message_ja", ""), err.get("message_en", ""), code)
    headers = {}
    if retry := getattr(exc, "retry_after", None):
        headers["retry-after"] = str(retry)
    if _htmx(request):
        headers.update({"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
        return html(request, "_flash.html", status, headers, error=error)
    heading = {
        403: ("この操作の権限がありません", "Not permitted"),
        404: ("見つかりません", "Not found"),
    }.get(status, ("エラー", "Error"))
    return html(
        request,
        "error.html",
        status,
        headers,
        error=error,
        heading=translator(lang_of(request))(*heading),
    )


def form_error(exc: MamoriError, labels: Mapping[str, tuple[str, str]] | None = None) -> UiError:
    """The message of a refused form; a form that did not validate (``forms.FormInvalid``)
    adds one line per field, labelled for people (a label is (Japanese, English): the page
    shows the one of its language)."""
    labels = labels or {}
    details = [
        {**d, "label": labels.get(d["field"], d["field"])} for d in getattr(exc, "details", [])
    ]
    return UiError(exc.ja, exc.en, exc.code, details)
