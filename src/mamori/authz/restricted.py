"""The gate's restriction check, and the re-authentication rule of sensitive actions.

A patient is restricted when a ``patient_restriction`` row says so (a member of staff, VIP or
sensitive; the ``restrictions`` domain keeps those rows). The desk can still reach a restricted
patient's demographic kinds (``RecordAccess.demographic``: registration, insurance, visits),
logged with the restriction noted; anything clinical needs a live **break-the-glass** grant.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.authz.actor import Actor
from mamori.authz.hooks import hooks
from mamori.authz.models import BreakGlassGrant, PatientRestriction
from mamori.authz.permissions import is_demographic
from mamori.db import driver_cursor, utcnow
from mamori.errors import BreakGlassRequired, ReauthRequired

CACHE = "mamori_restrictions"


_RESTRICTION_SQL = "SELECT staff, vip, sensitive FROM patient_restriction WHERE patient_id = ?"


def _state(session: Session, actor: Actor, patient_id: uuid.UUID) -> tuple[bool, bool]:
    """(restricted, actor holds a live break-the-glass grant), cached per unit of work."""
    cache: dict[tuple[uuid.UUID, uuid.UUID], tuple[bool, bool]] = session.info.setdefault(CACHE, {})
    key = (actor.user_id, patient_id)
    if key not in cache:
        # on the driver's cursor (after a flush, so this unit of work's own changes count): the
        # ORM's get cost 0.16 ms for the row most patients do not have, on every access
        with driver_cursor(session) as cursor:
            # (the foreign key's type, resolved from patient.id once the tables are complete)
            to_db = cursor.bind(PatientRestriction.__table__.c.patient_id.type)
            cursor.execute(_RESTRICTION_SQL, [to_db(patient_id)])
            row = cursor.fetchone()
        restricted = row is not None and any(row)  # staff, VIP or sensitive (``active``)
        granted = restricted and (
            session.scalar(
                select(BreakGlassGrant.id)
                .where(
                    BreakGlassGrant.user_id == actor.user_id,
                    BreakGlassGrant.patient_id == patient_id,
                    BreakGlassGrant.expires_at > utcnow(),
                )
                .limit(1)
            )
            is not None
        )
        cache[key] = (restricted, granted)
    return cache[key]


def check(session: Session, actor: Actor, patient_id: uuid.UUID, what: str) -> None:
    """Raise ``BreakGlassRequired`` for clinical access to a restricted patient without a grant."""
    restricted, granted = _state(session, actor, patient_id)
    if not restricted:
        return
    if not granted and not is_demographic(what):
        raise BreakGlassRequired(str(patient_id))
    hooks.restricted_opened(session, actor, patient_id, break_glass=granted)


def forget(session: Session) -> None:
    """Drop this unit of work's cached restriction states (after a flag or grant changed)."""
    session.info.pop(CACHE, None)


def is_restricted(session: Session, patient_id: uuid.UUID) -> bool:
    row = session.get(PatientRestriction, patient_id)
    return row is not None and row.active


def require_recent_auth(actor: Actor, minutes: int) -> None:
    """Sensitive actions need password + second factor re-entered within ``minutes``."""
    if actor.channel == "cli":
        return  # the operator at the server, holding the instance's secrets
    if actor.reauth_at is None or utcnow() - actor.reauth_at > dt.timedelta(minutes=minutes):
        raise ReauthRequired()
