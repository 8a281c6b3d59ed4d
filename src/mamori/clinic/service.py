"""Clinics, staff accounts and API tokens (interim sign-in until the identity issue lands)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.authz.gate import Actor
from mamori.clinic.models import ApiToken, Clinic, Role, StaffUser
from mamori.db import utcnow
from mamori.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from mamori.patients import insurance

TOKEN_PREFIX = "mmr_"  # noqa: S105 - a public prefix that makes leaked tokens greppable


def institution_code_valid(code: str) -> bool:
    """医療機関コード: 都道府県(2) + 点数表(1) + 郡市区(2) + 番号(4) + 検証番号(1); the check digit
    covers the 6 digits of 郡市区 and 番号 with the same 2-1 weights as insurer numbers."""
    return (
        len(code) == 10
        and code.isascii()
        and code.isdigit()
        and insurance.check_digit(code[3:9]) == int(code[9])
    )


def create_clinic(
    session: Session,
    *,
    name: str,
    institution_code: str,
    postal_code: str = "",
    address: str = "",
    phone: str = "",
    is_synthetic: bool = False,
) -> Clinic:
    if not institution_code_valid(institution_code):
        raise InvalidInput(
            "医療機関コードが正しくありません（10桁、検証番号を確認してください）。",
            "Invalid 医療機関コード (10 digits with a valid check digit).",
            field="institution_code",
        )
    clinic = Clinic(
        name=name,
        institution_code=institution_code,
        postal_code=postal_code,
        address=address,
        phone=phone,
        is_synthetic=is_synthetic,
        next_patient_number=1,
    )
    session.add(clinic)
    session.flush()
    return clinic


def clinic_of(session: Session, actor: Actor) -> Clinic:
    clinic = session.get(Clinic, actor.clinic_id)
    if clinic is None:
        raise NotFound("clinic")
    return clinic


def the_clinic(session: Session) -> Clinic:
    """The single clinic of a one-clinic instance (CLI convenience)."""
    clinics = session.scalars(select(Clinic).order_by(Clinic.created_at)).all()
    if not clinics:
        raise NotFound("clinic")
    return clinics[0]


def add_staff(
    session: Session,
    clinic: Clinic,
    *,
    login_id: str,
    display_name: str,
    role: Role,
    display_kana: str = "",
) -> StaffUser:
    exists = session.scalar(
        select(StaffUser).where(StaffUser.clinic_id == clinic.id, StaffUser.login_id == login_id)
    )
    if exists is not None:
        raise Conflict(
            "そのログインIDは使われています。", "That login ID is taken.", field="login_id"
        )
    user = StaffUser(
        clinic_id=clinic.id,
        login_id=login_id,
        display_name=display_name,
        display_kana=display_kana,
        role=role.value,
        active=True,
    )
    session.add(user)
    session.flush()
    return user


def find_staff(session: Session, clinic_id: uuid.UUID, login_id: str) -> StaffUser | None:
    return session.scalar(
        select(StaffUser).where(StaffUser.clinic_id == clinic_id, StaffUser.login_id == login_id)
    )


def _token_hash(pepper: bytes, token: str) -> str:
    return hmac.new(pepper, token.encode("utf-8"), hashlib.sha256).hexdigest()


def issue_token(session: Session, pepper: bytes, user: StaffUser, label: str = "") -> str:
    """A new bearer token, shown once; only its keyed hash is stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_token_hash(pepper, token), label=label))
    session.flush()
    return token


def actor_for(user: StaffUser, channel: str) -> Actor:
    return Actor(
        user_id=user.id,
        clinic_id=user.clinic_id,
        role=Role(user.role),
        display_name=user.display_name,
        channel=channel,
        auth_method="cli" if channel == "cli" else "api-token",
    )


def authenticate_token(session: Session, pepper: bytes, token: str, channel: str) -> Actor:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthenticated()
    row = session.execute(
        select(ApiToken, StaffUser)
        .join(StaffUser, StaffUser.id == ApiToken.user_id)
        .where(ApiToken.token_hash == _token_hash(pepper, token))
    ).first()
    if row is None:
        raise Unauthenticated()
    tok, user = row
    now = utcnow()
    if (
        tok.revoked_at is not None
        or (tok.expires_at is not None and now >= tok.expires_at)
        or not user.usable(now)
    ):
        raise Unauthenticated()
    actor = actor_for(user, channel)
    from mamori.auth.service import permissions_for

    perms = permissions_for(session, user, now)
    return dataclasses.replace(actor, permissions=perms) if perms is not None else actor


def revoke_tokens(session: Session, user: StaffUser) -> int:
    now = utcnow()
    tokens = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    ).all()
    for t in tokens:
        t.revoked_at = now
    return len(tokens)


def staff_names(session: Session, actor: Actor) -> dict[uuid.UUID, str]:
    """Colleagues' display names (who wrote a note, who signed it): not patient data, so any
    signed-in member of the clinic may see them."""
    rows = session.execute(
        select(StaffUser.id, StaffUser.display_name).where(StaffUser.clinic_id == actor.clinic_id)
    ).all()
    return {r.id: r.display_name for r in rows}
