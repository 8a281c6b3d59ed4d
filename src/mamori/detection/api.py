"""Detection API: the review queue and its decisions, and the 電話対応 log."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import Field

from mamori.authz.permissions import P
from mamori.detection import service
from mamori.inputs import InputModel, OutputModel, Text100
from mamori.web.routing import Ctx, TransactionalRoute, requires

router = APIRouter(prefix="/api/v1", tags=["detection"], route_class=TransactionalRoute)


class CaseOut(OutputModel):
    id: uuid.UUID
    user_id: uuid.UUID
    user_name: str
    patient_id: uuid.UUID | None
    patient: str
    tier: str
    score: int
    rules: list[str]
    rules_ja: list[str]
    sentence: str
    first_at: dt.datetime
    last_at: dt.datetime
    status: str
    reason: str
    suppress_until: dt.date | None


def _out(v: service.CaseView) -> CaseOut:
    c = v.case
    return CaseOut(
        id=c.id,
        user_id=c.user_id,
        user_name=v.user_name,
        patient_id=c.patient_id,
        patient=v.patient_label,
        tier=c.tier,
        score=c.score,
        rules=list(c.rules),
        rules_ja=v.rules_ja,
        sentence=v.sentence,
        first_at=c.first_at,
        last_at=c.last_at,
        status=c.status,
        reason=c.reason,
        suppress_until=c.suppress_until,
    )


@router.get("/detection/cases", response_model=list[CaseOut])
def cases(
    status: Literal["open", "appropriate", "follow-up", "all"] = "open",
    lang: Literal["ja", "en"] = "ja",
    ctx: Ctx = Depends(requires(P.DETECTION_REVIEW)),
) -> list[CaseOut]:
    views = service.list_cases(
        ctx.session, ctx.actor, status=None if status == "all" else status, lang=lang
    )
    return [_out(v) for v in views]


class DecisionIn(InputModel):
    outcome: Literal["appropriate", "follow-up"]
    reason: str = Field(min_length=1, max_length=500)
    suppress_days: int = Field(default=0, ge=0, le=365)


@router.post("/detection/cases/{case_id}/review", response_model=CaseOut)
def review(
    case_id: uuid.UUID, body: DecisionIn, ctx: Ctx = Depends(requires(P.DETECTION_REVIEW))
) -> CaseOut:
    service.decide(
        ctx.session,
        ctx.actor,
        case_id,
        outcome=body.outcome,
        reason=body.reason,
        suppress_days=body.suppress_days,
    )
    return _out(service.get_case(ctx.session, ctx.actor, case_id))


class ContactIn(InputModel):
    channel: Literal["phone", "desk", "message"] = "phone"
    topic: Literal["予約", "検査結果", "処方", "会計", "書類", "その他"]
    note: Text100 = ""


class ContactOut(OutputModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    channel: str
    topic: str
    created_at: dt.datetime


@router.post("/patients/{patient_id}/contacts", status_code=201, response_model=ContactOut)
def log_contact(
    patient_id: uuid.UUID, body: ContactIn, ctx: Ctx = Depends(requires(P.ENCOUNTER_WRITE))
) -> ContactOut:
    row = service.log_contact(
        ctx.session, ctx.actor, patient_id, channel=body.channel, topic=body.topic, note=body.note
    )
    return ContactOut(
        id=row.id,
        patient_id=row.patient_id,
        channel=row.channel,
        topic=row.topic,
        created_at=row.created_at,
    )
