"""Restricted patients and break-the-glass: who is restricted, and the grant that opens one.

A patient is restricted when they are a member of staff (found automatically: the patient's
kana name matches a staff member's, and the birth dates match where the staff record has one),
or an administrator flagged them VIP or sensitive. Anything clinical about a restricted patient
needs **break-the-glass**: a reason (choice + text), a re-authentication, and then
time-limited access to that one patient, an alert for the administrator and an entry in the
review list. The gate's check of these rows is ``authz/restricted.py``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record
from mamori.auth.models import SecurityAlert
from mamori.authz import gate
from mamori.authz.actor import Actor
from mamori.authz.models import BreakGlassGrant, PatientRestriction
from mamori.authz.permissions import Permission
from mamori.authz.restricted import forget, require_recent_auth
from mamori.clinic.models import StaffUser
from mamori.db import driver_cursor, utcnow
from mamori.errors import InvalidInput
from mamori.patients.kana import search_key
from mamori.patients.lookup import patients_by_kana
from mamori.patients.models import Patient

REASONS = {
    "emergency": "救急・急変対応",
    "treatment": "診療上の必要",
    "continuity": "他院・他職種からの照会対応",
    "patient-request": "患者本人の依頼",
    "other": "その他",
}


def break_glass(
    session: Session,
    actor: Actor,
    patient_id: uuid.UUID,
    *,
    reason_code: str,
    reason_text: str,
    minutes: int,
    reauth_minutes: int,
) -> BreakGlassGrant:
    actor.require(Permission.BREAK_GLASS)
    require_recent_auth(actor, reauth_minutes)
    if reason_code not in REASONS:
        raise InvalidInput(
            "理由の区分を選んでください。", "Choose a reason category.", field="reason_code"
        )
    text = reason_text.strip()
    if len(text) < 4 or len(text) > 500:
        raise InvalidInput(
            "理由を4〜500文字で具体的に入力してください。",
            "Give the reason in 4 to 500 characters.",
            field="reason_text",
        )
    # the patient is not opened through the gate: opening a restricted patient is what the
    # grant is for; only the clinic is checked (another clinic's patient: 404, logged)
    patient = gate.clinic_row_for(session, actor, Patient, patient_id, "patient")
    now = utcnow()
    grant = BreakGlassGrant(
        clinic_id=actor.clinic_id,
        user_id=actor.user_id,
        patient_id=patient.id,
        reason_code=reason_code,
        reason_text=text,
        granted_at=now,
        expires_at=now + dt.timedelta(minutes=minutes),
    )
    session.add(grant)
    session.flush()
    session.add(
        SecurityAlert(
            clinic_id=actor.clinic_id,
            kind="break-glass",
            created_at=now,
            user_id=actor.user_id,
            patient_id=patient.id,
            ref_id=grant.id,
            summary=f"{actor.display_name} が緊急閲覧（{REASONS[reason_code]}）",
        )
    )
    forget(session)
    record(
        session,
        actor,
        AuditTag.BREAK_GLASS,
        patients=[patient.id],
        detail={
            "grant": str(grant.id),
            "reason": reason_code,
            "until": grant.expires_at.isoformat(),
        },
    )
    return grant


def flags_of(session: Session, actor: Actor, patient_id: uuid.UUID) -> dict[str, bool]:
    """A patient's restriction flags, for the administrator's form (not patient data)."""
    actor.require(Permission.RESTRICTION_ADMIN)
    row = gate.find_clinic_row(session, actor, PatientRestriction, patient_id, "patient")
    return {
        "staff": bool(row and row.staff),
        "vip": bool(row and row.vip),
        "sensitive": bool(row and row.sensitive),
    }


def set_flags(
    session: Session, actor: Actor, patient_id: uuid.UUID, *, vip: bool, sensitive: bool
) -> PatientRestriction:
    actor.require(Permission.RESTRICTION_ADMIN)
    patient = gate.clinic_row_for(session, actor, Patient, patient_id, "patient")
    row = session.get(PatientRestriction, patient.id) or PatientRestriction(
        patient_id=patient.id, clinic_id=patient.clinic_id, staff=False
    )
    row.vip, row.sensitive = vip, sensitive
    row.updated_by, row.updated_at = actor.user_id, utcnow()
    session.add(row)
    session.flush()
    forget(session)
    record(
        session,
        actor,
        AuditTag.RESTRICTION_CHANGED,
        patients=[patient.id],
        detail={"vip": vip, "sensitive": sensitive, "staff": row.staff},
    )
    return row


_STAFF_SQL = (
    "SELECT display_kana, birth_date FROM staff_user WHERE clinic_id = ? AND display_kana != ''"
)


def _staff_names(session: Session, clinic: uuid.UUID) -> list[tuple[str, dt.date | None]]:
    """The clinic's staff as (kana search key, birth date), read on the driver's own cursor:
    it runs in every patient write, where SQLAlchemy's statement execution cost about a tenth
    of a registration's CPU (bench/README.md)."""
    columns = StaffUser.__table__.c
    with driver_cursor(session) as cursor:
        cursor.execute(_STAFF_SQL, (cursor.bind(columns.clinic_id.type)(clinic),))
        rows = cursor.fetchall()
        birth = cursor.result(columns.birth_date.type)
    return [(search_key(kana), birth(born)) for kana, born in rows if kana]


def refresh_staff_flag(session: Session, patients: Sequence[Patient], *, new: bool = False) -> None:
    """Mark (or unmark) patients who are members of staff. Called whenever a patient's name or
    birth date is written and whenever a staff member's is. ``new``: the patients were created
    in this transaction, so none of them has a restriction row to look up yet."""
    by_clinic: dict[uuid.UUID, list[tuple[str, dt.date | None]]] = {}
    for patient in patients:
        staff = by_clinic.get(patient.clinic_id)
        if staff is None:
            staff = by_clinic[patient.clinic_id] = _staff_names(session, patient.clinic_id)
        # a staff record without a birth date matches on the name alone
        is_staff = any(
            key == patient.kana_key and (birth is None or birth == patient.birth_date)
            for key, birth in staff
        )
        row = None if new else session.get(PatientRestriction, patient.id)
        if row is None and not is_staff:
            continue
        if row is None:
            row = PatientRestriction(
                patient_id=patient.id, clinic_id=patient.clinic_id, vip=False, sensitive=False
            )
            session.add(row)
        if row.staff != is_staff:
            row.staff = is_staff
            row.updated_at = utcnow()
    forget(session)


def patients_matching_staff(session: Session, staff: StaffUser) -> list[Patient]:
    if not staff.display_kana:
        return []
    return patients_by_kana(session, staff.clinic_id, search_key(staff.display_kana))


def grant_reasons(
    session: Session, actor: Actor, grant_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The reasons given for break-the-glass grants (for the reviewer of their alerts)."""
    actor.require(Permission.AUDIT_READ)
    if not grant_ids:
        return {}
    rows = session.scalars(
        select(BreakGlassGrant).where(
            BreakGlassGrant.clinic_id == actor.clinic_id, BreakGlassGrant.id.in_(list(grant_ids))
        )
    ).all()
    return {g.id: f"{REASONS.get(g.reason_code, g.reason_code)}: {g.reason_text}" for g in rows}
