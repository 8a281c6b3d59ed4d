"""Administration: staff accounts and roles, unlocking, second-factor resets, vendor maintenance
windows and the security alerts an administrator reviews.

Role changes, new accounts and factor resets need a fresh re-authentication; nobody changes their
own role (a director cannot quietly make themselves something else, and a non-admin cannot reach
this code at all: ``staff:admin`` is checked here as well as on the route).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mamori.audit.models import AuditEvent, AuditEventUser
from mamori.audit.trail import AuditTag, record
from mamori.auth import integrations, throttle, tokens
from mamori.auth import service as auth
from mamori.auth import sessions as auth_sessions
from mamori.auth.models import AuthFactor, AuthSession, SecurityAlert, VendorWindow
from mamori.authz import gate
from mamori.authz.actor import Actor
from mamori.authz.permissions import P
from mamori.authz.restricted import require_recent_auth
from mamori.authz.roles import Role
from mamori.clinic import service as clinic_service
from mamori.clinic.models import StaffUser
from mamori.db import utcnow
from mamori.errors import Conflict, InvalidInput, NotAllowed
from mamori.restrictions import service as restrictions

MAX_WINDOW_HOURS = 12


@dataclasses.dataclass(frozen=True)
class StaffView:
    id: uuid.UUID
    login_id: str
    display_name: str
    display_kana: str
    role: str
    role_ja: str
    kind: str  # person | integration (no password, acts only by API tokens)
    active: bool
    expires_at: dt.datetime | None
    factors: list[str]
    recovery_codes_left: int
    locked: bool
    active_sessions: int
    last_sign_in: dt.datetime | None


def _staff(session: Session, actor: Actor, user_id: uuid.UUID) -> StaffUser:
    return gate.clinic_row_for(session, actor, StaffUser, user_id, "staff")


def list_staff(session: Session, actor: Actor) -> list[StaffView]:
    actor.require(P.STAFF_READ)
    users = session.scalars(
        select(StaffUser).where(StaffUser.clinic_id == actor.clinic_id).order_by(StaffUser.login_id)
    ).all()
    now = utcnow()
    factors: dict[uuid.UUID, list[AuthFactor]] = {}
    for f in session.scalars(
        select(AuthFactor)
        .join(StaffUser, StaffUser.id == AuthFactor.user_id)
        .where(StaffUser.clinic_id == actor.clinic_id, AuthFactor.revoked_at.is_(None))
    ):
        factors.setdefault(f.user_id, []).append(f)
    sessions = dict(
        session.execute(
            select(AuthSession.user_id, func.count())
            .where(
                AuthSession.clinic_id == actor.clinic_id,
                AuthSession.revoked_at.is_(None),
                AuthSession.stage == auth.Stage.FULL,
                AuthSession.expires_at > now,
            )
            .group_by(AuthSession.user_id)
        ).all()
    )
    last = dict(
        session.execute(
            select(AuthSession.user_id, func.max(AuthSession.created_at))
            .where(AuthSession.clinic_id == actor.clinic_id, AuthSession.stage == auth.Stage.FULL)
            .group_by(AuthSession.user_id)
        ).all()
    )
    out = []
    for u in users:
        mine = factors.get(u.id, [])
        out.append(
            StaffView(
                id=u.id,
                login_id=u.login_id,
                display_name=u.display_name,
                display_kana=u.display_kana,
                role=u.role,
                role_ja=Role(u.role).label_ja,
                kind=u.kind,
                active=u.usable(now),
                expires_at=u.expires_at,
                factors=sorted({f.kind for f in mine if f.kind != "recovery"}),
                recovery_codes_left=sum(1 for f in mine if f.kind == "recovery" and not f.used_at),
                locked=throttle.is_locked(session, str(u.id)),
                active_sessions=int(sessions.get(u.id, 0)),
                last_sign_in=last.get(u.id),
            )
        )
    return out


def staff_view(session: Session, actor: Actor, user_id: uuid.UUID) -> StaffView:
    session.flush()
    return next(v for v in list_staff(session, actor) if v.id == user_id)


def two_factor_coverage(session: Session, actor: Actor) -> dict[str, int]:
    """CL-2-10 evidence, counted from the accounts and tokens as they are: active people with
    a second factor; integration accounts (no password, never sign in) and live tokens apart;
    and the people who could reach data without a second factor through a token (0 unless
    something is wrong — a token is issued only to a person with a factor)."""
    views = list_staff(session, actor)
    people = [v for v in views if v.active and v.kind == tokens.PERSON]
    live = [t for t in integrations.list_tokens(session, actor) if t.live]
    with_token = {t.user_id for t in live if t.account_kind == tokens.PERSON}
    return {
        "active": len(people),
        "with_2fa": sum(1 for v in people if v.factors),
        "integrations": sum(1 for v in views if v.active and v.kind == tokens.INTEGRATION),
        "live_tokens": len(live),
        "people_with_tokens": len(with_token),
        "tokens_without_2fa": sum(1 for v in people if v.id in with_token and not v.factors),
    }


def create_staff(
    session: Session,
    actor: Actor,
    *,
    login_id: str,
    display_name: str,
    display_kana: str,
    role: Role,
    password: str,
    expires_at: dt.datetime | None,
    birth_date: dt.date | None,
    reauth_minutes: int,
) -> StaffUser:
    actor.require(P.STAFF_ADMIN)
    require_recent_auth(actor, reauth_minutes)
    clinic = clinic_service.clinic_of(session, actor)
    user = clinic_service.add_staff(
        session,
        clinic,
        login_id=login_id,
        display_name=display_name,
        role=role,
        display_kana=display_kana,
    )
    user.expires_at, user.birth_date = expires_at, birth_date
    auth.set_password(session, user, password, initial=True)
    restrictions.refresh_staff_flag(session, restrictions.patients_matching_staff(session, user))
    record(
        session,
        actor,
        AuditTag.STAFF_CREATED,
        detail={"user": str(user.id), "role": role.value},
    )
    return user


def update_staff(
    session: Session,
    actor: Actor,
    user_id: uuid.UUID,
    *,
    role: Role | None = None,
    active: bool | None = None,
    expires_at: dt.datetime | None = None,
    clear_expiry: bool = False,
    display_kana: str | None = None,
    birth_date: dt.date | None = None,
    reauth_minutes: int,
) -> StaffUser:
    actor.require(P.STAFF_ADMIN)
    require_recent_auth(actor, reauth_minutes)
    user = _staff(session, actor, user_id)
    changes: dict[str, Any] = {}
    if role is not None and role.value != user.role:
        if user.id == actor.user_id:
            raise NotAllowed(
                "自分自身の役割は変更できません（別の管理者が行ってください）。",
                "You cannot change your own role; another administrator must.",
                field="role",
            )
        changes["role"] = [user.role, role.value]
        user.role = role
    before = restrictions.patients_matching_staff(session, user)
    if display_kana is not None and display_kana != user.display_kana:
        user.display_kana, changes["display_kana"] = display_kana, True
    if birth_date is not None and birth_date != user.birth_date:
        user.birth_date, changes["birth_date"] = birth_date, True
    if clear_expiry or expires_at is not None:
        user.expires_at = None if clear_expiry else expires_at
        changes["expires_at"] = user.expires_at.isoformat() if user.expires_at else None
    if active is not None and active != user.active:
        if user.id == actor.user_id and not active:
            raise NotAllowed(
                "自分自身のアカウントは無効にできません。",
                "You cannot disable your own account.",
                field="active",
            )
        user.active = active
        user.disabled_at = None if active else utcnow()
        changes["active"] = active
    if not changes:
        return user
    session.flush()
    restrictions.refresh_staff_flag(
        session,
        {p.id: p for p in before + restrictions.patients_matching_staff(session, user)}.values(),  # type: ignore[arg-type]
    )
    if "role" in changes or changes.get("active") is False:
        # a changed role or a disabled account ends every session and token at once
        end_access(session, user, "account-changed")
    tag = (
        AuditTag.ROLE_CHANGED
        if "role" in changes
        else AuditTag.STAFF_DISABLED
        if changes.get("active") is False
        else AuditTag.STAFF_CHANGED
    )
    record(session, actor, tag, detail={"user": str(user.id), "changes": changes})
    return user


def end_access(session: Session, user: StaffUser, reason: str) -> None:
    """Every live session and API token of the account ends now."""
    session.execute(
        update(AuthSession)
        .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )
    tokens.revoke_tokens(session, user)


def unlock(session: Session, actor: Actor, user_id: uuid.UUID) -> bool:
    actor.require(P.SESSION_ADMIN)
    user = _staff(session, actor, user_id)
    done = throttle.unlock(session, str(user.id))
    record(session, actor, AuditTag.ACCOUNT_UNLOCKED, detail={"user": str(user.id), "was": done})
    return done


def reset_factors(
    session: Session, actor: Actor, user_id: uuid.UUID, *, reauth_minutes: int
) -> int:
    """Lost phone and lost recovery codes: revoke every second factor and every session; the
    person enrols again at the next sign-in (with their password)."""
    actor.require(P.STAFF_ADMIN)
    require_recent_auth(actor, reauth_minutes)
    user = _staff(session, actor, user_id)
    now = utcnow()
    result = session.execute(
        update(AuthFactor)
        .where(AuthFactor.user_id == user.id, AuthFactor.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    session.execute(
        update(AuthSession)
        .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason="factors-reset")
    )
    tokens.revoke_tokens(session, user)  # a person's token stands on their second factor
    count = int(getattr(result, "rowcount", 0) or 0)
    record(session, actor, AuditTag.FACTOR_REVOKED, detail={"user": str(user.id), "count": count})
    return count


def sessions_of(session: Session, actor: Actor, user_id: uuid.UUID) -> Sequence[AuthSession]:
    if user_id != actor.user_id:
        actor.require(P.SESSION_ADMIN)
        _staff(session, actor, user_id)
    return auth_sessions.list_sessions(session, user_id)


def revoke(
    session: Session,
    actor: Actor,
    user_id: uuid.UUID,
    *,
    session_id: uuid.UUID | None,
    device_id: str | None,
) -> int:
    if user_id != actor.user_id:
        actor.require(P.SESSION_ADMIN)
        _staff(session, actor, user_id)
    return auth_sessions.revoke_sessions(
        session, actor, user_id, session_id=session_id, device_id=device_id
    )


# --- vendor maintenance windows ------------------------------------------------------------------


def open_vendor_window(
    session: Session,
    actor: Actor,
    *,
    vendor_user_id: uuid.UUID,
    ticket: str,
    reason: str,
    starts_at: dt.datetime | None,
    minutes: int,
    reauth_minutes: int,
) -> VendorWindow:
    actor.require(P.VENDOR_WINDOW_ADMIN)
    require_recent_auth(actor, reauth_minutes)
    vendor = _staff(session, actor, vendor_user_id)
    if Role(vendor.role) is not Role.VENDOR:
        raise InvalidInput(
            "保守作業の時間枠は IT保守ベンダーのアカウントにだけ設定できます。",
            "Maintenance windows are for vendor accounts only.",
            field="vendor_user_id",
        )
    if not ticket.strip() or not reason.strip():
        raise InvalidInput(
            "作業票番号と理由を入力してください。",
            "A ticket and a reason are required.",
            field="ticket" if not ticket.strip() else "reason",
        )
    if not 1 <= minutes <= MAX_WINDOW_HOURS * 60:
        raise InvalidInput(
            f"時間枠は1分〜{MAX_WINDOW_HOURS}時間にしてください。",
            f"A window lasts between 1 minute and {MAX_WINDOW_HOURS} hours.",
            field="minutes",
        )
    start = starts_at or utcnow()
    window = VendorWindow(
        clinic_id=actor.clinic_id,
        vendor_user_id=vendor.id,
        opened_by=actor.user_id,
        ticket=ticket.strip()[:100],
        reason=reason.strip()[:500],
        starts_at=start,
        ends_at=start + dt.timedelta(minutes=minutes),
    )
    session.add(window)
    session.flush()
    record(
        session,
        actor,
        AuditTag.VENDOR_WINDOW_OPENED,
        detail={
            "window": str(window.id),
            "vendor": str(vendor.id),
            "from": window.starts_at.isoformat(),
            "until": window.ends_at.isoformat(),
        },
    )
    return window


def _window(session: Session, actor: Actor, window_id: uuid.UUID) -> VendorWindow:
    return gate.clinic_row_for(session, actor, VendorWindow, window_id, "vendor window")


def close_vendor_window(session: Session, actor: Actor, window_id: uuid.UUID) -> VendorWindow:
    actor.require(P.VENDOR_WINDOW_ADMIN)
    window = _window(session, actor, window_id)
    now = utcnow()
    if window.closed_at is None:
        window.closed_at = now
        window.ends_at = min(window.ends_at, now)
        record(session, actor, AuditTag.VENDOR_WINDOW_CLOSED, detail={"window": str(window.id)})
    return window


def list_vendor_windows(session: Session, actor: Actor) -> Sequence[VendorWindow]:
    actor.require(P.VENDOR_WINDOW_ADMIN)
    return session.scalars(
        select(VendorWindow)
        .where(VendorWindow.clinic_id == actor.clinic_id)
        .order_by(VendorWindow.starts_at.desc())
        .limit(200)
    ).all()


def vendor_window_report(session: Session, actor: Actor, window_id: uuid.UUID) -> dict[str, Any]:
    """Every patient the vendor's account touched during the window (from the audit trail)."""
    actor.require(P.VENDOR_WINDOW_ADMIN)
    window = _window(session, actor, window_id)
    rows = session.execute(
        select(AuditEvent.seq, AuditEvent.tag, AuditEvent.body)
        .join(AuditEventUser, AuditEventUser.seq == AuditEvent.seq)
        .where(
            AuditEventUser.user_id == window.vendor_user_id,
            AuditEvent.recorded_at >= window.starts_at,
            AuditEvent.recorded_at <= (window.closed_at or window.ends_at),
        )
        .order_by(AuditEvent.seq)
    ).all()
    patients: dict[str, int] = {}
    tags: dict[str, int] = {}
    for _, tag, body in rows:
        tags[tag] = tags.get(tag, 0) + 1
        for pid in json.loads(bytes(body)).get("patients", []):
            patients[pid] = patients.get(pid, 0) + 1
    record(
        session,
        actor,
        AuditTag.AUDIT_VIEWED,
        patients=[uuid.UUID(p) for p in patients],
        detail={"scope": "vendor-window", "window": str(window.id)},
    )
    return {
        "window": window,
        "events": len(rows),
        "by_action": tags,
        "patients": [{"patient_id": p, "events": n} for p, n in sorted(patients.items())],
    }


