"""Blind-index values for patients written before an index existed (migration 0010: name as
written, given kana, phone). A migration has no key; the server, which has, fills them once at
start-up, in batches, with a system event saying how many."""

from __future__ import annotations

import functools
import uuid

from sqlalchemy import Table, select, update

from mamori.audit.trail import AuditTag, record_system
from mamori.crypto.sealed import blind_values, keyring_of
from mamori.db import Database
from mamori.patients.models import Patient

NEW = ("bi_family", "bi_given", "bi_given_kana", "bi_phone")
BATCH = 500


def backfill(db: Database) -> int:
    """Fill the 0010 indexes of every patient that has none; returns how many were visited.
    Each row is visited once (in ID order), so one without a family name cannot loop."""
    if db.read_only:
        return 0  # a restored copy takes no write until it is promoted
    done = 0
    table: Table = Patient.__table__  # type: ignore[assignment]
    after: uuid.UUID | None = None
    while True:
        with db.session(write=True) as session:
            stmt = select(Patient).where(Patient.bi_family.is_(None)).order_by(Patient.id)
            if after is not None:
                stmt = stmt.where(Patient.id > after)
            rows = session.scalars(stmt.limit(BATCH)).all()
            if not rows:
                return done
            record_system(
                session, AuditTag.INDEX_BUILT, {"patients": len(rows), "indexes": list(NEW)}
            )
            keyring = keyring_of(session)
            for p in rows:
                values = blind_values(keyring, Patient, functools.partial(getattr, p), p.clinic_id)
                session.execute(
                    update(table).where(table.c.id == p.id).values(**{k: values[k] for k in NEW})
                )
            after = rows[-1].id
            done += len(rows)
            session.commit()
