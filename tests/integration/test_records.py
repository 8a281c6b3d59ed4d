"""Clinical records: notes (確定, 修正, 代行入力), retraction, hash chains, orders, documents."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from pypdf import PdfReader
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from tests.conftest import SAMPLE_PATIENT, World, drop_insert_only_triggers
from tests.support.plans import select_plans

from mamori.patients.models import Patient
from mamori.patients.schemas import PatientUpdate
from mamori.patients.service import get_patient, update_patient
from mamori.records.versioning import ChangeKind, list_versions, verify_history, write_version

NOTE = {
    "subjective": "3日前から咳。",
    "objective": "咽頭発赤あり。",
    "assessment": "急性上気道炎",
    "plan": "対症療法",
}


def _note(world: World, pid: str, who: str = "dr_aiko", **extra: Any) -> dict[str, Any]:
    r = world.http.post(
        f"/api/v1/patients/{pid}/notes", json={**NOTE, **extra}, headers=world.h(who)
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_note_lifecycle_keeps_the_original(world: World, patient: dict[str, Any]) -> None:
    h = world.h("dr_aiko")
    note = _note(world, patient["id"])
    assert note["status"] == "draft" and note["author_id"] == note["entered_by_id"]
    url = f"/api/v1/notes/{note['id']}"
    r = world.http.put(
        url, json={**NOTE, "plan": "対症療法、3日後再診", "expected_version": 1}, headers=h
    )
    assert r.status_code == 200 and r.json()["version"] == 2
    r = world.http.post(url + "/finalise", json={"expected_version": 2}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "final"
    assert r.json()["finalised_by_id"] == str(world.actors["dr_aiko"].user_id)
    # a finalised note cannot be edited…
    r = world.http.put(url, json={**NOTE, "plan": "改ざん", "expected_version": 3}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "note_already_final"
    # …only amended, with a reason
    r = world.http.post(
        url + "/amend",
        json={**NOTE, "assessment": "急性気管支炎", "expected_version": 3, "reason": ""},
        headers=h,
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "reason"
    r = world.http.post(
        url + "/amend",
        json={
            **NOTE,
            "assessment": "急性気管支炎",
            "expected_version": 3,
            "reason": "診断名の誤記",
        },
        headers=h,
    )
    assert r.status_code == 200 and r.json()["status"] == "amended"
    hist = world.http.get(f"/api/v1/records/ProgressNote/{note['id']}/history", headers=h).json()
    assert [v["change"] for v in hist] == ["created", "updated", "finalised", "amended"]
    assert hist[2]["content"]["assessment"] == "急性上気道炎"  # the finalised original
    assert (
        hist[3]["content"]["assessment"] == "急性気管支炎" and hist[3]["reason"] == "診断名の誤記"
    )
    assert world.http.get(f"/api/v1/patients/{patient['id']}/verify", headers=h).json()["ok"]


def test_only_the_responsible_physician_finalises(world: World, patient: dict[str, Any]) -> None:
    note = _note(world, patient["id"])
    for who in ("nurse_ben", "dr_kenji", "clerk_chika"):
        r = world.http.post(
            f"/api/v1/notes/{note['id']}/finalise",
            json={"expected_version": 1},
            headers=world.h(who),
        )
        assert r.status_code == 403, who
        assert r.json()["error"]["message_ja"]
    nursing = _note(world, patient["id"], "nurse_ben", kind="nursing")
    r = world.http.post(
        f"/api/v1/notes/{nursing['id']}/finalise",
        json={"expected_version": 1},
        headers=world.h("nurse_ben"),
    )
    assert r.status_code == 200


def test_proxy_entry_is_confirmed_by_the_named_physician(
    world: World, patient: dict[str, Any]
) -> None:
    r = world.http.post(
        f"/api/v1/patients/{patient['id']}/notes", json=NOTE, headers=world.h("scribe_dai")
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "proxy_for_id"
    aiko = str(world.actors["dr_aiko"].user_id)
    note = _note(world, patient["id"], "scribe_dai", proxy_for_id=aiko)
    assert note["is_proxy_entry"] and note["author_id"] == aiko
    assert note["entered_by_id"] == str(world.actors["scribe_dai"].user_id)
    url = f"/api/v1/notes/{note['id']}/finalise"
    for who in ("scribe_dai", "dr_kenji"):
        assert (
            world.http.post(url, json={"expected_version": 1}, headers=world.h(who)).status_code
            == 403
        )
    r = world.http.post(url, json={"expected_version": 1}, headers=world.h("dr_aiko"))
    assert r.status_code == 200 and r.json()["finalised_by_id"] == aiko
    hist = world.http.get(
        f"/api/v1/records/ProgressNote/{note['id']}/history", headers=world.h("dr_aiko")
    ).json()
    assert [(v["change"], v["changed_by_id"]) for v in hist] == [
        ("created", str(world.actors["scribe_dai"].user_id)),
        ("confirmed", aiko),
    ]
    nurse_id = str(world.actors["nurse_ben"].user_id)
    r = world.http.post(
        f"/api/v1/patients/{patient['id']}/notes",
        json={**NOTE, "proxy_for_id": nurse_id},
        headers=world.h("scribe_dai"),
    )
    assert r.status_code == 422


def test_entered_in_error_is_a_status_not_a_delete(world: World, patient: dict[str, Any]) -> None:
    h = world.h("dr_aiko")
    note = _note(world, patient["id"])
    url = f"/api/v1/records/ProgressNote/{note['id']}/entered-in-error"
    assert (
        world.http.post(url, json={"expected_version": 1, "reason": ""}, headers=h).status_code
        == 422
    )
    r = world.http.post(url, json={"expected_version": 1, "reason": "別患者に記載"}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "entered-in-error"
    assert (
        world.http.post(url, json={"expected_version": 2, "reason": "再度"}, headers=h).status_code
        == 409
    )
    notes = world.http.get(f"/api/v1/patients/{patient['id']}/notes", headers=h).json()
    assert notes == []
    hist = world.http.get(f"/api/v1/records/ProgressNote/{note['id']}/history", headers=h).json()
    assert hist[0]["content"]["subjective"] == NOTE["subjective"]
    assert (
        world.http.post(
            "/api/v1/records/Nonsense/" + note["id"] + "/entered-in-error",
            json={"expected_version": 1, "reason": "x"},
            headers=h,
        ).status_code
        == 404
    )


def _tamper(world: World, sql: str, **params: Any) -> None:
    with world.db.engine.begin() as conn:
        conn.execute(text(sql), params)


def _flip_last_byte(world: World, table: str, where: str, **params: Any) -> None:
    with world.db.engine.begin() as conn:
        key, blob = conn.execute(
            text(f"SELECT id, sealed FROM {table} WHERE {where}"), params
        ).one()
        forged = bytes(blob[:-1]) + bytes([blob[-1] ^ 1])
        conn.execute(text(f"UPDATE {table} SET sealed = :b WHERE id = :i"), {"b": forged, "i": key})


@pytest.mark.parametrize("attack", ["head", "moved_head", "version", "delete_version", "reorder"])
def test_direct_database_edits_are_detected(
    world: World, patient: dict[str, Any], attack: str
) -> None:
    h = world.h("dr_aiko")
    note = _note(world, patient["id"])
    world.http.post(f"/api/v1/notes/{note['id']}/finalise", json={"expected_version": 1}, headers=h)
    verify = f"/api/v1/patients/{patient['id']}/verify"
    assert world.http.get(verify, headers=h).json()["ok"]
    if attack not in ("head", "moved_head", "version"):  # history is insert-only…
        with pytest.raises(DBAPIError, match="insert-only"):
            _tamper(world, "DELETE FROM record_version")
        drop_insert_only_triggers(world.db.engine)  # …so the attacker removes the triggers
    if attack == "head":  # the text is ciphertext now: change bytes of it
        _flip_last_byte(world, "progress_note", "1 = 1")
    elif attack == "moved_head":  # another note's valid ciphertext put into this row
        other = _note(world, patient["id"])
        _tamper(
            world,
            "UPDATE progress_note SET sealed = (SELECT sealed FROM progress_note WHERE id = :o) "
            "WHERE id = :n",
            o=(world.db.engine.dialect.name == "sqlite" and other["id"].replace("-", ""))
            or other["id"],
            n=(world.db.engine.dialect.name == "sqlite" and note["id"].replace("-", ""))
            or note["id"],
        )
    elif attack == "version":  # ciphertext of version 1 altered (re-encryption may write it)
        _flip_last_byte(world, "record_version", "record_type = 'ProgressNote' AND version = 1")
    elif attack == "delete_version":
        _tamper(
            world, "DELETE FROM record_version WHERE record_type = 'ProgressNote' AND version = 1"
        )
    else:  # swap versions 1 and 2 (three steps: the pair is unique)
        for a, b in ((1, 99), (2, 1), (99, 2)):
            _tamper(
                world,
                "UPDATE record_version SET version = :b WHERE "
                "record_type = 'ProgressNote' AND version = :a",
                a=a,
                b=b,
            )
    result = world.http.get(verify, headers=h).json()
    assert not result["ok"]
    assert {p["record_id"] for p in result["problems"]} == {note["id"]}


def test_encounter_states(world: World, patient: dict[str, Any]) -> None:
    h = world.h("clerk_chika")
    enc = world.http.post(f"/api/v1/patients/{patient['id']}/encounters", json={}, headers=h).json()
    assert enc["status"] == "arrived" and enc["arrived_at"]
    url = f"/api/v1/encounters/{enc['id']}/status"
    bad = world.http.post(url, json={"status": "finished", "expected_version": 1}, headers=h)
    assert bad.status_code == 409 and bad.json()["error"]["field"] == "status"
    v = 1
    for status in ("in-progress", "billing", "finished"):
        r = world.http.post(url, json={"status": status, "expected_version": v}, headers=h)
        assert r.status_code == 200, r.text
        v = r.json()["version"]
    assert r.json()["started_at"] and r.json()["ended_at"]
    day = world.http.get("/api/v1/reception", params={"date": enc["visit_date"]}, headers=h).json()
    assert [(row["encounter"]["id"], row["status_ja"]) for row in day] == [(enc["id"], "終了")]
    assert "subjective" not in str(day)
    other = world.http.post(
        f"/api/v1/patients/{patient['id']}/encounters",
        json={"coverage_id": "00000000-0000-4000-8000-000000000000"},
        headers=h,
    )
    assert other.status_code == 422 and other.json()["error"]["field"] == "coverage_id"


RX = {
    "rp_groups": [
        {
            "usage": "1日3回毎食後",
            "days": 5,
            "items": [
                {"drug_name": "アモキシシリンカプセル250mg", "dose": "3", "unit": "カプセル"},
                {"drug_name": "カルボシステイン錠500mg", "dose": "3", "unit": "錠"},
            ],
        },
        {
            "usage": "発熱時頓用",
            "days": 5,
            "items": [
                {"drug_name": "アセトアミノフェン錠200mg", "dose": "2", "unit": "錠", "per": "dose"}
            ],
        },
    ]
}


def test_prescription_rp_groups_and_contraindication(world: World, patient: dict[str, Any]) -> None:
    h = world.h("dr_aiko")
    pid = patient["id"]
    world.http.post(
        f"/api/v1/patients/{pid}/allergies",
        json={
            "category": "medication",
            "substance": "アモキシシリン",
            "is_contraindication": True,
            "verification": "confirmed",
            "reaction": "アナフィラキシー",
        },
        headers=h,
    )
    r = world.http.post(f"/api/v1/patients/{pid}/medication-requests", json=RX, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "allergy_contraindication"
    assert "アモキシシリン" in r.json()["error"]["message_ja"]
    r = world.http.post(
        f"/api/v1/patients/{pid}/medication-requests",
        json={**RX, "allergy_override_reason": "専門医と協議済み"},
        headers=h,
    )
    assert r.status_code == 201
    body = r.json()
    assert body["warnings"][0]["level"] == "contraindication"
    groups = body["medication_request"]["rp_groups"]
    assert [g["rp"] for g in groups] == [1, 2] and len(groups[0]["items"]) == 2
    current = world.http.get(f"/api/v1/patients/{pid}/medication-requests", headers=h).json()
    assert len(current) == 1
    for bad in (
        {"rp_groups": []},
        {"rp_groups": [{"usage": "x", "days": 0, "items": []}]},
        {
            "rp_groups": [
                {"usage": "x", "days": 3, "items": [{"drug_name": "x", "dose": "-1", "unit": "錠"}]}
            ]
        },
        {
            "rp_groups": [
                {
                    "usage": "x",
                    "days": 3,
                    "items": [{"drug_name": "x", "dose": "abc", "unit": "錠"}],
                }
            ]
        },
    ):
        assert (
            world.http.post(
                f"/api/v1/patients/{pid}/medication-requests", json=bad, headers=h
            ).status_code
            == 422
        )
    nurse = world.http.post(
        f"/api/v1/patients/{pid}/allergies",
        json={"category": "food", "substance": "卵", "verification": "confirmed"},
        headers=world.h("nurse_ben"),
    )
    assert nurse.json()["verification"] == "unconfirmed"  # nurses record, physicians confirm


def test_observations_flag_abnormal_values(world: World, patient: dict[str, Any]) -> None:
    h = world.h("nurse_ben")
    url = f"/api/v1/patients/{patient['id']}/observations"
    base = {
        "category": "laboratory",
        "code": "HBA1C",
        "name": "HbA1c",
        "unit": "%",
        "ref_low": "4.6",
        "ref_high": "6.2",
    }
    flags = [
        world.http.post(url, json={**base, "value": v}, headers=h).json()["abnormal_flag"]
        for v in ("7.1", "5.5", "4.0")
    ]
    assert flags == ["H", "", "L"]
    assert world.http.post(url, json={**base, "value": "NaN"}, headers=h).status_code == 422
    assert (
        world.http.post(url, json={**base, "value": "5", "unit": ""}, headers=h).status_code == 422
    )
    r = world.http.post(
        url, json={**base, "value": "5", "effective_at": "2026-01-01T10:00:00"}, headers=h
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "effective_at"
    labs = world.http.get(url, params={"code": "HBA1C"}, headers=h).json()
    assert len(labs) == 3 and all(o["value"] for o in labs)


def test_documents_are_stored_encrypted_and_checked_on_read(
    world: World, patient: dict[str, Any]
) -> None:
    h = world.h("clerk_chika")
    url = f"/api/v1/patients/{patient['id']}/documents"
    content = "紹介状（テスト）\n".encode() * 10
    r = world.http.post(
        url,
        headers=h,
        files={"file": ("letter.txt", content, "text/plain")},
        data={"doc_type": "referral", "title": "診療情報提供書"},
    )
    assert r.status_code == 201, r.text
    doc = r.json()
    files = [p for p in world.settings.documents_dir.rglob("*") if p.is_file()]
    assert len(files) == 1
    stored = files[0]
    # named by a keyed hash, not the content's SHA-256; the bytes are ciphertext
    assert doc["sha256"] not in str(stored) and "紹介状".encode() not in stored.read_bytes()
    got = world.http.get(f"/api/v1/documents/{doc['id']}/content", headers=world.h("dr_aiko"))
    assert got.content == content and got.headers["cache-control"] == "no-store"
    blob = stored.read_bytes()
    for forged in (blob[:-1] + bytes([blob[-1] ^ 1]), blob[:40]):  # flipped, truncated
        stored.write_bytes(forged)
        bad = world.http.get(f"/api/v1/documents/{doc['id']}/content", headers=world.h("dr_aiko"))
        assert bad.status_code == 500 and bad.json()["error"]["code"] == "document_corrupt"
    stored.write_bytes(blob)
    # another document's (valid) ciphertext put in this one's place: refused too
    world.http.post(
        url,
        headers=h,
        files={"file": ("b.txt", b"other letter", "text/plain")},
        data={"doc_type": "referral", "title": "b"},
    )
    other = next(p for p in world.settings.documents_dir.rglob("*") if p.is_file() and p != stored)
    stored.write_bytes(other.read_bytes())
    bad = world.http.get(f"/api/v1/documents/{doc['id']}/content", headers=world.h("dr_aiko"))
    assert bad.status_code == 500 and bad.json()["error"]["code"] == "document_corrupt"
    r = world.http.post(
        url,
        headers=h,
        files={"file": ("x.exe", b"MZ", "application/x-msdownload")},
        data={"doc_type": "referral", "title": "x"},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "file"
    r = world.http.post(
        url,
        headers=h,
        files={"file": ("x.txt", b"x", "text/plain")},
        data={"doc_type": "nonsense", "title": "x"},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "doc_type"
    assert (
        world.http.get(
            f"/api/v1/documents/{doc['id']}/content", headers=world.h("dr_chen")
        ).status_code
        == 404
    )


def test_chart_summary_and_japanese_pdf(world: World, patient: dict[str, Any]) -> None:
    h = world.h("dr_aiko")
    pid = patient["id"]
    world.http.post(
        f"/api/v1/patients/{pid}/conditions",
        json={"display_name": "高血圧症", "icd10": "I10", "is_primary": True},
        headers=h,
    )
    world.http.post(
        f"/api/v1/patients/{pid}/allergies",
        json={"category": "medication", "substance": "ペニシリン", "is_contraindication": True},
        headers=h,
    )
    world.http.post(
        f"/api/v1/patients/{pid}/conditions",
        json={
            "display_name": "急性上気道炎",
            "onset_date": "2026-01-05",
            "outcome": "cured",
            "outcome_date": "2026-01-10",
        },
        headers=h,
    )
    _note(world, pid)
    r = world.http.post(
        f"/api/v1/patients/{pid}/observations",
        json={
            "category": "vital-signs",
            "code": "8310-5",
            "name": "体温",
            "value": "37.8",
            "unit": "Cel",
            "ref_low": "35.5",
            "ref_high": "37.4",
        },
        headers=world.h("nurse_ben"),
    )
    assert r.status_code == 201, r.text
    long_text = "咳嗽が続き、夜間に増悪する。" * 40  # sentences that wrap at 。
    for _ in range(4):  # enough to run onto a second page
        world.http.post(
            f"/api/v1/patients/{pid}/notes",
            json={"subjective": long_text, "assessment": "気管支炎疑い。経過観察。"},
            headers=h,
        )
    chart = world.http.get(f"/api/v1/patients/{pid}/chart", headers=h).json()
    assert [c["display_name"] for c in chart["conditions"]] == ["高血圧症"]  # the problem list
    every = world.http.get(f"/api/v1/patients/{pid}/conditions", headers=h).json()
    assert len(every) == 2
    assert chart["allergies"][0]["is_contraindication"] is True
    assert len(chart["notes"]) == 5
    r = world.http.get(f"/api/v1/patients/{pid}/chart.pdf", headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(r.content))
    page_text = reader.pages[0].extract_text()
    for expected in (
        "カルテ要約",
        "山田 花子",
        "ヤマダ ハナコ",
        "昭和23年4月3日",
        "【薬剤禁忌】ペニシリン",
        "高血圧症",
        "最近のバイタル",
        "37.8 ℃",
        "記載者 山本 愛子",
        "【下書き・未確定】",
        "1 ページ",
    ):
        assert expected in page_text, expected
    # a second page still says whose record it is, and its number
    assert len(reader.pages) >= 2
    second = reader.pages[1].extract_text()
    assert f"患者番号 {patient['patient_number']}" in second and "山田 花子 様" in second
    assert "2 ページ" in second
    # 禁則: no line begins with a full stop or comma
    lines = [ln.strip() for page in reader.pages for ln in page.extract_text().splitlines()]
    assert not [ln for ln in lines if ln.startswith(("。", "、"))]
    assert "2026-" not in "".join(lines)  # dates as the screens write them (2026/…)
    fonts = {
        str(f.get("/BaseFont"))
        for f in (
            reader.pages[0]["/Resources"]["/Font"][k].get_object()
            for k in reader.pages[0]["/Resources"]["/Font"]
        )
    }
    assert any("IPAex" in f for f in fonts), fonts  # embedded Japanese TrueType


def test_versions_are_written_with_their_transaction_and_only_then(
    world: World, patient: dict[str, Any]
) -> None:
    """Versions are queued by write_version and inserted at the session's next flush, after
    the heads: visible to the same transaction, gone with it on rollback, never carried over
    into the session's next transaction."""
    pid = uuid.UUID(patient["id"])
    clerk = world.actors["clerk_chika"]
    with world.db.session(write=True) as s:
        head = get_patient(s, clerk, pid)
        head.city = "台東区"
        write_version(s, clerk, head, ChangeKind.UPDATED)  # queued, nothing flushed yet
        s.rollback()
        again = PatientUpdate(**{**SAMPLE_PATIENT, "city": "荒川区"}, expected_version=1)
        update_patient(s, clerk, pid, again)  # version 2 again, and only this one
        assert [v.version for v in list_versions(s, "Patient", pid)] == [1, 2]
        s.commit()
    with world.db.session(write=False) as s:
        versions = list_versions(s, "Patient", pid)
        head = s.get(Patient, pid)
        assert [v.version for v in versions] == [1, 2] and head is not None
        assert '"city":"荒川区"' in versions[1].content
        assert verify_history(versions, head) == []


