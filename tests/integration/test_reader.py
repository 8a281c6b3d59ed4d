"""Read views (``mamori.records.reader``): the chart's lists read past the ORM must be the ORM's
rows exactly, fail on a bad ciphertext exactly like it, never be saved, and stay in sight of the
audit safety net. And the planner statistics that keep those reads on the patient's index."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from tests.conftest import World
from tests.support.plans import select_plans

from mamori.audit.trail import AuditMissing
from mamori.authz.actor import Actor
from mamori.chart.service import open_chart
from mamori.clinic.models import Clinic
from mamori.clinical import notes as clinical_notes
from mamori.clinical import service as clinical
from mamori.clinical.models import (
    AllergyIntolerance,
    Condition,
    MedicationRequest,
    Observation,
    ProgressNote,
)
from mamori.clinical.schemas import NoteIn
from mamori.crypto.sealed import sealed_fields
from mamori.patients.models import Coverage, Patient
from mamori.patients.service import list_coverages
from mamori.records.reader import read_views
from mamori.records.service import mark_entered_in_error
from mamori.synth.generator import generate

FAR_PAST = dt.date(2000, 1, 1)


def _fill(world: World) -> None:
    with world.db.session(write=True) as s:
        clinic = s.get(Clinic, world.actors["dr_aiko"].clinic_id)
        assert clinic is not None
        generate(s, clinic, "XS", seed=11)
        s.commit()


def _values(row: Any) -> dict[str, Any]:
    """Every column and every sealed field of a row, with its Python type."""
    model = type(row)
    names = [c.key for c in model.__mapper__.column_attrs] + list(sealed_fields(model))
    return {n: (getattr(row, n), type(getattr(row, n))) for n in names}


def _lists(s: Session, actor: Actor, pid: uuid.UUID) -> dict[type, list[Any]]:
    return {
        Coverage: list(list_coverages(s, actor, pid)),
        AllergyIntolerance: list(clinical.list_allergies(s, actor, pid)),
        Condition: list(clinical.list_conditions(s, actor, pid)),
        MedicationRequest: list(clinical.current_medications(s, actor, pid, today=FAR_PAST)),
        ProgressNote: list(clinical_notes.list_notes(s, actor, pid, limit=1000)),
        Observation: list(clinical.list_observations(s, actor, pid, limit=10_000)),
    }


def test_views_are_the_orm_rows_exactly(world: World) -> None:
    """Every list the chart uses, for every synthetic patient: the same rows in the same order,
    every column and sealed field equal in value and type to what the ORM loads."""
    _fill(world)
    actor = world.actors["dr_aiko"]
    seen: dict[type, int] = {}
    with world.db.session(write=False) as s:
        pids = s.scalars(select(Patient.id).where(Patient.clinic_id == actor.clinic_id)).all()
        assert len(pids) == 40
        for pid in pids:
            for model, views in _lists(s, actor, pid).items():
                orm = {r.id: r for r in s.scalars(select(model).where(model.patient_id == pid))}
                for view in views:
                    assert type(view) is model and view not in s  # a view, not a session row
                    assert _values(view) == _values(orm[view.id]), (model, view.id)
                seen[model] = seen.get(model, 0) + len(views)
        s.rollback()
    # the data really exercised every list (a vacuous pass would compare nothing)
    assert all(seen.get(m, 0) > 0 for m in (Coverage, Condition, ProgressNote, Observation))
    assert seen.get(MedicationRequest, 0) > 0 and seen.get(AllergyIntolerance, 0) > 0


def test_lists_keep_their_filters_and_order(world: World) -> None:
    """Newest note first, a limit honoured, retracted notes left out unless asked for."""
    _fill(world)
    actor = world.actors["dr_aiko"]
    with world.db.session(write=True) as s:
        pid = s.scalars(
            select(ProgressNote.patient_id).group_by(ProgressNote.patient_id).limit(1)
        ).one()
        notes = clinical_notes.list_notes(s, actor, pid, limit=1000)
        assert len(notes) >= 2
        times = [n.created_at for n in notes]
        assert times == sorted(times, reverse=True)
        assert [n.id for n in clinical_notes.list_notes(s, actor, pid, limit=1)] == [notes[0].id]
        mark_entered_in_error(
            s,
            actor,
            "ProgressNote",
            notes[0].id,
            reason="別患者に記載",
            expected_version=notes[0].version,
        )
        kept = clinical_notes.list_notes(s, actor, pid, limit=1000)
        assert [n.id for n in kept] == [n.id for n in notes[1:]]
        everything = clinical_notes.list_notes(s, actor, pid, limit=1000, include_retracted=True)
        assert len(everything) == len(notes)
        s.rollback()


def test_a_moved_ciphertext_stops_the_chart(world: World, patient: dict[str, Any]) -> None:
    h = world.h("dr_aiko")
    ids = []
    for text in ("一つ目の記載", "二つ目の記載"):
        r = world.http.post(
            f"/api/v1/patients/{patient['id']}/notes",
            json={"subjective": text, "objective": "", "assessment": "", "plan": ""},
            headers=h,
        )
        assert r.status_code == 201, r.text
        ids.append(uuid.UUID(r.json()["id"]))
    table = ProgressNote.__table__
    with world.db.engine.begin() as conn:
        blob = conn.execute(select(table.c.sealed).where(table.c.id == ids[0])).scalar_one()
        conn.execute(update(table).where(table.c.id == ids[1]).values(sealed=blob))
    base = f"/api/v1/patients/{patient['id']}"
    for url in (f"{base}/chart", f"{base}/notes"):
        r = world.http.get(url, headers=h)
        assert r.status_code == 500 and r.json()["error"]["code"] == "ciphertext_invalid", url
        assert "一つ目" not in r.text and "二つ目" not in r.text


def _one_note(world: World, patient: dict[str, Any]) -> tuple[Actor, uuid.UUID]:
    """The sample patient with one draft note (S: 咳), written through the service."""
    actor = world.actors["dr_aiko"]
    pid = uuid.UUID(patient["id"])
    with world.db.session(write=True) as s:
        clinical_notes.write_note(
            s, actor, pid, NoteIn(subjective="咳", objective="", assessment="", plan="")
        )
        s.commit()
    return actor, pid


def test_views_are_never_saved(world: World, patient: dict[str, Any]) -> None:
    actor, pid = _one_note(world, patient)
    with world.db.session(write=True) as s:
        (note,) = clinical_notes.list_notes(s, actor, pid)
        note.subjective = "書き換え"
        note.status = "final"
        s.commit()  # nothing to write: the view is not in the session
    with world.db.session(write=False) as s:
        (again,) = clinical_notes.list_notes(s, actor, pid)
        assert again.subjective == "咳" and again.status == "draft"
        s.rollback()
    with world.db.session(write=True) as s:
        (note,) = clinical_notes.list_notes(s, actor, pid)
        s.add(note)  # as a new row: refused by the primary key
        with pytest.raises(IntegrityError):
            s.flush()
        s.rollback()


def test_reads_past_the_orm_still_need_an_audit_event(
    world: World, patient: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net: a unit of work that read patient rows (here without the gate, as a
    careless new service might) and recorded nothing fails at commit."""
    monkeypatch.setenv("MAMORI_ENV", "test")
    _actor, pid = _one_note(world, patient)
    with world.db.session(write=False) as s:
        rows = read_views(s, ProgressNote, [("patient_id", "=", pid)])
        assert len(rows) == 1
        with pytest.raises(AuditMissing):
            s.commit()


