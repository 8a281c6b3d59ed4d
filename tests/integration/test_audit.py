"""The audit trail: what is recorded, that it is recorded before data leaves, that the
database refuses to change it, and that `verify_log` finds every kind of tampering."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from tests.conftest import SAMPLE_PATIENT, World, drop_insert_only_triggers

from mamori.audit.models import AuditEvent, AuditEventPatient
from mamori.audit.trail import AuditMissing
from mamori.audit.verify import verify_log
from mamori.patients.models import Patient
from mamori.records.versioning import RecordVersion

SECRET_SENTENCE = "隣の家の犬に噛まれたと本人が話した"


def _events(world: World) -> list[dict[str, Any]]:
    with world.db.session(write=False) as s:
        return [json.loads(b) for b in s.scalars(select(AuditEvent.body).order_by(AuditEvent.seq))]


def _sql(world: World, sql: str, **params: Any) -> None:
    with world.db.engine.begin() as conn:
        conn.execute(text(sql), params)


def test_reads_and_writes_are_recorded_with_ids_not_text(
    world: World, patient: dict[str, Any]
) -> None:
    pid = patient["id"]
    h = world.h("dr_aiko")
    note = world.http.post(
        f"/api/v1/patients/{pid}/notes",
        headers=h,
        json={"subjective": SECRET_SENTENCE, "plan": "経過観察"},
    ).json()
    world.http.post(f"/api/v1/notes/{note['id']}/finalise", json={"expected_version": 1}, headers=h)
    before = len(_events(world))
    chart = world.http.get(f"/api/v1/patients/{pid}/chart", headers=h)
    assert chart.status_code == 200
    events = _events(world)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    new = events[before:]
    assert [e["tag"] for e in new] == ["patient:chart:viewed"]  # one event per chart open
    assert new[0]["patients"] == [pid]
    assert new[0]["actor"]["role"] == "physician"
    assert new[0]["actor"]["user"] == str(world.actors["dr_aiko"].user_id)
    assert new[0]["actor"]["ip"] == "testclient"
    tags = [e["tag"] for e in events]
    assert tags[:3] == ["record:created", "record:created", "record:finalised"]
    with world.db.session(write=False) as s:
        versions = {
            (v.record_id.hex, v.version): v.content_hash for v in s.scalars(select(RecordVersion))
        }
    for e in events:
        for r in e.get("records", []):
            assert versions[(r["id"].replace("-", ""), r["version"])] == r["hash"]
    everything = json.dumps(events, ensure_ascii=False)
    for secret in (
        SECRET_SENTENCE,
        SAMPLE_PATIENT["family_name"],
        SAMPLE_PATIENT["phone"],
        world.tokens["dr_aiko"],
    ):
        assert secret not in everything


def test_search_records_every_patient_shown(world: World) -> None:
    h = world.h("clerk_chika")
    ids = [
        world.http.post(
            "/api/v1/patients",
            json={**SAMPLE_PATIENT, "given_name": g, "register_anyway": True},  # 同姓同名
            headers=h,
        ).json()["id"]
        for g in ("一", "二")
    ]
    world.http.get("/api/v1/patients", params={"kana": "ヤマダ"}, headers=h)
    last = _events(world)[-1]
    assert last["tag"] == "patient:list:viewed" and sorted(last["patients"]) == sorted(ids)


def test_refused_requests_record_nothing(world: World, patient: dict[str, Any]) -> None:
    before = len(_events(world))
    world.http.post(
        "/api/v1/patients",
        json={**SAMPLE_PATIENT, "birth_date": "2999-01-01"},
        headers=world.h("clerk_chika"),
    )
    world.http.get(f"/api/v1/patients/{patient['id']}")  # no token
    assert len(_events(world)) == before
    # another clinic's patient: answered as "not found", and the attempt itself is recorded
    # (without the patient's ID, which that clinic's staff must not learn about)
    r = world.http.get(f"/api/v1/patients/{patient['id']}", headers=world.h("dr_chen"))
    assert r.status_code == 404
    new = _events(world)[before:]
    assert [e["tag"] for e in new] == ["access:other-clinic:attempted"]
    assert new[0]["patients"] == [] and new[0]["outcome"] == "failure"
    assert new[0]["actor"]["user"] == str(world.actors["dr_chen"].user_id)


def test_no_data_leaves_without_its_audit_event(world: World, patient: dict[str, Any]) -> None:
    if world.db.dialect == "postgresql":
        _sql(
            world,
            "CREATE FUNCTION block() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit store down'; END $$",
        )
        _sql(
            world,
            "CREATE TRIGGER block BEFORE INSERT ON audit_event "
            "FOR EACH ROW EXECUTE FUNCTION block()",
        )
    else:
        _sql(
            world,
            "CREATE TRIGGER block BEFORE INSERT ON audit_event "
            "BEGIN SELECT RAISE(ABORT, 'audit store down'); END",
        )
    r = world.http.get(f"/api/v1/patients/{patient['id']}/chart", headers=world.h("dr_aiko"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
    assert SAMPLE_PATIENT["family_name"] not in r.text
    again = {**SAMPLE_PATIENT, "register_anyway": True}
    r = world.http.post("/api/v1/patients", json=again, headers=world.h("clerk_chika"))
    assert r.status_code == 503
    with world.db.session(write=False) as s:
        assert len(s.scalars(select(Patient)).all()) == 1  # the write was not kept either


def test_the_database_refuses_to_change_the_log(world: World, patient: dict[str, Any]) -> None:
    for sql in (
        "UPDATE audit_event SET tag = 'x'",
        "DELETE FROM audit_event",
        "UPDATE record_version SET content_hash = 'x'",
        "UPDATE record_version SET version = version + 1",
        "DELETE FROM record_version",
    ):
        with pytest.raises(DBAPIError, match="insert-only"):
            _sql(world, sql)
    if world.db.dialect == "postgresql":
        with pytest.raises(DBAPIError, match="insert-only"):
            _sql(world, "TRUNCATE audit_event")


def _build_log(world: World, patient: dict[str, Any]) -> None:
    h = world.h("dr_aiko")
    for i in range(4):
        world.http.post(
            f"/api/v1/patients/{patient['id']}/notes", headers=h, json={"subjective": f"記載{i}"}
        )
        world.http.get(f"/api/v1/patients/{patient['id']}/chart", headers=h)
    with world.db.session(write=False) as s:
        assert verify_log(s).ok


def _verify(world: World, workers: int = 1) -> Any:
    with world.db.session(write=False) as s:
        return verify_log(s, workers=workers)


@pytest.mark.parametrize(
    "attack",
    [
        "edit",
        "delete",
        "insert",
        "reorder",
        "truncate",
        "version",
        "leaf_and_chain",
        "hide",
        "frame",
        "orphan",
        "moved_in_time",
        "relabelled",
        "orphan_below",
        "user_forged",
    ],
)
@pytest.mark.parametrize(("batch", "workers"), [(5000, 1), (3, 1), (2, 2)])
def test_verify_finds_tampering(
    world: World, patient: dict[str, Any], attack: str, batch: int, workers: int, monkeypatch: Any
) -> None:
    # batch 3: the log is read in many chunks, so an attack lands inside a chunk, on its edge
    # or past the end, and the per-chunk index comparison and record look-ups are crossed;
    # workers 2: ranges of 5 events checked in two worker processes (each reading 2 at a time)
    monkeypatch.setattr("mamori.audit.verify.BATCH", batch)
    monkeypatch.setattr("mamori.audit.verify.SEGMENT", 5)
    _build_log(world, patient)
    drop_insert_only_triggers(world.db.engine)
    with world.db.session(write=False) as s:
        size = len(s.scalars(select(AuditEvent.seq)).all())
        body5 = s.scalar(select(AuditEvent.body).where(AuditEvent.seq == 5))
    assert body5 is not None
    if attack == "edit":  # change who did it, keep the stored hashes
        forged = body5.replace(b'"physician"', b'"nurse"')
        assert forged != body5
        _sql(world, "UPDATE audit_event SET body = :b WHERE seq = 5", b=forged)
        expected = 5
    elif attack == "delete":
        _sql(world, "DELETE FROM audit_event WHERE seq = 5")
        expected = 5
    elif attack == "insert":  # shift later events up and slip one in at 5
        for seq in range(size, 4, -1):
            _sql(world, "UPDATE audit_event SET seq = :n WHERE seq = :o", n=seq + 1, o=seq)
        _sql(
            world,
            "INSERT INTO audit_event SELECT 5, recorded_at, tag, body, leaf_hash, "
            "chain_hash FROM audit_event WHERE seq = 4",
        )
        expected = 5
    elif attack == "reorder":
        _sql(world, "UPDATE audit_event SET seq = -1 WHERE seq = 5")
        _sql(world, "UPDATE audit_event SET seq = 5 WHERE seq = 6")
        _sql(world, "UPDATE audit_event SET seq = 6 WHERE seq = -1")
        expected = 5
    elif attack == "truncate":
        _sql(world, "DELETE FROM audit_event WHERE seq > :n", n=size - 2)
        expected = size - 1
    elif attack == "hide":  # leave the event, remove it from "who opened this patient"
        _sql(world, "DELETE FROM audit_event_patient WHERE seq = 5")
        expected = 5
    elif attack == "frame":  # make event 5 appear under another patient's accesses
        _sql(
            world,
            "UPDATE audit_event_patient SET patient_id = :p WHERE seq = 5",
            p=uuid.uuid4() if world.db.dialect == "postgresql" else uuid.uuid4().hex,
        )
        expected = 5
    elif attack == "orphan":  # an index row for an event that does not exist
        _sql(
            world,
            "INSERT INTO audit_event_user (seq, user_id) VALUES (:s, :u)",
            s=size + 7,
            u=uuid.uuid4() if world.db.dialect == "postgresql" else uuid.uuid4().hex,
        )
        expected = size + 7
    elif attack == "orphan_below":  # an index row numbered before the log begins
        _sql(
            world,
            "INSERT INTO audit_event_patient (seq, patient_id) VALUES (0, :p)",
            p=uuid.uuid4() if world.db.dialect == "postgresql" else uuid.uuid4().hex,
        )
        expected = 0
    elif attack == "moved_in_time":  # a chart view dated 2019 in the column reviews read
        _sql(
            world,
            "UPDATE audit_event SET recorded_at = :t WHERE seq = 4",
            t=dt.datetime(2019, 4, 1, 9, 0, tzinfo=dt.UTC)
            if world.db.dialect == "postgresql"
            else "2019-04-01 09:00:00.000000",
        )
        expected = 4
    elif attack == "relabelled":  # the same view passed off as a system event
        _sql(world, "UPDATE audit_event SET tag = 'system:audit:verified' WHERE seq = 4")
        expected = 4
    elif attack == "user_forged":  # blame another staff member in "what did this user open"
        _sql(
            world,
            "UPDATE audit_event_user SET user_id = :u WHERE seq = 4",
            u=uuid.uuid4() if world.db.dialect == "postgresql" else uuid.uuid4().hex,
        )
        expected = 4
    elif attack == "version":  # rewrite a past note *and* its own hash chain entry
        _sql(
            world,
            "UPDATE record_version SET content_hash = :h WHERE version = 1 AND "
            "record_type = 'ProgressNote'",
            h="0" * 64,
        )
        expected = 2  # seq 1 registered the patient; seq 2 logged the first note's version
    else:  # rewrite an event and recompute its leaf and chain: later links break
        import hashlib

        from mamori.audit import merkle

        forged = body5.replace(b'"physician"', b'"nurse"')
        with world.db.session(write=False) as s:
            prev = s.scalar(select(AuditEvent.chain_hash).where(AuditEvent.seq == 4))
        assert prev is not None
        chain = hashlib.sha256(prev + hashlib.sha256(forged).digest()).digest()
        _sql(
            world,
            "UPDATE audit_event SET body = :b, leaf_hash = :l, chain_hash = :c WHERE seq = 5",
            b=forged,
            l=merkle.leaf_hash(forged),
            c=chain,
        )
        expected = 6
    report = _verify(world, workers)
    assert not report.ok
    assert report.first_bad == expected, report.problems


def test_safety_net_fails_unaudited_access(world: World, patient: dict[str, Any]) -> None:
    session = world.db.session(write=False)
    try:
        session.scalars(select(Patient)).all()  # straight to the table, around the gate
        with pytest.raises(AuditMissing):
            session.commit()
    finally:
        session.close()


def test_system_events_with_a_records_count_verify(world: World, patient: dict[str, Any]) -> None:
    from mamori.records.service import verify_all

    with world.db.session(write=True) as s:
        verify_all(s)  # logs {"records": <count>} in its detail
        s.commit()
    report = _verify(world)
    assert report.ok, report.problems


def test_fhir_auditevent_export_parses_and_is_balp_shaped(
    world: World, patient: dict[str, Any], tmp_path: Any
) -> None:
    from fhir.resources.R4B import get_fhir_model_class

    from mamori.audit.fhir import export_ndjson

    h = world.h("dr_aiko")
    note = world.http.post(
        f"/api/v1/patients/{patient['id']}/notes", headers=h, json={"subjective": SECRET_SENTENCE}
    ).json()
    world.http.post(f"/api/v1/notes/{note['id']}/finalise", json={"expected_version": 1}, headers=h)
    world.http.get(f"/api/v1/patients/{patient['id']}/chart", headers=h)
    world.http.get("/api/v1/patients", params={"kana": "ヤマダ"}, headers=h)
    out = tmp_path / "audit.ndjson"
    with world.db.session(write=False) as s:
        count = export_ndjson(s, out, world.settings.instance_id)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert count == len(lines) == len(_events(world))
    model = get_fhir_model_class("AuditEvent")
    events = [json.loads(line) for line in lines]
    for e in events:
        model.model_validate(e)
    actions = {e["extension"][1]["valueString"]: e["action"] for e in events}
    assert actions["record:created"] == "C" and actions["record:finalised"] == "U"
    assert actions["patient:chart:viewed"] == "R" and actions["patient:list:viewed"] == "E"
    read = next(e for e in events if e["action"] == "R")
    assert read["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"
    ]
    assert read["entity"][0]["what"]["reference"] == f"Patient/{patient['id']}"
    assert SECRET_SENTENCE not in out.read_text(encoding="utf-8")


def test_concurrent_reads_are_all_logged_before_release(
    world: World, patient: dict[str, Any]
) -> None:
    import threading

    statuses: list[int] = []
    lock = threading.Lock()

    def reader() -> None:
        for _ in range(5):
            r = world.http.get(
                f"/api/v1/patients/{patient['id']}/chart", headers=world.h("dr_aiko")
            )
            with lock:
                statuses.append(r.status_code)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * 40
    views = [e for e in _events(world) if e["tag"] == "patient:chart:viewed"]
    assert len(views) == 40
    appender = world.db.audit_appender
    assert appender is not None and appender.requests >= 40
    with world.db.session(write=False) as s:
        assert verify_log(s).ok


@pytest.mark.parametrize(("batch", "workers"), [(5000, 1), (3, 1), (2, 2)])
def test_a_moved_index_row_is_named_as_moved(
    world: World, patient: dict[str, Any], batch: int, workers: int, monkeypatch: Any
) -> None:
    """An index row moved to another existing event is reported there as not matching the
    event it names, never as naming an event the log lacks."""
    monkeypatch.setattr("mamori.audit.verify.BATCH", batch)
    monkeypatch.setattr("mamori.audit.verify.SEGMENT", 5)
    for _ in range(3):
        world.http.get(f"/api/v1/patients/{patient['id']}", headers=world.h("dr_aiko"))
    other = {**SAMPLE_PATIENT, "family_name": "別人", "family_kana": "ベツジン"}
    world.http.post("/api/v1/patients", json=other, headers=world.h("clerk_chika"))
    drop_insert_only_triggers(world.db.engine)
    pid = uuid.UUID(patient["id"])
    with world.db.session(write=False) as s:
        named = {
            seq
            for (seq,) in s.execute(
                select(AuditEventPatient.seq).where(AuditEventPatient.patient_id == pid)
            )
        }
        events = [seq for (seq,) in s.execute(select(AuditEvent.seq).order_by(AuditEvent.seq))]
    source = min(named)
    target = next(seq for seq in events if seq not in named and seq > 1)  # exists, names another
    spelled = pid if world.db.dialect == "postgresql" else pid.hex
    _sql(
        world,
        "UPDATE audit_event_patient SET seq = :n WHERE seq = :o AND patient_id = :p",
        n=target,
        o=source,
        p=spelled,
    )
    report = _verify(world, workers)
    assert not report.ok
    messages = " | ".join(p for _, p in report.problems)
    assert "lacks" not in messages, messages
