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

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record, record_anonymous
from mamori.auth import factors, passwords, throttle
from mamori.auth.models import AuthFactor, AuthSession, PasswordHistory, SecurityAlert
from mamori.authz.gate import Actor
from mamori.authz.permissions import VENDOR_WINDOW_PERMISSIONS
from mamori.clinic.models import Clinic, Role, StaffUser
from mamori.clinic.service import actor_for
from mamori.db import utcnow
from mamori.errors import InvalidInput, NotFound, TooManyAttempts, Unauthenticated
from mamori.settings import AuthSettings

MAX_FACTOR_FAILURES = 5
TOUCH_EVERY = dt.timedelta(seconds=30)


class Stage:
    FACTOR = "factor"
    ENROL = "enrol"
    FULL = "full"


def _bad_credentials() -> Unauthenticated:
    return Unauthenticated(
        "ログインIDまたはパスワードが違います。",
        "Wrong login ID or password.",
        code="bad_credentials",
    )


def _bad_factor() -> Unauthenticated:
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


def _actor(user: StaffUser, row: AuthSession | None, channel: str, client: Client) -> Actor:
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


def _active_factors(session: Session, user_id: uuid.UUID) -> Sequence[AuthFactor]:
    return session.scalars(
        select(AuthFactor).where(AuthFactor.user_id == user_id, AuthFactor.revoked_at.is_(None))
    ).all()


def _passkeys(session: Session, user_id: uuid.UUID) -> list[bytes]:
    return [
        f.credential_id
        for f in _active_factors(session, user_id)
        if f.kind == "webauthn" and f.credential_id
    ]


def factor_kinds(session: Session, user_id: uuid.UUID) -> list[str]:
    kinds = {f.kind for f in _active_factors(session, user_id) if f.kind != "recovery"}
    return sorted(kinds)


def _alert(session: Session, user: StaffUser, kind: str, summary: str) -> None:
    session.add(
        SecurityAlert(clinic_id=user.clinic_id, kind=kind, user_id=user.id, summary=summary[:300])
    )


def _fail_and_commit(
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
        actor = _actor(user, row, "api", client)
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
        _fail_and_commit(session, user, keys, client, reason, AuditTag.LOGIN_THROTTLED, count=False)
        if wait < 0:
            raise Unauthenticated(
                "アカウントがロックされています。管理者に解除を依頼してください。",
                "This account is locked; ask an administrator to unlock it.",
                code="account_locked",
            )
        raise TooManyAttempts(wait)
    ok = passwords.verify(user.password_hash if user else None, password)
    if user is None or not ok:
        _fail_and_commit(session, user, keys, client, "password" if user else "unknown-login")
        raise _bad_credentials()
    if not user.usable(utcnow()):
        _fail_and_commit(session, user, keys, client, "disabled" if not user.active else "expired")
        raise _bad_credentials()
    if Role(user.role) is Role.VENDOR and not vendor_window_open(session, user, utcnow()):
        _fail_and_commit(session, user, keys, client, "outside-window", count=False)
        raise outside_window()
    if user.password_hash and passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    stage = Stage.FACTOR if factor_kinds(session, user.id) else Stage.ENROL
    return _new_session(
        session, pepper, policy, user, client, stage=stage, shared_terminal=shared_terminal
    )


def _pending(
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


def _factor_failed(
    session: Session, row: AuthSession, user: StaffUser, client: Client, kind: str
) -> None:
    row.factor_failures += 1
    if row.factor_failures >= MAX_FACTOR_FAILURES:
        row.revoked_at, row.revoked_reason = utcnow(), "factor-failures"
    keys = throttle.keys_for(str(user.id), user.login_id, client.ip)
    _fail_and_commit(session, user, keys, client, kind, AuditTag.FACTOR_FAILED, row)


def _complete(
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
        _actor(user, row, "api", client),
        AuditTag.LOGIN_SUCCEEDED,
        detail={"factor": method},
    )
    return token


def verify_totp(session: Session, pepper: bytes, token: str, code: str, client: Client) -> str:
    """Step two with an authenticator app; returns the new (full) session token."""
    row, user = _pending(session, pepper, token, [Stage.FACTOR])
    for factor in _active_factors(session, user.id):
        if factor.kind != "totp" or factor.secret is None:
            continue
        seed = factors.open_secret(pepper, user.id, "totp", factor.secret).decode()
        step = factors.totp_step(seed, code, factor.last_step)
        if step is not None:
            factor.last_step, factor.last_used_at = step, utcnow()
            return _complete(session, pepper, row, user, client, "totp")
    _factor_failed(session, row, user, client, "totp")
    raise _bad_factor()


def verify_recovery(session: Session, pepper: bytes, token: str, code: str, client: Client) -> str:
    row, user = _pending(session, pepper, token, [Stage.FACTOR])
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
        _factor_failed(session, row, user, client, "recovery")
        raise _bad_factor()
    factor.used_at = factor.last_used_at = utcnow()
    return _complete(session, pepper, row, user, client, "recovery")


def webauthn_options(
    session: Session, pepper: bytes, policy: AuthSettings, token: str
) -> dict[str, Any]:
    row, user = _pending(session, pepper, token, [Stage.FACTOR, Stage.FULL])
    creds = _passkeys(session, user.id)
    if not creds:
        raise InvalidInput(
            "パスキーが登録されていません。", "No passkey is registered.", field="credential"
        )
    challenge, options = factors.authentication_options(policy.rp_id, creds)
    row.challenge, row.challenge_kind = challenge, "webauthn-auth"
    return options


def _check_assertion(
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
            for f in _active_factors(session, user.id)
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
    row, user = _pending(session, pepper, token, [Stage.FACTOR])
    if not _check_assertion(session, policy, row, user, credential):
        _factor_failed(session, row, user, client, "webauthn")
        raise _bad_factor()
    return _complete(session, pepper, row, user, client, "webauthn")


# --- enrolment (first sign-in, or adding a factor later) -------------------------------------


def _enrolling(session: Session, pepper: bytes, token: str) -> tuple[AuthSession, StaffUser]:
    """Enrolment is open to a session in stage ``enrol``, or a full session re-authenticated
    within the last 5 minutes (adding a factor is a sensitive change)."""
    row, user = _pending(session, pepper, token, [Stage.ENROL, Stage.FULL])
    if row.stage == Stage.FULL and (
        row.reauth_at is None or utcnow() - row.reauth_at > dt.timedelta(minutes=5)
    ):
        from mamori.errors import ReauthRequired

        raise ReauthRequired()
    return row, user


def _clinic_name(session: Session, user: StaffUser) -> str:
    clinic = session.get(Clinic, user.clinic_id)
    return clinic.name if clinic else ""


def enrol_totp_start(session: Session, pepper: bytes, token: str) -> dict[str, str]:
    row, user = _enrolling(session, pepper, token)
    clinic_name = _clinic_name(session, user)
    seed = factors.new_totp_seed()
    row.challenge = factors.seal_secret(pepper, user.id, "totp-pending", seed.encode())
    row.challenge_kind = "totp-enrol"
    uri = factors.totp_uri(seed, user.login_id, clinic_name)
    return {"secret": seed, "otpauth_uri": uri, "qr_svg": factors.qr_svg(uri)}


def _finish_enrolment(
    session: Session,
    pepper: bytes,
    row: AuthSession,
    user: StaffUser,
    client: Client,
    kind: str,
) -> tuple[str | None, list[str]]:
    """Returns (new full-session token if this completed a first sign-in, recovery codes)."""
    codes: list[str] = []
    has_recovery = any(
        f.kind == "recovery" and f.used_at is None for f in _active_factors(session, user.id)
    )
    if not has_recovery:
        codes = factors.new_recovery_codes()
        for code in codes:
            session.add(
                AuthFactor(
                    user_id=user.id, kind="recovery", code_hash=factors.recovery_hash(pepper, code)
                )
            )
    record(
        session, _actor(user, row, "api", client), AuditTag.FACTOR_ENROLLED, detail={"kind": kind}
    )
    token = None
    if row.stage == Stage.ENROL:
        token = _complete(session, pepper, row, user, client, kind)
    return token, codes


def enrol_totp_confirm(
    session: Session, pepper: bytes, token: str, code: str, client: Client
) -> tuple[str | None, list[str]]:
    row, user = _enrolling(session, pepper, token)
    if row.challenge_kind != "totp-enrol" or row.challenge is None:
        raise InvalidInput(
            "先に登録用のQRコードを表示してください。",
            "Start TOTP enrolment first.",
            field="code",
        )
    seed = factors.open_secret(pepper, user.id, "totp-pending", row.challenge).decode()
    step = factors.totp_step(seed, code, None)
    if step is None:
        _factor_failed(session, row, user, client, "totp-enrol")
        raise _bad_factor()
    session.add(
        AuthFactor(
            user_id=user.id,
            kind="totp",
            label="認証アプリ",
            secret=factors.seal_secret(pepper, user.id, "totp", seed.encode()),
            last_step=step,
        )
    )
    row.challenge, row.challenge_kind = None, None
    return _finish_enrolment(session, pepper, row, user, client, "totp")


def enrol_webauthn_options(
    session: Session, pepper: bytes, policy: AuthSettings, token: str
) -> dict[str, Any]:
    row, user = _enrolling(session, pepper, token)
    clinic_name = _clinic_name(session, user)
    existing = _passkeys(session, user.id)
    challenge, options = factors.registration_options(
        rp_id=policy.rp_id,
        rp_name=f"mamori {clinic_name}",
        user_id=user.id,
        login=user.login_id,
        display_name=user.display_name,
        existing=existing,
    )
    row.challenge, row.challenge_kind = challenge, "webauthn-reg"
    return options


def enrol_webauthn_verify(
    session: Session,
    pepper: bytes,
    policy: AuthSettings,
    token: str,
    credential: dict[str, Any],
    label: str,
    client: Client,
) -> tuple[str | None, list[str]]:
    row, user = _enrolling(session, pepper, token)
    if row.challenge_kind != "webauthn-reg" or row.challenge is None:
        raise InvalidInput(
            "先に登録を開始してください。", "Start passkey registration first.", field="credential"
        )
    challenge = row.challenge
    row.challenge, row.challenge_kind = None, None
    cred_id, public_key, count = factors.verify_registration(
        credential, challenge=challenge, rp_id=policy.rp_id, origins=policy.origins
    )
    session.add(
        AuthFactor(
            user_id=user.id,
            kind="webauthn",
            label=(label.strip() or "パスキー")[:100],
            credential_id=cred_id,
            public_key=public_key,
            sign_count=count,
        )
    )
    return _finish_enrolment(session, pepper, row, user, client, "webauthn")


# --- the signed-in session ---------------------------------------------------------------------


def _expire(session: Session, session_id: uuid.UUID, reason: str) -> None:
    session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )


def vendor_window_open(session: Session, user: StaffUser, now: dt.datetime) -> bool:
    from mamori.auth.models import VendorWindow

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
    actor = _actor(user, row, channel, client)
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
        for factor in _active_factors(session, user.id):
            if factor.kind == "totp" and factor.secret is not None:
                seed = factors.open_secret(pepper, user.id, "totp", factor.secret).decode()
                step = factors.totp_step(seed, code, factor.last_step)
                if step is not None:
                    factor.last_step, factor.last_used_at = step, utcnow()
                    second = True
                    break
    elif ok and credential:
        second = _check_assertion(session, policy, row, user, credential)
    if not (ok and second):
        _fail_and_commit(session, user, keys, client, "reauth", AuditTag.FACTOR_FAILED, row)
        raise _bad_factor() if ok else _bad_credentials()
    row.reauth_at = utcnow()
    record(session, actor, AuditTag.REAUTHENTICATED)


# --- sessions: list and revoke -----------------------------------------------------------------


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


# --- passwords -----------------------------------------------------------------------------------


def set_password(session: Session, user: StaffUser, password: str) -> None:
    """Check the policy (incl. the last passwords) and store the new hash."""
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


def change_password(
    session: Session, actor: Actor, *, current: str, new: str, client: Client
) -> None:
    user = session.get(StaffUser, actor.user_id)
    if user is None:
        raise NotFound("staff")
    if not passwords.verify(user.password_hash, current):
        keys = throttle.keys_for(str(user.id), user.login_id, client.ip)
        _fail_and_commit(session, user, keys, client, "password-change")
        raise _bad_credentials()
    set_password(session, user, new)
    record(session, actor, AuditTag.PASSWORD_CHANGED)


def sign_in_status(session: Session, pepper: bytes, token: str) -> dict[str, Any]:
    row, user = _pending(session, pepper, token, [Stage.FACTOR, Stage.ENROL, Stage.FULL])
    return {"stage": row.stage, "factors": factor_kinds(session, user.id)}
