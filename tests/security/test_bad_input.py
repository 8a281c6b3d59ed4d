"""Bad input to every state-changing endpoint: a clear error in Japanese and English, never a
server error, and nothing half-written."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from tests.conftest import World
from tests.security.test_route_inventory import PINNED

from mamori.web.routing import all_routes

WRITES = sorted(k for k in PINNED if not k.startswith("GET "))
TABLES = (
    "patient",
    "record_version",
    "staff_user",
    "auth_session",
    "auth_factor",
    "vendor_window",
    "break_glass_grant",
    "patient_restriction",
    "security_alert",
)
BAD_BODIES: list[tuple[str, dict[str, Any]]] = [
    (
        "truncated JSON",
        {"content": b'{"login_id": "a', "headers": {"content-type": "application/json"}},
    ),
    ("JSON array", {"json": []}),
    ("wrong types and unknown fields", {"json": {"zzz": 1, "password": 5, "reason_code": []}}),
    (
        "not JSON at all",
        {"content": "ログイン".encode(), "headers": {"content-type": "text/plain"}},
    ),
]


def _counts(world: World) -> dict[str, int]:
    with world.db.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def _url(path: str) -> str:
    fill = {"record_type": "ProgressNote", "resource_type": "Condition"}
    return re.sub(r"\{(\w+)\}", lambda m: fill.get(m.group(1), str(uuid.uuid4())), path)


@pytest.mark.one_backend
@pytest.mark.parametrize("route", WRITES)
def test_malformed_bodies_get_a_bilingual_4xx_and_change_nothing(world: World, route: str) -> None:
    method, path = route.split(" ", 1)
    takes_body = any(
        r.path == path and method in (r.methods or ()) and r.dependant.body_params
        for r in all_routes(list(world.http.app.routes))
    )
    before = _counts(world)
    for name, kwargs in BAD_BODIES:
        extra = dict(kwargs)
        headers = {**world.h("director"), **extra.pop("headers", {})}
        r = world.http.request(method, _url(path), headers=headers, **extra)
        assert r.status_code < 500, (route, name, r.status_code, r.text[:200])
        if not takes_body:
            continue  # the body is never read (logout, unlock, close a window …)
        assert r.status_code >= 400, (route, name, r.status_code)
        error = r.json().get("error") if "json" in r.headers.get("content-type", "") else None
        if error is None:  # routes that take no body answer without reading it
            assert r.status_code in (401, 404), (route, name, r.text[:200])
            continue
        assert error["message_ja"] and error["message_en"], (route, name)
    assert _counts(world) == before, route
