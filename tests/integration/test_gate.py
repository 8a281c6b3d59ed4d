"""The gate's admission of a chart is passed on to its sections, and only there: one tenancy and
restriction check per chart, each section's own permission still checked, nothing reused
outside the transaction or for another person. Clinic rows that are not patient data come
from one loader that answers another clinic's row like a missing one and records the attempt.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from tests.conftest import World

from mamori.audit.models import AuditEvent
from mamori.auth.models import SecurityAlert
from mamori.authz import gate, restricted
from mamori.authz.actor import Intent
from mamori.authz.roles import Role
from mamori.chart.service import open_chart
from mamori.clinic.models import StaffUser
from mamori.clinical import notes as clinical_notes
from mamori.errors import Forbidden, NotFound


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every restriction check the gate makes, by kind."""
    seen: list[str] = []
    real = restricted.check

    def counting(session: Any, actor: Any, patient_id: uuid.UUID, what: str) -> None:
        seen.append(what)
        real(session, actor, patient_id, what)

    monkeypatch.setattr(restricted, "check", counting)
    return seen


def test_a_chart_admits_its_patient_once(
    world: World, patient: dict[str, Any], checks: list[str]
) -> None:
    pid = uuid.UUID(patient["id"])
    actor = world.actors["dr_aiko"]
    with world.db.session(write=False) as s:
        chart = open_chart(s, actor, pid)
        assert chart.patient.id == pid
        assert checks == ["chart"]  # not once more for each of the seven sections
        s.rollback()


def test_a_section_still_needs_its_own_permission(
    world: World, patient: dict[str, Any], checks: list[str]
) -> None:
    pid = uuid.UUID(patient["id"])
    actor = world.actors["dr_aiko"]
    no_notes = dataclasses.replace(
        actor, permissions=actor.granted - {gate.permission_for("ProgressNote", False)}
    )
    with world.db.session(write=False) as s:
        open_chart(s, no_notes, pid)
        with pytest.raises(Forbidden):
            clinical_notes.list_notes(s, no_notes, pid, limit=5)
        s.rollback()


def test_the_admission_ends_with_its_transaction_and_its_person(
    world: World, patient: dict[str, Any], checks: list[str]
) -> None:
    pid = uuid.UUID(patient["id"])
    aiko, ben = world.actors["dr_aiko"], world.actors["nurse_ben"]
    with world.db.session(write=False) as s:
        open_chart(s, aiko, pid)
        clinical_notes.list_notes(s, ben, pid, limit=5)  # another person: checked in full
        assert checks == ["chart", "ProgressNote"]
        s.rollback()
        clinical_notes.list_notes(s, aiko, pid, limit=5)  # a new transaction: checked in full
        assert checks == ["chart", "ProgressNote", "ProgressNote"]
        s.rollback()


def test_a_write_is_never_admitted_by_an_earlier_chart_read(
    world: World, patient: dict[str, Any], checks: list[str]
) -> None:
    pid = uuid.UUID(patient["id"])
    actor = world.actors["dr_aiko"]
    with world.db.session(write=True) as s:
        open_chart(s, actor, pid)
        ref = gate.patient_ref(s, actor, pid, Intent.WRITE, "ProgressNote")
        assert ref.id == pid and checks == ["chart", "ProgressNote"]
        s.rollback()


def test_clinic_rows_of_another_clinic_look_missing_and_the_attempt_is_recorded(
    world: World,
) -> None:
    director = world.actors["director"]
    other = world.actors["dr_chen"]
    assert other.clinic_id != director.clinic_id
    with world.db.session(write=False) as s:
        own = gate.clinic_row_for(s, director, StaffUser, director.user_id)
        assert own.role == Role.DIRECTOR
        for missing in (other.user_id, uuid.uuid4()):
            with pytest.raises(NotFound) as caught:
                gate.clinic_row_for(s, director, StaffUser, missing, "staff")
            assert caught.value.en == NotFound("staff").en  # the same answer for both
        assert s.info.pop(gate.CROSS_CLINIC, False) is True
        assert gate.find_clinic_row(s, director, SecurityAlert, uuid.uuid4()) is None
        assert gate.CROSS_CLINIC not in s.info  # a missing row is not an attempt
        s.rollback()


def test_the_staff_screen_records_a_probe_for_another_clinics_account(world: World) -> None:
    other = world.actors["dr_chen"]
    r = world.http.get(f"/api/v1/admin/staff/{other.user_id}/sessions", headers=world.h("director"))
    assert r.status_code == 404
    with world.db.session(write=False) as s:
        tags = [e.tag for e in s.query(AuditEvent).order_by(AuditEvent.seq)]
    assert tags[-1] == "access:other-clinic:attempted"
