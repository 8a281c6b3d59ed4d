"""The one seam every read and write of patient data passes through.

Services never load patient-scoped rows themselves: they ask :func:`patient_for` or
:func:`record_for`, which answer ``NotFound`` both when the row is absent and when it is not the
actor's to see (another clinic's patient looks exactly like a patient that does not exist).

Today the gate enforces tenant isolation and an active account. The access-control issue adds
role permissions and restricted patients here; the audit issue subscribes to :data:`hooks` so
that each access is recorded in the same transaction. Nothing else needs to change for either.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from mamori.clinic.models import Role
from mamori.errors import NotFound

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
    auth_method: str = "api-token"  # the second factor, once issue 3 adds sign-in
    source_ip: str | None = None
    user_agent: str | None = None


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

    patient = session.get(Patient, patient_id)
    if patient is None or patient.clinic_id != actor.clinic_id:
        raise NotFound("patient")
    hooks.fire(session, actor, intent, what, [patient.id], [patient.id])
    return patient


def record_for(
    session: Session, actor: Actor, model: type[T], record_id: uuid.UUID, intent: Intent
) -> T:
    record = session.get(model, record_id)
    if record is None or record.clinic_id != actor.clinic_id:
        raise NotFound(model.__name__)
    hooks.fire(session, actor, intent, model.__name__, [record.patient_id], [record.id])
    return record


def listed(session: Session, actor: Actor, what: str, patient_ids: Sequence[uuid.UUID]) -> None:
    """Record that a list or search showed these patients (one event per list, with IDs)."""
    hooks.fire(session, actor, Intent.READ, what, list(patient_ids))