@pytest.mark.sqlite_only  # SQLite's trace callback and EXPLAIN QUERY PLAN
def test_every_look_up_of_record_versions_searches_an_index(
    world: World, patient: dict[str, Any]
) -> None:
    """record_version keeps one secondary index, unique (record_type, record_id, version):
    the history, both verifications and the audit trail's check of a version's hash must each
    search it, never scan the table (which holds every version ever written)."""
    from mamori.audit.verify import verify_log
    from mamori.records.service import record_history, verify_all, verify_patient_records

    pid = uuid.UUID(patient["id"])
    _note(world, patient["id"])
    doctor = world.actors["dr_aiko"]

    def run() -> None:
        assert [v.version for v in record_history(s, doctor, "Patient", pid)] == [1]
        assert verify_patient_records(s, doctor, pid) == []
        assert verify_all(s, doctor.clinic_id)[1] == []
        assert verify_log(s, workers=1).ok

    with world.db.session(write=False) as s:
        plans = {q: p for q, p in select_plans(s, run).items() if "record_version" in q}
        s.rollback()
    # the history, the patient's chains (patient + note), verify_all's types, the audit check
    assert len(plans) >= 5, list(plans)
    for sql, plan in plans.items():
        on_versions = [p for p in plan if " record_version " in f"{p} "]
        assert on_versions, (sql, plan)
        assert all(p.startswith("SEARCH record_version USING INDEX") for p in on_versions), (
            sql,
            plan,
        )


