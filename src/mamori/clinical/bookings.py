"""予約: visits booked ahead — a patient, a date and time, a physician and a purpose.

A booking is an encounter in the ``planned`` state, so it has the record core's versions and
audit for free: booking is its version 1, moving it a new version, cancelling it the
existing state change, and the patient's arrival turns the same record into today's visit
(受付) instead of opening a second one. Walk-ins stay as they are. The day sheet and the
downtime bundle are made from these bookings.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.authz import gate
from mamori.authz.actor import Actor
from mamori.clinic.calendar import JST, clinic_today
from mamori.clinical.models import Encounter, EncounterStatus, VisitType
from mamori.clinical.service import clinic_staff
from mamori.errors import Conflict, InvalidInput
from mamori.inputs import InputModel, Text40, Text100
from mamori.patients.models import Patient
from mamori.patients.service import active_patient
from mamori.records.reader import read_views
from mamori.records.versioning import ChangeKind, record_for_write, write_version

BOOKING_DAYS = 90  # the furthest ahead a list is asked for at once


class BookingIn(InputModel):
    date: dt.date
    time: dt.time
    attending_id: uuid.UUID | None = None
    purpose: Text100 = ""  # 目的 (定期受診, 健診結果説明…)
    department: Text40 = "内科"
    visit_type: VisitType | None = None
    # a second booking of the same patient on the same day is refused unless confirmed
    again: bool = False


class BookingMove(InputModel):
    date: dt.date
    time: dt.time
    attending_id: uuid.UUID | None = None
    purpose: Text100 = ""
    expected_version: int = Field(ge=1)


@dataclass(frozen=True)
class Booking:
    encounter: Encounter
    patient: Patient

    @property
    def at(self) -> dt.datetime:
        assert self.encounter.scheduled_at is not None  # a booking has its time
        return self.encounter.scheduled_at.astimezone(JST)


def _when(day: dt.date, time: dt.time) -> dt.datetime:
    if day < clinic_today():
        raise InvalidInput(
            "過去の日付には予約できません。", "A booking cannot be in the past.", field="date"
        )
    return dt.datetime.combine(day, time.replace(second=0, microsecond=0), JST).astimezone(dt.UTC)


def _live(e: Encounter) -> bool:
    return e.status not in (EncounterStatus.CANCELLED, EncounterStatus.ENTERED_IN_ERROR)


def book(session: Session, actor: Actor, patient_id: uuid.UUID, data: BookingIn) -> Encounter:
    """A visit booked for a day and time (status 予約)."""
    patient = active_patient(session, actor, patient_id, "Encounter")
    if data.attending_id is not None:
        clinic_staff(session, actor, data.attending_id, "attending_id")
    at = _when(data.date, data.time)
    visits = [e for e in read_views(session, Encounter, [("patient_id", "=", patient.id)])]
    same_day = [e for e in visits if _live(e) and e.visit_date == data.date]
    if same_day and not data.again:
        raise Conflict(
            "この患者はこの日にすでに予約または受付があります。重ねて予約する場合は確認してください。",
            "This patient already has a booking or visit that day; confirm to book another.",
            code="already_booked",
        )
    earlier = [e for e in visits if _live(e) and e.status != EncounterStatus.PLANNED]
    visit_type = data.visit_type or (VisitType.RETURN if earlier else VisitType.FIRST)
    enc = Encounter(
        patient_id=patient.id,
        visit_date=data.date,
        visit_type=visit_type.value,
        department=data.department,
        attending_id=data.attending_id,
        coverage_id=None,
        status=EncounterStatus.PLANNED.value,
        arrived_at=None,
        started_at=None,
        ended_at=None,
        scheduled_at=at,
        purpose=data.purpose,
    )
    write_version(session, actor, enc, ChangeKind.CREATED)
    return enc


def move_booking(
    session: Session, actor: Actor, encounter_id: uuid.UUID, data: BookingMove
) -> Encounter:
    """A booking moved to another day or time (or physician): a new version of the same
    record, so the history shows what was booked before."""
    enc = record_for_write(session, actor, Encounter, encounter_id)
    if enc.status != EncounterStatus.PLANNED:
        raise Conflict(
            "予約の状態ではないため変更できません（受付済み・キャンセル済み）。",
            "Only a booking not yet arrived or cancelled can be moved.",
            code="not_a_booking",
        )
    if data.attending_id is not None:
        clinic_staff(session, actor, data.attending_id, "attending_id")
    enc.scheduled_at = _when(data.date, data.time)
    enc.visit_date = data.date
    enc.attending_id = data.attending_id
    enc.purpose = data.purpose
    write_version(session, actor, enc, ChangeKind.UPDATED, expected_version=data.expected_version)
    return enc


def list_bookings(session: Session, actor: Actor, start: dt.date, days: int = 1) -> list[Booking]:
    """The bookings from ``start`` for ``days`` days, by time (one list access recorded with
    every patient shown)."""
    if not 1 <= days <= BOOKING_DAYS:
        raise InvalidInput(
            f"表示できるのは{BOOKING_DAYS}日分までです。",
            f"At most {BOOKING_DAYS} days at once.",
            field="days",
        )
    end = start + dt.timedelta(days=days)
    rows = session.execute(
        select(Encounter, Patient)
        .join(Patient, Patient.id == Encounter.patient_id)
        .where(
            Encounter.clinic_id == actor.clinic_id,
            Encounter.visit_date >= start,
            Encounter.visit_date < end,
            Encounter.status == EncounterStatus.PLANNED.value,
        )
    ).all()
    found = [Booking(e, p) for e, p in rows if e.scheduled_at is not None]
    found.sort(key=lambda b: (b.at, b.patient.patient_number))
    gate.listed(session, actor, "Encounter:bookings", [b.patient.id for b in found])
    return found
