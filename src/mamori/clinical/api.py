"""JSON API for encounters, notes, diagnoses, prescriptions, allergies, observations and
documents: a thin edge over ``clinical.service``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response
from pydantic import ValidationError

from mamori.authz.permissions import P
from mamori.clinic.calendar import clinic_today
from mamori.clinical import bookings, notes, rx_sheet, service
from mamori.clinical.models import ENCOUNTER_STATUS_JA
from mamori.clinical.schemas import (
    AllergyIn,
    AllergyOut,
    ConditionIn,
    ConditionOut,
    ConditionUpdate,
    DocumentMeta,
    DocumentOut,
    EncounterIn,
    EncounterOut,
    EncounterTransitionIn,
    MedicationRequestIn,
    MedicationRequestOut,
    NoteAmend,
    NoteEdit,
    NoteIn,
    NoteOut,
    ObservationIn,
    ObservationOut,
    PrescriptionResult,
    VersionedAction,
)
from mamori.errors import InvalidInput
from mamori.inputs import OutputModel
from mamori.patients.schemas import PatientOut
from mamori.web.errors import validation_details
from mamori.web.routing import Ctx, TransactionalRoute, requires

router = APIRouter(prefix="/api/v1", tags=["clinical"], route_class=TransactionalRoute)


# encounters ---------------------------------------------------------------------------------


@router.post("/patients/{patient_id}/encounters", status_code=201, response_model=EncounterOut)
def check_in(
    patient_id: uuid.UUID, body: EncounterIn, ctx: Ctx = Depends(requires(P.ENCOUNTER_WRITE))
) -> object:
    return service.check_in(ctx.session, ctx.actor, patient_id, body)


@router.post("/patients/{patient_id}/bookings", status_code=201, response_model=EncounterOut)
def book(
    patient_id: uuid.UUID,
    body: bookings.BookingIn,
    ctx: Ctx = Depends(requires(P.ENCOUNTER_WRITE)),
) -> object:
    """予約: a visit booked for a day and time (status planned; cancelled by the status route,
    turned into the visit when the patient checks in)."""
    return bookings.book(ctx.session, ctx.actor, patient_id, body)


@router.put("/bookings/{encounter_id}", response_model=EncounterOut)
def move_booking(
    encounter_id: uuid.UUID,
    body: bookings.BookingMove,
    ctx: Ctx = Depends(requires(P.ENCOUNTER_WRITE)),
) -> object:
    return bookings.move_booking(ctx.session, ctx.actor, encounter_id, body)


class BookingOut(OutputModel):
    encounter: EncounterOut
    patient: PatientOut


@router.get("/bookings", response_model=list[BookingOut])
def list_bookings(
    start: dt.date | None = None,
    days: int = Query(default=1, ge=1, le=bookings.BOOKING_DAYS),
    ctx: Ctx = Depends(requires(P.ENCOUNTER_READ)),
) -> object:
    found = bookings.list_bookings(ctx.session, ctx.actor, start or clinic_today(), days)
    return [{"encounter": b.encounter, "patient": b.patient} for b in found]


@router.get("/patients/{patient_id}/encounters", response_model=list[EncounterOut])
def list_encounters(
    patient_id: uuid.UUID,
    limit: int = Query(default=50, ge=1, le=500),
    ctx: Ctx = Depends(requires(P.ENCOUNTER_READ)),
) -> object:
    return service.list_encounters(ctx.session, ctx.actor, patient_id, limit)


@router.post("/encounters/{encounter_id}/status", response_model=EncounterOut)
def move_encounter(
    encounter_id: uuid.UUID,
    body: EncounterTransitionIn,
    ctx: Ctx = Depends(requires(P.ENCOUNTER_WRITE)),
) -> object:
    return service.move_encounter(
        ctx.session, ctx.actor, encounter_id, body.status, body.expected_version
    )


@router.get("/reception")
def reception_list(
    date: dt.date | None = None, ctx: Ctx = Depends(requires(P.ENCOUNTER_READ))
) -> list[dict[str, Any]]:
    """受付一覧: the day's visits (demographics and visit state only, never note text)."""
    rows = service.list_day(ctx.session, ctx.actor, date or clinic_today())
    return [
        {
            "encounter": EncounterOut.model_validate(e).model_dump(mode="json"),
            "status_ja": ENCOUNTER_STATUS_JA.get(e.status, e.status),  # type: ignore[call-overload]
            "patient": PatientOut.model_validate(p).model_dump(mode="json"),
        }
        for e, p in rows
    ]


