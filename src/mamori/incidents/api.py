"""Incident API: report, the register, steps, the decision, reports sent, the affected list."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import Field

from mamori.authz.permissions import P
from mamori.incidents import service
from mamori.incidents.affected import Scope
from mamori.inputs import InputModel, OutputModel
from mamori.web.routing import Ctx, TransactionalRoute, requires

router = APIRouter(prefix="/api/v1", tags=["incidents"], route_class=TransactionalRoute)

Kind = Literal[
    "ransomware", "unauthorised", "device", "insider", "misdirected", "phishing", "fault", "other"
]


class ReportIn(InputModel):
    seen: str = Field(min_length=1, max_length=2000)
    place: str = Field(default="", max_length=200)
    device: str = Field(default="", max_length=200)
    when: str = Field(default="", max_length=100)
    kind: Kind = "other"


class ReportedOut(OutputModel):
    number: int
    message_ja: str
    message_en: str


@router.post("/incidents/report", status_code=201, response_model=ReportedOut)
def report(body: ReportIn, ctx: Ctx = Depends(requires(P.INCIDENT_REPORT))) -> ReportedOut:
    incident = service.report(
        ctx.session,
        ctx.actor,
        seen=body.seen,
        place=body.place,
        device=body.device,
        when=body.when,
        kind=body.kind,
    )
    return ReportedOut(
        number=incident.number,
        message_ja=f"No.{incident.number} として報告しました。安全管理者と院長に通知しました。",
        message_en=f"Reported as No.{incident.number}; the security officer and director know.",
    )


class DeadlineOut(OutputModel):
    key: str
    label: str
    due: dt.date
    starts: dt.date | None
    sent_on: dt.date | None
    days_left: int
    state: str


class StepOut(OutputModel):
    no: int
    role: str
    title: str
    action: str
    outcome: str
    by: uuid.UUID | None
    at: dt.datetime | None
    note: str


class IncidentOut(OutputModel):
    id: uuid.UUID
    number: int
    kind: str
    stage: str
    severity: str
    title: str
    knew_on: dt.date
    occurred_on: dt.date | None
    owner_id: uuid.UUID | None
    reportable: str
    proposed_reportable: bool
    conditions: list[int]
    deadlines_apply: bool
    deadlines: list[DeadlineOut]
    affected_patients: int
    next_step: int | None
    version: int


class IncidentDetailOut(IncidentOut):
    seen: str
    place: str
    device: str
    source: str
    steps: list[StepOut]
    decision_reason: str
    timeline: list[dict[str, object]]


def _out(v: service.View) -> IncidentOut:
    i = v.incident
    return IncidentOut(
        id=i.id,
        number=i.number,
        kind=i.kind,
        stage=i.stage,
        severity=i.severity,
        title=i.title,
        knew_on=i.knew_on,
        occurred_on=i.occurred_on,
        owner_id=i.owner_id,
        reportable=i.reportable,
        proposed_reportable=v.proposal.reportable,
        conditions=list(v.proposal.conditions),
        deadlines_apply=v.deadlines_apply,
        deadlines=[
            DeadlineOut(
                key=d.key,
                label=d.label_ja,
                due=d.due,
                starts=d.starts,
                sent_on=d.sent_on,
                days_left=d.days_left,
                state=d.state,
            )
            for d in v.deadlines
        ],
        affected_patients=v.affected_count,
        next_step=v.next_step,
        version=i.version,
    )


def _detail(v: service.View) -> IncidentDetailOut:
    i = v.incident
    return IncidentDetailOut(
        **_out(v).model_dump(),
        seen=i.seen,
        place=i.place,
        device=i.device,
        source=i.source,
        steps=[StepOut(**s.__dict__) for s in v.steps],
        decision_reason=i.decision_reason,
        timeline=[
            {
                "kind": e.kind,
                "at": e.created_at.isoformat(),
                "by": str(e.created_by_id),
                "step": e.step_no,
                "outcome": e.outcome,
                "text": e.text if e.kind != "affected" else "",
            }
            for e in v.entries
        ],
    )


@router.get("/incidents", response_model=list[IncidentOut])
def register(ctx: Ctx = Depends(requires(P.INCIDENT_READ))) -> list[IncidentOut]:
    return [_out(v) for v in service.list_incidents(ctx.session, ctx.actor)]


class OpenIn(InputModel):
    kind: Kind
    title: str = Field(min_length=1, max_length=120)
    seen: str = Field(default="", max_length=4000)
    knew_on: dt.date
    occurred_on: dt.date | None = None
    place: str = Field(default="", max_length=200)
    device: str = Field(default="", max_length=200)
    severity: Literal["unknown", "low", "medium", "high", "critical"] = "unknown"


@router.post("/incidents", status_code=201, response_model=IncidentDetailOut)
def open_incident(body: OpenIn, ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE))) -> object:
    incident = service.open_incident(ctx.session, ctx.actor, **body.model_dump())
    return _detail(service.get(ctx.session, ctx.actor, incident.id))


@router.get("/incidents/{incident_id}", response_model=IncidentDetailOut)
def show(incident_id: uuid.UUID, ctx: Ctx = Depends(requires(P.INCIDENT_READ))) -> object:
    return _detail(service.get(ctx.session, ctx.actor, incident_id))


class StepIn(InputModel):
    outcome: Literal["done", "skipped"]
    note: str = Field(default="", max_length=1000)


@router.post("/incidents/{incident_id}/steps/{step_no}", response_model=IncidentDetailOut)
def check_step(
    incident_id: uuid.UUID,
    step_no: int,
    body: StepIn,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
) -> object:
    service.check_step(
        ctx.session, ctx.actor, incident_id, step_no, outcome=body.outcome, note=body.note
    )
    return _detail(service.get(ctx.session, ctx.actor, incident_id))


class DecisionIn(InputModel):
    reportable: bool
    reason: str = Field(min_length=1, max_length=2000)
    malicious: bool
    encrypted: bool = False


@router.post("/incidents/{incident_id}/decision", response_model=IncidentDetailOut)
def decide(
    incident_id: uuid.UUID, body: DecisionIn, ctx: Ctx = Depends(requires(P.INCIDENT_DECIDE))
) -> object:
    service.decide(ctx.session, ctx.actor, incident_id, **body.model_dump())
    return _detail(service.get(ctx.session, ctx.actor, incident_id))


class SentIn(InputModel):
    which: Literal["prompt", "final", "public"]
    on: dt.date
    note: str = Field(default="", max_length=1000)


@router.post("/incidents/{incident_id}/sent", response_model=IncidentDetailOut)
def mark_sent(
    incident_id: uuid.UUID, body: SentIn, ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE))
) -> object:
    service.mark_sent(ctx.session, ctx.actor, incident_id, body.which, body.on, body.note)
    return _detail(service.get(ctx.session, ctx.actor, incident_id))


class AffectedRowOut(OutputModel):
    patient_id: uuid.UUID
    number: int
    name: str
    kana: str
    opens: int
    writes: int
    first: dt.datetime | None
    last: dt.datetime | None
    items: list[str]
    noticed: dt.date | None


class AffectedOut(OutputModel):
    scope: dict[str, str]
    patients: int
    items: dict[str, int]
    events: int
    rows: list[AffectedRowOut]


class ScopeIn(InputModel):
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    device_id: str | None = Field(default=None, max_length=64)
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    export_seq: int | None = Field(default=None, ge=1)
    generation: int | None = Field(default=None, ge=1)


def _affected(found: service.Affected) -> AffectedOut:
    return AffectedOut(
        scope=found.scope.as_dict(),
        patients=len(found.rows),
        items=found.item_counts,
        events=found.events,
        rows=[
            AffectedRowOut(
                patient_id=r.patient_id,
                number=r.number,
                name=r.name,
                kana=r.kana,
                opens=r.opens,
                writes=r.writes,
                first=r.first,
                last=r.last,
                items=r.items,
                noticed=r.noticed,
            )
            for r in found.rows
        ],
    )


@router.put("/incidents/{incident_id}/affected", response_model=AffectedOut)
def save_scope(
    incident_id: uuid.UUID, body: ScopeIn, ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE))
) -> object:
    found = service.save_scope(ctx.session, ctx.actor, incident_id, Scope(**body.model_dump()))
    return _affected(found)


@router.get("/incidents/{incident_id}/affected", response_model=AffectedOut)
def affected(incident_id: uuid.UUID, ctx: Ctx = Depends(requires(P.INCIDENT_READ))) -> object:
    found = service.affected_list(ctx.session, ctx.actor, incident_id)
    if found is None:
        return AffectedOut(scope={}, patients=0, items={}, events=0, rows=[])
    return _affected(found)
