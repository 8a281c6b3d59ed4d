"""The UI's own static files (htmx is vendored: clinics' networks are closed, and a CDN would
be a third party able to run script in every chart). Served from a fixed list, read once."""

from __future__ import annotations

import hashlib
from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.errors import NotFound
from mamori.web.routing import TransactionalRoute, public

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

_TYPES = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "htmx-LICENSE.txt": "text/plain; charset=utf-8",
}
_FILES = {name: (resources.files("mamori.ui") / "static" / name).read_bytes() for name in _TYPES}
_ETAGS = {name: '"' + hashlib.sha256(data).hexdigest()[:16] + '"' for name, data in _FILES.items()}


@router.get("/static/{name}")
def static(name: str, request: Request, _: None = Depends(public)) -> Response:
    if name not in _FILES:
        raise NotFound("file")
    headers = {"etag": _ETAGS[name], "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == _ETAGS[name]:
        return Response(status_code=304, headers=headers)
    return Response(_FILES[name], media_type=_TYPES[name], headers=headers)
