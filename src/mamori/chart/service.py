"""Opening a chart: the summary a physician sees first."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mamori.audit import trail
from mamori.authz.actor import Actor, Intent
from mamori.authz.permissions import P
from mamori.clinical import notes as clinical_notes
from mamori.clinical import service as clinical
from mamori.clinical.models import (
    AllergyIntolerance,
    Condition,
    MedicationRequest,
    Observation,
    ProgressNote,
)
from mamori.patients.access import patient_for
from mamori.patients.models import Coverage, Patient
from mamori.patients.service import list_coverages

RECENT_NOTES = 20
RECENT_LABS = 50
RECENT_VITALS = 10


@dataclass
class Chart:
    patient: Patient
    coverages: Sequence[Coverage]
    allergies: Sequence[AllergyIntolerance]
    conditions: Sequence[Condition]
    medications: Sequence[MedicationRequest]
    notes: Sequence[ProgressNote]
    labs: Sequence[Observation]
    vitals: Sequence[Observation]


def open_chart_patient(session: Session, actor: Actor, patient_id: uuid.UUID) -> Patient:
    """The chart's admission alone, for a page showing one part of it (the lab timeline):
    the same ``chart`` access and event as the whole chart; the page's sections then load
    under it."""
    return patient_for(session, actor, patient_id, Intent.READ, "chart")


def open_chart(session: Session, actor: Actor, patient_id: uuid.UUID) -> Chart:
    """Patient summary + allergies + problems + current meds + last 20 notes + recent labs.

    One ``chart`` access at the gate for the whole view, then the per-section loaders; a
    section the actor's role may not read is left empty (the scribe's chart has no insurance).
    """
    patient = patient_for(session, actor, patient_id, Intent.READ, "chart")
    can = actor.can

    def observed(category: str, limit: int) -> Sequence[Observation]:
        if not can(P.OBSERVATION_READ):
            return []
        return clinical.list_observations(
            session, actor, patient.id, category=category, limit=limit
        )

    return Chart(
        patient=patient,
        coverages=list_coverages(session, actor, patient.id) if can(P.INSURANCE_READ) else [],
        allergies=clinical.list_allergies(session, actor, patient.id)
        if can(P.ALLERGY_READ)
        else [],
        conditions=clinical.list_conditions(session, actor, patient.id, current_only=True)
        if can(P.CONDITION_READ)
        else [],
        medications=clinical.current_medications(session, actor, patient.id)
        if can(P.PRESCRIPTION_READ)
        else [],
        notes=clinical_notes.list_notes(session, actor, patient.id, limit=RECENT_NOTES)
        if can(P.NOTE_READ)
        else [],
        labs=observed("laboratory", RECENT_LABS),
        vitals=observed("vital-signs", RECENT_VITALS),
    )


def print_chart(session: Session, actor: Actor, patient_id: uuid.UUID) -> Chart:
    """The chart for its printed summary: opened as on screen, and the print recorded as an
    event of its own (a printout leaves the building; the access report says so)."""
    actor.require(P.CHART_PRINT)
    chart = open_chart(session, actor, patient_id)
    trail.record(
        session,
        actor,
        trail.AuditTag.CHART_PRINTED,
        patients=[chart.patient.id],
        detail={"what": "chart-summary"},
    )
    return chart
