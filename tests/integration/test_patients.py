"""Patients and coverage through the JSON API, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select, text
from tests.conftest import SAMPLE_PATIENT, World

from mamori.patients.models import Coverage, Patient
from mamori.records.versioning import RecordVersion


def _count(world: World, model: Any) -> int:
    with world.db.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_register_assigns_numbers_and_normalises_kana(world: World) -> None:
    h = world.h("clerk_chika")
    a = world.http.post(
        "/api/v1/patients",
        json={**SAMPLE_PATIENT, "family_kana": "ﾔﾏﾀﾞ", "given_kana": "はなこ"},
        headers=h,
    )
    b = world.http.post(
        "/api/v1/patients",
        json={**SAMPLE_PATIENT, "given_name": "次郎", "given_kana": "ジロウ", "sex": "male"},
        headers=h,
    )
    assert a.status_code == b.status_code == 201
    assert a.json()["family_kana"] == "ヤマダ" and a.json()["given_kana"] == "ハナコ"
    assert [a.json()["patient_number"], b.json()["patient_number"]] == [1, 2]
    assert a.json()["version"] == 1 and len(a.json()["content_hash"]) == 64
    assert "my_number" not in a.json() and "mynumber" not in str(Patient.__table__.columns)


def test_patient_numbers_are_per_clinic(world: World) -> None:
    world.http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=world.h("clerk_chika"))
    r = world.http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=world.h("dr_chen"))
    assert r.json()["patient_number"] == 1


@pytest.mark.parametrize("query", ["ﾔﾏﾀﾞ", "やまだ", "ヤマダハ", "ヤマダ ハナ"])
def test_search_by_kana_variants(world: World, patient: dict[str, Any], query: str) -> None:
    r = world.http.get("/api/v1/patients", params={"kana": query}, headers=world.h("clerk_chika"))
    assert [p["id"] for p in r.json()] == [patient["id"]]


def test_search_by_birth_date_and_number(world: World, patient: dict[str, Any]) -> None:
    h = world.h("clerk_chika")
    r = world.http.get("/api/v1/patients", params={"birth_date": "1948-04-03"}, headers=h)
    assert [p["id"] for p in r.json()] == [patient["id"]]
    r = world.http.get("/api/v1/patients", params={"number": patient["patient_number"]}, headers=h)
    assert [p["id"] for p in r.json()] == [patient["id"]]
    r = world.http.get("/api/v1/patients", params={"kana": "スズ"}, headers=h)
    assert r.json() == []
    # one kana alone has no index to narrow it (blind indexes start at two): refused, but
    # one kana with the birth date narrows on the date and still finds her
    r = world.http.get("/api/v1/patients", params={"kana": "ヤ"}, headers=h)
    assert r.status_code == 422 and "2文字以上" in r.json()["error"]["message_ja"]
    r = world.http.get(
        "/api/v1/patients", params={"kana": "や", "birth_date": "1948-04-03"}, headers=h
    )
    assert [p["id"] for p in r.json()] == [patient["id"]]
    r = world.http.get(
        "/api/v1/patients",
        params={"kana": "ヤマダハナコ", "number": patient["patient_number"]},
        headers=h,
    )
    assert [p["id"] for p in r.json()] == [patient["id"]]
    r = world.http.get("/api/v1/patients", headers=h)
    assert r.status_code == 422 and r.json()["error"]["message_ja"]


def test_search_wildcards_are_literal(world: World, patient: dict[str, Any]) -> None:
    r = world.http.get("/api/v1/patients", params={"kana": "%"}, headers=world.h("clerk_chika"))
    assert r.status_code == 422 or r.json() == []


def test_other_clinic_sees_nothing(world: World, patient: dict[str, Any]) -> None:
    h = world.h("dr_chen")
    pid = patient["id"]
    for path in (
        f"/api/v1/patients/{pid}",
        f"/api/v1/patients/{pid}/chart",
        f"/api/v1/patients/{pid}/notes",
        f"/api/v1/records/Patient/{pid}/history",
        f"/fhir/r4/Patient/{pid}",
        f"/fhir/r4/Patient/{pid}/$everything",
    ):
        assert world.http.get(path, headers=h).status_code == 404, path
    r = world.http.get("/api/v1/patients", params={"kana": "ヤマダ"}, headers=h)
    assert r.json() == []
    r = world.http.put(
        f"/api/v1/patients/{pid}", json={**SAMPLE_PATIENT, "expected_version": 1}, headers=h
    )
    assert r.status_code == 404
    # …and the 404 looks exactly like a patient that does not exist
    missing = world.http.get("/api/v1/patients/00000000-0000-4000-8000-000000000000", headers=h)
    assert missing.json() == world.http.get(f"/api/v1/patients/{pid}", headers=h).json()


def test_authentication_required(world: World, patient: dict[str, Any]) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer mmr_nottoken"},
        {"Authorization": "Basic x"},
        {"Authorization": "Bearer " + "mmr_" + "a" * 500},
    ):
        r = world.http.get(f"/api/v1/patients/{patient['id']}", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["message_ja"] == "ログインが必要です。"


def test_update_creates_version_and_rejects_stale_writer(
    world: World, patient: dict[str, Any]
) -> None:
    h = world.h("clerk_chika")
    url = f"/api/v1/patients/{patient['id']}"
    r = world.http.put(
        url,
        json={**SAMPLE_PATIENT, "phone": "090-1111-2222", "expected_version": 1, "reason": "転居"},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["version"] == 2
    stale = world.http.put(
        url, json={**SAMPLE_PATIENT, "phone": "090-3333-4444", "expected_version": 1}, headers=h
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_version"
    history = world.http.get(f"/api/v1/records/Patient/{patient['id']}/history", headers=h).json()
    assert [v["content"]["phone"] for v in history] == ["03-3812-0000", "090-1111-2222"]
    assert history[1]["prev_hash"] == history[0]["content_hash"]
    assert history[1]["reason"] == "転居"


BAD_INPUTS = [
    ({"birth_date": "2026-02-30"}, "birth_date"),
    ({"birth_date": "2999-01-01"}, "birth_date"),
    ({"birth_date": "1700-01-01"}, "birth_date"),
    ({"family_kana": "Yamada"}, "family_kana"),
    ({"phone": "12345"}, "phone"),
    ({"postal_code": "1130"}, "postal_code"),
    ({"sex": "robot"}, "sex"),
    ({"family_name": ""}, "family_name"),
    ({"family_name": "山" * 61}, "family_name"),
    ({"given_name": "花\x00子"}, "given_name"),
    ({"mynumber": "123456789012"}, "mynumber"),
]


@pytest.mark.parametrize(("patch", "field"), BAD_INPUTS)
def test_bad_patient_input_names_the_field_and_writes_nothing(
    world: World, patch: dict[str, Any], field: str
) -> None:
    r = world.http.post(
        "/api/v1/patients", json={**SAMPLE_PATIENT, **patch}, headers=world.h("clerk_chika")
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == field
    assert err["message_ja"] and err["message_en"] and err["message_ja"] != err["message_en"]
    assert _count(world, Patient) == 0 and _count(world, RecordVersion) == 0


def test_malformed_and_oversize_bodies(world: World) -> None:
    h = {**world.h("clerk_chika"), "content-type": "application/json"}
    r = world.http.post("/api/v1/patients", content=b'{"family_name": "\xe5', headers=h)
    assert r.status_code in (400, 422) and r.json()["error"]["message_ja"]
    r = world.http.post("/api/v1/patients", content=b"[1, 2", headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
    big = b'{"family_name": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    r = world.http.post("/api/v1/patients", content=big, headers=h)
    assert r.status_code == 413 and "大きすぎ" in r.json()["error"]["message_ja"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"x" * 65536

    r = world.http.post("/api/v1/patients", content=chunks(), headers=h)
    assert r.status_code == 413
    assert _count(world, Patient) == 0


def test_wrong_method_is_rejected(world: World, patient: dict[str, Any]) -> None:
    r = world.http.delete(f"/api/v1/patients/{patient['id']}", headers=world.h("director"))
    assert r.status_code == 405 and r.json()["error"]["message_ja"]


COVERAGE = {
    "kind": "shaho",
    "insurer_number": "01130012",
    "symbol": "ミツ",
    "number": "１８７",
    "branch": "01",
    "relationship": "family",
    "copay_percent": 30,
}


def test_coverage_validation(world: World, patient: dict[str, Any]) -> None:
    h = world.h("clerk_chika")
    url = f"/api/v1/patients/{patient['id']}/coverages"
    ok = world.http.post(url, json=COVERAGE, headers=h)
    assert ok.status_code == 201 and ok.json()["number"] == "１８７"  # 番号 stays text as written
    for patch, field in (
        ({"insurer_number": "01130013"}, "insurer_number"),
        ({"insurer_number": "0113001"}, "insurer_number"),
        ({"branch": "1"}, "branch"),
        ({"kind": "kouki"}, "body"),
        ({"kind": "kouhi", "insurer_number": ""}, "body"),
        ({"valid_from": "2026-01-01", "valid_to": "2025-01-01"}, "body"),
    ):
        r = world.http.post(url, json={**COVERAGE, **patch}, headers=h)
        assert r.status_code == 422, patch
        assert r.json()["error"]["field"] == field, patch
    kokuho = world.http.post(
        url, json={"kind": "kokuho", "insurer_number": "１３８２２２"}, headers=h
    )
    # 138222: body 13822 → check digit 2 under the 2-1 rule; full-width digits normalised
    assert kokuho.status_code == 201, kokuho.text
    assert _count(world, Coverage) == 2


def test_merge_duplicate_moves_records_and_keeps_history(
    world: World, patient: dict[str, Any]
) -> None:
    h = world.h("director")
    # the same person again is refused at registration, naming the existing 患者番号 …
    r = world.http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "possible_duplicate"
    assert f"No.{patient['patient_number']}" in r.json()["error"]["message_ja"]
    # … and registered anyway by someone who thought it another person: merged afterwards
    again = {**SAMPLE_PATIENT, "register_anyway": True}
    dup = world.http.post("/api/v1/patients", json=again, headers=h).json()
    world.http.post(
        f"/api/v1/patients/{dup['id']}/allergies",
        json={"category": "medication", "substance": "ペニシリン"},
        headers=h,
    )
    found = world.http.get(f"/api/v1/patients/{patient['id']}/duplicates", headers=h).json()
    assert [p["id"] for p in found] == [dup["id"]]
    r = world.http.post(
        f"/api/v1/patients/{patient['id']}/merge",
        json={"duplicate_id": dup["id"], "reason": "二重登録"},
        headers=h,
    )
    assert r.status_code == 200
    allergies = world.http.get(f"/api/v1/patients/{patient['id']}/allergies", headers=h).json()
    assert [a["substance"] for a in allergies] == ["ペニシリン"] and allergies[0]["version"] == 2
    merged = world.http.get(f"/api/v1/patients/{dup['id']}", headers=h).json()
    assert merged["status"] == "merged" and merged["merged_into_id"] == patient["id"]
    late = world.http.post(  # the folded registration takes no new records
        f"/api/v1/patients/{dup['id']}/allergies",
        json={"category": "medication", "substance": "セフェム"},
        headers=h,
    )
    assert late.status_code == 409 and "統合済み" in late.text, late.text
    late_cover = world.http.post(  # nor a new insurance card
        f"/api/v1/patients/{dup['id']}/coverages", json=COVERAGE, headers=h
    )
    assert late_cover.status_code == 409 and "統合済み" in late_cover.text, late_cover.text
    hist = world.http.get(
        f"/api/v1/records/AllergyIntolerance/{allergies[0]['id']}/history", headers=h
    ).json()
    assert hist[0]["content"]["patient_id"] == dup["id"]  # where it came from stays readable
    assert world.http.get(f"/api/v1/patients/{patient['id']}/verify", headers=h).json()["ok"]
    no_reason = world.http.post(
        f"/api/v1/patients/{patient['id']}/merge",
        json={"duplicate_id": dup["id"], "reason": ""},
        headers=h,
    )
    assert no_reason.status_code == 422


def test_registration_statements_on_the_driver_cursor_read_back_as_the_orm_wrote_them(
    world: World,
) -> None:
    # The next 患者番号 and the audit append run on the driver's own cursor; what they store
    # must read back through the ORM exactly as ORM-written rows do, on both databases.
    import datetime as dt
    import uuid

    from mamori.audit.models import AuditEvent, AuditEventPatient, AuditEventUser, AuditHead
    from mamori.canonical import canonical_json
    from mamori.clinic import service as clinic_service
    from mamori.clinic.models import Clinic
    from mamori.patients.schemas import PatientNew
    from mamori.patients.service import register_patient

    clerk = world.actors["clerk_chika"]
    data = PatientNew.model_validate({**SAMPLE_PATIENT, "register_anyway": True})
    with world.db.session(write=True) as s:
        clinic = s.get(Clinic, clerk.clinic_id)
        assert clinic is not None and clinic.next_patient_number == 1
        first = register_patient(s, clerk, data)
        # the clinic loaded before sees the advanced counter, not its old value
        assert clinic.next_patient_number == 2
        second = register_patient(s, clerk, data)
        # a clinic created earlier in the same transaction numbers from 1
        other = clinic_service.create_clinic(s, name="新規", institution_code="1310123463")
        admin = clinic_service.add_staff(
            s, other, login_id="new_desk", display_name="受付", role=clerk.role
        )
        third = register_patient(s, clinic_service.actor_for(admin, "test"), data)
        s.commit()
    assert (first.patient_number, second.patient_number, third.patient_number) == (1, 2, 1)
    with world.db.session(write=False) as s:
        head = s.get(AuditHead, 1)
        assert head is not None
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
        assert head.size == len(events) == events[-1].seq
        assert head.chain_hash == events[-1].chain_hash
        head.merkle_frontier()  # the stored frontier fits the size
        last = events[-1]
        assert last.recorded_at.tzinfo is not None
        body = __import__("json").loads(last.body)
        assert last.recorded_at == dt.datetime.fromisoformat(body["at"])
        assert canonical_json(body).encode() == last.body
        names = {
            (r.seq, r.patient_id)
            for r in s.scalars(select(AuditEventPatient).where(AuditEventPatient.seq == last.seq))
        }
        assert names == {(last.seq, third.id)} and isinstance(third.id, uuid.UUID)
        users = list(s.scalars(select(AuditEventUser).where(AuditEventUser.seq == last.seq)))
        assert [u.user_id for u in users] == [admin.id]
        # looked up by patient through the ORM's own UUID binding
        by_patient = s.scalars(
            select(AuditEventPatient.seq).where(AuditEventPatient.patient_id == first.id)
        ).all()
        assert len(by_patient) == 1


def test_reception_finds_by_kanji_given_name_and_phone(world: World) -> None:
    """佐藤 (as written), a given name alone (ハナコ), 佐藤 花子, a phone number with or without
    its hyphens; and rows from before these indexes are filled at start-up."""
    h = world.h("clerk_chika")
    people = (
        ("佐藤", "太郎", "サトウ", "タロウ", "1950-01-01", "090-1111-2222"),
        ("佐藤", "花子", "サトウ", "ハナコ", "1952-02-02", "03-3812-0000"),
        ("鈴木", "花子", "スズキ", "ハナコ", "1960-03-03", ""),
    )
    for fam, giv, fk, gk, born, phone in people:
        body = {**SAMPLE_PATIENT, "family_name": fam, "given_name": giv, "family_kana": fk,
                "given_kana": gk, "birth_date": born, "phone": phone}  # fmt: skip
        assert world.http.post("/api/v1/patients", json=body, headers=h).status_code == 201

    def names(**params: str) -> list[str]:
        r = world.http.get("/api/v1/patients", params=params, headers=h)
        assert r.status_code == 200, r.text
        return sorted(f"{p['family_name']} {p['given_name']}" for p in r.json())

    assert names(name="佐藤") == ["佐藤 太郎", "佐藤 花子"]
    assert names(name="花子") == ["佐藤 花子", "鈴木 花子"]
    assert names(name="佐藤　花子") == ["佐藤 花子"]  # a full-width space too
    assert names(kana="ハナコ") == ["佐藤 花子", "鈴木 花子"]  # メイ alone
    assert names(kana="サト") == ["佐藤 太郎", "佐藤 花子"]  # セイ prefix, as before
    assert names(phone="09011112222") == names(phone="090-1111-2222") == ["佐藤 太郎"]
    assert names(name="田中") == []
    r = world.http.get("/api/v1/patients", params={"phone": "12"}, headers=h)
    assert r.status_code == 422
    # the screen's one name box takes kanji as it takes kana
    from tests.ui.test_pages import signed_in

    clerk = signed_in(world, "clerk_chika")
    page = clerk.get("/patients", params={"kana": "佐藤"}).text
    assert "佐藤 太郎" in page and "佐藤 花子" in page and "鈴木" not in page
    # rows written before 0010 have no such index values until the server starts
    from mamori.patients.indexes import backfill

    with world.db.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE patient SET bi_family = NULL, bi_given = NULL, bi_given_kana = NULL, "
                "bi_phone = NULL"
            )
        )
    assert names(name="佐藤") == []
    assert backfill(world.db) == 3
    assert names(name="佐藤") == ["佐藤 太郎", "佐藤 花子"]
    assert backfill(world.db) == 0
    with world.db.session(write=False) as s:
        tags = [t for (t,) in s.execute(text("SELECT tag FROM audit_event"))]
    assert "system:index:built" in tags
