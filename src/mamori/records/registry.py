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
from mamori.records.versioning import Versioned

PATIENT_SCOPED_MODELS: tuple[type[Coverage | Encounter | ProgressNote | Condition |
                                  MedicationRequest | AllergyIntolerance | Observation |
                                  Document], ...] = (
    Coverage, Encounter, ProgressNote, Condition, MedicationRequest, AllergyIntolerance,
    Observation, Document,
)

RECORD_TYPES: dict[str, type[Versioned]] = {
    m.__record_type__: m for m in (Patient, *PATIENT_SCOPED_MODELS)
}
