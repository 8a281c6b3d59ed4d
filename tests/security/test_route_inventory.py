"""Every route declares its guard, and the full route → guard list is pinned here.

A new route must be added to this list deliberately; the access-control issue will turn the
"signed-in" guards into permissions and this table into the route → permission table.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import APIRouter, Depends
from tests.conftest import World

from mamori.app import create_app
from mamori.web.routing import Ctx, reader

PINNED = {
    "GET /healthz": "public",
    "GET /fhir/r4/metadata": "public",
    "GET /api/v1/me": "signed-in:read",
    "GET /api/v1/patients": "signed-in:read",
    "POST /api/v1/patients": "signed-in:write",
    "GET /api/v1/patients/{patient_id}": "signed-in:read",
    "PUT /api/v1/patients/{patient_id}": "signed-in:write",
    "GET /api/v1/patients/{patient_id}/duplicates": "signed-in:read",
    "POST /api/v1/patients/{patient_id}/merge": "signed-in:write",
    "GET /api/v1/patients/{patient_id}/coverages": "signed-in:read",
    "POST /api/v1/patients/{patient_id}/coverages": "signed-in:write",
    "PUT /api/v1/coverages/{coverage_id}": "signed-in:write",
    "POST /api/v1/patients/{patient_id}/encounters": "signed-in:write",
    "GET /api/v1/patients/{patient_id}/encounters": "signed-in:read",
    "POST /api/v1/encounters/{encounter_id}/status": "signed-in:write",
    "GET /api/v1/reception": "signed-in:read",
    "POST /api/v1/patients/{patient_id}/notes": "signed-in:write",
    "GET /api/v1/patients/{patient_id}/notes": "signed-in:read",
    "GET /api/v1/notes/{note_id}": "signed-in:read",
    "PUT /api/v1/notes/{note_id}": "signed-in:write",
    "POST /api/v1/notes/{note_id}/finalise": "signed-in:write",
    "POST /api/v1/notes/{note_id}/amend": "signed-in:write",
    "POST /api/v1/patients/{patient_id}/conditions": "signed-in:write",
    "GET /api/v1/patients/{patient_id}/conditions": "signed-in:read",
    "PUT /api/v1/conditions/{condition_id}": "signed-in:write",
    "POST /api/v1/patients/{patient_id}/allergies": "signed-in:write",
    "GET /api/v1/patients/{patient_id}/allergies": "signed-in:read",
    "POST /api/v1/patients/{patient_id}/medication-requests": "signed-in:write",
    "GET /api/v1/patients/{patient_id}/medication-requests": "signed-in:read",
    "POST /api/v1/patients/{patient_id}/observations": "signed-in:write",
    "GET /api/v1/patients/{patient_id}/observations": "signed-in:read",
    "POST /api/v1/patients/{patient_id}/documents": "signed-in:write",
    "GET /api/v1/patients/{patient_id}/documents": "signed-in:read",
    "GET /api/v1/documents/{document_id}/content": "signed-in:read",
    "GET /api/v1/records/{record_type}/{record_id}/history": "signed-in:read",
    "POST /api/v1/records/{record_type}/{record_id}/entered-in-error": "signed-in:write",
    "GET /api/v1/patients/{patient_id}/verify": "signed-in:read",
    "GET /api/v1/patients/{patient_id}/chart": "signed-in:read",
    "GET /api/v1/patients/{patient_id}/chart.pdf": "signed-in:read",
    "GET /api/v1/audit/patients/{patient_id}/accesses": "signed-in:read",
    "GET /api/v1/audit/users/{user_id}/accesses": "signed-in:read",
    "GET /api/v1/audit/patients/{patient_id}/access-report.pdf": "signed-in:read",
    "POST /api/v1/audit/reviews": "signed-in:write",
    "GET /api/v1/audit/reviews": "signed-in:read",
    "GET /api/v1/audit/status": "signed-in:read",
    "GET /fhir/r4/Patient": "signed-in:read",
    "GET /fhir/r4/Patient/{patient_id}/$everything": "signed-in:read",
    "GET /fhir/r4/{resource_type}": "signed-in:read",
    "GET /fhir/r4/{resource_type}/{rid}": "signed-in:read",
}
EXPECTED = PINNED


def test_route_guard_table_is_pinned(world: World) -> None:
    app = world.http.app
    assert app.state.route_guards == EXPECTED  # type: ignore[attr-defined]


def test_writes_never_use_a_read_guard() -> None:
    for key, guard in EXPECTED.items():
        method = key.split()[0]
        if guard != "public":
            assert guard == ("signed-in:read" if method == "GET" else "signed-in:write"), key


def test_app_refuses_to_start_with_an_unguarded_route(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mamori.app as app_module

    rogue = APIRouter()

    @rogue.get("/api/v1/leak")
    def leak() -> dict[str, str]:
        return {"oops": "no guard"}

    original = app_module.fhir_router
    combined = APIRouter()
    combined.include_router(original)
    combined.include_router(rogue)
    monkeypatch.setattr(app_module, "fhir_router", combined)
    with pytest.raises(RuntimeError, match="GET /api/v1/leak"):
        create_app(world.settings, world.db)


def test_two_guards_on_one_route_is_also_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mamori.app as app_module
    from mamori.web.routing import public

    rogue = APIRouter()

    @rogue.get("/api/v1/ambiguous", dependencies=[Depends(public)])
    def ambiguous(ctx: Ctx = Depends(reader)) -> dict[str, str]:
        return {}

    combined = APIRouter()
    combined.include_router(app_module.fhir_router)
    combined.include_router(rogue)
    monkeypatch.setattr(app_module, "fhir_router", combined)
    with pytest.raises(RuntimeError, match="ambiguous"):
        create_app(world.settings, world.db)


def test_security_headers_on_every_response(world: World) -> None:
    for path in ("/healthz", "/api/v1/patients", "/nowhere"):
        r = world.http.get(path)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_openapi_document_lists_the_api(world: World, tmp_path: Path) -> None:
    doc = world.http.get("/api/openapi.json").json()
    assert "/api/v1/patients" in doc["paths"] and "/fhir/r4/Patient" in doc["paths"]
