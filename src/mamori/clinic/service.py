"""Clinics and staff accounts (sign-in, sessions and API tokens: ``mamori.auth``)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.authz.actor import Actor
from mamori.authz.roles import Role
from mamori.clinic.models import Clinic, StaffUser
from mamori.errors import Conflict, InvalidInput, NotFound
from mamori.patients import insurance


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


def actor_for(user: StaffUser, channel: str) -> Actor:
    return Actor(
        user_id=user.id,
        clinic_id=user.clinic_id,
        role=Role(user.role),
        display_name=user.display_name,
        channel=channel,
        auth_method="cli" if channel == "cli" else "api-token",
    )


def confirming_physicians(session: Session, actor: Actor) -> list[tuple[uuid.UUID, str]]:
    """The clinic's active staff who may confirm a proxy entry (a scribe's note names one)."""
    rows = session.execute(
        select(StaffUser.id, StaffUser.display_name, StaffUser.role)
        .where(StaffUser.clinic_id == actor.clinic_id, StaffUser.active.is_(True))
        .order_by(StaffUser.display_name)
    ).all()
    return [(r.id, r.display_name) for r in rows if Role(r.role).signs_clinical_records]


def staff_names(session: Session, actor: Actor) -> dict[uuid.UUID, str]:
    """Colleagues' display names (who wrote a note, who signed it): not patient data, so any
    signed-in member of the clinic may see them."""
    rows = session.execute(
        select(StaffUser.id, StaffUser.display_name).where(StaffUser.clinic_id == actor.clinic_id)
    ).all()
    return {r.id: r.display_name for r in rows}
