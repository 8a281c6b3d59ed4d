"""事後入力: a paper form's downtime number claimed by the record it became.

A number is accepted only if a bundle of this clinic reserved it, and only once: the first
entry of a paper wins, a second entry of the same paper is refused (and the unique constraint
holds even against two desks at once). The reconciliation list shows, per bundle, the numbers
entered and those still open, until the director closes what was never used (audited)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record
from mamori.authz.actor import Actor
from mamori.authz.permissions import P
from mamori.continuity.models import DowntimeBundle, DowntimeEntry
from mamori.db import utcnow
from mamori.errors import Conflict, InvalidInput, NotFound


def claim(
    session: Session, actor: Actor, number: int, record_type: str, record_id: uuid.UUID
) -> DowntimeEntry:
    issued = session.scalar(
        select(DowntimeBundle).where(
            DowntimeBundle.clinic_id == actor.clinic_id,
            DowntimeBundle.first_number <= number,
            DowntimeBundle.last_number >= number,
        )
    )
    if issued is None or issued.closed_at is not None:
        raise InvalidInput(
            f"ダウンタイム番号 DT-{number:06d} は発行されていないか、未使用として閉じられています。"
            "用紙の番号を確かめてください。",
            f"Downtime number DT-{number:06d} was never issued, or was closed as unused; check "
            "the form's number.",
            field="downtime_number",
        )
    taken = session.scalar(
        select(DowntimeEntry).where(
            DowntimeEntry.clinic_id == actor.clinic_id, DowntimeEntry.number == number
        )
    )
    if taken is not None:
        raise Conflict(
            f"ダウンタイム番号 DT-{number:06d} の用紙はすでに入力されています（二重入力）。",
            f"The form DT-{number:06d} has already been entered.",
            field="downtime_number",
            code="downtime_number_used",
        )
    entry = DowntimeEntry(
        clinic_id=actor.clinic_id,
        number=number,
        record_type=record_type,
        record_id=record_id,
        entered_by_id=actor.user_id,
    )
    session.add(entry)
    return entry


@dataclass(frozen=True)
class Reconciliation:
    bundle: DowntimeBundle
    entered: list[DowntimeEntry]

    @property
    def open(self) -> list[int]:
        """Numbers issued, not entered, not closed as unused."""
        if self.bundle.closed_at is not None:
            return []
        done = {e.number for e in self.entered}
        span = range(self.bundle.first_number, self.bundle.last_number + 1)
        return [n for n in span if n not in done]

    @property
    def pending(self) -> bool:
        """Paper from this bundle was used (something entered) and the rest is not closed: the
        director still has numbers to account for."""
        return bool(self.entered) and self.bundle.closed_at is None


def close_unused(session: Session, actor: Actor, bundle_id: uuid.UUID) -> DowntimeBundle:
    """After downtime, once every used form is entered: the bundle's remaining numbers are
    closed as unused (a form found later can no longer be entered under them)."""
    actor.require(P.CONTINUITY_ADMIN)
    bundle = session.scalar(
        select(DowntimeBundle).where(
            DowntimeBundle.id == bundle_id, DowntimeBundle.clinic_id == actor.clinic_id
        )
    )
    if bundle is None:
        raise NotFound("downtime bundle")
    if bundle.closed_at is not None:
        raise Conflict(
            "この資料の番号はすでに閉じられています。",
            "This bundle's numbers are already closed.",
            code="already_closed",
        )
    bundle.closed_at, bundle.closed_by_id = utcnow(), actor.user_id
    entered = session.scalars(
        select(DowntimeEntry.number).where(
            DowntimeEntry.clinic_id == actor.clinic_id,
            DowntimeEntry.number.between(bundle.first_number, bundle.last_number),
        )
    ).all()
    record(
        session,
        actor,
        AuditTag.DOWNTIME_CLOSED,
        detail={
            "bundle": str(bundle.id),
            "first": bundle.first_number,
            "last": bundle.last_number,
            "entered": len(entered),
            "closed_unused": bundle.last_number - bundle.first_number + 1 - len(entered),
        },
    )
    return bundle


def reconciliation(session: Session, actor: Actor) -> list[Reconciliation]:
    """Per bundle (newest first), the downtime numbers entered and still open."""
    bundles = session.scalars(
        select(DowntimeBundle)
        .where(DowntimeBundle.clinic_id == actor.clinic_id)
        .order_by(DowntimeBundle.first_number.desc())
    ).all()
    entries = session.scalars(
        select(DowntimeEntry)
        .where(DowntimeEntry.clinic_id == actor.clinic_id)
        .order_by(DowntimeEntry.number)
    ).all()
    return [
        Reconciliation(b, [e for e in entries if b.first_number <= e.number <= b.last_number])
        for b in bundles
    ]
