"""Every route declares its permission (or is explicitly public), and the full route →
permission table is pinned here: a new route, or a changed permission, must be added to this
list deliberately. The authorization matrix (test_authz_matrix.py) walks this table."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import APIRouter, Depends
from tests.conftest import World

from mamori.app import create_app
from mamori.authz.permissions import P, Permission
from mamori.web.routing import Ctx, requires

PINNED = {
    "GET /healthz": "public",
    "GET /api/v1/me": "self:manage",
    "POST /api/v1/auth/login": "public:sign-in",
    "GET /api/v1/auth/status": "public:sign-in",
    "POST /api/v1/auth/password/initial": "public:sign-in",
    "POST /api/v1/auth/totp": "public:sign-in",
    "POST /api/v1/auth/recovery": "public:sign-in",
    "POST /api/v1/auth/webauthn/options": "public:sign-in",
    "POST /api/v1/auth/webauthn": "public:sign-in",
    "POST /api/v1/auth/enrol/totp": "public:sign-in",
    "POST /api/v1/auth/enrol/totp/confirm": "public:sign-in",
    "POST /api/v1/auth/enrol/webauthn/options": "public:sign-in",
    "POST /api/v1/auth/enrol/webauthn": "public:sign-in",
    "POST /api/v1/auth/logout": "self:manage",
    "POST /api/v1/auth/reauth/webauthn/options": "self:manage",
    "POST /api/v1/auth/reauth": "self:manage",
    "POST /api/v1/auth/password": "self:manage",
    "GET /api/v1/auth/sessions": "self:manage",
    "POST /api/v1/auth/sessions/revoke": "self:manage",
    "POST /api/v1/patients/{patient_id}/break-glass": "break-glass:use",
    "PUT /api/v1/patients/{patient_id}/restriction": "restriction:admin",
    "GET /api/v1/detection/cases": "detection:review",
    "POST /api/v1/detection/cases/{case_id}/review": "detection:review",
    "POST /api/v1/incidents/report": "incident:report",
    "GET /api/v1/incidents": "incident:read",
    "POST /api/v1/incidents": "incident:manage",
    "GET /api/v1/incidents/{incident_id}": "incident:read",
    "POST /api/v1/incidents/{incident_id}/steps/{step_no}": "incident:manage",
    "POST /api/v1/incidents/{incident_id}/decision": "incident:decide",
    "POST /api/v1/incidents/{incident_id}/sent": "incident:manage",
    "PUT /api/v1/incidents/{incident_id}/affected": "incident:manage",
    "GET /api/v1/incidents/{incident_id}/affected": "incident:read",
    "POST /api/v1/patients/{patient_id}/contacts": "encounter:write",
    "GET /api/v1/admin/staff": "staff:read",
    "POST /api/v1/admin/staff": "staff:admin",
    "PUT /api/v1/admin/staff/{user_id}": "staff:admin",
    "POST /api/v1/admin/staff/{user_id}/unlock": "session:admin",
    "POST /api/v1/admin/staff/{user_id}/reset-factors": "staff:admin",
    "GET /api/v1/admin/staff/{user_id}/sessions": "session:admin",
    "POST /api/v1/admin/staff/{user_id}/sessions/revoke": "session:admin",
    "POST /api/v1/admin/vendor-windows": "vendor-window:admin",
    "GET /api/v1/admin/vendor-windows": "vendor-window:admin",
    "POST /api/v1/admin/vendor-windows/{window_id}/close": "vendor-window:admin",
    "GET /api/v1/admin/vendor-windows/{window_id}/report": "vendor-window:admin",
    "POST /api/v1/admin/vendor-windows/{window_id}/acknowledge": "staff:admin",
    "GET /api/v1/admin/alerts": "audit:read",
    "POST /api/v1/admin/alerts/{alert_id}/review": "audit:review",
    "GET /api/v1/admin/two-factor": "staff:read",
    "POST /api/v1/admin/integrations": "staff:admin",
    "GET /api/v1/admin/tokens": "staff:read",
    "POST /api/v1/admin/tokens": "staff:admin",
    "POST /api/v1/admin/tokens/{token_id}/revoke": "staff:admin",
    "POST /api/v1/patients": "patient:write",
    "GET /api/v1/patients": "patient:read",
    "GET /api/v1/patients/{patient_id}": "patient:read",
    "PUT /api/v1/patients/{patient_id}": "patient:write",
    "GET /api/v1/patients/{patient_id}/duplicates": "patient:read",
    "POST /api/v1/patients/{patient_id}/merge": "patient:merge",
    "GET /api/v1/patients/{patient_id}/coverages": "insurance:read",
    "POST /api/v1/patients/{patient_id}/coverages": "insurance:write",
    "PUT /api/v1/coverages/{coverage_id}": "insurance:write",
    "POST /api/v1/patients/{patient_id}/encounters": "encounter:write",
    "GET /api/v1/patients/{patient_id}/encounters": "encounter:read",
    "POST /api/v1/encounters/{encounter_id}/status": "encounter:write",
    "GET /api/v1/reception": "encounter:read",
    "POST /api/v1/patients/{patient_id}/notes": "note:write",
    "GET /api/v1/patients/{patient_id}/notes": "note:read",
    "GET /api/v1/notes/{note_id}": "note:read",
    "PUT /api/v1/notes/{note_id}": "note:write",
    "POST /api/v1/notes/{note_id}/finalise": "note:write",
    "POST /api/v1/notes/{note_id}/amend": "note:write",
    "POST /api/v1/patients/{patient_id}/conditions": "condition:write",
    "GET /api/v1/patients/{patient_id}/conditions": "condition:read",
    "PUT /api/v1/conditions/{condition_id}": "condition:write",
    "POST /api/v1/conditions/{condition_id}/confirm": "condition:write",
    "POST /api/v1/patients/{patient_id}/allergies": "allergy:write",
    "GET /api/v1/patients/{patient_id}/allergies": "allergy:read",
    "POST /api/v1/patients/{patient_id}/medication-requests": "prescription:write",
    "GET /api/v1/patients/{patient_id}/medication-requests": "prescription:read",
    "POST /api/v1/medication-requests/{request_id}/confirm": "prescription:write",
    "POST /api/v1/patients/{patient_id}/observations": "observation:write",
    "GET /api/v1/patients/{patient_id}/observations": "observation:read",
    "POST /api/v1/patients/{patient_id}/documents": "document:write",
    "GET /api/v1/patients/{patient_id}/documents": "document:read",
    "GET /api/v1/documents/{document_id}/content": "document:read",
    "GET /api/v1/records/{record_type}/{record_id}/history": "patient:read",
    "POST /api/v1/records/{record_type}/{record_id}/entered-in-error": "record:retract",
    "GET /api/v1/patients/{patient_id}/verify": "record:verify",
    "GET /api/v1/patients/{patient_id}/chart": "chart:read",
    "GET /api/v1/patients/{patient_id}/chart.pdf": "chart:print",
    "GET /api/v1/medication-requests/{request_id}/prescription.pdf": "chart:print",
    "GET /api/v1/patients/{patient_id}/referrals/draft": "note:sign",
    "POST /api/v1/patients/{patient_id}/bookings": "encounter:write",
    "PUT /api/v1/bookings/{encounter_id}": "encounter:write",
    "GET /api/v1/bookings": "encounter:read",
    "POST /api/v1/patients/{patient_id}/referrals": "note:sign",
    "GET /api/v1/audit/patients/{patient_id}/accesses": "audit:read",
    "GET /api/v1/audit/users/{user_id}/accesses": "audit:read",
    "GET /api/v1/audit/patients/{patient_id}/access-report.pdf": "audit:read",
    "POST /api/v1/audit/reviews": "audit:review",
    "GET /api/v1/audit/reviews": "audit:read",
    "GET /api/v1/audit/status": "audit:read",
    "GET /fhir/r4/metadata": "public",
    "GET /fhir/r4/Patient": "patient:read",
    "GET /fhir/r4/Patient/{patient_id}/$everything": "chart:read",
    "GET /fhir/r4/{resource_type}": "patient:read",
    "GET /fhir/r4/{resource_type}/{rid}": "patient:read",
}
# The web UI's pages (ui/): the same guards; walked by tests/ui/test_pages.py
PINNED_UI = {
    "GET /static/{name}": "public",
    "GET /login": "public",
    "POST /login": "public:sign-in",
    "GET /login/second": "public:sign-in",
    "POST /login/password": "public:sign-in",
    "POST /login/totp": "public:sign-in",
    "POST /login/recovery": "public:sign-in",
    "POST /login/enrol/totp": "public:sign-in",
    "POST /login/enrol/totp/confirm": "public:sign-in",
    "POST /logout": "self:manage",
    "GET /logout/idle": "public",
    "GET /session/ping": "self:manage",
    "GET /lang/{lang}": "public",
    "GET /": "self:manage",
    "GET /account": "self:manage",
    "POST /account/revoke": "self:manage",
    "POST /account/password": "self:manage",
    "POST /reauth": "self:manage",
    "GET /today": "encounter:read",
    "POST /encounters/{encounter_id}/move": "encounter:write",
    "GET /patients": "patient:read",
    "GET /patients/new": "patient:write",
    "POST /patients/new": "patient:write",
    "GET /patients/{patient_id}": "patient:read",
    "GET /patients/{patient_id}/edit": "patient:write",
    "POST /patients/{patient_id}/edit": "patient:write",
    "POST /patients/{patient_id}/coverages": "insurance:write",
    "POST /patients/{patient_id}/check-in": "encounter:write",
    "POST /patients/{patient_id}/restriction": "restriction:admin",
    "GET /patients/{patient_id}/chart": "chart:read",
    "POST /patients/{patient_id}/notes": "note:write",
    "POST /notes/{note_id}/finalise": "note:write",
    "GET /notes/{note_id}/amend": "note:write",
    "GET /notes/{note_id}/edit": "note:write",
    "POST /notes/{note_id}/edit": "note:write",
    "POST /notes/{note_id}/amend": "note:write",
    "GET /notes/{note_id}/history": "note:read",
    "POST /patients/{patient_id}/conditions": "condition:write",
    "POST /conditions/{condition_id}/confirm": "condition:write",
    "POST /conditions/{condition_id}/edit": "condition:write",
    "POST /prescriptions/{request_id}/confirm": "prescription:write",
    "GET /patients/{patient_id}/referrals/new": "note:sign",
    "GET /patients/{patient_id}/labs": "observation:read",
    "GET /postcodes/lookup": "patient:write",
    "GET /bookings": "encounter:read",
    "GET /admin/continuity": "continuity:admin",
    "POST /admin/continuity/drills": "continuity:admin",
    "POST /admin/continuity/bundles/{bundle_id}/close": "continuity:admin",
    "POST /admin/continuity/isolation": "continuity:admin",
    "POST /patients/{patient_id}/bookings": "encounter:write",
    "POST /bookings/{encounter_id}/move": "encounter:write",
    "POST /patients/{patient_id}/referrals": "note:sign",
    "POST /patients/{patient_id}/allergies": "allergy:write",
    "POST /patients/{patient_id}/prescriptions": "prescription:write",
    "POST /patients/{patient_id}/vitals": "observation:write",
    "POST /patients/{patient_id}/documents": "document:write",
    "GET /patients/{patient_id}/break-glass": "break-glass:use",
    "POST /patients/{patient_id}/break-glass": "break-glass:use",
    "GET /admin/staff": "staff:read",
    "POST /admin/staff": "staff:admin",
    "POST /admin/integrations": "staff:admin",
    "POST /admin/tokens": "staff:admin",
    "POST /admin/tokens/{token_id}/revoke": "staff:admin",
    "POST /admin/staff/{user_id}": "staff:admin",
    "POST /admin/staff/{user_id}/unlock": "session:admin",
    "POST /admin/staff/{user_id}/reset-factors": "staff:admin",
    "GET /admin/staff/{user_id}/sessions": "session:admin",
    "POST /admin/staff/{user_id}/sessions/revoke": "session:admin",
    "GET /admin/reviews": "audit:read",
    "POST /admin/alerts/{alert_id}/review": "audit:review",
    "POST /admin/reviews": "audit:review",
    "POST /admin/vendor-windows/{window_id}/acknowledge": "staff:admin",
    "POST /admin/vendor-windows": "vendor-window:admin",
    "POST /admin/vendor-windows/{window_id}/close": "vendor-window:admin",
    "GET /admin/vendor-windows/{window_id}": "vendor-window:admin",
    "GET /admin/reviews/patients/{patient_id}": "audit:read",
    "GET /admin/reviews/users/{user_id}": "audit:read",
    "GET /admin/settings": "system:health",
    "GET /admin/detection": "detection:review",
    "GET /admin/detection/cases/{case_id}": "detection:review",
    "POST /admin/detection/cases/{case_id}/review": "detection:review",
    "POST /admin/detection/cases/{case_id}/restrict": "restriction:admin",
    "POST /admin/detection/run": "detection:review",
    "GET /admin/detection/report.pdf": "detection:review",
    "GET /admin/roster": "staff:admin",
    "POST /admin/roster": "staff:admin",
    "POST /admin/roster/copy": "staff:admin",
    "GET /admin/staff/{user_id}/facts": "staff:admin",
    "POST /admin/staff/{user_id}/facts": "staff:admin",
    "POST /admin/staff/{user_id}/links": "staff:admin",
    "POST /patients/{patient_id}/contacts": "encounter:write",
    "GET /incidents/report": "incident:report",
    "POST /incidents/report": "incident:report",
    "GET /incidents/reported": "incident:report",
    "GET /incidents/contacts": "incident:report",
    "POST /incidents/contacts": "incident:manage",
    "GET /incidents/contacts.pdf": "incident:report",
    "GET /admin/incidents": "incident:read",
    "GET /admin/incidents/new": "incident:manage",
    "POST /admin/incidents": "incident:manage",
    "GET /admin/incidents/playbooks": "incident:read",
    "POST /admin/incidents/playbooks": "incident:manage",
    "GET /admin/incidents/{incident_id}": "incident:read",
    "POST /admin/incidents/{incident_id}/steps/{step_no}": "incident:manage",
    "POST /admin/incidents/{incident_id}/note": "incident:manage",
    "POST /admin/incidents/{incident_id}/update": "incident:manage",
    "POST /admin/incidents/{incident_id}/decision": "incident:decide",
    "POST /admin/incidents/{incident_id}/sent": "incident:manage",
    "POST /admin/incidents/{incident_id}/review": "incident:manage",
    "POST /admin/incidents/{incident_id}/measures": "incident:manage",
    "GET /admin/incidents/{incident_id}/affected": "incident:read",
    "POST /admin/incidents/{incident_id}/affected": "incident:manage",
    "POST /admin/incidents/{incident_id}/notices": "incident:manage",
    "GET /admin/incidents/{incident_id}/ppc.pdf": "incident:read",
    "GET /admin/incidents/{incident_id}/letters.pdf": "incident:read",
    "GET /admin/incidents/{incident_id}/public.pdf": "incident:read",
    "GET /admin/incidents/{incident_id}/mhlw.pdf": "incident:read",
    "GET /admin/incidents/{incident_id}/review.pdf": "incident:read",
    "GET /admin/incidents/{incident_id}/evidence.zip": "incident:read",
    "GET /admin/checklist": "programme:read",
    "POST /admin/checklist": "programme:manage",
    "GET /admin/checklist/report.pdf": "programme:read",
    "GET /admin/accounts/review": "programme:read",
    "POST /admin/accounts/review": "programme:manage",
    "GET /admin/duties": "programme:read",
    "POST /admin/duties": "programme:manage",
    "GET /admin/training": "programme:read",
    "POST /admin/training": "programme:manage",
    "GET /bcp": "incident:report",
    "POST /bcp/acknowledge": "incident:report",
    "POST /bcp/approve": "programme:manage",
    "GET /bcp.pdf": "incident:report",
    "GET /admin/ledgers": "programme:read",
    "POST /admin/ledgers/assets": "programme:manage",
    "POST /admin/ledgers/vendors": "programme:manage",
    "GET /admin/ledgers/{which}.csv": "programme:read",
    "POST /admin/ledgers/{which}/import": "programme:manage",
    "GET /admin/rules": "programme:read",
    "GET /admin/rules.md": "programme:read",
    "GET /admin/rules.pdf": "programme:read",
    "POST /admin/rules/inventory": "programme:manage",
}
EXPECTED = PINNED | PINNED_UI


def test_route_guard_table_is_pinned(world: World) -> None:
    app = world.http.app
    assert app.state.route_guards == EXPECTED  # type: ignore[attr-defined]


def test_state_changes_never_run_under_a_read_permission() -> None:
    for key, guard in EXPECTED.items():
        method = key.split()[0]
        if method != "GET" and not guard.startswith("public"):
            assert Permission(guard).writes, key


def test_permissions_no_route_declares_are_the_known_service_checks() -> None:
    used = {g for g in EXPECTED.values() if not g.startswith("public")}
    assert used <= {p.value for p in Permission}
    # checked only inside services: bulk export (CLI); signing guards the routes that only a
    # physician uses (a referral letter) and is checked again where a note is finalised
    assert {p.value for p in Permission} - used == {"export:bulk"}


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
    def ambiguous(ctx: Ctx = Depends(requires(P.PATIENT_READ))) -> dict[str, str]:
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