def acknowledge_vendor_window(
    session: Session, actor: Actor, window_id: uuid.UUID, note: str
) -> VendorWindow:
    """The director acknowledges the post-maintenance report (after the window has ended)."""
    actor.require(P.STAFF_ADMIN)
    window = _window(session, actor, window_id)
    if window.acknowledged_at is not None:
        raise Conflict("確認済みです。", "Already acknowledged.")
    if (window.closed_at or window.ends_at) > utcnow():
        raise Conflict(
            "時間枠が終わってから確認してください。",
            "Acknowledge the report after the window has ended.",
        )
    window.acknowledged_by, window.acknowledged_at = actor.user_id, utcnow()
    window.acknowledgement = note.strip()[:1000]
    record(session, actor, AuditTag.VENDOR_WINDOW_ACKNOWLEDGED, detail={"window": str(window.id)})
    return window


# --- alerts ------------------------------------------------------------------------------------


def list_alerts(session: Session, actor: Actor, *, open_only: bool) -> Sequence[SecurityAlert]:
    actor.require(P.AUDIT_READ)
    stmt = select(SecurityAlert).where(SecurityAlert.clinic_id == actor.clinic_id)
    if open_only:
        stmt = stmt.where(SecurityAlert.reviewed_at.is_(None))
    alerts = session.scalars(stmt.order_by(SecurityAlert.created_at.desc()).limit(500)).all()
    record(  # the list names patients (whose record was broken into): reading it is logged
        session,
        actor,
        AuditTag.AUDIT_VIEWED,
        patients=sorted({a.patient_id for a in alerts if a.patient_id}),
        detail={"scope": "alerts", "rows": len(alerts)},
    )
    return alerts


