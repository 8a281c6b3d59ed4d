"""Encounters, notes, diagnoses, prescriptions, allergies, observations and documents.

Every function takes the acting user and the session first, reaches patient data only through
the access gate, writes versions through ``write_version`` and never commits.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.authz import gate
from mamori.authz.actor import Actor, Intent
from mamori.authz.permissions import Permission
from mamori.authz.roles import Role
from mamori.clinic.calendar import clinic_today
from mamori.clinic.models import StaffUser
from mamori.clinical.models import (
    ENCOUNTER_TRANSITIONS,
    AllergyIntolerance,
    Condition,
    ConditionOutcome,
    Document,
    Encounter,
    EncounterStatus,
    MedicationRequest,
    MedicationRequestStatus,
    Observation,
    VisitType,
)
from mamori.clinical.schemas import (
    AllergyIn,
    ConditionIn,
    DocumentMeta,
    EncounterIn,
    MedicationRequestIn,
    ObservationIn,
)
from mamori.db import utcnow
from mamori.documents.store import DocumentStore
from mamori.errors import Conflict, InvalidInput, NotAllowed, NotFound
from mamori.patients.kana import search_key
from mamori.patients.models import Coverage, Patient
from mamori.patients.service import active_patient
from mamori.records.reader import Where, read_views
from mamori.records.versioning import (
    ChangeKind,
    RecordStatus,
    record_checked,
    record_for_write,
    write_version,
)


def same_patient_visit(
    session: Session,
    actor: Actor,
    model: type[Encounter],
    rid: uuid.UUID | None,
    patient_id: uuid.UUID,
) -> None:
    """A record's reference to a visit, on every write path (create and update alike): the
    visit must be this patient's, in this clinic; anything else is the same 422 naming the
    field (another clinic's ID recorded as an attempt), never a write that points elsewhere."""
    if rid is None:
        return
    row = gate.clinic_reference(session, actor, model, rid)
    if row is None or row.patient_id != patient_id:
        raise InvalidInput(
            "指定した受診がこの患者のものではありません。",
            "The encounter does not belong to this patient.",
            field="encounter_id",
        )


def clinic_staff(session: Session, actor: Actor, user_id: uuid.UUID, field: str) -> StaffUser:
    user = gate.clinic_reference(session, actor, StaffUser, user_id)
    if user is None or not user.active:
        raise InvalidInput("指定した職員が見つかりません。", "No such staff member.", field=field)
    return user


# --- encounters (受付 → 診察 → 会計) -------------------------------------------------------


def check_in(session: Session, actor: Actor, patient_id: uuid.UUID, data: EncounterIn) -> Encounter:
    """Open today's visit in the 受付 state."""
    patient = active_patient(session, actor, patient_id, "Encounter")
    if data.attending_id is not None:
        clinic_staff(session, actor, data.attending_id, "attending_id")
    if data.coverage_id is not None:
        cov = gate.clinic_reference(session, actor, Coverage, data.coverage_id)
        if cov is None or cov.patient_id != patient.id:
            raise InvalidInput(
                "指定した保険がこの患者のものではありません。",
                "The coverage does not belong to this patient.",
                field="coverage_id",
            )
    day = data.visit_date or clinic_today()
    visits = [
        e
        for e in read_views(session, Encounter, [("patient_id", "=", patient.id)])
        if e.status not in (EncounterStatus.CANCELLED, EncounterStatus.ENTERED_IN_ERROR)
    ]
    open_that_day = [
        e
        for e in visits
        if e.visit_date == day
        and e.status not in (EncounterStatus.FINISHED, EncounterStatus.PLANNED)
    ]
    booked = [e for e in visits if e.visit_date == day and e.status == EncounterStatus.PLANNED]
    if booked and not open_that_day:  # the booked patient arrives: the booking becomes the visit
        return _arrive(session, actor, booked[0].id, data)
    if open_that_day and not data.again:
        raise Conflict(
            "この患者はすでに受付済みです（同じ日の受診が終わっていません）。"
            "もう一度受付する場合は確認してください。",
            "This patient is already checked in today (that visit is not finished); confirm "
            "to check in again.",
            code="already_checked_in",
        )
    seen = [e for e in visits if e.status != EncounterStatus.PLANNED]
    visit_type = data.visit_type or (VisitType.RETURN if seen else VisitType.FIRST)
    enc = Encounter(
        patient_id=patient.id,
        visit_date=day,
        visit_type=visit_type.value,
        department=data.department,
        attending_id=data.attending_id,
        coverage_id=data.coverage_id,
        status=EncounterStatus.ARRIVED.value,
        arrived_at=utcnow(),
        started_at=None,
        ended_at=None,
    )
    write_version(session, actor, enc, ChangeKind.CREATED)
    return enc


def _arrive(
    session: Session, actor: Actor, encounter_id: uuid.UUID, data: EncounterIn
) -> Encounter:
    enc = record_for_write(session, actor, Encounter, encounter_id)
    enc.status = EncounterStatus.ARRIVED.value
    enc.arrived_at = utcnow()
    if data.visit_type is not None:
        enc.visit_type = data.visit_type.value
    if data.attending_id is not None:
        enc.attending_id = data.attending_id
    if data.coverage_id is not None:
        enc.coverage_id = data.coverage_id
    write_version(session, actor, enc, ChangeKind.STATUS_CHANGED, expected_version=enc.version)
    return enc


def move_encounter(
    session: Session,
    actor: Actor,
    encounter_id: uuid.UUID,
    to: EncounterStatus,
    expected_version: int,
) -> Encounter:
    enc = record_for_write(session, actor, Encounter, encounter_id)
    current = EncounterStatus(enc.status)
    if to not in ENCOUNTER_TRANSITIONS[current]:
        raise Conflict(
            f"受診の状態を {current.value} から {to.value} に変えられません。",
            f"An encounter cannot go from {current.value} to {to.value}.",
            field="status",
        )
    now = utcnow()
    if to is EncounterStatus.ARRIVED:
        enc.arrived_at = now
    elif to is EncounterStatus.IN_PROGRESS:
        enc.started_at = now
    elif to in (EncounterStatus.FINISHED, EncounterStatus.CANCELLED):
        enc.ended_at = now
    enc.status = to.value
    write_version(session, actor, enc, ChangeKind.STATUS_CHANGED, expected_version=expected_version)
    return enc


def list_day(session: Session, actor: Actor, day: dt.date) -> list[tuple[Encounter, Patient]]:
    """受付一覧: the day's visits with their patients, in arrival order."""
    rows = session.execute(
        select(Encounter, Patient)
        .join(Patient, Patient.id == Encounter.patient_id)
        .where(
            Encounter.clinic_id == actor.clinic_id,
            Encounter.visit_date == day,
            Encounter.status != EncounterStatus.ENTERED_IN_ERROR.value,
        )
    ).all()
    # arrivals in arrival order, then the bookings not yet arrived by their time
    result = sorted(
        ((e, p) for e, p in rows),
        key=lambda r: (
            r[0].arrived_at is None,
            r[0].arrived_at or r[0].scheduled_at or r[0].created_at,
            r[0].created_at,
        ),
    )
    gate.listed(session, actor, "Encounter:day-list", [p.id for _, p in result])
    return result


def list_encounters(
    session: Session, actor: Actor, patient_id: uuid.UUID, limit: int = 50
) -> Sequence[Encounter]:
    patient = gate.patient_ref(session, actor, patient_id, Intent.READ, "Encounter")
    return session.scalars(
        select(Encounter)
        .where(Encounter.patient_id == patient.id)
        .order_by(Encounter.visit_date.desc(), Encounter.created_at.desc())
        .limit(limit)
    ).all()


# --- progress notes ----------------------------------------------------------------------


# --- diagnoses ---------------------------------------------------------------------------


def _apply_condition(cond: Condition, data: ConditionIn) -> None:
    for name in (
        "display_name",
        "encounter_id",
        "code",
        "code_system",
        "icd10",
        "is_primary",
        "is_suspected",
        "is_undisclosed",
        "is_long_term",
        "is_billing_only",
        "onset_date",
        "outcome_date",
    ):
        setattr(cond, name, getattr(data, name))
    cond.outcome = data.outcome.value


def add_condition(
    session: Session, actor: Actor, patient_id: uuid.UUID, data: ConditionIn
) -> Condition:
    patient = active_patient(session, actor, patient_id, "Condition")
    same_patient_visit(session, actor, Encounter, data.encounter_id, patient.id)
    _no_duplicate_condition(session, patient.id, data)
    cond = Condition(patient_id=patient.id, status=_condition_status(actor))
    _apply_condition(cond, data)
    write_version(session, actor, cond, ChangeKind.CREATED)
    return cond


def _no_duplicate_condition(session: Session, patient_id: uuid.UUID, data: ConditionIn) -> None:
    """The same diagnosis still open on the list (same name, or same ICD-10 and 疑い) is not
    entered a second time: the existing one is changed or ended instead."""
    name = "".join(data.display_name.split())
    for c in read_views(
        session,
        Condition,
        [("patient_id", "=", patient_id), ("status", "!=", RecordStatus.ENTERED_IN_ERROR.value)],
    ):
        if c.outcome != ConditionOutcome.CONTINUING.value:
            continue
        same_code = (
            bool(data.icd10) and c.icd10 == data.icd10 and c.is_suspected == data.is_suspected
        )
        if "".join(c.display_name.split()) == name or same_code:
            raise Conflict(
                f"同じ病名「{c.display_name}」がすでに登録されています。変更・転帰はその病名で行って"
                "ください。",
                f"The same diagnosis ({c.display_name}) is already on the list; change or end "
                "that one.",
                field="display_name",
                code="duplicate_condition",
            )


def _condition_status(actor: Actor) -> str:
    """A scribe's diagnosis (and a scribe's change to one) waits for a physician's
    confirmation (ES-A4 for 代行入力): it is recorded, shown marked as unconfirmed, and
    becomes the clinic's diagnosis only through :func:`confirm_condition`."""
    return (RecordStatus.UNCONFIRMED if actor.role is Role.SCRIBE else RecordStatus.ACTIVE).value


def confirm_condition(
    session: Session, actor: Actor, condition_id: uuid.UUID, expected_version: int
) -> Condition:
    """A physician (or the director) confirms a scribe's diagnosis: a new version, by them."""
    actor.require(Permission.CONDITION_WRITE)
    cond = record_for_write(session, actor, Condition, condition_id)  # the gate first
    if not actor.role.signs_clinical_records:
        raise NotAllowed(
            "代行入力の病名を承認できるのは医師だけです。",
            "Only a physician confirms a proxy-entered diagnosis.",
        )
    if cond.status != RecordStatus.UNCONFIRMED:
        raise Conflict(
            "この病名は承認待ちではありません。", "This diagnosis is not awaiting confirmation."
        )
    cond.status = RecordStatus.ACTIVE.value
    write_version(session, actor, cond, ChangeKind.CONFIRMED, expected_version=expected_version)
    return cond


def get_condition(session: Session, actor: Actor, condition_id: uuid.UUID) -> Condition:
    return record_checked(session, actor, Condition, condition_id, Intent.READ)


def update_condition(
    session: Session,
    actor: Actor,
    condition_id: uuid.UUID,
    data: ConditionIn,
    expected_version: int,
) -> Condition:
    cond = record_for_write(session, actor, Condition, condition_id)
    same_patient_visit(session, actor, Encounter, data.encounter_id, cond.patient_id)
    _apply_condition(cond, data)
    if actor.role is Role.SCRIBE:
        cond.status = RecordStatus.UNCONFIRMED.value  # held again for a physician
    write_version(session, actor, cond, ChangeKind.UPDATED, expected_version=expected_version)
    return cond


def list_conditions(
    session: Session, actor: Actor, patient_id: uuid.UUID, *, current_only: bool = False
) -> Sequence[Condition]:
    """傷病名, 主病 first. ``current_only``: the problem list (転帰 継続) for the chart."""
    patient = gate.patient_ref(session, actor, patient_id, Intent.READ, "Condition")
    rows = read_views(  # active, and a scribe's still unconfirmed (shown as such)
        session,
        Condition,
        [("patient_id", "=", patient.id), ("status", "!=", RecordStatus.ENTERED_IN_ERROR.value)],
    )
    # 転帰 and 主病 are sealed: filtered and ordered here, after decryption
    found = [c for c in rows if not current_only or c.outcome == ConditionOutcome.CONTINUING.value]
    found.sort(key=lambda c: c.onset_date or dt.date.min, reverse=True)
    found.sort(key=lambda c: not c.is_primary)
    return found


# --- allergies ---------------------------------------------------------------------------


def add_allergy(
    session: Session, actor: Actor, patient_id: uuid.UUID, data: AllergyIn
) -> AllergyIntolerance:
    patient = active_patient(session, actor, patient_id, "AllergyIntolerance")
    verification = data.verification
    if verification == "confirmed" and not actor.can(Permission.NOTE_SIGN):
        verification = "unconfirmed"  # nurses record, physicians confirm (matrix §6)
    allergy = AllergyIntolerance(
        **data.model_dump(exclude={"verification"}),
        patient_id=patient.id,
        verification=verification,
        status=RecordStatus.ACTIVE.value,
    )
    write_version(session, actor, allergy, ChangeKind.CREATED)
    return allergy


def list_allergies(
    session: Session, actor: Actor, patient_id: uuid.UUID
) -> Sequence[AllergyIntolerance]:
    patient = gate.patient_ref(session, actor, patient_id, Intent.READ, "AllergyIntolerance")
    rows = read_views(
        session,
        AllergyIntolerance,
        [("patient_id", "=", patient.id), ("status", "=", RecordStatus.ACTIVE.value)],
        order_by=[("created_at", False)],
    )
    found = [a for a in rows if a.verification != "refuted"]
    found.sort(key=lambda a: not a.is_contraindication)  # 薬剤禁忌 first (stable)
    return found


# --- prescriptions -----------------------------------------------------------------------


def allergy_conflicts(
    allergies: Sequence[AllergyIntolerance], data: MedicationRequestIn
) -> list[dict[str, str]]:
    """Drugs whose name contains a recorded medication allergen (normalised kana match)."""
    found = []
    for a in allergies:
        if a.category != "medication":
            continue
        key = search_key(a.substance)
        if not key:
            continue
        for group in data.rp_groups:
            for drug in group.items:
                if key in search_key(drug.drug_name):
                    found.append(
                        {
                            "drug_name": drug.drug_name,
                            "substance": a.substance,
                            "level": "contraindication" if a.is_contraindication else "allergy",
                        }
                    )
    return found


def prescribe(
    session: Session, actor: Actor, patient_id: uuid.UUID, data: MedicationRequestIn
) -> tuple[MedicationRequest, list[dict[str, str]]]:
    """Issue a prescription in RP groups. A 薬剤禁忌 match stops it unless the prescriber
    gives an override reason; plain allergy matches come back as warnings."""
    patient = active_patient(session, actor, patient_id, "MedicationRequest")
    same_patient_visit(session, actor, Encounter, data.encounter_id, patient.id)
    allergies = session.scalars(
        select(AllergyIntolerance).where(
            AllergyIntolerance.patient_id == patient.id,
            AllergyIntolerance.status == RecordStatus.ACTIVE.value,
        )
    ).all()
    warnings = allergy_conflicts(allergies, data)
    if any(w["level"] == "contraindication" for w in warnings) and not data.allergy_override_reason:
        names = "、".join(sorted({w["drug_name"] for w in warnings}))
        raise Conflict(
            f"薬剤禁忌に該当します（{names}）。処方する場合は理由を入力してください。",
            f"Contraindicated for this patient ({names}); give an override reason.",
            field="allergy_override_reason",
            code="allergy_contraindication",
        )
    status = (
        MedicationRequestStatus.ACTIVE
        if actor.can(Permission.NOTE_SIGN)
        else MedicationRequestStatus.DRAFT
    )
    req = MedicationRequest(
        patient_id=patient.id,
        encounter_id=data.encounter_id,
        prescriber_id=actor.user_id,
        issued_on=data.issued_on or clinic_today(),
        dispensing=data.dispensing,
        refill_count=data.refill_count,
        rp_groups=data.groups_as_json(),
        status=status.value,
    )
    write_version(
        session,
        actor,
        req,
        ChangeKind.CREATED,
        reason=("薬剤禁忌を確認のうえ処方: " + data.allergy_override_reason)
        if data.allergy_override_reason
        else "",
    )
    return req, warnings


def current_medications(
    session: Session, actor: Actor, patient_id: uuid.UUID, today: dt.date | None = None
) -> list[MedicationRequest]:
    """Prescriptions still running today (issued_on + longest RP days), newest first."""
    patient = gate.patient_ref(session, actor, patient_id, Intent.READ, "MedicationRequest")
    today = today or clinic_today()
    recent = read_views(
        session,
        MedicationRequest,
        [
            ("patient_id", "=", patient.id),
            ("status", "=", MedicationRequestStatus.ACTIVE.value),
            ("issued_on", ">=", today - dt.timedelta(days=365)),
        ],
        order_by=[("issued_on", True)],
    )
    running = [m for m in recent if m.issued_on + dt.timedelta(days=m.max_days) >= today]
    # a nurse's draft order waits here, marked, until a physician confirms and issues it
    drafts = read_views(
        session,
        MedicationRequest,
        [("patient_id", "=", patient.id), ("status", "=", MedicationRequestStatus.DRAFT.value)],
        order_by=[("issued_on", True)],
    )
    return drafts + running


def get_prescription(session: Session, actor: Actor, request_id: uuid.UUID) -> MedicationRequest:
    return record_checked(session, actor, MedicationRequest, request_id, Intent.READ)


def latest_prescription(
    session: Session, actor: Actor, patient_id: uuid.UUID
) -> MedicationRequest | None:
    """The newest issued prescription (for 前回Do), if any."""
    patient = gate.patient_ref(session, actor, patient_id, Intent.READ, "MedicationRequest")
    rows = read_views(
        session,
        MedicationRequest,
        [
            ("patient_id", "=", patient.id),
            ("status", "!=", MedicationRequestStatus.ENTERED_IN_ERROR.value),
        ],
        order_by=[("issued_on", True), ("created_at", True)],
    )
    issued = [m for m in rows if m.status != MedicationRequestStatus.CANCELLED]
    return issued[0] if issued else None


def confirm_prescription(
    session: Session, actor: Actor, request_id: uuid.UUID, expected_version: int
) -> MedicationRequest:
    """A physician confirms a nurse's draft order (指示受け) and issues it as its prescriber;
    the nurse stays recorded as the one who entered it (version 1)."""
    actor.require(Permission.PRESCRIPTION_WRITE)
    req = record_for_write(session, actor, MedicationRequest, request_id)
    if not actor.role.signs_clinical_records:
        raise NotAllowed(
            "下書きの処方を確認して発行できるのは医師だけです。",
            "Only a physician confirms and issues a draft order.",
        )
    if req.status != MedicationRequestStatus.DRAFT:
        raise Conflict("この処方は確認待ちではありません。", "This order is not a draft.")
    req.status = MedicationRequestStatus.ACTIVE.value
    req.prescriber_id = actor.user_id
    write_version(session, actor, req, ChangeKind.CONFIRMED, expected_version=expected_version)
    return req


@dataclass(frozen=True)
class Awaiting:
    """A patient with entries waiting for a physician (the start page's count)."""

    patient_id: uuid.UUID
    patient_number: int
    name: str
    draft_orders: int
    unconfirmed_diagnoses: int


def awaiting_confirmation(session: Session, actor: Actor) -> list[Awaiting]:
    """What waits for a physician in this clinic: nurses' draft orders and scribes'
    unconfirmed diagnoses, per patient (a list of patients: recorded as one)."""
    if not actor.role.signs_clinical_records:
        return []
    counts: dict[uuid.UUID, list[int]] = {}
    for model, status, slot in (
        (MedicationRequest, MedicationRequestStatus.DRAFT.value, 0),
        (Condition, RecordStatus.UNCONFIRMED.value, 1),
    ):
        rows = session.execute(
            select(model.patient_id).where(
                model.clinic_id == actor.clinic_id,
                model.status == status,
            )
        ).scalars()
        for pid in rows:
            counts.setdefault(pid, [0, 0])[slot] += 1
    if not counts:
        return []
    patients = session.scalars(select(Patient).where(Patient.id.in_(list(counts)))).all()
    out = [
        Awaiting(p.id, p.patient_number, f"{p.family_name} {p.given_name}", *counts[p.id])
        for p in patients
    ]
    out.sort(key=lambda a: a.patient_number)
    gate.listed(session, actor, "Patient:awaiting-confirmation", [a.patient_id for a in out])
    return out


# --- observations ------------------------------------------------------------------------


def abnormal_flag(value: str, low: str, high: str) -> str:
    if not value:
        return ""
    v = decimal.Decimal(value)
    if low and v < decimal.Decimal(low):
        return "L"
    if high and v > decimal.Decimal(high):
        return "H"
    return ""


def record_observation(
    session: Session, actor: Actor, patient_id: uuid.UUID, data: ObservationIn
) -> Observation:
    patient = active_patient(session, actor, patient_id, "Observation")
    same_patient_visit(session, actor, Encounter, data.encounter_id, patient.id)
    obs = Observation(
        patient_id=patient.id,
        encounter_id=data.encounter_id,
        category=data.category,
        code=data.code,
        code_system=data.code_system,
        name=data.name,
        value=data.value,
        value_text=data.value_text,
        unit=data.unit,
        ref_low=data.ref_low,
        ref_high=data.ref_high,
        abnormal_flag=abnormal_flag(data.value, data.ref_low, data.ref_high),
        effective_at=data.effective_at or utcnow(),
        status="final",
    )
    write_version(session, actor, obs, ChangeKind.CREATED)
    return obs


def list_observations(
    session: Session,
    actor: Actor,
    patient_id: uuid.UUID,
    *,
    category: str | None = None,
    code: str | None = None,
    limit: int = 100,
) -> Sequence[Observation]:
    patient = gate.patient_ref(session, actor, patient_id, Intent.READ, "Observation")
    where: list[Where] = [
        ("patient_id", "=", patient.id),
        ("status", "!=", RecordStatus.ENTERED_IN_ERROR.value),
    ]
    if category:
        where.append(("category", "=", category))
    newest_first = [("effective_at", True)]
    if not code:
        return read_views(session, Observation, where, order_by=newest_first, limit=limit)
    # the code is sealed (a test's name says what was looked for): matched after decryption
    rows = read_views(session, Observation, where, order_by=newest_first)
    return [o for o in rows if o.code == code][:limit]


# --- documents ---------------------------------------------------------------------------

ALLOWED_MIME = {"application/pdf", "image/jpeg", "image/png", "image/tiff", "text/plain"}


def file_document(
    session: Session,
    actor: Actor,
    store: DocumentStore,
    patient_id: uuid.UUID,
    meta: DocumentMeta,
    content: bytes,
    mime_type: str,
) -> Document:
    """Store the bytes by hash (outside the database), then the record."""
    patient = active_patient(session, actor, patient_id, "Document")
    same_patient_visit(session, actor, Encounter, meta.encounter_id, patient.id)
    if mime_type not in ALLOWED_MIME:
        raise InvalidInput(
            "この形式のファイルは登録できません（PDF・JPEG・PNG・TIFF・テキスト）。",
            "Unsupported file type (PDF, JPEG, PNG, TIFF or text).",
            field="file",
        )
    if not content:
        raise InvalidInput("ファイルが空です。", "The file is empty.", field="file")
    digest = store.put(content)
    doc = Document(
        patient_id=patient.id,
        encounter_id=meta.encounter_id,
        doc_type=meta.doc_type,
        direction=meta.direction,
        title=meta.title,
        document_date=meta.document_date or clinic_today(),
        mime_type=mime_type,
        size_bytes=len(content),
        sha256=digest,
        status=RecordStatus.ACTIVE.value,
    )
    write_version(session, actor, doc, ChangeKind.CREATED)
    return doc


def read_document(
    session: Session, actor: Actor, store: DocumentStore, document_id: uuid.UUID
) -> tuple[Document, bytes]:
    doc = record_checked(session, actor, Document, document_id, Intent.READ)
    if doc.status == RecordStatus.ENTERED_IN_ERROR:
        raise NotFound("document")
    return doc, store.get(doc.sha256)


def list_documents(session: Session, actor: Actor, patient_id: uuid.UUID) -> Sequence[Document]:
    patient = gate.patient_ref(session, actor, patient_id, Intent.READ, "Document")
    return session.scalars(
        select(Document)
        .where(Document.patient_id == patient.id, Document.status == RecordStatus.ACTIVE.value)
        .order_by(Document.document_date.desc())
    ).all()
