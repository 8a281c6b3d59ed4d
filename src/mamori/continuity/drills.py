"""Downtime drills (BCP 1-2c): the exercise recorded as evidence — who took part, which
scenario (records cannot be viewed / cannot be entered), whether the downtime bundle or the
standby was reached and in how many minutes, what went wrong and what was decided."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit import trail
from mamori.authz.actor import Actor
from mamori.authz.permissions import P
from mamori.clinic.calendar import clinic_today
from mamori.continuity.models import DowntimeDrill
from mamori.errors import InvalidInput
from mamori.inputs import InputModel, Text500

SCENARIOS = {
    "cannot-view": ("記録を閲覧できない", "Records cannot be viewed"),
    "cannot-enter": ("記録を入力できない", "Records cannot be entered"),
}


class DrillIn(InputModel):
    held_on: dt.date | None = None
    scenario: Literal["cannot-view", "cannot-enter"]
    participants: Text500 = Field(min_length=1)
    reached: bool
    minutes: int | None = Field(default=None, ge=0, le=24 * 60)
    problems: Text500 = ""
    improvement: Text500 = ""


def record_drill(session: Session, actor: Actor, data: DrillIn) -> DowntimeDrill:
    actor.require(P.CONTINUITY_ADMIN)
    held = data.held_on or clinic_today()
    if held > clinic_today():
        raise InvalidInput(
            "実施日が未来になっています。", "The drill's date is in the future.", field="held_on"
        )
    if data.reached and data.minutes is None:
        raise InvalidInput(
            "到達できた場合は、かかった時間（分）を入力してください。",
            "Give the minutes it took to reach the bundle or standby.",
            field="minutes",
        )
    drill = DowntimeDrill(
        clinic_id=actor.clinic_id,
        held_on=held,
        scenario=data.scenario,
        participants=data.participants,
        reached=data.reached,
        minutes=data.minutes if data.reached else None,
        problems=data.problems,
        improvement=data.improvement,
        recorded_by_id=actor.user_id,
    )
    session.add(drill)
    session.flush()
    trail.record(
        session,
        actor,
        trail.AuditTag.DRILL_RECORDED,
        detail={"drill": str(drill.id), "scenario": data.scenario, "reached": data.reached},
    )
    return drill


def drills(session: Session, actor: Actor, limit: int = 20) -> Sequence[DowntimeDrill]:
    actor.require(P.CONTINUITY_ADMIN)
    return session.scalars(
        select(DowntimeDrill)
        .where(DowntimeDrill.clinic_id == actor.clinic_id)
        .order_by(DowntimeDrill.held_on.desc(), DowntimeDrill.recorded_at.desc())
        .limit(limit)
    ).all()