def open_alert_count(session: Session, actor: Actor) -> int:
    """How many alerts wait for review (the menu's badge): a number, no patient named."""
    actor.require(P.AUDIT_READ)
    return int(
        session.scalar(
            select(func.count())
            .select_from(SecurityAlert)
            .where(SecurityAlert.clinic_id == actor.clinic_id, SecurityAlert.reviewed_at.is_(None))
        )
        or 0
    )


def review_alert(
    session: Session, actor: Actor, alert_id: uuid.UUID, *, outcome: str, finding: str
) -> SecurityAlert:
    actor.require(P.AUDIT_REVIEW)
    alert = gate.clinic_row_for(session, actor, SecurityAlert, alert_id, "alert")
    if outcome not in ("no-issue", "follow-up"):
        raise InvalidInput("結果を選んでください。", "Choose an outcome.", field="outcome")
    if outcome == "follow-up" and not finding.strip():
        raise InvalidInput(
            "要対応の場合は所見を入力してください。",
            "A follow-up needs a finding.",
            field="finding",
        )
    if alert.reviewed_at is not None:
        raise Conflict("確認済みです。", "Already reviewed.")
    alert.reviewed_by, alert.reviewed_at = actor.user_id, utcnow()
    alert.outcome, alert.finding = outcome, finding.strip()[:1000]
    record(
        session,
        actor,
        AuditTag.ALERT_REVIEWED,
        patients=[alert.patient_id] if alert.patient_id else [],
        detail={"alert": str(alert.id), "kind": alert.kind, "outcome": outcome},
    )
    return alert