@pytest.mark.parametrize(
    ("where", "order_by"),
    [
        ([("patient_id; DROP TABLE patient", "=", 1)], []),
        ([("patient_id", "LIKE", "%")], []),
        ([("patient_id", "=", uuid.uuid4())], [("no_such_column", True)]),
    ],
)
def test_unknown_columns_and_operators_are_refused(
    world: World, where: list[Any], order_by: list[Any]
) -> None:
    with world.db.session(write=False) as s, pytest.raises(ValueError, match=r"column|operator"):
        read_views(s, ProgressNote, where, order_by=order_by)


def _plans(world: World, actor: Actor, pid: uuid.UUID) -> list[str]:
    """The query plan of every statement a chart open runs, ORM and driver cursor alike."""
    with world.db.session(write=False) as s:
        plans = select_plans(s, lambda: open_chart(s, actor, pid))
        s.rollback()
    assert len(plans) >= 7, list(plans)  # patient, restriction and the chart's sections
    return [line for plan in plans.values() for line in plan]


@pytest.mark.sqlite_only  # PostgreSQL's autovacuum keeps its own statistics
def test_planner_statistics_keep_chart_reads_on_the_patient(world: World) -> None:
    """A clinic's coverages asked for one patient must not walk the whole clinic: without
    statistics SQLite cannot tell ``ix_coverage_clinic_id`` (every row) from the patient's
    index. ``refresh_statistics`` (run by the server and after bulk loads) fixes the plan."""
    _fill(world)
    actor = world.actors["dr_aiko"]
    with world.db.session(write=False) as s:
        pid = s.scalars(select(Coverage.patient_id).limit(1)).one()
        s.rollback()
    world.db.refresh_statistics()
    plans = [p for p in _plans(world, actor, pid) if p.startswith(("SEARCH", "SCAN"))]
    assert not any("clinic_id" in p for p in plans), "\n".join(plans)
    assert "SEARCH coverage USING INDEX ix_coverage_patient_id (patient_id=?)" in plans


@pytest.mark.sqlite_only  # PostgreSQL's autovacuum keeps its own statistics
def test_the_server_refreshes_statistics_when_it_starts(world: World) -> None:
    from fastapi.testclient import TestClient

    from mamori.app import create_app

    _fill(world)

    def analysed() -> int:
        with world.db.engine.connect() as conn:
            stat = conn.exec_driver_sql(
                "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
            ).scalar_one()
            if not stat:
                return 0
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'coverage'"
                ).scalar_one()
            )

    assert analysed() == 0
    with TestClient(create_app(world.settings, world.db)) as client:  # runs the lifespan
        assert client.get("/healthz").status_code == 200
    assert analysed() > 0
