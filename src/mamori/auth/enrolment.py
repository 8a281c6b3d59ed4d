"""Enrolling a second factor: at the first sign-in (the password alone opens only this stage) or
later from the account page."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record
from mamori.auth import factors
from mamori.auth.models import AuthFactor, AuthSession
from mamori.auth.service import (
    Client,
    Stage,
    active_factors,
    actor_of,
    bad_factor,
    complete_sign_in,
    factor_failed,
    passkeys_of,
    pending_session,
)
from mamori.clinic.models import Clinic, StaffUser
from mamori.db import utcnow
from mamori.errors import InvalidInput, ReauthRequired
from mamori.settings import AuthSettings


def _enrolling(
    session: Session, pepper: bytes, token: str, reauth_minutes: int
) -> tuple[AuthSession, StaffUser]:
    """Enrolment is open to a session in stage ``enrol``, or a full session whose password and
    second factor were entered within ``[auth] reauth_minutes`` (adding a factor is a
    sensitive change, under the same rule as every other)."""
    row, user = pending_session(session, pepper, token, [Stage.ENROL, Stage.FULL])
    if row.stage == Stage.FULL and (
        row.reauth_at is None or utcnow() - row.reauth_at > dt.timedelta(minutes=reauth_minutes)
    ):
        raise ReauthRequired()
    return row, user


def _clinic_name(session: Session, user: StaffUser) -> str:
    clinic = session.get(Clinic, user.clinic_id)
    return clinic.name if clinic else ""


def enrol_totp_start(
    session: Session, pepper: bytes, token: str, *, reauth_minutes: int
) -> dict[str, str]:
    row, user = _enrolling(session, pepper, token, reauth_minutes)
    clinic_name = _clinic_name(session, user)
    seed = factors.new_totp_seed()
    row.challenge = factors.seal_secret(pepper, user.id, "totp-pending", seed.encode())
    row.challenge_kind = "totp-enrol"
    uri = factors.totp_uri(seed, user.login_id, clinic_name)
    return {
        "secret": seed,
        "secret_grouped": factors.grouped(seed),
        "otpauth_uri": uri,
        "qr_svg": factors.qr_svg(uri),
    }


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
        f.kind == "recovery" and f.used_at is None for f in active_factors(session, user.id)
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
        session, actor_of(user, row, "api", client), AuditTag.FACTOR_ENROLLED, detail={"kind": kind}
    )
    token = None
    if row.stage == Stage.ENROL:
        token = complete_sign_in(session, pepper, row, user, client, kind)
    return token, codes


def enrol_totp_confirm(
    session: Session, pepper: bytes, token: str, code: str, client: Client, *, reauth_minutes: int
) -> tuple[str | None, list[str]]:
    row, user = _enrolling(session, pepper, token, reauth_minutes)
    if row.challenge_kind != "totp-enrol" or row.challenge is None:
        raise InvalidInput(
            "先に登録用のQRコードを表示してください。",
            "Start TOTP enrolment first.",
            field="code",
        )
    seed = factors.open_secret(pepper, user.id, "totp-pending", row.challenge).decode()
    step = factors.totp_step(seed, code, None)
    if step is None:
        factor_failed(session, row, user, client, "totp-enrol")
        raise bad_factor()
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
    session: Session, pepper: bytes, policy: AuthSettings, token: str, *, reauth_minutes: int
) -> dict[str, Any]:
    row, user = _enrolling(session, pepper, token, reauth_minutes)
    clinic_name = _clinic_name(session, user)
    existing = passkeys_of(session, user.id)
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
    *,
    reauth_minutes: int,
) -> tuple[str | None, list[str]]:
    row, user = _enrolling(session, pepper, token, reauth_minutes)
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
