"""Audit review API: who opened a patient, what a user opened, reviews, the access report."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from mamori.audit import review
from mamori.audit.report_pdf import render_access_report
from mamori.authz.permissions import P
from mamori.clinic.service import clinic_of
from mamori.inputs import InputModel, OutputModel
from mamori.web.routing import Ctx, TransactionalRoute, requires

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], route_class=TransactionalRoute)


class AccessOut(OutputModel):
    seq: int
    at: dt.datetime
    tag: str
    action_ja: str
    user_id: str | None
    user_name: str
    role: str
    patients: list[str]
    what: str | None
    ip: str | None


class ReviewIn(InputModel):
    scope: Literal["period", "patient", "user"]
    subject_id: uuid.UUID | None = None
    outcome: Literal["no-issue", "follow-up"]
    finding: str = ""


class ReviewOut(OutputModel):
    id: uuid.UUID
    reviewer_id: uuid.UUID
    reviewed_at: dt.datetime
    scope: str
    subject_id: uuid.UUID | None
    through_seq: int
    outcome: str
    finding: str


def _out(rows: list[review.Access]) -> list[AccessOut]:
    return [AccessOut(**r.__dict__, action_ja=review.tag_ja(r.tag)) for r in rows]


@router.get("/patients/{patient_id}/accesses", response_model=list[AccessOut])
def who_opened(
    patient_id: uuid.UUID,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = Query(default=500, ge=1, le=2000),
    ctx: Ctx = Depends(requires(P.AUDIT_READ)),
) -> object:
    # writer: reading the log records an event in the same transaction
    return _out(
        review.who_opened(ctx.session, ctx.actor, patient_id, since=since, until=until, limit=limit)
    )


@router.get("/users/{user_id}/accesses", response_model=list[AccessOut])
def what_user_opened(
    user_id: uuid.UUID,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = Query(default=500, ge=1, le=2000),
    ctx: Ctx = Depends(requires(P.AUDIT_READ)),
) -> object:
    return _out(
        review.what_user_opened(
            ctx.session, ctx.actor, user_id, since=since, until=until, limit=limit
        )
    )


@router.get("/patients/{patient_id}/access-report.pdf")
def access_report(patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.AUDIT_READ))) -> Response:
    patient = review.patient_of(ctx.session, ctx.actor, patient_id)
    rows = [
        r
        for r in review.who_opened(ctx.session, ctx.actor, patient_id, limit=2000)
        if not r.tag.startswith("audit:")
    ]
    status = review.review_status(ctx.session, ctx.actor)
    pdf = render_access_report(
        patient,
        rows,
        clinic_of(ctx.session, ctx.actor).name,
        ctx.actor.display_name,
        status["log_size"],
        status["root"],
    )
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="access-{patient.patient_number}.pdf"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/reviews", status_code=201, response_model=ReviewOut)
def record_review(body: ReviewIn, ctx: Ctx = Depends(requires(P.AUDIT_REVIEW))) -> object:
    return review.record_review(
        ctx.session,
        ctx.actor,
        scope=body.scope,
        subject_id=body.subject_id,
        outcome=body.outcome,
        finding=body.finding,
    )


@router.get("/reviews", response_model=list[ReviewOut])
def list_reviews(ctx: Ctx = Depends(requires(P.AUDIT_READ))) -> object:
    return review.list_reviews(ctx.session, ctx.actor)


@router.get("/status")
def review_status(ctx: Ctx = Depends(requires(P.AUDIT_READ))) -> dict[str, Any]:
    return review.review_status(ctx.session, ctx.actor)
