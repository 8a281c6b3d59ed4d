"""Chart summary (JSON) and its printable PDF."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from mamori.chart.pdf import render_chart_pdf
from mamori.chart.service import open_chart
from mamori.clinic.service import clinic_of
from mamori.clinical.schemas import (
    AllergyOut,
    ConditionOut,
    MedicationRequestOut,
    NoteOut,
    ObservationOut,
)
from mamori.patients.schemas import CoverageOut, PatientOut
from mamori.web.routing import Ctx, TransactionalRoute, reader

router = APIRouter(prefix="/api/v1", tags=["chart"], route_class=TransactionalRoute)


@router.get("/patients/{patient_id}/chart")
def chart(patient_id: uuid.UUID, ctx: Ctx = Depends(reader)) -> dict[str, Any]:
    c = open_chart(ctx.session, ctx.actor, patient_id)

    def dump(model: Any, rows: Any) -> list[dict[str, Any]]:
        return [model.model_validate(r).model_dump(mode="json") for r in rows]

    return {
        "patient": PatientOut.model_validate(c.patient).model_dump(mode="json"),
        "coverages": dump(CoverageOut, c.coverages),
        "allergies": dump(AllergyOut, c.allergies),
        "conditions": dump(ConditionOut, c.conditions),
        "medications": dump(MedicationRequestOut, c.medications),
        "notes": dump(NoteOut, c.notes),
        "labs": dump(ObservationOut, c.labs),
        "vitals": dump(ObservationOut, c.vitals),
    }


@router.get("/patients/{patient_id}/chart.pdf")
def chart_pdf(patient_id: uuid.UUID, ctx: Ctx = Depends(reader)) -> Response:
    c = open_chart(ctx.session, ctx.actor, patient_id)
    pdf = render_chart_pdf(c, clinic_of(ctx.session, ctx.actor).name, ctx.actor.display_name)
    return Response(
        content=pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="chart-{c.patient.patient_number}.pdf"',
            "Cache-Control": "no-store",
        },
    )
