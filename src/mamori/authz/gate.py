"""The one seam every read and write of patient data passes through.

Services never load patient-scoped rows themselves: they ask :func:`patient_for` (or
:func:`patient_ref`, the same checks without the demographics) or :func:`record_for`, which
answer ``NotFound`` both when the row is absent and when it is not the actor's to see (another
clinic's patient looks exactly like a patient that does not exist).

Today the gate enforces tenant isolation and an active account. The access-control issue adds
role permissions and restricted patients here; the audit issue subscribes to :data:`hooks` so
that each access is recorded in the same transaction. Nothing else needs to change for either.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from mamori.authz import restricted
from mamori.authz.permissions import Permission, permission_for, role_permissions
from mamori.clinic.models import Role
from mamori.db import driver_cursor
from mamori.errors import Forbidden, NotFound

if TYPE_CHECKING:
    from mamori.patients.models import Patient
    from mamori.records.versioning import PatientRecord


class Intent(enum.StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Actor:
    """Who is acting: a signed-in staff member (or a CLI command run as one)."""

    user_id: uuid.UUID
    clinic_id: uuid.UUID
    role: Role
    display_name: str
    channel: str = "api"  # api | fhir | cli | web
    auth_method: str = "api-token"  # totp | webauthn | recovery | api-token | cli
    source_ip: str | None = None
    user_agent: str | None = None
    session_id: uuid.UUID | None = None
    # None: the role's permissions; a vendor inside a maintenance window gets a wider set
    permissions: frozenset[Permission] | None = None
    # when the person last re-entered password and second factor (sensitive actions need it)
    reauth_at: dt.datetime | None = None

    @property
    def granted(self) -> frozenset[Permission]:
        return self.permissions if self.permissions is not None else role_permissions(self.role)

    def can(self, permission: Permission) -> bool:
        return permission in self.granted

    def require(self, permission: Permission) -> None:
        """Raise ``Forbidden`` unless the actor holds ``permission``."""
        if permission not in self.granted:
            raise Forbidden(permission.value)


class AccessHook(Protocol):
    def __call__(
        self,
        session: Session,
        actor: Actor,
        intent: Intent,
        what: str,
        patient_ids: Sequence[uuid.UUID],
        record_ids: Sequence[uuid.UUID],
    ) -> None: ...


class VersionHook(Protocol):
    def __call__(self, session: Session, actor: Actor, version: dict[str, Any]) -> None: ...


@dataclass
class Hooks:
    """Listeners called on every patient-data access and every record version written (the
    audit trail attaches here)."""

    on_access: list[AccessHook] = field(default_factory=list)
    on_version: list[VersionHook] = field(default_factory=list)

    def version_written(self, session: Session, actor: Actor, version: dict[str, Any]) -> None:
        for hook in self.on_version:
            hook(session, actor, version)

    def fire(
        self,
        session: Session,
        actor: Actor,
        intent: Intent,
        what: str,
        patient_ids: Sequence[uuid.UUID],
        record_ids: Sequence[uuid.UUID] = (),
    ) -> None:
        for hook in self.on_access:
            hook(session, actor, intent, what, patient_ids, record_ids)


hooks = Hooks()


T = TypeVar("T", bound="PatientRecord")


def patient_for(
    session: Session, actor: Actor, patient_id: uuid.UUID, intent: Intent, what: str = "patient"
) -> Patient:
    from mamori.patients.models import Patient

    actor.require(permission_for(what, intent is Intent.WRITE))
    patient = session.get(Patient, patient_id)
    _admit(session, actor, None if patient is None else patient.clinic_id, patient_id, intent, what)
    assert patient is not None  # admitted
    return patient


@dataclass(frozen=True, slots=True)
class PatientRef:
    """A patient let through the gate, without the sealed demographics: what a service
    needs to read or write the patient's *records* (their ID, and status for a write)."""

    id: uuid.UUID
    status: str


_PATIENT_REF_SQL = "SELECT clinic_id, status FROM patient WHERE id = ?"


def patient_ref(
    session: Session, actor: Actor, patient_id: uuid.UUID, intent: Intent, what: str
) -> PatientRef:
    """The same checks and audit event as :func:`patient_for`, without loading and opening
    the patient row (two plain columns instead: 0.13 → 0.01 ms for every record written or
    listed)."""
    from mamori.patients.models import Patient

    actor.require(permission_for(what, intent is Intent.WRITE))
    columns = Patient.__table__.c
    with driver_cursor(session) as cursor:  # after a flush: this unit of work's changes count
        cursor.execute(_PATIENT_REF_SQL, [cursor.bind(columns.id.type)(patient_id)])
        row = cursor.fetchone()
        clinic_id = None if row is None else cursor.result(columns.clinic_id.type)(row[0])
    _admit(session, actor, clinic_id, patient_id, intent, what)
    return PatientRef(patient_id, row[1])


def _admit(
    session: Session,
    actor: Actor,
    clinic_id: uuid.UUID | None,
    patient_id: uuid.UUID,
    intent: Intent,
    what: str,
) -> None:
    """A patient of ``clinic_id`` (None: no such patient) past tenancy and restriction, and
    the access announced to the audit trail's hooks."""
    if clinic_id != actor.clinic_id:
        _note_miss(session, actor, clinic_id is not None)
        raise NotFound("patient")
    restricted.check(session, actor, patient_id, what)
    hooks.fire(session, actor, intent, what, [patient_id], [patient_id])


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


CROSS_CLINIC = "mamori_cross_clinic_attempt"


def _note_miss(session: Session, actor: Actor, other_clinic: bool) -> None:
    """Another clinic's record asked for by ID: answered exactly like a missing one, but the
    edge records the attempt in the audit trail (it is how enumeration shows up)."""
    if other_clinic:
        session.info[CROSS_CLINIC] = True