# progress notes -----------------------------------------------------------------------------


@router.post("/patients/{patient_id}/notes", status_code=201, response_model=NoteOut)
def write_note(
    patient_id: uuid.UUID, body: NoteIn, ctx: Ctx = Depends(requires(P.NOTE_WRITE))
) -> object:
    return notes.write_note(ctx.session, ctx.actor, patient_id, body)


@router.get("/patients/{patient_id}/notes", response_model=list[NoteOut])
def list_notes(
    patient_id: uuid.UUID,
    limit: int = Query(default=20, ge=1, le=500),
    ctx: Ctx = Depends(requires(P.NOTE_READ)),
) -> object:
    return notes.list_notes(ctx.session, ctx.actor, patient_id, limit)


@router.get("/notes/{note_id}", response_model=NoteOut)
def get_note(note_id: uuid.UUID, ctx: Ctx = Depends(requires(P.NOTE_READ))) -> object:
    return notes.get_note(ctx.session, ctx.actor, note_id)


@router.put("/notes/{note_id}", response_model=NoteOut)
def edit_draft(
    note_id: uuid.UUID, body: NoteEdit, ctx: Ctx = Depends(requires(P.NOTE_WRITE))
) -> object:
    return notes.edit_draft(ctx.session, ctx.actor, note_id, body)


@router.post("/notes/{note_id}/finalise", response_model=NoteOut)
def finalise_note(
    note_id: uuid.UUID, body: VersionedAction, ctx: Ctx = Depends(requires(P.NOTE_WRITE))
) -> object:
    return notes.finalise_note(ctx.session, ctx.actor, note_id, body.expected_version)


@router.post("/notes/{note_id}/amend", response_model=NoteOut)
def amend_note(
    note_id: uuid.UUID, body: NoteAmend, ctx: Ctx = Depends(requires(P.NOTE_WRITE))
) -> object:
    return notes.amend_note(ctx.session, ctx.actor, note_id, body)


# diagnoses, allergies, prescriptions, observations -------------------------------------------


@router.post("/patients/{patient_id}/conditions", status_code=201, response_model=ConditionOut)
def add_condition(
    patient_id: uuid.UUID, body: ConditionIn, ctx: Ctx = Depends(requires(P.CONDITION_WRITE))
) -> object:
    return service.add_condition(ctx.session, ctx.actor, patient_id, body)


@router.get("/patients/{patient_id}/conditions", response_model=list[ConditionOut])
def list_conditions(
    patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.CONDITION_READ))
) -> object:
    return service.list_conditions(ctx.session, ctx.actor, patient_id)


@router.put("/conditions/{condition_id}", response_model=ConditionOut)
def update_condition(
    condition_id: uuid.UUID, body: ConditionUpdate, ctx: Ctx = Depends(requires(P.CONDITION_WRITE))
) -> object:
    data = ConditionIn.model_validate(body.model_dump(exclude={"expected_version"}))
    return service.update_condition(
        ctx.session, ctx.actor, condition_id, data, body.expected_version
    )


@router.post("/conditions/{condition_id}/confirm", response_model=ConditionOut)
def confirm_condition(
    condition_id: uuid.UUID, body: VersionedAction, ctx: Ctx = Depends(requires(P.CONDITION_WRITE))
) -> object:
    """A physician confirms a scribe's diagnosis (status unconfirmed → active)."""
    return service.confirm_condition(ctx.session, ctx.actor, condition_id, body.expected_version)


@router.post("/medication-requests/{request_id}/confirm", response_model=MedicationRequestOut)
def confirm_prescription(
    request_id: uuid.UUID, body: VersionedAction, ctx: Ctx = Depends(requires(P.PRESCRIPTION_WRITE))
) -> object:
    """A physician confirms and issues a nurse's draft order (draft → active)."""
    return service.confirm_prescription(ctx.session, ctx.actor, request_id, body.expected_version)


@router.get("/medication-requests/{request_id}/prescription.pdf")
def prescription_pdf(
    request_id: uuid.UUID, ctx: Ctx = Depends(requires(P.CHART_PRINT))
) -> Response:
    """院外処方箋 (A5 on A4) for an issued outside prescription; the print is audited."""
    sheet = rx_sheet.prescription_sheet(ctx.session, ctx.actor, request_id)
    return Response(
        content=rx_sheet.render_prescription_pdf(sheet),
        media_type="application/pdf",
        headers={
            "Content-Disposition": (
                f'inline; filename="prescription-{sheet.patient.patient_number}'
                f'-{sheet.request.issued_on:%Y%m%d}.pdf"'
            ),
            "Cache-Control": "no-store",
        },
    )


