"""Look-ups by blind index that are not an access of their own: the callers check access
(the staff-as-patient match, gated services)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.crypto.sealed import keyring_of
from mamori.patients.models import BIRTH, KANA, Patient


def patients_by_kana(
    session: Session, clinic_id: uuid.UUID, kana_key: str, birth_date: dt.date | None = None
) -> list[Patient]:
    """Patients whose whole normalised kana (and birth date, if given) equal these. No access
    check: callers are the gate's own helpers (staff-as-patient) and gated services."""
    keyring = keyring_of(session)
    stmt = select(Patient).where(
        Patient.clinic_id == clinic_id, Patient.bi_kana == keyring.blind(KANA, clinic_id, kana_key)
    )
    if birth_date is not None:
        stmt = stmt.where(
            Patient.bi_birth == keyring.blind(BIRTH, clinic_id, birth_date.isoformat())
        )
    return [
        p
        for p in session.scalars(stmt)
        if p.kana_key == kana_key and (birth_date is None or p.birth_date == birth_date)
    ]
