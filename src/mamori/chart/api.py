"""Chart summary (JSON) and its printable PDF."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from mamori.authz.permissions import P
from mamori.chart.pdf import render_chart_pdf
from mamori.chart.referral import ReferralIn, referral_draft, write_referral
from mamori.chart.service import open_chart, print_chart
from mamori.clinic.service import clinic_of, staff_names
from mamori.clinical.schemas import (
    AllergyOut,
    ConditionOut,
    DocumentOut,
    MedicationRequestOut,
    NoteOut,
    ObservationOut,
)
from mamori.inputs import OutputModel
from mamori.patients.schemas import CoverageOut, PatientOut
from mamori.web.routing import Ctx, TransactionalRoute, requires

router = APIRouter(prefix="/api/v1", tags=["chart"], route_class=TransactionalRoute)


class ChartOut(OutputModel):
    """The chart summary, validated from the service's ``Chart`` and serialised by pydantic."""

    patient: PatientOut
    coverages: list[CoverageOut]
    allergies: list[AllergyOut]
    conditions: list[ConditionOut]
    medications: list[MedicationRequestOut]
    notes: list[NoteOut]
    labs: list[ObservationOut]
    vitals: list[ObservationOut]


@router.get("/patients/{patient_id}/chart", response_model=ChartOut)
def chart(patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.CHART_READ))) -> object:
    return open_chart(ctx.session, ctx.actor, patient_id)


@router.get("/patients/{patient_id}/chart.pdf")
def chart_pdf(patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.CHART_PRINT))) -> Response:
    c = print_chart(ctx.session, ctx.actor, patient_id)
    pdf = render_chart_pdf(
        c,
        clinic_of(ctx.session, ctx.actor).name,
        ctx.actor.display_name,
        staff_names(ctx.session, ctx.actor),
    )
    return Response(
        content=pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="chart-{c.patient.patient_number}.pdf"',
            "Cache-Control": "no-store",
        },
    )


class ReferralDraftOut(OutputModel):
    """A referral letter's fields as the chart pre-fills them (the physician edits them)."""

    diagnoses: str
    history: str
    course: str
    treatment: str
    medications: str
    allergies: str


@router.get("/patients/{patient_id}/referrals/draft", response_model=ReferralDraftOut)
def referral(patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.NOTE_SIGN))) -> object:
    return referral_draft(ctx.session, ctx.actor, patient_id)


@router.post("/patients/{patient_id}/referrals", status_code=201, response_model=DocumentOut)
def new_referral(
    patient_id: uuid.UUID, body: ReferralIn, ctx: Ctx = Depends(requires(P.NOTE_SIGN))
) -> object:
    """診療情報提供書: rendered as a PDF and filed as an outgoing referral document."""
    return write_referral(ctx.session, ctx.actor, ctx.store, patient_id, body)
