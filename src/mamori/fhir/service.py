"""Read-only FHIR views of the record, through the same gate as every other edge."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.authz.actor import Actor, Intent
from mamori.authz.permissions import permission_for
from mamori.clinic.service import clinic_of
from mamori.clinical.models import (
    AllergyIntolerance,
    Condition,
    Document,
    Encounter,
    MedicationRequest,
    Observation,
    ProgressNote,
)
from mamori.detection.models import ContactLog
from mamori.errors import InvalidInput, NotFound
from mamori.fhir import mapping
from mamori.fhir.bulk import RESOURCE_TYPES
from mamori.patients.access import patient_for
from mamori.patients.models import Coverage, Patient
from mamori.patients.service import search_patients
from mamori.records.versioning import record_checked

_SCOPED: dict[str, tuple[type[Any], ...]] = {
    "Coverage": (Coverage,),
    "Encounter": (Encounter,),
    "Condition": (Condition,),
    "MedicationRequest": (MedicationRequest,),
    "AllergyIntolerance": (AllergyIntolerance,),
    "Observation": (Observation,),
    "DocumentReference": (Document, ProgressNote),
    "Communication": (ContactLog,),
}


def _to_fhir(session: Session, actor: Actor, row: Any) -> list[dict[str, Any]]:
    clinic = clinic_of(session, actor)
    converters: dict[type[Any], Callable[[Any], list[dict[str, Any]]]] = {
        Patient: lambda r: [mapping.patient(r, clinic)],
        Coverage: lambda r: [mapping.coverage(r)],
        Encounter: lambda r: [mapping.encounter(r, clinic)],
        Condition: lambda r: [mapping.condition(r)],
        MedicationRequest: mapping.medication_requests,
        AllergyIntolerance: lambda r: [mapping.allergy(r)],
        Observation: lambda r: [mapping.observation(r)],
        Document: lambda r: [mapping.document(r)],
        ProgressNote: lambda r: [mapping.note(r)],
        ContactLog: lambda r: [mapping.contact(r)],
    }
    return converters[type(row)](row)


def _check_type(resource_type: str) -> None:
    if resource_type not in RESOURCE_TYPES:
        raise NotFound("resource type")


def read(session: Session, actor: Actor, resource_type: str, rid: str) -> dict[str, Any]:
    _check_type(resource_type)
    if resource_type == "MedicationRequest":
        # ids are "<prescription uuid>-<rp>-<n>"; a UUID itself contains hyphens
        base = rid[:36]
        rest = rid[37:]
        req = record_checked(session, actor, MedicationRequest, _uuid(base), Intent.READ)
        for res in mapping.medication_requests(req):
            if res["id"] == rid and rest:
                return res
        raise NotFound("MedicationRequest")
    key = _uuid(rid)
    if resource_type == "Patient":
        return mapping.patient(
            patient_for(session, actor, key, Intent.READ), clinic_of(session, actor)
        )
    # Nothing is looked up before the permission: a role that may not read this type gets 403
    # whether or not the ID exists, here or in another clinic (existence never leaks), and the
    # gate checks tenancy before anything of a row is used.
    readable = [m for m in _SCOPED[resource_type] if actor.can(permission_for(m.__name__, False))]
    if not readable:
        actor.require(permission_for(resource_type, write=False))
    for model in readable:
        try:
            row = record_checked(session, actor, model, key, Intent.READ)
        except NotFound:
            continue  # DocumentReference: a document or a note
        return _to_fhir(session, actor, row)[0]
    raise NotFound(resource_type)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("resource") from None


def resources_for_patient(
    session: Session, actor: Actor, patient_id: uuid.UUID, resource_type: str
) -> list[dict[str, Any]]:
    _check_type(resource_type)
    patient = patient_for(session, actor, patient_id, Intent.READ, f"fhir:{resource_type}")
    if resource_type == "Patient":
        return [mapping.patient(patient, clinic_of(session, actor))]
    out: list[dict[str, Any]] = []
    for model in _SCOPED[resource_type]:
        rows = session.scalars(
            select(model)
            .where(model.patient_id == patient.id, model.clinic_id == actor.clinic_id)
            .order_by(model.created_at)
        ).all()
        for row in rows:
            out.extend(_to_fhir(session, actor, row))
    return out


def search_patient_resources(
    session: Session,
    actor: Actor,
    *,
    name: str | None,
    birthdate: str | None,
    identifier: str | None,
    count: int,
) -> list[dict[str, Any]]:
    """Patient search by kana name (prefix), birth date and identifier (患者番号)."""
    bd = None
    if birthdate:
        try:
            bd = dt.date.fromisoformat(birthdate.removeprefix("eq"))
        except ValueError:
            raise InvalidInput(
                "birthdate は YYYY-MM-DD で指定してください。",
                "birthdate must be YYYY-MM-DD.",
                field="birthdate",
            ) from None
    number = None
    if identifier:
        value = identifier.rsplit("|", 1)[-1]
        if not value.isdigit():
            raise InvalidInput(
                "identifier は患者番号（数字）で指定してください。",
                "identifier must be a patient number.",
                field="identifier",
            )
        number = int(value)
    found = search_patients(
        session, actor, kana=name, birth_date=bd, patient_number=number, limit=count
    )
    clinic = clinic_of(session, actor)
    return [mapping.patient(p, clinic) for p in found]


def everything(session: Session, actor: Actor, patient_id: uuid.UUID) -> list[dict[str, Any]]:
    """``Patient/$everything``: the patient and every resource about them that the actor's
    role may read (like the chart: the scribe's has no insurance)."""
    patient_for(session, actor, patient_id, Intent.READ, "chart")
    out: list[dict[str, Any]] = []
    for rtype in RESOURCE_TYPES:
        if actor.can(permission_for(rtype, write=False)):
            out.extend(resources_for_patient(session, actor, patient_id, rtype))
    return out


def bundle(resource_type: str, resources: list[dict[str, Any]], base: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }
