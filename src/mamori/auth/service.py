"""Sign-in, second factors, sessions and re-authentication.

Flow (every account, from its first sign-in)::

    password ─┬─► "factor" (has a second factor) ──► TOTP / passkey / recovery code ──► "full"
              └─► "enrol"  (has none yet)        ──► enrol TOTP or a passkey        ──► "full"

Only a ``full`` session reaches any data. Each stage change issues a **new** session token (the
old one stops working), so a token planted before sign-in is worthless after it (fixation).
Sessions end after ``idle_minutes`` without a request (shorter on shared terminals) and after
``absolute_hours`` in any case; people and administrators list and revoke them, one at a time,
per device ("I lost the tablet") or all at once.

Failures are written and committed *before* the error is raised: a rolled-back request must not
erase the evidence of a guessing attempt or its throttle counters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record, record_anonymous
from mamori.auth import factors, passwords, throttle
from mamori.auth.models import AuthFactor, AuthSession, PasswordHistory, SecurityAlert, VendorWindow
from mamori.authz.actor import Actor
from mamori.authz.permissions import VENDOR_WINDOW_PERMISSIONS
from mamori.authz.roles import Role
from mamori.clinic.models import Clinic, StaffUser
from mamori.clinic.service import actor_for
from mamori.db import utcnow
from mamori.errors import InvalidInput, NotAllowed, NotFound, TooManyAttempts, Unauthenticated
from mamori.settings import AuthSettings

MAX_FACTOR_FAILURES = 5
TOUCH_EVERY = dt.timedelta(seconds=30)


class Stage:
    NEW_PASSWORD = "new-password"  # noqa: S105 - a stage name: the person chooses their own
    FACTOR = "factor"
    ENROL = "enrol"
    FULL = "full"


def bad_credentials() -> Unauthenticated:
    return Unauthenticated(
        "ログインIDまたはパスワードが違います。",
        "Wrong login ID or password.",
        code="bad_credentials",
    )


def bad_factor() -> Unauthenticated:
    return Unauthenticated(
        "確認コードまたはパスキーを確認できませんでした。",
        "The code or passkey could not be verified.",
        code="bad_second_factor",
    )


def keyed(pepper: bytes, purpose: str, token: str) -> str:
    return hmac.new(pepper, f"{purpose}:{token}".encode(), hashlib.sha256).hexdigest()


def csrf_token(pepper: bytes, session_token: str) -> str:
    """The CSRF token of a session: derived, so nothing more is stored."""
    return keyed(pepper, "csrf", session_token)


@dataclass(frozen=True)
class Client:
    """Where a request comes from."""

    ip: str | None
    user_agent: str
    device_token: str | None  # the long-lived device cookie, if the browser has one


@dataclass
class Issued:
    token: str
    row: AuthSession
    device_token: str


def actor_of(user: StaffUser, row: AuthSession | None, channel: str, client: Client) -> Actor:
    return dataclasses.replace(
        actor_for(user, channel),
        auth_method=(row.second_factor or "password") if row else "password",
        source_ip=client.ip,
        user_agent=client.user_agent or None,
        session_id=row.id if row else None,
        reauth_at=row.reauth_at if row else None,
    )


def _new_session(
    session: Session,
    pepper: bytes,
    policy: AuthSettings,
    user: StaffUser,
    client: Client,
    *,
    stage: str,
    shared_terminal: bool,
) -> Issued:
    now = utcnow()
    token = secrets.token_urlsafe(32)
    device = client.device_token or secrets.token_urlsafe(32)
    idle = policy.shared_idle_minutes if shared_terminal else policy.idle_minutes
    row = AuthSession(
        token_hash=keyed(pepper, "session", token),
        user_id=user.id,
        clinic_id=user.clinic_id,
        device_id=keyed(pepper, "device", device),
        stage=stage,
        created_at=now,
        last_seen_at=now,
        idle_seconds=idle * 60,
        expires_at=now + dt.timedelta(hours=policy.absolute_hours),
        shared_terminal=shared_terminal,
        source_ip=client.ip,
        user_agent=client.user_agent[:300],
        factor_failures=0,
    )
    session.add(row)
    session.flush()
    return Issued(token=token, row=row, device_token=device)


def _rotate(session: Session, pepper: bytes, row: AuthSession) -> str:
    """A new token for the same session (each stage change): the old one stops working."""
    token = secrets.token_urlsafe(32)
    row.token_hash = keyed(pepper, "session", token)
    return token


def _find_user(session: Session, clinic_code: str | None, login_id: str) -> StaffUser | None:
    stmt = select(StaffUser).where(StaffUser.login_id == login_id)
    if clinic_code:
        stmt = stmt.join(Clinic, Clinic.id == StaffUser.clinic_id).where(
            Clinic.institution_code == clinic_code
        )
    users = session.scalars(stmt.limit(2)).all()
    return users[0] if len(users) == 1 else None  # ambiguous across clinics: name the clinic


def _known_device(session: Session, pepper: bytes, user: StaffUser, client: Client) -> bool:
    if not client.device_token:
        return False
    return (
        session.scalar(
            select(AuthSession.id)
            .where(
                AuthSession.user_id == user.id,
                AuthSession.device_id == keyed(pepper, "device", client.device_token),
                AuthSession.second_factor.is_not(None),
            )
            .limit(1)
        )
        is not None
    )


def active_factors(session: Session, user_id: uuid.UUID) -> Sequence[AuthFactor]:
    return session.scalars(
        select(AuthFactor).where(AuthFactor.user_id == user_id, AuthFactor.revoked_at.is_(None))
    ).all()


def passkeys_of(session: Session, user_id: uuid.UUID) -> list[bytes]:
    return [
        f.credential_id
        for f in active_factors(session, user_id)
        if f.kind == "webauthn" and f.credential_id
    ]


def factor_kinds(session: Session, user_id: uuid.UUID) -> list[str]:
    kinds = {f.kind for f in active_factors(session, user_id) if f.kind != "recovery"}
    return sorted(kinds)


def _alert(session: Session, user: StaffUser, kind: str, summary: str) -> None:
    session.add(
        SecurityAlert(clinic_id=user.clinic_id, kind=kind, user_id=user.id, summary=summary[:300])
    )


def fail_and_commit(
    session: Session,
    user: StaffUser | None,
    keys: throttle.Keys,
    client: Client,
    reason: str,
    tag: AuditTag = AuditTag.LOGIN_FAILED,
    row: AuthSession | None = None,
    *,
    count: bool = True,
) -> None:
    """Count the failure, record it (with a lockout if this one caused it), and commit. An
    attempt refused by the throttle itself tested nothing and is recorded but not counted."""
    now = utcnow()
    locked = throttle.fail(session, keys, now) if count else False
    if user is not None:
        actor = actor_of(user, row, "api", client)
        record(session, actor, tag, detail={"reason": reason}, outcome="failure")
        if locked:
            record(
                session, actor, AuditTag.ACCOUNT_LOCKED, detail={"failures": throttle.ACCT_LOCK_AT}
            )
            _alert(session, user, "lockout", f"{user.display_name} のアカウントをロックしました")
    else:
        record_anonymous(
            session,
            tag,
            {"reason": reason, "login": keys.acct_src.split(":")[2]},
            source_ip=client.ip,
            user_agent=client.user_agent,
        )
    session.commit()


def sign_in(
    session: Session,
    pepper: bytes,
    policy: AuthSettings,
    *,
    clinic_code: str | None,
    login_id: str,
    password: str,
    client: Client,
    shared_terminal: bool = False,
) -> Issued:
    """Step one: the password. Returns a session in stage ``factor`` or ``enrol``."""
    login_id = login_id.strip()[:64]
    user = _find_user(session, clinic_code, login_id)
    keys = throttle.keys_for(str(user.id) if user else None, login_id, client.ip)
    known = user is not None and _known_device(session, pepper, user, client)
    wait = throttle.retry_after(session, keys, utcnow(), known_device=known)
    if wait:
        passwords.verify(None, password)  # same work as any other answer
        reason = "locked" if wait < 0 else "throttled"
        fail_and_commit(session, user, keys, client, reason, AuditTag.LOGIN_THROTTLED, count=False)
        if wait < 0:
            raise Unauthenticated(
                "アカウントがロックされています。管理者に解除を依頼してください。",
                "This account is locked; ask an administrator to unlock it.",
                code="account_locked",
            )
        raise TooManyAttempts(wait)
    ok = passwords.verify(user.password_hash if user else None, password)
    if user is None or not ok:
        fail_and_commit(session, user, keys, client, "password" if user else "unknown-login")
        raise bad_credentials()
    if not user.usable(utcnow()):
        fail_and_commit(session, user, keys, client, "disabled" if not user.active else "expired")
        raise bad_credentials()
    if Role(user.role) is Role.VENDOR and not vendor_window_open(session, user, utcnow()):
        fail_and_commit(session, user, keys, client, "outside-window", count=False)
        raise outside_window()
    if user.password_hash and passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    if user.password_must_change:
        stage = Stage.NEW_PASSWORD
    else:
        stage = Stage.FACTOR if factor_kinds(session, user.id) else Stage.ENROL
    return _new_session(
        session, pepper, policy, user, client, stage=stage, shared_terminal=shared_terminal
    )


def pending_session(
    session: Session, pepper: bytes, token: str, stages: Sequence[str]
) -> tuple[AuthSession, StaffUser]:
    row = session.scalar(
        select(AuthSession).where(AuthSession.token_hash == keyed(pepper, "session", token))
    )
    now = utcnow()
    if (
        row is None
        or row.revoked_at is not None
        or row.stage not in stages
        or now >= row.expires_at
        or now - row.last_seen_at > dt.timedelta(minutes=10)  # a sign-in is not left half-done
    ):
        raise Unauthenticated()
    user = session.get(StaffUser, row.user_id)
    if user is None or not user.usable(now):
        raise Unauthenticated()
    return row, user


def factor_failed(
    session: Session, row: AuthSession, user: StaffUser, client: Client, kind: str
) -> None:
    row.factor_failures += 1
    if row.factor_failures >= MAX_FACTOR_FAILURES:
        row.revoked_at, row.revoked_reason = utcnow(), "factor-failures"
    keys = throttle.keys_for(str(user.id), user.login_id, client.ip)
    fail_and_commit(session, user, keys, client, kind, AuditTag.FACTOR_FAILED, row)


def complete_sign_in(
    session: Session, pepper: bytes, row: AuthSession, user: StaffUser, client: Client, method: str
) -> str:
    now = utcnow()
    row.stage, row.second_factor = Stage.FULL, method
    row.last_seen_at = now
    row.reauth_at = now  # both factors were just entered
    row.challenge, row.challenge_kind = None, None
    throttle.succeed(session, throttle.keys_for(str(user.id), user.login_id, client.ip))
    token = _rotate(session, pepper, row)
    record(
        session,
        actor_of(user, row, "api", client),
        AuditTag.LOGIN_SUCCEEDED,
        detail={"factor": method},
    )
    return token


def verify_totp(session: Session, pepper: bytes, token: str, code: str, client: Client) -> str:
    """Step two with an authenticator app; returns the new (full) session token."""
    row, user = pending_session(session, pepper, token, [Stage.FACTOR])
    for factor in active_factors(session, user.id):
        if factor.kind != "totp" or factor.secret is None:
            continue
        seed = factors.open_secret(pepper, user.id, "totp", factor.secret).decode()
        step = factors.totp_step(seed, code, factor.last_step)
        if step is not None:
            factor.last_step, factor.last_used_at = step, utcnow()
            return complete_sign_in(session, pepper, row, user, client, "totp")
    factor_failed(session, row, user, client, "totp")
    raise bad_factor()


def verify_recovery(session: Session, pepper: bytes, token: str, code: str, client: Client) -> str:
    row, user = pending_session(session, pepper, token, [Stage.FACTOR])
    factor = session.scalar(
        select(AuthFactor).where(
            AuthFactor.user_id == user.id,
            AuthFactor.kind == "recovery",
            AuthFactor.code_hash == factors.recovery_hash(pepper, code),
            AuthFactor.used_at.is_(None),
            AuthFactor.revoked_at.is_(None),
        )
    )
    if factor is None:
        factor_failed(session, row, user, client, "recovery")
        raise bad_factor()
    factor.used_at = factor.last_used_at = utcnow()
    return complete_sign_in(session, pepper, row, user, client, "recovery")


def webauthn_options(
    session: Session, pepper: bytes, policy: AuthSettings, token: str
) -> dict[str, Any]:
    row, user = pending_session(session, pepper, token, [Stage.FACTOR, Stage.FULL])
    creds = passkeys_of(session, user.id)
    if not creds:
        raise InvalidInput(
            "パスキーが登録されていません。", "No passkey is registered.", field="credential"
        )
    challenge, options = factors.authentication_options(policy.rp_id, creds)
    row.challenge, row.challenge_kind = challenge, "webauthn-auth"
    return options


def check_assertion(
    session: Session,
    policy: AuthSettings,
    row: AuthSession,
    user: StaffUser,
    credential: dict[str, Any],
) -> bool:
    if row.challenge_kind != "webauthn-auth" or row.challenge is None:
        return False
    challenge = row.challenge
    row.challenge, row.challenge_kind = None, None  # one use, whatever the outcome
    cred_id = factors.credential_id_of(credential)
    factor = next(
        (
            f
            for f in active_factors(session, user.id)
            if f.kind == "webauthn" and cred_id is not None and f.credential_id == cred_id
        ),
        None,
    )
    if factor is None or factor.public_key is None:
        return False
    count = factors.verify_assertion(
        credential,
        challenge=challenge,
        rp_id=policy.rp_id,
        origins=policy.origins,
        public_key=factor.public_key,
        sign_count=factor.sign_count,
    )
    if count is None:
        return False
    factor.sign_count, factor.last_used_at = count, utcnow()
    return True


def verify_webauthn(
    session: Session,
    pepper: bytes,
    policy: AuthSettings,
    token: str,
    credential: dict[str, Any],
    client: Client,
) -> str:
    row, user = pending_session(session, pepper, token, [Stage.FACTOR])
    if not check_assertion(session, policy, row, user, credential):
        factor_failed(session, row, user, client, "webauthn")
        raise bad_factor()
    return complete_sign_in(session, pepper, row, user, client, "webauthn")


# --- vendor windows and the permissions they lend -----------------------------------------------


def vendor_window_open(session: Session, user: StaffUser, now: dt.datetime) -> bool:

    return (
        session.scalar(
            select(VendorWindow.id)
            .where(
                VendorWindow.vendor_user_id == user.id,
                VendorWindow.starts_at <= now,
                VendorWindow.ends_at > now,
                VendorWindow.closed_at.is_(None),
            )
            .limit(1)
        )
        is not None
    )


def outside_window() -> Unauthenticated:
    return Unauthenticated(
        "保守作業の時間枠の外です。院長または安全管理者に時間枠を開けてもらってください。",
        "Outside a maintenance window: ask the director or security officer to open one.",
        code="outside_maintenance_window",
    )


def permissions_for(session: Session, user: StaffUser, now: dt.datetime) -> Any:
    """None (the role's own) — or, for a vendor, the window's set. A vendor account works only
    inside an open maintenance window: outside one it cannot sign in or use a token at all."""
    if Role(user.role) is Role.VENDOR:
        if not vendor_window_open(session, user, now):
            raise outside_window()
        return VENDOR_WINDOW_PERMISSIONS
    return None


# --- passwords -----------------------------------------------------------------------------------


def set_password(
    session: Session, user: StaffUser, password: str, *, initial: bool = False
) -> None:
    """Check the policy (incl. the last passwords) and store the new hash. ``initial``: a
    password someone else hands over (init, staff add, a reset), which the person's first
    sign-in replaces with their own."""
    if user.kind != "person":
        raise NotAllowed(
            "連携用アカウントにはパスワードがありません（APIトークンだけで動きます）。",
            "An integration account has no password; it acts only by API tokens.",
        )
    history = session.scalars(
        select(PasswordHistory.password_hash)
        .where(PasswordHistory.user_id == user.id)
        .order_by(PasswordHistory.created_at.desc())
        .limit(passwords.HISTORY)
    ).all()
    previous = list(history) + ([user.password_hash] if user.password_hash else [])
    passwords.check_policy(
        password,
        personal=passwords.personal_words(user.login_id, user.display_name, user.display_kana),
        previous=previous,
    )
    if user.password_hash:
        session.add(PasswordHistory(user_id=user.id, password_hash=user.password_hash))
    user.password_hash = passwords.hash_password(password)
    user.password_changed_at = utcnow()
    user.password_must_change = initial


def choose_password(
    session: Session, pepper: bytes, token: str, password: str, client: Client
) -> tuple[str, str]:
    """The first sign-in's own password, in place of the initial one (the policy applied):
    the half-finished session moves on to enrolment or the second factor. Returns the new
    session token and the stage."""
    row, user = pending_session(session, pepper, token, [Stage.NEW_PASSWORD])
    set_password(session, user, password)
    row.stage = Stage.FACTOR if factor_kinds(session, user.id) else Stage.ENROL
    new = _rotate(session, pepper, row)
    actor = actor_of(user, row, "web", client)
    record(session, actor, AuditTag.PASSWORD_CHANGED, detail={"first": True})
    return new, row.stage


def change_password(
    session: Session, actor: Actor, *, current: str, new: str, client: Client
) -> None:
    user = session.get(StaffUser, actor.user_id)
    if user is None:
        raise NotFound("staff")
    if not passwords.verify(user.password_hash, current):
        keys = throttle.keys_for(str(user.id), user.login_id, client.ip)
        fail_and_commit(session, user, keys, client, "password-change")
        raise bad_credentials()
    set_password(session, user, new)
    record(session, actor, AuditTag.PASSWORD_CHANGED)


def sign_in_status(session: Session, pepper: bytes, token: str) -> dict[str, Any]:
    row, user = pending_session(
        session, pepper, token, [Stage.NEW_PASSWORD, Stage.FACTOR, Stage.ENROL, Stage.FULL]
    )
    return {"stage": row.stage, "factors": factor_kinds(session, user.id)}