@router.post("/patients/{patient_id}/allergies", status_code=201, response_model=AllergyOut)
def add_allergy(
    patient_id: uuid.UUID, body: AllergyIn, ctx: Ctx = Depends(requires(P.ALLERGY_WRITE))
) -> object:
    return service.add_allergy(ctx.session, ctx.actor, patient_id, body)


@router.get("/patients/{patient_id}/allergies", response_model=list[AllergyOut])
def list_allergies(patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.ALLERGY_READ))) -> object:
    return service.list_allergies(ctx.session, ctx.actor, patient_id)


@router.post(
    "/patients/{patient_id}/medication-requests", status_code=201, response_model=PrescriptionResult
)
def prescribe(
    patient_id: uuid.UUID,
    body: MedicationRequestIn,
    ctx: Ctx = Depends(requires(P.PRESCRIPTION_WRITE)),
) -> object:
    req, warnings = service.prescribe(ctx.session, ctx.actor, patient_id, body)
    ctx.session.flush()
    return {"medication_request": MedicationRequestOut.model_validate(req), "warnings": warnings}


@router.get("/patients/{patient_id}/medication-requests", response_model=list[MedicationRequestOut])
def current_medications(
    patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.PRESCRIPTION_READ))
) -> object:
    return service.current_medications(ctx.session, ctx.actor, patient_id)


@router.post("/patients/{patient_id}/observations", status_code=201, response_model=ObservationOut)
def record_observation(
    patient_id: uuid.UUID, body: ObservationIn, ctx: Ctx = Depends(requires(P.OBSERVATION_WRITE))
) -> object:
    return service.record_observation(ctx.session, ctx.actor, patient_id, body)


@router.get("/patients/{patient_id}/observations", response_model=list[ObservationOut])
def list_observations(
    patient_id: uuid.UUID,
    category: str | None = Query(default=None, max_length=20),
    code: str | None = Query(default=None, max_length=20),
    limit: int = Query(default=100, ge=1, le=1000),
    ctx: Ctx = Depends(requires(P.OBSERVATION_READ)),
) -> object:
    return service.list_observations(
        ctx.session, ctx.actor, patient_id, category=category, code=code, limit=limit
    )


# documents ----------------------------------------------------------------------------------


@router.post("/patients/{patient_id}/documents", status_code=201, response_model=DocumentOut)
def file_document(
    patient_id: uuid.UUID,
    file: UploadFile = File(...),
    doc_type: str = Form(...),
    title: str = Form(...),
    direction: str = Form("in"),
    document_date: str | None = Form(None),
    encounter_id: str | None = Form(None),
    ctx: Ctx = Depends(requires(P.DOCUMENT_WRITE)),
) -> object:
    try:
        meta = DocumentMeta.model_validate(
            {
                "doc_type": doc_type,
                "title": title,
                "direction": direction,
                "document_date": document_date or None,
                "encounter_id": encounter_id or None,
            }
        )
    except ValidationError as exc:
        d = validation_details(list(exc.errors()))[0]
        raise InvalidInput(d["message_ja"], d["message_en"], field=d["field"]) from exc
    content = file.file.read(ctx.settings.max_upload_bytes + 1)
    if len(content) > ctx.settings.max_upload_bytes:
        raise InvalidInput("ファイルが大きすぎます。", "The file is too large.", field="file")
    mime = (file.content_type or "application/octet-stream").split(";")[0].strip()
    return service.file_document(ctx.session, ctx.actor, ctx.store, patient_id, meta, content, mime)


@router.get("/patients/{patient_id}/documents", response_model=list[DocumentOut])
def list_documents(patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.DOCUMENT_READ))) -> object:
    return service.list_documents(ctx.session, ctx.actor, patient_id)


@router.get("/documents/{document_id}/content")
def document_content(
    document_id: uuid.UUID, ctx: Ctx = Depends(requires(P.DOCUMENT_READ))
) -> Response:
    doc, data = service.read_document(ctx.session, ctx.actor, ctx.store, document_id)
    return Response(
        content=data,
        media_type=doc.mime_type,
        headers={
            "Content-Disposition": "attachment",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )
