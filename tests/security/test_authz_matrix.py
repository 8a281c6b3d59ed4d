"""The authorization matrix, generated from the pinned route table: every route × every role ×
{own clinic, other clinic, restricted patient} plus no session, each with the answer the
policy (clinic-domain.md §6) says it must get. A mismatch anywhere is a data leak or a broken
workflow; the test prints how many combinations it checked.

Expected answers:

* ``unauth`` (401) — no credentials;
* ``forbidden`` (403 ``forbidden``) — the role lacks the route's permission, or the permission
  of the record kind the route reaches (reception asking for a note's history);
* ``not-found`` (404) — another clinic's record, whatever its ID;
* ``break-glass`` (403 ``break_glass_required``) — clinical data of a restricted patient;
* ``reauth`` (401 ``reauth_required``) — sensitive actions need a fresh re-authentication,
  which an API token never has;
* ``allowed`` — anything else: the request passed authorization (it may still be refused by
  a domain rule or by input validation, which other tests cover).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from tests.conftest import SAMPLE_PATIENT, World
from tests.security.test_route_inventory import PINNED

from mamori.auth.admin import open_vendor_window
from mamori.auth.models import SecurityAlert
from mamori.auth.tokens import store_token
from mamori.authz.permissions import ROLE_PERMISSIONS, P
from mamori.authz.roles import Role
from mamori.clinic.calendar import clinic_today
from mamori.clinic.models import Clinic
from mamori.clinic.service import add_staff
from mamori.continuity.models import DowntimeBundle
from mamori.db import utcnow
from mamori.detection.models import DetectionCase
from mamori.incidents.service import open_incident
from mamori.patients import service as patients
from mamori.patients.schemas import CoverageIn

ROLE_OF = {
    "director": Role.DIRECTOR,
    "dr_aiko": Role.PHYSICIAN,
    "nurse_ben": Role.NURSE,
    "clerk_chika": Role.RECEPTION,
    "scribe_dai": Role.SCRIBE,
    "sec_sae": Role.SECURITY_OFFICER,
    "vendor_vic": Role.VENDOR,
    "audit_aki": Role.AUDITOR,
}
_CLINICAL_READ = {
    "patient:read", "insurance:read", "encounter:read", "chart:read", "note:read",
    "condition:read", "allergy:read", "prescription:read", "observation:read", "document:read",
}  # fmt: skip
_PHYSICIAN = _CLINICAL_READ | {
    "patient:write", "encounter:write", "chart:print", "note:write", "note:sign",
    "condition:write", "allergy:write", "prescription:write", "observation:write",
    "document:write", "record:retract", "record:verify", "break-glass:use", "self:manage",
    "incident:report",
}  # fmt: skip
# The default policy of clinic-domain.md §6, written out independently of the code: the code's
# table must equal it, and every expectation below is computed from it.
POLICY: dict[Role, set[str]] = {
    Role.PHYSICIAN: _PHYSICIAN,
    Role.NURSE: _CLINICAL_READ | {
        "encounter:write", "chart:print", "note:write", "allergy:write", "prescription:write",
        "observation:write", "break-glass:use", "self:manage", "incident:report",
    },
    Role.RECEPTION: {
        "patient:read", "patient:write", "insurance:read", "insurance:write", "encounter:read",
        "encounter:write", "condition:read", "allergy:read", "prescription:read",
        "document:write", "self:manage", "incident:report",
    },
    Role.SCRIBE: {
        "patient:read", "encounter:read", "chart:read", "note:read", "note:write",
        "condition:read", "condition:write", "allergy:read", "allergy:write",
        "prescription:read", "prescription:write", "observation:read", "observation:write",
        "document:read", "document:write", "self:manage", "incident:report",
    },
    Role.DIRECTOR: _PHYSICIAN | {
        "patient:merge", "insurance:write", "export:bulk", "audit:read", "audit:review",
        "staff:read", "staff:admin", "session:admin", "restriction:admin",
        "vendor-window:admin", "system:health", "continuity:admin", "detection:review",
        "incident:read", "incident:manage", "incident:decide", "programme:read",
        "programme:manage",
    },
    Role.SECURITY_OFFICER: {
        "audit:read", "audit:review", "staff:read", "session:admin", "vendor-window:admin",
        "system:health", "continuity:admin", "detection:review", "self:manage",
        "incident:report", "incident:read", "incident:manage", "programme:read",
        "programme:manage",
    },
    Role.VENDOR: {"system:health", "self:manage", "incident:report"},
    Role.AUDITOR: {
        "audit:read", "audit:review", "staff:read", "self:manage", "incident:report",
        "incident:read", "programme:read",
    },
}  # fmt: skip
# record kinds a restricted patient's desk work needs (registration, insurance, visits)
DEMOGRAPHIC = {"Coverage", "Encounter", "ContactLog"}

COVERAGE = {"kind": "shaho", "insurer_number": "01130012", "symbol": "ミツ", "number": "187"}
NOTE = {"kind": "nursing", "subjective": "夜間の咳"}
RX = {
    "rp_groups": [
        {
            "usage": "1日3回毎食後",
            "days": 3,
            "items": [{"drug_name": "カルボシステイン錠500mg", "dose": "3", "unit": "錠"}],
        }
    ]
}
OBSERVATION = {
    "category": "vital-signs",
    "code": "BT",
    "name": "体温",
    "value": "36.5",
    "unit": "Cel",
}

# The record kind the gate sees for each route (besides the route's own permission).
KIND = {
    "/api/v1/patients/{patient_id}/coverages": "Coverage",
    "/api/v1/coverages/{coverage_id}": "Coverage",
    "/api/v1/patients/{patient_id}/encounters": "Encounter",
    "/api/v1/encounters/{encounter_id}/status": "Encounter",
    "/api/v1/patients/{patient_id}/notes": "ProgressNote",
    "/api/v1/notes/{note_id}": "ProgressNote",
    "/api/v1/notes/{note_id}/finalise": "ProgressNote",
    "/api/v1/notes/{note_id}/amend": "ProgressNote",
    "/api/v1/patients/{patient_id}/conditions": "Condition",
    "/api/v1/conditions/{condition_id}": "Condition",
    "/api/v1/conditions/{condition_id}/confirm": "Condition",
    "/api/v1/patients/{patient_id}/allergies": "AllergyIntolerance",
    "/api/v1/patients/{patient_id}/medication-requests": "MedicationRequest",
    "/api/v1/medication-requests/{request_id}/confirm": "MedicationRequest",
    "/api/v1/medication-requests/{request_id}/prescription.pdf": "MedicationRequest",
    "/api/v1/patients/{patient_id}/referrals/draft": "chart",
    "/api/v1/patients/{patient_id}/bookings": "Encounter",
    "/api/v1/patients/{patient_id}/contacts": "ContactLog",
    "/api/v1/bookings/{encounter_id}": "Encounter",
    "/api/v1/patients/{patient_id}/referrals": "Document",
    "/api/v1/patients/{patient_id}/observations": "Observation",
    "/api/v1/patients/{patient_id}/documents": "Document",
    "/api/v1/documents/{document_id}/content": "Document",
    "/api/v1/records/{record_type}/{record_id}/history": "ProgressNote",
    "/api/v1/records/{record_type}/{record_id}/entered-in-error": "ProgressNote",
    "/api/v1/patients/{patient_id}/verify": "verify",
    "/api/v1/patients/{patient_id}/chart": "chart",
    "/api/v1/patients/{patient_id}/chart.pdf": "chart",
    "/fhir/r4/{resource_type}": "Condition",
    "/fhir/r4/{resource_type}/{rid}": "Condition",
    "/fhir/r4/Patient/{patient_id}/$everything": "chart",
}
GATE_PERMISSION = {
    "Coverage": ("insurance:read", "insurance:write"),
    "Encounter": ("encounter:read", "encounter:write"),
    "ContactLog": ("encounter:read", "encounter:write"),
    "ProgressNote": ("note:read", "note:write"),
    "Condition": ("condition:read", "condition:write"),
    "AllergyIntolerance": ("allergy:read", "allergy:write"),
    "MedicationRequest": ("prescription:read", "prescription:write"),
    "Observation": ("observation:read", "observation:write"),
    "Document": ("document:read", "document:write"),
}
REAUTH = {
    "POST /api/v1/patients/{patient_id}/break-glass",
    "POST /api/v1/admin/staff",
    "PUT /api/v1/admin/staff/{user_id}",
    "POST /api/v1/admin/staff/{user_id}/reset-factors",
    "POST /api/v1/admin/vendor-windows",
    "POST /api/v1/admin/integrations",
    "POST /api/v1/admin/tokens",
}
# need a signed-in browser session (a cookie), which an API token is not
SESSION_ONLY = {
    "POST /api/v1/auth/reauth/webauthn/options",
    "POST /api/v1/auth/reauth",
    "POST /api/v1/auth/password",
}
# the retract route writes through the record's *write* permission; the others read
WRITE_KIND = {"POST", "PUT"}


@dataclasses.dataclass
class Estate:
    world: World
    ids: dict[str, dict[str, str]]  # scope → placeholder → value


def _make_patient(world: World, who: str, kana: str, coverage_actor: Any = None) -> dict[str, str]:
    http, h = world.http, world.h(who)
    body = {**SAMPLE_PATIENT, "family_kana": kana}
    pid = http.post("/api/v1/patients", json=body, headers=h).json()["id"]
    out = {"patient_id": pid}
    if coverage_actor is None:
        r = http.post(f"/api/v1/patients/{pid}/coverages", json=COVERAGE, headers=h)
        out["coverage_id"] = r.json()["id"]
    else:
        with world.db.session(write=True) as s:
            cov = patients.add_coverage(s, coverage_actor, uuid.UUID(pid), CoverageIn(**COVERAGE))
            out["coverage_id"] = str(cov.id)
            s.commit()
    doc_h = world.h(who)
    out["encounter_id"] = http.post(
        f"/api/v1/patients/{pid}/encounters", json={}, headers=doc_h
    ).json()["id"]
    out["note_id"] = http.post(f"/api/v1/patients/{pid}/notes", json=NOTE, headers=doc_h).json()[
        "id"
    ]
    out["condition_id"] = http.post(
        f"/api/v1/patients/{pid}/conditions", json={"display_name": "高血圧症"}, headers=doc_h
    ).json()["id"]
    http.post(
        f"/api/v1/patients/{pid}/allergies",
        json={"category": "food", "substance": "卵"},
        headers=doc_h,
    )
    rx = http.post(f"/api/v1/patients/{pid}/medication-requests", json=RX, headers=doc_h)
    out["request_id"] = rx.json()["medication_request"]["id"]
    http.post(f"/api/v1/patients/{pid}/observations", json=OBSERVATION, headers=doc_h)
    out["document_id"] = http.post(
        f"/api/v1/patients/{pid}/documents",
        data={"doc_type": "referral", "title": "紹介状"},
        files={"file": ("a.pdf", b"%PDF-1.4 synthetic", "application/pdf")},
        headers=doc_h,
    ).json()["id"]
    out["record_type"], out["record_id"] = "ProgressNote", out["note_id"]
    out["resource_type"], out["rid"] = "Condition", out["condition_id"]
    return out


@pytest.fixture
def estate(world: World) -> Estate:
    own = _make_patient(world, "director", "ミナト")
    restricted = _make_patient(world, "director", "カクシ")
    r = world.http.put(
        f"/api/v1/patients/{restricted['patient_id']}/restriction",
        json={"vip": True, "sensitive": False},
        headers=world.h("director"),
    )
    assert r.status_code == 200, r.text
    b_director = dataclasses.replace(world.actors["dr_chen"], role=Role.DIRECTOR)
    other = _make_patient(world, "dr_chen", "ホカノ", coverage_actor=b_director)
    duplicate = world.http.post(
        "/api/v1/patients", json=SAMPLE_PATIENT, headers=world.h("director")
    ).json()["id"]
    cli_director = dataclasses.replace(world.actors["director"], channel="cli")
    with world.db.session(write=True) as s:
        window = open_vendor_window(
            s,
            cli_director,
            vendor_user_id=world.actors["vendor_vic"].user_id,
            ticket="T-1",
            reason="点検",
            starts_at=utcnow() + dt.timedelta(days=1),  # booked for tomorrow: not open now
            minutes=30,
            reauth_minutes=5,
        )
        alert = SecurityAlert(
            clinic_id=world.actors["director"].clinic_id, kind="lockout", summary="テスト"
        )
        s.add(alert)
        s.flush()
        window_id, alert_id = str(window.id), str(alert.id)
        s.commit()
    token_ids = {}
    with world.db.session(write=True) as s:  # a token of each clinic, for the revoke route
        for clinic_of in ("director", "dr_chen"):
            clinic = s.get(Clinic, world.actors[clinic_of].clinic_id)
            assert clinic is not None
            link = add_staff(s, clinic, login_id="link", display_name="連携", role=Role.RECEPTION)
            row, _ = store_token(
                s,
                world.settings.token_pepper,
                link,
                scope=frozenset({P.PATIENT_READ}),
                expires_at=utcnow() + dt.timedelta(days=1),
            )
            token_ids[clinic_of] = str(row.id)
        s.commit()
    cases = {}
    with world.db.session(write=True) as s:  # a detection case of each clinic
        for clinic_of in ("director", "dr_chen"):
            actor = world.actors[clinic_of]
            at = utcnow()
            case = DetectionCase(
                clinic_id=actor.clinic_id, user_id=actor.user_id, patient_id=None,
                tier="daily", score=4, rules=["B1"], facts={"patients": 9}, first_seq=1,
                last_seq=1, first_at=at, last_at=at, status="open", reason="",
            )  # fmt: skip
            s.add(case)
            s.flush()
            cases[clinic_of] = str(case.id)
        s.commit()
    incidents = {}
    with world.db.session(write=True) as s:  # an incident of each clinic
        for clinic_of, manager in (("director", world.actors["director"]), ("dr_chen", b_director)):
            incident = open_incident(
                s, manager, kind="device", title="端末紛失", seen="", knew_on=clinic_today()
            )
            incidents[clinic_of] = str(incident.id)
        s.commit()
    bundles = {}
    with world.db.session(write=True) as s:  # a downtime bundle of each clinic (its numbers)
        for clinic_of, first in (("director", 1), ("dr_chen", 41)):
            actor = world.actors[clinic_of]
            bundle = DowntimeBundle(
                clinic_id=actor.clinic_id, made_by_id=actor.user_id, day=clinic_today(),
                destinations="[]", file_name="x.tar.age", sha256="0" * 64, size=1, patients=0,
                first_number=first, last_number=first + 39,
            )  # fmt: skip
            s.add(bundle)
            s.flush()
            bundles[clinic_of] = str(bundle.id)
        s.commit()
    shared = {
        "bundle_id": bundles["director"],
        "case_id": cases["director"],
        "incident_id": incidents["director"],
        "step_no": "1",
        "window_id": window_id,
        "alert_id": alert_id,
        "duplicate": duplicate,
        "token_id": token_ids["director"],
    }
    own.update(shared, user_id=str(world.actors["dr_kenji"].user_id))
    restricted.update(shared, user_id=str(world.actors["dr_kenji"].user_id))
    other.update(
        window_id=str(uuid.uuid4()),
        alert_id=str(uuid.uuid4()),
        duplicate=duplicate,
        user_id=str(world.actors["dr_chen"].user_id),
        token_id=token_ids["dr_chen"],
        bundle_id=bundles["dr_chen"],
        case_id=cases["dr_chen"],
        incident_id=incidents["dr_chen"],
        step_no="1",
    )
    return Estate(world=world, ids={"own": own, "restricted": restricted, "other": other})


def _body(key: str, scope: str, ids: dict[str, str]) -> dict[str, Any]:
    """Request arguments that pass input validation, so the answer shows the authorization."""
    stale = {"expected_version": 99}
    bodies: dict[str, Callable[[], dict[str, Any]]] = {
        "POST /api/v1/auth/login": lambda: {"json": {"login_id": "x", "password": "y"}},
        "POST /api/v1/auth/password": lambda: {"json": {"current": "a", "new": "b"}},
        "POST /api/v1/auth/reauth": lambda: {"json": {"password": "a", "code": "123456"}},
        "POST /api/v1/auth/sessions/revoke": lambda: {"json": {"session_id": str(uuid.uuid4())}},
        "POST /api/v1/patients/{patient_id}/break-glass": lambda: {
            "json": {"reason_code": "emergency", "reason_text": "急変のため"}
        },
        "PUT /api/v1/patients/{patient_id}/restriction": lambda: {
            "json": {"vip": scope == "restricted", "sensitive": False}
        },
        "POST /api/v1/admin/staff": lambda: {
            "json": {
                "login_id": "new_staff",
                "display_name": "新人",
                "role": "nurse",
                "password": "long enough passphrase 2026",
            }
        },
        "PUT /api/v1/admin/staff/{user_id}": lambda: {"json": {"display_kana": "テスト"}},
        "POST /api/v1/admin/integrations": lambda: {
            "json": {"login_id": "lab", "display_name": "検査", "role": "nurse"}
        },
        "POST /api/v1/admin/tokens": lambda: {
            "json": {"user_id": ids["user_id"], "scope": ["patient:read"], "days": 7}
        },
        "POST /api/v1/admin/staff/{user_id}/sessions/revoke": lambda: {
            "json": {"session_id": str(uuid.uuid4())}
        },
        "POST /api/v1/admin/vendor-windows": lambda: {
            "json": {"vendor_user_id": ids["user_id"], "ticket": "T", "reason": "r", "minutes": 5}
        },
        "POST /api/v1/admin/vendor-windows/{window_id}/acknowledge": lambda: {"json": {}},
        "POST /api/v1/admin/alerts/{alert_id}/review": lambda: {"json": {"outcome": "no-issue"}},
        "POST /api/v1/patients": lambda: {"json": SAMPLE_PATIENT},
        "PUT /api/v1/patients/{patient_id}": lambda: {"json": {**SAMPLE_PATIENT, **stale}},
        "POST /api/v1/patients/{patient_id}/merge": lambda: {
            "json": {"duplicate_id": ids["duplicate"], "reason": "重複登録"}
        },
        "POST /api/v1/patients/{patient_id}/coverages": lambda: {"json": COVERAGE},
        "PUT /api/v1/coverages/{coverage_id}": lambda: {"json": {**COVERAGE, **stale}},
        "POST /api/v1/patients/{patient_id}/encounters": lambda: {"json": {}},
        "POST /api/v1/encounters/{encounter_id}/status": lambda: {
            "json": {"status": "finished", **stale}
        },
        "POST /api/v1/patients/{patient_id}/notes": lambda: {"json": NOTE},
        "PUT /api/v1/notes/{note_id}": lambda: {"json": {"subjective": "追記", **stale}},
        "POST /api/v1/notes/{note_id}/finalise": lambda: {"json": stale},
        "POST /api/v1/notes/{note_id}/amend": lambda: {
            "json": {"subjective": "訂正", "reason": "誤記", **stale}
        },
        "POST /api/v1/patients/{patient_id}/conditions": lambda: {
            "json": {"display_name": "高血圧症"}
        },
        "POST /api/v1/conditions/{condition_id}/confirm": lambda: {"json": stale},
        "PUT /api/v1/conditions/{condition_id}": lambda: {
            "json": {"display_name": "高血圧症", **stale}
        },
        "POST /api/v1/patients/{patient_id}/allergies": lambda: {
            "json": {"category": "food", "substance": "卵"}
        },
        "POST /api/v1/patients/{patient_id}/medication-requests": lambda: {"json": RX},
        "POST /api/v1/medication-requests/{request_id}/confirm": lambda: {"json": stale},
        "POST /api/v1/patients/{patient_id}/observations": lambda: {"json": OBSERVATION},
        "POST /api/v1/patients/{patient_id}/documents": lambda: {
            "data": {"doc_type": "referral", "title": "紹介状"},
            "files": {"file": ("a.pdf", b"%PDF-1.4 synthetic", "application/pdf")},
        },
        "POST /api/v1/patients/{patient_id}/bookings": lambda: {
            "json": {"date": (clinic_today() + dt.timedelta(days=1)).isoformat(), "time": "10:00"}
        },
        "PUT /api/v1/bookings/{encounter_id}": lambda: {
            "json": {
                "date": (clinic_today() + dt.timedelta(days=1)).isoformat(),
                "time": "11:00",
                **stale,
            }
        },
        "POST /api/v1/patients/{patient_id}/referrals": lambda: {
            "json": {"to_institution": "市立病院", "purpose": "精査のため"}
        },
        "POST /api/v1/records/{record_type}/{record_id}/entered-in-error": lambda: {
            "json": {"reason": "誤入力", **stale}
        },
        "POST /api/v1/audit/reviews": lambda: {"json": {"scope": "period", "outcome": "no-issue"}},
        "POST /api/v1/detection/cases/{case_id}/review": lambda: {
            "json": {"outcome": "appropriate", "reason": "業務上の確認"}
        },
        "POST /api/v1/patients/{patient_id}/contacts": lambda: {"json": {"topic": "予約"}},
        "POST /api/v1/incidents/report": lambda: {"json": {"seen": "不審なメール"}},
        "POST /api/v1/incidents": lambda: {
            "json": {"kind": "phishing", "title": "不審メール", "knew_on": str(clinic_today())}
        },
        "POST /api/v1/incidents/{incident_id}/steps/{step_no}": lambda: {
            "json": {"outcome": "done"}
        },
        "POST /api/v1/incidents/{incident_id}/decision": lambda: {
            "json": {"reportable": False, "reason": "暗号化済みの端末", "malicious": False}
        },
        "POST /api/v1/incidents/{incident_id}/sent": lambda: {
            "json": {"which": "public", "on": str(clinic_today())}
        },
        "PUT /api/v1/incidents/{incident_id}/affected": lambda: {
            "json": {"user_id": ids["user_id"]}
        },
    }
    return bodies.get(key, dict)()


def _url(path: str, ids: dict[str, str]) -> str:
    url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
    if path == "/fhir/r4/{resource_type}":
        url += f"?patient={ids['patient_id']}"
    return url


def expected(key: str, guard: str, role: Role | None, scope: str) -> str:
    method, path = key.split(" ", 1)
    if guard.startswith("public"):
        return "public"
    if role is None or role is Role.VENDOR:
        return "unauth"  # a vendor account works only inside a maintenance window (none here)
    granted = POLICY[role]
    if guard not in granted:
        return "forbidden"
    if key in SESSION_ONLY:
        return "unauth"
    if key in REAUTH:
        return "reauth"
    kind = KIND.get(path)
    if kind in GATE_PERMISSION:
        read, write = GATE_PERMISSION[kind]
        writes = method in WRITE_KIND and "history" not in path
        if (write if writes else read) not in granted:
            return "forbidden"
    if scope == "other" and ("{" in path or path == "/fhir/r4/{resource_type}"):
        return "not-found"
    if scope == "restricted" and kind is not None and kind not in DEMOGRAPHIC:
        return "break-glass"
    return "allowed"


def classify(status: int, body: dict[str, Any]) -> str:
    code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
    if status == 401:
        return "reauth" if code == "reauth_required" else "unauth"
    if status == 403 and code == "forbidden":
        return "forbidden"
    if status == 403 and code == "break_glass_required":
        return "break-glass"
    if status == 404:
        return "not-found"
    if status >= 500:
        return f"error-{status}"
    return "allowed"


def _json(r: Any) -> dict[str, Any]:
    try:
        out = r.json()
    except ValueError:
        return {}
    if isinstance(out, dict) and out.get("resourceType") == "OperationOutcome":
        return {"error": {"code": out["issue"][0]["details"]["coding"][0]["code"]}}
    return out if isinstance(out, dict) else {}


def test_the_code_carries_the_written_policy() -> None:
    assert {r: {p.value for p in ps} for r, ps in ROLE_PERMISSIONS.items()} == POLICY


@pytest.mark.one_backend  # the policy is backend-independent; one backend walks it all
def test_every_route_every_role_every_scope(estate: Estate) -> None:
    world = estate.world
    mismatches: list[str] = []
    checked = 0
    for key, guard in PINNED.items():
        method, path = key.split(" ", 1)
        if key == "POST /api/v1/auth/logout":
            continue  # walked last: it ends nothing for a token, but keep the order obvious
        for who in [None, *ROLE_OF]:
            scopes = ["own"] if who is None else ["own", "other", "restricted"]
            for scope in scopes:
                ids = estate.ids[scope]
                headers = world.h(who) if who else {}
                r = world.http.request(
                    method, _url(path, ids), headers=headers, **_body(key, scope, ids)
                )
                got = classify(r.status_code, _json(r))
                want = expected(key, guard, ROLE_OF.get(who) if who else None, scope)
                if want == "public":
                    want = got if got in ("allowed", "unauth") else "allowed"
                checked += 1
                if got != want:
                    mismatches.append(
                        f"{key} as {who} ({scope}): want {want}, got {got} {r.text[:160]}"
                    )
    print(f"authorization matrix: {checked} combinations checked")
    assert not mismatches, "\n".join(mismatches[:40]) + f"\n({len(mismatches)} mismatches)"


# Written out here, not read from the code: the only routes that change something and still
# answer on a read-only copy (the standby, a restored or drilled copy) — the sign-in steps and
# these: accesses by a person, recorded in the copy's own log, and the isolation switch.
ANSWERED_ON_A_COPY = {
    "POST /logout",
    "POST /reauth",
    "POST /api/v1/auth/logout",
    "POST /api/v1/auth/reauth",
    "POST /api/v1/auth/reauth/webauthn/options",
    "POST /patients/{patient_id}/break-glass",
    "POST /api/v1/patients/{patient_id}/break-glass",
    "POST /admin/continuity/isolation",
}
_WRITTEN_ON_A_COPY = {"auth_session", "auth_throttle", "security_alert", "break_glass_grant"}
_AUDIT_TABLES = {"audit_event", "audit_event_patient", "audit_event_user", "audit_head"}


@pytest.mark.one_backend
def test_a_read_only_copy_refuses_every_write_route(estate: Estate) -> None:
    """Every route of the pinned table that is not a GET, called as the director on a copy:
    refused with ``read_only_copy`` before it runs (so before any input is looked at), except
    the sign-in steps and the few above; afterwards no table but sessions, alerts, grants and
    the copy's own log has changed. GETs still answer (the standby is for reading)."""
    from sqlalchemy import text

    from mamori.db import Base

    world = estate.world
    ids = estate.ids["own"]

    def counts() -> dict[str, int]:
        with world.db.session(write=False) as s:
            return {
                t: int(s.scalar(text(f'SELECT count(*) FROM "{t}"')) or 0)
                for t in Base.metadata.tables
            }

    world.db.read_only = True
    try:
        before = counts()
        wrong: list[str] = []
        refused = 0
        for key, guard in PINNED.items():
            method, path = key.split(" ", 1)
            if method in ("GET", "HEAD"):
                continue
            r = world.http.request(
                method, _url(path, ids), headers=world.h("director"), **_body(key, "own", ids)
            )
            code = _json(r).get("error", {}).get("code")
            answered = guard == "public:sign-in" or key in ANSWERED_ON_A_COPY
            if answered and code == "read_only_copy":
                wrong.append(f"{key}: refused, but it must answer on a copy")
            elif not answered:
                refused += 1
                if r.status_code != 409 or code != "read_only_copy":
                    wrong.append(f"{key}: {r.status_code} {r.text[:120]}")
        chart = world.http.get(
            f"/api/v1/patients/{ids['patient_id']}/chart", headers=world.h("dr_aiko")
        )
        assert chart.status_code == 200, chart.text
        changed = {t for t, n in counts().items() if n != before[t]}
    finally:
        world.db.read_only = False
    print(f"read-only copy: {refused} write routes refused")
    assert not wrong, "\n".join(wrong)
    assert refused >= 30  # the table is walked, not skipped
    assert changed <= _WRITTEN_ON_A_COPY | _AUDIT_TABLES, changed
