"""事後入力: a paper form's downtime number claimed by the record it became.

A number is accepted only if a bundle of this clinic reserved it, and only once: the first
entry of a paper wins, a second entry of the same paper is refused (and the unique constraint
holds even against two desks at once). The reconciliation list shows, per bundle, the numbers
entered so far."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.authz.actor import Actor
from mamori.continuity.models import DowntimeBundle, DowntimeEntry
from mamori.errors import Conflict, InvalidInput


def claim(
    session: Session, actor: Actor, number: int, record_type: str, record_id: uuid.UUID
) -> DowntimeEntry:
    issued = session.scalar(
        select(DowntimeBundle.id).where(
            DowntimeBundle.clinic_id == actor.clinic_id,
            DowntimeBundle.first_number <= number,
            DowntimeBundle.last_number >= number,
        )
    )
    if issued is None:
        raise InvalidInput(
            f"ダウンタイム番号 DT-{number:06d} は発行されていません。"
            "用紙の番号を確かめてください。",
            f"Downtime number DT-{number:06d} was never issued; check the form's number.",
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


def reconciliation(session: Session, actor: Actor) -> list[Reconciliation]:
    """Per bundle (newest first), the downtime numbers already entered."""
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
