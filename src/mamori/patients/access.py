"""The patient row through the gate: the one way a service loads a patient's demographics."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from mamori.authz import gate
from mamori.authz.actor import Actor, Intent
from mamori.authz.permissions import permission_for
from mamori.patients.models import Patient
from mamori.records.versioning import check_head


def patient_for(
    session: Session, actor: Actor, patient_id: uuid.UUID, intent: Intent, what: str = "patient"
) -> Patient:
    """The patient, admitted by the gate for an access of kind ``what`` (``NotFound`` when
    absent or another clinic's; break-the-glass for a restricted patient's clinical kinds)."""
    actor.require(permission_for(what, intent is Intent.WRITE))  # nothing loaded before this
    patient = session.get(Patient, patient_id)
    clinic_id = None if patient is None else patient.clinic_id
    status = None if patient is None else patient.status
    gate.admit(session, actor, clinic_id, patient_id, intent, what, status)
    assert patient is not None  # admitted
    if intent is Intent.WRITE or what in ("patient", "Patient"):
        check_head(session, patient)  # before a write acts on it, or it is served on its own
    return patient
