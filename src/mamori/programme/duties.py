"""The duties calendar (seed 003: what 医療従事者, 安全管理実務者 and 経営管理者 do, and how
often) and the training records.

A duty is done when mamori sees it done in its own records — a log review recorded, a restore
drill that passed, an account review, a checklist answered, a downtime drill, a training
session — or when someone records it (the vendor's patch check, the BCP review). A duty whose
last time is longer ago than its cadence is overdue and is shown on the start pages.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mamori.audit.models import AuditReview
from mamori.audit.trail import AuditTag, record
from mamori.auth import admin
from mamori.authz.actor import Actor
from mamori.authz.permissions import Permission
from mamori.clinic.calendar import JST, clinic_today
from mamori.continuity.models import DowntimeDrill
from mamori.db import new_id
from mamori.errors import InvalidInput
from mamori.programme.evidence import LOG_SCOPES
from mamori.programme.logquery import last_event
from mamori.programme.models import (
    AccountReview,
    BcpApproval,
    ChecklistAnswer,
    DutyDone,
    TrainingSession,
)

Seen = Callable[[Session, Actor], dt.date | None]


def _log_review(session: Session, actor: Actor) -> dt.date | None:
    at = session.scalar(
        select(func.max(AuditReview.reviewed_at)).where(
            AuditReview.clinic_id == actor.clinic_id, AuditReview.scope.in_(LOG_SCOPES)
        )
    )
    return at.astimezone(JST).date() if at else None


def _drill(session: Session, actor: Actor) -> dt.date | None:
    found = last_event(session, "system:backup:drilled", 400)
    if found is None or not (found[1].get("detail") or {}).get("ok", True):
        return None
    return found[0].astimezone(JST).date()


def _account_review(session: Session, actor: Actor) -> dt.date | None:
    at = session.scalar(
        select(func.max(AccountReview.reviewed_at)).where(
            AccountReview.clinic_id == actor.clinic_id
        )
    )
    return at.astimezone(JST).date() if at else None


def _checklist(session: Session, actor: Actor) -> dt.date | None:
    return session.scalar(
        select(func.max(ChecklistAnswer.checked_on)).where(
            ChecklistAnswer.clinic_id == actor.clinic_id
        )
    )


def _downtime_drill(session: Session, actor: Actor) -> dt.date | None:
    return session.scalar(
        select(func.max(DowntimeDrill.held_on)).where(DowntimeDrill.clinic_id == actor.clinic_id)
    )


def _bcp_approved(session: Session, actor: Actor) -> dt.date | None:
    return session.scalar(
        select(func.max(BcpApproval.approved_on)).where(BcpApproval.clinic_id == actor.clinic_id)
    )


def _training(session: Session, actor: Actor) -> dt.date | None:
    return session.scalar(
        select(func.max(TrainingSession.held_on)).where(
            TrainingSession.clinic_id == actor.clinic_id, TrainingSession.kind == "lecture"
        )
    )


@dataclass(frozen=True)
class Duty:
    key: str
    ja: str
    en: str
    days: int  # cadence
    owner: str  # the role that does it
    seen: Seen | None = None  # mamori sees it done in its own records
    where: str = ""  # the screen that does it


DUTIES: tuple[Duty, ...] = (
    Duty("log-review", "監査証跡（アクセスログ）の確認", "Review the access log", 7,
         "security_officer", _log_review, "/admin/reviews"),
    Duty("backup-check", "バックアップの実施状況の点検", "Check the backups ran", 30,
         "security_officer", None, "/admin/settings"),
    Duty("restore-drill", "復元訓練（mamori drill）", "Restore drill (mamori drill)", 30,
         "security_officer", _drill, ""),
    Duty("patch-check", "更新プログラム・パッチ適用の確認（保守ベンダーと）",
         "Patch check with the vendor", 30, "security_officer", None, ""),
    Duty("account-review", "アカウントの棚卸し", "Account review", 91, "director",
         _account_review, "/admin/accounts/review"),
    Duty("contact-chart", "連絡体制図の確認", "Check the contact chart", 91,
         "security_officer", None, "/incidents/contacts"),
    Duty("downtime-drill", "ダウンタイム訓練", "Downtime drill", 182, "director",
         _downtime_drill, "/admin/continuity"),
    Duty("training", "職員のセキュリティ研修", "Staff security training", 365, "director",
         _training, "/admin/training"),
    Duty("checklist", "サイバーセキュリティ対策チェックリストの確認", "The MHLW checklist", 365,
         "director", _checklist, "/admin/checklist"),
    Duty("bcp-review", "BCP（事業継続計画）の見直し", "Review the BCP", 365, "director",
         _bcp_approved, "/bcp"),
)  # fmt: skip
ROLES = {"director": ("院長・管理者", "director"), "security_officer": ("安全管理者", "officer")}


@dataclass
class DutyView:
    duty: Duty
    last: dt.date | None
    due: dt.date | None  # next due date (None: never done, due now)
    by_record: bool  # the last time came from mamori's own records

    @property
    def overdue(self) -> bool:
        return self.due is None or self.due < clinic_today()


def calendar(session: Session, actor: Actor) -> list[DutyView]:
    actor.require(Permission.PROGRAMME_READ)
    recorded = dict(
        session.execute(
            select(DutyDone.duty, func.max(DutyDone.done_on))
            .where(DutyDone.clinic_id == actor.clinic_id)
            .group_by(DutyDone.duty)
        ).all()
    )
    out = []
    for d in DUTIES:
        seen = d.seen(session, actor) if d.seen else None
        manual = recorded.get(d.key)
        last = max((x for x in (seen, manual) if x is not None), default=None)
        due = last + dt.timedelta(days=d.days) if last else None
        out.append(DutyView(d, last, due, seen is not None and last == seen))
    return out


def overdue_count(session: Session, actor: Actor) -> int:
    if not actor.can(Permission.PROGRAMME_READ):
        return 0
    return sum(1 for v in calendar(session, actor) if v.overdue)


def mark_done(
    session: Session, actor: Actor, key: str, done_on: dt.date, note: str = ""
) -> DutyDone:
    actor.require(Permission.PROGRAMME_MANAGE)
    if key not in {d.key for d in DUTIES}:
        raise InvalidInput("その業務はありません。", "No such duty.", field="duty")
    if done_on > clinic_today():
        raise InvalidInput("未来の日付は入力できません。", "No future dates.", field="done_on")
    row = DutyDone(
        id=new_id(),
        clinic_id=actor.clinic_id,
        duty=key,
        done_on=done_on,
        done_by_id=actor.user_id,
        note=note.strip()[:500],
    )
    session.add(row)
    record(session, actor, AuditTag.DUTY_DONE, detail={"duty": key, "on": done_on.isoformat()})
    return row


# --- training -------------------------------------------------------------------------------


@dataclass
class TrainingView:
    sessions: list[TrainingSession]
    overdue: list[str]  # active staff with no lecture attended in the last year
    last_attended: dict[uuid.UUID, dt.date]


def training(session: Session, actor: Actor) -> TrainingView:
    actor.require(Permission.PROGRAMME_READ)
    sessions = list(
        session.scalars(
            select(TrainingSession)
            .where(TrainingSession.clinic_id == actor.clinic_id)
            .order_by(TrainingSession.held_on.desc())
        )
    )
    last: dict[uuid.UUID, dt.date] = {}
    for s in sessions:
        if s.kind != "lecture":
            continue
        for uid in s.attendees:
            key = uuid.UUID(uid)
            if key not in last or last[key] < s.held_on:
                last[key] = s.held_on
    year_ago = clinic_today() - dt.timedelta(days=365)
    overdue = [
        v.display_name
        for v in admin.list_staff(session, actor)
        if v.active and v.kind == "person" and v.role != "vendor"
        and (v.id not in last or last[v.id] < year_ago)
    ]  # fmt: skip
    return TrainingView(sessions, overdue, last)


def record_training(
    session: Session,
    actor: Actor,
    *,
    held_on: dt.date,
    kind: str,
    topic: str,
    material: str,
    attendees: Sequence[uuid.UUID],
    sent: int | None = None,
    clicked: int | None = None,
    reported: int | None = None,
) -> TrainingSession:
    actor.require(Permission.PROGRAMME_MANAGE)
    if kind not in ("lecture", "phishing-drill"):
        raise InvalidInput("種類を選んでください。", "Choose a kind.", field="kind")
    if held_on > clinic_today():
        raise InvalidInput("未来の日付は入力できません。", "No future dates.", field="held_on")
    if not topic.strip():
        raise InvalidInput("内容を入力してください。", "Enter the topic.", field="topic")
    staff = {v.id for v in admin.list_staff(session, actor)}
    if any(a not in staff for a in attendees):
        raise InvalidInput("参加者が正しくありません。", "Unknown attendee.", field="attendees")
    if kind == "phishing-drill":
        if sent is None or clicked is None or reported is None:
            raise InvalidInput(
                "訓練メールの送信数・開封（クリック）数・報告数を入力してください。",
                "Enter mails sent, clicked and reported.",
                field="sent",
            )
        if min(sent, clicked, reported) < 0 or clicked > sent or reported > sent:
            raise InvalidInput(
                "開封数・報告数は送信数以下の0以上の数です。",
                "Clicked and reported are between 0 and the number sent.",
                field="clicked",
            )
    row = TrainingSession(
        id=new_id(),
        clinic_id=actor.clinic_id,
        held_on=held_on,
        kind=kind,
        topic=topic.strip()[:200],
        material=material.strip()[:300],
        attendees=[str(a) for a in attendees],
        sent=sent,
        clicked=clicked,
        reported=reported,
        recorded_by_id=actor.user_id,
    )
    session.add(row)
    record(
        session,
        actor,
        AuditTag.TRAINING_RECORDED,
        detail={"kind": kind, "on": held_on.isoformat(), "attendees": len(attendees)},
    )
    return row


def status(session: Session, actor: Actor) -> dict[str, Any]:
    """For the start pages: overdue duties (a count and names), nothing about patients."""
    views = calendar(session, actor)
    late = [v for v in views if v.overdue]
    return {"overdue": len(late), "names": [(v.duty.ja, v.duty.en) for v in late]}
