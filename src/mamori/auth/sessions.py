"""The signed-in session: each request's authentication, idle logoff, re-authentication,
logout, and listing and revoking sessions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record
from mamori.auth import factors, passwords, throttle
from mamori.auth.models import AuthSession
from mamori.auth.service import (
    TOUCH_EVERY,
    Client,
    Stage,
    active_factors,
    actor_of,
    bad_credentials,
    bad_factor,
    check_assertion,
    fail_and_commit,
    keyed,
    permissions_for,
)
from mamori.authz.actor import Actor
from mamori.clinic.models import StaffUser
from mamori.db import utcnow
from mamori.errors import TooManyAttempts, Unauthenticated
from mamori.settings import AuthSettings


def _expire(session: Session, session_id: uuid.UUID, reason: str) -> None:
    session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )


@dataclass
class Authenticated:
    actor: Actor
    row: AuthSession
    session_id: uuid.UUID  # the row's ID, usable after the request's transaction has closed
    touch: bool  # last_seen is stale enough to be written
    expired: str | None = None  # idle | absolute | account: the session must be ended


def authenticate(
    session: Session, pepper: bytes, token: str, client: Client, channel: str
) -> Authenticated:
    """The actor of a full session cookie; ``Unauthenticated`` for anything else."""
    if not token or len(token) > 100:
        raise Unauthenticated()
    row = session.scalar(
        select(AuthSession).where(AuthSession.token_hash == keyed(pepper, "session", token))
    )
    if row is None or row.revoked_at is not None or row.stage != Stage.FULL:
        raise Unauthenticated()
    now = utcnow()
    user = session.get(StaffUser, row.user_id)
    if user is None:  # accounts are never deleted; a dangling session is simply refused
        raise Unauthenticated()
    expired = None
    if now >= row.expires_at:
        expired = "absolute"
    elif now - row.last_seen_at > dt.timedelta(seconds=row.idle_seconds):
        expired = "idle"
    elif not user.usable(now):
        expired = "account"
    actor = actor_of(user, row, channel, client)
    if expired is None:
        try:
            perms = permissions_for(session, user, now)
        except Unauthenticated:
            perms, expired = None, "outside-window"
        if perms is not None:
            actor = dataclasses.replace(actor, permissions=perms)
    return Authenticated(
        actor=actor,
        row=row,
        session_id=row.id,
        touch=now - row.last_seen_at > TOUCH_EVERY,
        expired=expired,
    )


def touch(session: Session, session_id: uuid.UUID) -> None:
    session.execute(
        update(AuthSession).where(AuthSession.id == session_id).values(last_seen_at=utcnow())
    )


def end_expired(session: Session, auth: Authenticated) -> None:
    """Close a session found idle/too old/of a disabled account, with its audit event."""
    _expire(session, auth.session_id, auth.expired or "expired")
    record(session, auth.actor, AuditTag.SESSION_EXPIRED, detail={"reason": auth.expired})


def logout(session: Session, actor: Actor) -> None:
    if actor.session_id is None:
        return
    _expire(session, actor.session_id, "logout")
    record(session, actor, AuditTag.LOGGED_OUT)


def reauthenticate(
    session: Session,
    pepper: bytes,
    policy: AuthSettings,
    actor: Actor,
    *,
    password: str,
    code: str | None,
    credential: dict[str, Any] | None,
    client: Client,
) -> None:
    """Password and second factor again, before a sensitive action."""
    row = session.get(AuthSession, actor.session_id) if actor.session_id else None
    user = session.get(StaffUser, actor.user_id)
    if row is None or user is None:
        raise Unauthenticated()
    keys = throttle.keys_for(str(user.id), user.login_id, client.ip)
    wait = throttle.retry_after(session, keys, utcnow(), known_device=True)
    if wait > 0:
        raise TooManyAttempts(wait)
    ok = passwords.verify(user.password_hash, password)
    second = False
    if ok and code:
        for factor in active_factors(session, user.id):
            if factor.kind == "totp" and factor.secret is not None:
                seed = factors.open_secret(pepper, user.id, "totp", factor.secret).decode()
                step = factors.totp_step(seed, code, factor.last_step)
                if step is not None:
                    factor.last_step, factor.last_used_at = step, utcnow()
                    second = True
                    break
    elif ok and credential:
        second = check_assertion(session, policy, row, user, credential)
    if not (ok and second):
        fail_and_commit(session, user, keys, client, "reauth", AuditTag.FACTOR_FAILED, row)
        raise bad_factor() if ok else bad_credentials()
    row.reauth_at = utcnow()
    record(session, actor, AuditTag.REAUTHENTICATED)


def list_sessions(session: Session, user_id: uuid.UUID) -> Sequence[AuthSession]:
    now = utcnow()
    return session.scalars(
        select(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now,
        )
        .order_by(AuthSession.last_seen_at.desc())
    ).all()


def revoke_sessions(
    session: Session,
    actor: Actor,
    user_id: uuid.UUID,
    *,
    session_id: uuid.UUID | None = None,
    device_id: str | None = None,
    reason: str = "revoked",
) -> int:
    """Revoke one session, every session on one device, or all of a person's sessions."""
    stmt = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if session_id is not None:
        stmt = stmt.where(AuthSession.id == session_id)
    if device_id is not None:
        stmt = stmt.where(AuthSession.device_id == device_id)
    result = session.execute(stmt.values(revoked_at=utcnow(), revoked_reason=reason))
    count = int(getattr(result, "rowcount", 0) or 0)
    record(
        session,
        actor,
        AuditTag.SESSION_REVOKED,
        detail={
            "user": str(user_id),
            "count": count,
            "scope": "session" if session_id else "device" if device_id else "all",
        },
    )
    return count