def test_a_new_record_goes_in_at_once_and_reads_back_as_written(world: World) -> None:
    """A created record and its first version are inserted by write_version itself, on the
    driver's cursor, not by the ORM's flush: rows the same transaction created first are
    already there for its foreign keys, the object is then an ordinary loaded row, a default
    the record did not set is applied as the ORM would, the row is sealed and its chain
    verifies, and a rollback takes it all away."""
    from sqlalchemy import func, inspect, select

    from mamori.clinical.models import Document, Encounter, Observation
    from mamori.clinical.schemas import EncounterIn, ObservationIn
    from mamori.clinical.service import check_in, record_observation
    from mamori.patients.schemas import PatientIn
    from mamori.patients.service import register_patient
    from mamori.records.service import verify_patient_records

    clerk, nurse, doctor = (world.actors[n] for n in ("clerk_chika", "nurse_ben", "dr_aiko"))
    pulse = ObservationIn(
        category="vital-signs", code="8867-4", name="脈拍", value="72", unit="/min"
    )
    ids: dict[bool, dict[str, uuid.UUID]] = {}
    for keep in (False, True):
        with world.db.session(write=True) as s:
            p = register_patient(s, clerk, PatientIn(**SAMPLE_PATIENT))
            enc = check_in(s, nurse, p.id, EncounterIn())  # refers to the patient just made
            obs = record_observation(
                s, nurse, p.id, pulse.model_copy(update={"encounter_id": enc.id})
            )
            doc = Document(  # ``direction`` left to the model's default
                patient_id=p.id,
                doc_type="紹介状",
                title="診療情報提供書",
                mime_type="text/plain",
                size_bytes=1,
                sha256="0" * 64,
                status="active",
                document_date=enc.visit_date,
            )
            write_version(s, doctor, doc, ChangeKind.CREATED)
            for row in (p, enc, obs, doc):
                assert inspect(row).persistent and row.version == 1
            assert not s.new and not s.dirty  # nothing left for the ORM to flush
            assert obs.name == "脈拍" and p.family_kana == "ヤマダ" and doc.direction == "in"
            ids[keep] = {"patient": p.id, "obs": obs.id, "doc": doc.id}
            if keep:
                s.commit()
            else:
                s.rollback()
    with world.db.session(write=False) as s:
        gone = ids[False]["patient"]
        assert s.get(Patient, gone) is None and list_versions(s, "Patient", gone) == []
        kept = ids[True]
        obs_row, doc_row = s.get(Observation, kept["obs"]), s.get(Document, kept["doc"])
        assert obs_row is not None and doc_row is not None
        assert (obs_row.name, obs_row.value, doc_row.direction) == ("脈拍", "72", "in")
        visits = select(func.count()).where(Encounter.patient_id == kept["patient"])
        assert s.scalar(visits) == 1
        table = Observation.__table__.c
        stored = s.scalar(select(table.sealed).where(table.id == kept["obs"]))
        assert stored and "脈拍".encode() not in stored
        assert verify_patient_records(s, doctor, kept["patient"]) == []
        s.rollback()


