"""The one seam every read and write of patient data passes through.

Services never load patient-scoped rows themselves: they ask ``patients.access.patient_for``
(which loads the patient and calls :func:`admit`), :func:`patient_ref` (the same checks without
the demographics) or :func:`record_for`, which answer ``NotFound`` both when the row is absent
and when it is not the actor's to see (another clinic's patient looks exactly like a patient
that does not exist). Each checks the permission of the kind it hands out, tenancy, and the
restriction of the patient (break-the-glass), then announces the access on ``hooks`` where
the audit trail records it in the same transaction.

Clinic rows that are not patient data (staff accounts, alerts, grants, vendor windows) come
from :func:`clinic_row_for`: the same 404 for another clinic's row, and the same record of the
attempt.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy.orm import Session

from mamori.authz import restricted
from mamori.authz.actor import Actor, Intent
from mamori.authz.hooks import hooks
from mamori.authz.permissions import permission_for
from mamori.db import CachedUuid, driver_cursor
from mamori.errors import NotFound


class ClinicRow(Protocol):
    """A row that belongs to one clinic."""

    @property
    def clinic_id(self) -> uuid.UUID: ...


class PatientScoped(Protocol):
    """A record about one patient (``records.versioning.PatientRecord``)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def clinic_id(self) -> uuid.UUID: ...
    @property
    def patient_id(self) -> uuid.UUID: ...


T = TypeVar("T", bound=PatientScoped)
C = TypeVar("C", bound=ClinicRow)
_ID = CachedUuid()


@dataclass(frozen=True, slots=True)
class PatientRef:
    """A patient let through the gate, without the sealed demographics: what a service
    needs to read or write the patient's *records* (their ID, and status for a write)."""

    id: uuid.UUID
    status: str


# The chart admitted in this transaction: (transaction, user, patient) → the patient's ref.
_VIEWS = "mamori_views_admitted"
VIEW = "chart"  # the kind whose admission its sections share (the chart, $everything)


def admit(
    session: Session,
    actor: Actor,
    clinic_id: uuid.UUID | None,
    patient_id: uuid.UUID,
    intent: Intent,
    what: str,
    status: str | None = None,
) -> None:
    """Let a patient of ``clinic_id`` (None: no such patient) through for an access of kind
    ``what``: the kind's permission, tenancy and restriction checked, the access announced
    to the audit trail's hooks.

    A chart read (``what == VIEW``) is admitted once for all its sections: until the
    transaction ends, :func:`patient_ref` hands the sections the same admission after
    checking only their own kind's permission. Nothing else would change for them — the
    restriction was checked for the chart, a clinical kind, and the audit trail folds a
    section's read into the chart's event — so the audit events are the same."""
    actor.require(permission_for(what, intent is Intent.WRITE))
    if clinic_id != actor.clinic_id:
        _note_miss(session, actor, clinic_id is not None)
        raise NotFound("patient")
    restricted.check(session, actor, patient_id, what)
    hooks.fire(session, actor, intent, what, [patient_id], [patient_id])
    if what == VIEW and intent is Intent.READ and status is not None:
        views = session.info.setdefault(_VIEWS, {})
        views[(session.get_transaction(), actor.user_id, patient_id)] = PatientRef(
            patient_id, status
        )


def _admitted_view(session: Session, actor: Actor, patient_id: uuid.UUID) -> PatientRef | None:
    views: dict[tuple[object, uuid.UUID, uuid.UUID], PatientRef] | None = session.info.get(_VIEWS)
    if not views:
        return None
    return views.get((session.get_transaction(), actor.user_id, patient_id))


_PATIENT_REF_SQL = "SELECT clinic_id, status FROM patient WHERE id = ?"


def patient_ref(
    session: Session, actor: Actor, patient_id: uuid.UUID, intent: Intent, what: str
) -> PatientRef:
    """The same checks and audit event as ``patient_for``, without loading and opening the
    patient row (two plain columns instead, for every record written or listed)."""
    actor.require(permission_for(what, intent is Intent.WRITE))
    if intent is Intent.READ:
        admitted = _admitted_view(session, actor, patient_id)
        if admitted is not None:
            return admitted  # a section of the chart admitted in this transaction
    with driver_cursor(session) as cursor:  # after a flush: this unit of work's changes count
        cursor.execute(_PATIENT_REF_SQL, [cursor.bind(_ID)(patient_id)])
        row = cursor.fetchone()
        clinic_id = None if row is None else cursor.result(_ID)(row[0])
    admit(session, actor, clinic_id, patient_id, intent, what)
    return PatientRef(patient_id, row[1])


def record_for(
    session: Session, actor: Actor, model: type[T], record_id: uuid.UUID, intent: Intent
) -> T:
    actor.require(permission_for(model.__name__, intent is Intent.WRITE))
    record = session.get(model, record_id)
    if record is None or record.clinic_id != actor.clinic_id:
        _note_miss(session, actor, record is not None)
        raise NotFound(model.__name__)
    restricted.check(session, actor, record.patient_id, model.__name__)
    hooks.fire(session, actor, intent, model.__name__, [record.patient_id], [record.id])
    return record


def listed(session: Session, actor: Actor, what: str, patient_ids: Sequence[uuid.UUID]) -> None:
    """Record that a list or search showed these patients (one event per list, with IDs)."""
    actor.require(permission_for(what, write=False))
    hooks.fire(session, actor, Intent.READ, what, list(patient_ids))


def find_clinic_row(
    session: Session, actor: Actor, model: type[C], row_id: object, what: str | None = None
) -> C | None:
    """A clinic-scoped row that is not patient data, or None when there is none. Another
    clinic's row raises ``NotFound`` (and the attempt is recorded), never returns None: a
    caller that creates a missing row must not create one beside another clinic's."""
    row = session.get(model, row_id)
    if row is not None and row.clinic_id != actor.clinic_id:
        _note_miss(session, actor, True)
        raise NotFound(what or model.__name__)
    return row


def clinic_row_for(
    session: Session, actor: Actor, model: type[C], row_id: object, what: str | None = None
) -> C:
    """A clinic-scoped row that is not patient data (a staff account, an alert, a grant …):
    ``NotFound`` when absent or another clinic's (the same answer; the attempt recorded as
    the gate records it for patient data). The caller checks the permission its action needs."""
    row = find_clinic_row(session, actor, model, row_id, what)
    if row is None:
        raise NotFound(what or model.__name__)
    return row


def clinic_reference(session: Session, actor: Actor, model: type[C], row_id: object) -> C | None:
    """A row a write refers to by ID (an encounter, a coverage, a staff member): None when it
    is absent or another clinic's — the caller answers its own 4xx naming the field, the same
    for both — and another clinic's ID is recorded as the gate records any such attempt."""
    row = session.get(model, row_id)
    if row is not None and row.clinic_id != actor.clinic_id:
        _note_miss(session, actor, True)
        return None
    return row


CROSS_CLINIC = "mamori_cross_clinic_attempt"


def _note_miss(session: Session, actor: Actor, other_clinic: bool) -> None:
    """Another clinic's record asked for by ID: answered exactly like a missing one, but the
    edge records the attempt in the audit trail (it is how enumeration shows up)."""
    if other_clinic:
        session.info[CROSS_CLINIC] = True
