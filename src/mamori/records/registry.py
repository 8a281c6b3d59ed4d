"""Every versioned record type, by its FHIR-style name."""

from __future__ import annotations

from mamori.clinical.models import (
    AllergyIntolerance,
    Condition,
    Document,
    Encounter,
    MedicationRequest,
    Observation,
    ProgressNote,
)
from mamori.patients.models import Coverage, Patient
from mamori.records.versioning import PatientRecord, Versioned

PATIENT_SCOPED_MODELS: tuple[type[PatientRecord], ...] = (
    Coverage,
    Encounter,
    ProgressNote,
    Condition,
    MedicationRequest,
    AllergyIntolerance,
    Observation,
    Document,
)

_ALL: tuple[type[Versioned], ...] = (Patient, *PATIENT_SCOPED_MODELS)
RECORD_TYPES: dict[str, type[Versioned]] = {m.__record_type__: m for m in _ALL}