def test_a_scribe_never_writes_or_finalises_alone(world: World, patient: dict[str, Any]) -> None:
    """医師事務作業補助者: every entry is a proxy entry naming a physician; no kind of note
    (nursing included) lets a scribe write without one or finalise anything."""
    pid, scribe = patient["id"], world.h("scribe_dai")
    for body in ({**NOTE, "kind": "nursing"}, {**NOTE, "kind": "soap"}, NOTE):
        r = world.http.post(f"/api/v1/patients/{pid}/notes", json=body, headers=scribe)
        assert r.status_code in (403, 422), (body, r.text)
        assert r.json()["error"]["message_ja"]
    own = str(world.actors["scribe_dai"].user_id)
    r = world.http.post(
        f"/api/v1/patients/{pid}/notes", json={**NOTE, "proxy_for_id": own}, headers=scribe
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "proxy_for_id"
    r = world.http.post(
        f"/api/v1/patients/{pid}/notes",
        json={**NOTE, "kind": "nursing", "proxy_for_id": str(world.actors["dr_aiko"].user_id)},
        headers=scribe,
    )
    assert r.status_code == 403
    # a nursing note written by the nurse: she finalises it; the scribe cannot
    nursing = _note(world, pid, "nurse_ben", kind="nursing")
    url = f"/api/v1/notes/{nursing['id']}/finalise"
    assert world.http.post(url, json={"expected_version": 1}, headers=scribe).status_code == 403
    assert (
        world.http.post(url, json={"expected_version": 1}, headers=world.h("nurse_ben")).status_code
        == 200
    )
    # a nurse still writes no SOAP note
    r = world.http.post(
        f"/api/v1/patients/{pid}/notes", json={**NOTE, "kind": "soap"}, headers=world.h("nurse_ben")
    )
    assert r.status_code == 403


def test_a_condition_update_refers_only_to_this_patients_visit(
    world: World, patient: dict[str, Any]
) -> None:
    """``encounter_id`` is checked on update as on create: another patient's visit, another
    clinic's visit and an ID that exists nowhere are the same 422; the condition is unchanged
    and the other clinic's ID is recorded as an attempt."""
    h, pid = world.h("dr_aiko"), patient["id"]
    mine = world.http.post(f"/api/v1/patients/{pid}/encounters", json={}, headers=h).json()["id"]
    other = world.http.post(
        "/api/v1/patients",
        json={**SAMPLE_PATIENT, "family_name": "別人", "family_kana": "ベツジン"},
        headers=world.h("clerk_chika"),
    ).json()["id"]
    theirs = world.http.post(f"/api/v1/patients/{other}/encounters", json={}, headers=h).json()[
        "id"
    ]
    hc = world.h("dr_chen")
    b_patient = world.http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=hc).json()["id"]
    b_visit = world.http.post(f"/api/v1/patients/{b_patient}/encounters", json={}, headers=hc)
    assert b_visit.status_code == 201, b_visit.text
    cond = world.http.post(
        f"/api/v1/patients/{pid}/conditions",
        json={"display_name": "高血圧症", "encounter_id": mine},
        headers=h,
    ).json()
    for wrong in (theirs, b_visit.json()["id"], str(uuid.uuid4())):
        r = world.http.put(
            f"/api/v1/conditions/{cond['id']}",
            json={"display_name": "高血圧症", "encounter_id": wrong, "expected_version": 1},
            headers=h,
        )
        assert r.status_code == 422 and r.json()["error"]["field"] == "encounter_id", r.text
    r = world.http.put(
        f"/api/v1/conditions/{cond['id']}",
        json={"display_name": "本態性高血圧症", "encounter_id": mine, "expected_version": 1},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["version"] == 2
    with world.db.session(write=False) as s:
        tags = [t for (t,) in s.execute(text("SELECT tag FROM audit_event ORDER BY seq"))]
    assert tags.count("access:other-clinic:attempted") == 1


@pytest.mark.parametrize("attack", ["reopened", "moved_to_another_patient"])
def test_a_write_refuses_a_head_that_is_not_its_latest_version(
    world: World, patient: dict[str, Any], attack: str
) -> None:
    """Someone with the database reopens a finalised note by flipping its status column (or
    moves it to another patient): the next write through mamori is refused, nothing is
    written, the incident is in the log and on the administrator's alert list."""
    h = world.h("dr_aiko")
    note = _note(world, patient["id"])
    r = world.http.post(
        f"/api/v1/notes/{note['id']}/finalise", json={"expected_version": 1}, headers=h
    )
    assert r.status_code == 200
    nid = note["id"].replace("-", "") if world.db.dialect == "sqlite" else note["id"]
    if attack == "reopened":
        _tamper(world, "UPDATE progress_note SET status = 'draft' WHERE id = :n", n=nid)
    else:
        other = world.http.post(
            "/api/v1/patients",
            json={**SAMPLE_PATIENT, "family_name": "別人", "family_kana": "ベツジン"},
            headers=world.h("clerk_chika"),
        ).json()["id"]
        oid = other.replace("-", "") if world.db.dialect == "sqlite" else other
        _tamper(world, "UPDATE progress_note SET patient_id = :o WHERE id = :n", o=oid, n=nid)
    edited = {**NOTE, "assessment": "書き換え", "expected_version": 2}
    r = world.http.put(f"/api/v1/notes/{note['id']}", json=edited, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "record_integrity_failed", r.text
    with world.db.session(write=False) as s:
        versions = s.execute(
            text("SELECT count(*) FROM record_version WHERE record_type = 'ProgressNote'")
        ).scalar_one()
        tags = [t for (t,) in s.execute(text("SELECT tag FROM audit_event ORDER BY seq"))]
        alerts = [k for (k,) in s.execute(text("SELECT kind FROM security_alert"))]
    assert versions == 2  # created, finalised: nothing written over the forged head
    assert tags[-1] == "system:record:integrity-failed" and "integrity" in alerts


def test_verify_checks_the_document_files_too(world: World, patient: dict[str, Any]) -> None:
    """The chains can all be intact while a document's file was altered or removed: both the
    patient's verify and the batch verify read every file behind the records."""
    from mamori.documents.store import DocumentStore
    from mamori.records.service import verify_all

    url = f"/api/v1/patients/{patient['id']}/documents"
    r = world.http.post(
        url,
        headers=world.h("clerk_chika"),
        files={"file": ("scan.txt", "保険証の写し".encode() * 20, "text/plain")},
        data={"doc_type": "scan", "title": "保険証"},
    )
    assert r.status_code == 201, r.text
    verify = f"/api/v1/patients/{patient['id']}/verify"
    assert world.http.get(verify, headers=world.h("dr_aiko")).json()["ok"]
    (stored,) = [p for p in world.settings.documents_dir.rglob("*") if p.is_file()]
    for damage in ("altered", "missing"):
        if damage == "altered":
            blob = stored.read_bytes()
            stored.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
        else:
            stored.unlink()
        result = world.http.get(verify, headers=world.h("dr_aiko")).json()
        assert not result["ok"]
        assert [p["record_type"] for p in result["problems"]] == ["Document"], result
        with world.db.session(write=True) as s:
            _, problems = verify_all(s, store=DocumentStore(world.settings.documents_dir, world.db))
            s.rollback()
        assert [p.record_type for p in problems] == ["Document"]


def test_a_single_record_is_not_served_from_a_head_that_is_not_its_latest_version(
    world: World, patient: dict[str, Any]
) -> None:
    """A note moved to another patient, or a registration whose status column was flipped,
    is refused when read on its own (note, FHIR read, patient page) — logged as an integrity
    incident — instead of being served as if nothing had happened."""
    h = world.h("dr_aiko")
    note = _note(world, patient["id"])
    other = world.http.post(
        "/api/v1/patients",
        json={**SAMPLE_PATIENT, "family_name": "別人", "family_kana": "ベツジン"},
        headers=world.h("clerk_chika"),
    ).json()["id"]
    sqlite = world.db.dialect == "sqlite"

    def spelled(value: str) -> str:
        return value.replace("-", "") if sqlite else value

    _tamper(
        world,
        "UPDATE progress_note SET patient_id = :o WHERE id = :n",
        o=spelled(other),
        n=spelled(note["id"]),
    )
    for url in (f"/api/v1/notes/{note['id']}", f"/fhir/r4/DocumentReference/{note['id']}"):
        r = world.http.get(url, headers=h)
        assert r.status_code == 409, (url, r.text)
    _tamper(world, "UPDATE patient SET status = 'deceased' WHERE id = :p", p=spelled(patient["id"]))
    r = world.http.get(f"/api/v1/patients/{patient['id']}", headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "record_integrity_failed"
    with world.db.session(write=False) as s:
        tags = [t for (t,) in s.execute(text("SELECT tag FROM audit_event ORDER BY seq"))]
    assert tags.count("system:record:integrity-failed") == 3


def test_lists_and_the_chart_refuse_a_head_that_is_not_its_latest_version(
    world: World, patient: dict[str, Any]
) -> None:
    """A retracted allergy brought back by flipping its status column, and a note moved onto
    another patient, are refused by the chart and the lists that would show them (one check
    per kind over plaintext columns), not shown as if they were the record."""
    h, pid = world.h("dr_aiko"), patient["id"]
    sqlite = world.db.dialect == "sqlite"

    def spelled(value: str) -> str:
        return value.replace("-", "") if sqlite else value

    allergy = world.http.post(
        f"/api/v1/patients/{pid}/allergies",
        json={"category": "medication", "substance": "ペニシリン"},
        headers=h,
    ).json()
    r = world.http.post(
        f"/api/v1/records/AllergyIntolerance/{allergy['id']}/entered-in-error",
        json={"reason": "別の患者の記録", "expected_version": 1},
        headers=h,
    )
    assert r.status_code == 200, r.text
    for url in (f"/api/v1/patients/{pid}/chart", f"/api/v1/patients/{pid}/allergies"):
        assert world.http.get(url, headers=h).status_code == 200
    _tamper(
        world,
        "UPDATE allergy_intolerance SET status = 'active' WHERE id = :a",
        a=spelled(allergy["id"]),
    )
    for url in (f"/api/v1/patients/{pid}/chart", f"/api/v1/patients/{pid}/allergies"):
        r = world.http.get(url, headers=h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "record_integrity_failed"
        assert "ペニシリン" not in r.text
    other = world.http.post(
        "/api/v1/patients",
        json={**SAMPLE_PATIENT, "family_name": "別人", "family_kana": "ベツジン"},
        headers=world.h("clerk_chika"),
    ).json()["id"]
    note = _note(world, pid)
    _tamper(
        world,
        "UPDATE progress_note SET patient_id = :o WHERE id = :n",
        o=spelled(other),
        n=spelled(note["id"]),
    )
    r = world.http.get(f"/api/v1/patients/{other}/notes", headers=h)
    assert r.status_code == 409, r.text
    with world.db.session(write=False) as s:
        tags = [t for (t,) in s.execute(text("SELECT tag FROM audit_event ORDER BY seq"))]
        alerts = [k for (k,) in s.execute(text("SELECT kind FROM security_alert"))]
    assert tags.count("system:record:integrity-failed") == 3 and "integrity" in alerts


def test_a_scribes_diagnosis_waits_for_a_physician(world: World, patient: dict[str, Any]) -> None:
    """医師事務作業補助者 records a diagnosis: it is kept, shown as awaiting a physician (in the
    chart, its PDF and FHIR), and becomes the clinic's diagnosis only when a physician
    confirms it; a scribe's later change is held again."""
    pid = patient["id"]
    r = world.http.post(
        f"/api/v1/patients/{pid}/conditions",
        json={"display_name": "2型糖尿病", "icd10": "E11"},
        headers=world.h("scribe_dai"),
    )
    assert r.status_code == 201 and r.json()["status"] == "unconfirmed", r.text
    cid = r.json()["id"]
    chart = world.http.get(f"/api/v1/patients/{pid}/chart", headers=world.h("dr_aiko")).json()
    assert [c["status"] for c in chart["conditions"]] == ["unconfirmed"]
    fhir = world.http.get(f"/fhir/r4/Condition/{cid}", headers=world.h("dr_aiko")).json()
    assert fhir["verificationStatus"]["coding"][0]["code"] == "unconfirmed"
    confirm = f"/api/v1/conditions/{cid}/confirm"
    body = {"expected_version": 1}
    r = world.http.post(confirm, json=body, headers=world.h("scribe_dai"))
    assert r.status_code == 403  # a scribe never confirms, not even their own entry
    assert world.http.post(confirm, json=body, headers=world.h("nurse_ben")).status_code == 403
    r = world.http.post(confirm, json=body, headers=world.h("dr_aiko"))
    assert r.status_code == 200 and r.json()["status"] == "active" and r.json()["version"] == 2
    assert (
        world.http.post(
            confirm, json={"expected_version": 2}, headers=world.h("dr_aiko")
        ).status_code
        == 409
    )
    history = world.http.get(
        f"/api/v1/records/Condition/{cid}/history", headers=world.h("dr_aiko")
    ).json()
    assert [v["change"] for v in history] == ["created", "confirmed"]
    assert history[1]["changed_by_id"] == str(world.actors["dr_aiko"].user_id)
    r = world.http.put(
        f"/api/v1/conditions/{cid}",
        json={"display_name": "2型糖尿病（腎症あり）", "icd10": "E11", "expected_version": 2},
        headers=world.h("scribe_dai"),
    )
    assert r.status_code == 200 and r.json()["status"] == "unconfirmed"


def test_a_nurses_draft_order_waits_for_a_physician_and_is_counted(
    world: World, patient: dict[str, Any]
) -> None:
    """A nurse's prescription is a draft: shown in the chart as awaiting a physician, counted
    on the physicians' start page, and issued only when a physician confirms it (who then
    stands as its prescriber; the nurse stays recorded as the one who entered it)."""
    pid = patient["id"]
    rx = {
        "dispensing": "outside",
        "rp_groups": [
            {
                "usage": "1日3回毎食後",
                "days": 5,
                "items": [{"drug_name": "カロナール錠200mg", "dose": "1", "unit": "錠"}],
            }
        ],
    }
    r = world.http.post(
        f"/api/v1/patients/{pid}/medication-requests", json=rx, headers=world.h("nurse_ben")
    )
    assert r.status_code == 201, r.text
    order = r.json()["medication_request"]
    assert order["status"] == "draft"
    chart = world.http.get(f"/api/v1/patients/{pid}/chart", headers=world.h("dr_aiko")).json()
    assert [m["status"] for m in chart["medications"]] == ["draft"]
    with world.db.session(write=True) as s:
        from mamori.clinical.service import awaiting_confirmation

        waiting = awaiting_confirmation(s, world.actors["dr_aiko"])
        assert [(a.patient_id, a.draft_orders) for a in waiting] == [(uuid.UUID(pid), 1)]
        assert awaiting_confirmation(s, world.actors["nurse_ben"]) == []
        s.commit()
    confirm = f"/api/v1/medication-requests/{order['id']}/confirm"
    body = {"expected_version": 1}
    assert world.http.post(confirm, json=body, headers=world.h("nurse_ben")).status_code == 403
    r = world.http.post(confirm, json=body, headers=world.h("dr_aiko"))
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    assert r.json()["prescriber_id"] == str(world.actors["dr_aiko"].user_id)
    assert (
        world.http.post(
            confirm, json={"expected_version": 2}, headers=world.h("dr_aiko")
        ).status_code
        == 409
    )
