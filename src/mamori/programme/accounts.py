"""The account review (アカウントの棚卸し, CL-2-5; seed 003: 使っていないものは停止・削除):
every active account with what makes it worth a look — unused for 90 days, never used,
past its end date, kept after its leaving date, holding administrator rights, a vendor, an
integration with live tokens — and the director's decision for each (keep, with a reason,
or disable), recorded as one review."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record, record_system
from mamori.auth import admin, integrations
from mamori.auth.models import AuthSession, SecurityAlert
from mamori.authz.actor import Actor
from mamori.authz.permissions import ROLE_PERMISSIONS, Permission
from mamori.authz.roles import Role
from mamori.clinic.calendar import JST
from mamori.clinic.models import StaffUser
from mamori.db import new_id, utcnow
from mamori.detection.models import StaffProfile
from mamori.errors import InvalidInput
from mamori.programme.evidence import UNUSED_DAYS
from mamori.programme.models import AccountReview

FLAGS = {
    "unused": (f"{UNUSED_DAYS}日以上未使用", f"unused for {UNUSED_DAYS} days"),
    "never": ("一度もログインしていない", "never signed in"),
    "expired": ("利用期限切れ", "past its end date"),
    "left": ("退職日を過ぎている", "past the leaving date"),
    "admin": ("管理者権限", "administrator rights"),
    "vendor": ("保守ベンダー", "vendor"),
    "integration": ("連携（APIトークン）", "integration (API tokens)"),
}
# flags that call for disabling unless a reason to keep is recorded
ATTENTION = frozenset({"unused", "never", "expired", "left"})
NEVER_GRACE_DAYS = 30  # an account made this recently and not used yet is just new


@dataclass
class AccountRow:
    user_id: uuid.UUID
    name: str
    login_id: str
    role_ja: str
    last_sign_in: dt.datetime | None
    flags: list[str] = field(default_factory=list)

    @property
    def needs_decision(self) -> bool:
        return bool(set(self.flags) & ATTENTION)


def review_list(session: Session, actor: Actor) -> list[AccountRow]:
    actor.require(Permission.PROGRAMME_READ)
    now = utcnow()
    today = now.astimezone(JST).date()
    created = dict(
        session.execute(
            select(StaffUser.id, StaffUser.created_at).where(StaffUser.clinic_id == actor.clinic_id)
        ).all()
    )
    left = dict(
        session.execute(
            select(StaffProfile.user_id, StaffProfile.left_on).where(
                StaffProfile.clinic_id == actor.clinic_id, StaffProfile.left_on.is_not(None)
            )
        ).all()
    )
    live_tokens = {t.user_id for t in integrations.list_tokens(session, actor) if t.live}
    users = {
        u.id: u
        for u in session.scalars(select(StaffUser).where(StaffUser.clinic_id == actor.clinic_id))
    }
    out: list[AccountRow] = []
    for v in admin.list_staff(session, actor):
        u = users.get(v.id)
        if u is None or not u.active:
            continue  # disabled accounts are done with
        row = AccountRow(v.id, v.display_name, v.login_id, v.role_ja, v.last_sign_in)
        if v.kind == "integration":
            row.flags.append("integration")
            if v.id not in live_tokens:
                row.flags.append("unused")
        elif v.last_sign_in is None:
            made = created.get(v.id) or now
            if made < now - dt.timedelta(days=NEVER_GRACE_DAYS):
                row.flags.append("never")
        elif v.last_sign_in < now - dt.timedelta(days=UNUSED_DAYS):
            row.flags.append("unused")
        if u.expires_at is not None and u.expires_at < now:
            row.flags.append("expired")
        gone = left.get(v.id)
        if gone is not None and gone < today:
            row.flags.append("left")
        if Permission.STAFF_ADMIN in ROLE_PERMISSIONS.get(Role(v.role), frozenset()):
            row.flags.append("admin")
        if v.role == Role.VENDOR.value:
            row.flags.append("vendor")
        out.append(row)
    out.sort(key=lambda r: (not r.needs_decision, not r.flags, r.login_id))
    return out


def record_review(
    session: Session,
    actor: Actor,
    *,
    decisions: dict[uuid.UUID, tuple[str, str]],
    finding: str,
    reauth_minutes: int,
) -> AccountReview:
    """Record the review: every account needing a decision gets one — ``keep`` with a reason,
    or ``disable`` (done here, by the director: it needs ``staff:admin`` and a fresh
    re-authentication, and ends the account's sessions and tokens)."""
    actor.require(Permission.PROGRAMME_MANAGE)
    rows = review_list(session, actor)
    out: list[dict[str, object]] = []
    missing = []
    for row in rows:
        decision, reason = decisions.get(row.user_id, ("", ""))
        if row.needs_decision and decision not in ("keep", "disable"):
            missing.append(row.name)
            continue
        if decision == "keep" and row.needs_decision and not reason.strip():
            raise InvalidInput(
                f"{row.name} を継続する理由を入力してください。",
                f"Give the reason to keep {row.name}.",
                field="reason",
            )
        if decision == "disable":
            admin.update_staff(
                session, actor, row.user_id, active=False, reauth_minutes=reauth_minutes
            )
        if decision or row.flags:
            out.append(
                {
                    "user": str(row.user_id),
                    "name": row.name,
                    "flags": row.flags,
                    "decision": "disabled" if decision == "disable" else (decision or "keep"),
                    "reason": reason.strip()[:300],
                }
            )
    if missing:
        raise InvalidInput(
            "判断していないアカウントがあります: " + "、".join(missing),
            "Decide on every flagged account: " + ", ".join(missing),
            field="decision",
        )
    review = AccountReview(
        id=new_id(),
        clinic_id=actor.clinic_id,
        reviewer_id=actor.user_id,
        reviewed_at=utcnow(),
        accounts=len(rows),
        decisions=out,
        finding=finding.strip()[:1000],
    )
    session.add(review)
    record(
        session,
        actor,
        AuditTag.ACCOUNTS_REVIEWED,
        detail={
            "accounts": len(rows),
            "disabled": sum(1 for d in out if d["decision"] == "disabled"),
            "kept": sum(1 for d in out if d["decision"] == "keep"),
        },
    )
    session.flush()
    return review


def last_review(session: Session, actor: Actor) -> AccountReview | None:
    return session.scalar(
        select(AccountReview)
        .where(AccountReview.clinic_id == actor.clinic_id)
        .order_by(AccountReview.reviewed_at.desc())
        .limit(1)
    )


def disable_unused(session: Session, clinic_id: uuid.UUID, days: int) -> list[str]:
    """``[auth] disable_unused_days``: disable the accounts nobody has signed in with for
    ``days`` (never a director's — the clinic must not lock itself out — and never the last
    active security officer); their sessions and tokens end, an alert says who."""
    if days <= 0:
        return []
    now = utcnow()
    cutoff = now - dt.timedelta(days=days)
    last = dict(
        session.execute(
            select(AuthSession.user_id, func.max(AuthSession.last_seen_at))
            .where(AuthSession.clinic_id == clinic_id)
            .group_by(AuthSession.user_id)
        ).all()
    )
    users = list(
        session.scalars(
            select(StaffUser).where(StaffUser.clinic_id == clinic_id, StaffUser.active.is_(True))
        )
    )
    officers = [u for u in users if u.role == Role.SECURITY_OFFICER.value]
    done: list[str] = []
    for u in users:
        if u.role == Role.DIRECTOR.value or u.kind != "person":
            continue
        if u.role == Role.SECURITY_OFFICER.value and len(officers) <= 1:
            continue
        seen = last.get(u.id) or u.created_at
        if seen is None or seen >= cutoff:
            continue
        u.active, u.disabled_at = False, now
        admin.end_access(session, u, "unused")
        if u in officers:
            officers.remove(u)
        done.append(u.display_name)
        record_system(
            session,
            AuditTag.STAFF_DISABLED,
            {"user": str(u.id), "reason": f"unused for {days} days"},
            channel="serve",
        )
    if done:
        session.add(
            SecurityAlert(
                clinic_id=clinic_id,
                kind="account-disabled",
                summary=f"{days}日以上使われていないアカウントを無効化: {'、'.join(done)}"[:300],
            )
        )
    return done


def disable_unused_due(database: Any, days: int) -> int:
    """``mamori serve``'s task, for every clinic of the instance."""
    from mamori.clinic.models import Clinic

    if days <= 0:
        return 0
    count = 0
    with database.session(write=True) as session:
        for clinic_id in session.scalars(select(Clinic.id)):
            count += len(disable_unused(session, clinic_id, days))
        session.commit()
    return count
