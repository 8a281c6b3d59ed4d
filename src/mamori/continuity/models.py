"""Business continuity (BCP): the standby keys downtime bundles are encrypted to, the record
of every bundle written (when, for which day, where, which downtime numbers), late entries,
drills, and the standby log segments merged back into the main log."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mamori.db import Base, UTCDateTime, new_id, utcnow


class StandbyKey(Base):
    """An age recipient (public key) whose identity lives on the downtime PC or a USB stick
    kept at reception — never on this server. Revoked keys get no further bundles."""

    __tablename__ = "standby_key"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    label: Mapped[str] = mapped_column(String(100))
    recipient: Mapped[str] = mapped_column(String(100), unique=True)  # age1…
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff_user.id"), nullable=True
    )


class DowntimeBundle(Base):
    """One bundle, written to every destination. Its downtime numbers (first..last) are
    reserved for the paper forms it carries; no two bundles of a clinic share a number."""

    __tablename__ = "downtime_bundle"
    __table_args__ = (UniqueConstraint("clinic_id", "first_number"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    made_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    made_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    day: Mapped[dt.date] = mapped_column(Date)
    destinations: Mapped[str] = mapped_column(Text)  # JSON list of the folders it reached
    file_name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    patients: Mapped[int] = mapped_column(Integer)
    first_number: Mapped[int] = mapped_column(Integer)
    last_number: Mapped[int] = mapped_column(Integer)
    # after downtime: the director closes the numbers never entered (forms left unused)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff_user.id"), nullable=True
    )


class DowntimeEntry(Base):
    """A downtime number entered after recovery: the paper form it was printed on is now a
    record (a note, a registration). One number, one record — the constraint makes a second
    entry of the same paper impossible."""

    __tablename__ = "downtime_entry"
    __table_args__ = (UniqueConstraint("clinic_id", "number"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    record_type: Mapped[str] = mapped_column(String(32))
    record_id: Mapped[uuid.UUID] = mapped_column()
    entered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    entered_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))


class DowntimeDrill(Base):
    """A downtime exercise (BCP 1-2c): who took part, which scenario, whether the standby
    (or the bundle) was reached and how long it took, what went wrong, what was decided.
    Evidence for the checklist; never edited (a correction is a new record)."""

    __tablename__ = "downtime_drill"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    held_on: Mapped[dt.date] = mapped_column(Date)
    scenario: Mapped[str] = mapped_column(String(16))  # cannot-view | cannot-enter
    participants: Mapped[str] = mapped_column(Text)
    reached: Mapped[bool] = mapped_column(Boolean)
    minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    problems: Mapped[str] = mapped_column(Text, default="")
    improvement: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    recorded_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))


class StandbyMerge(Base):
    """One standby segment merged into this log (once each; in order within a copy)."""

    __tablename__ = "standby_merge"

    segment_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    copy_id: Mapped[str] = mapped_column(String(36), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    base_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)  # the standby's own numbering
    head_chain: Mapped[bytes] = mapped_column(LargeBinary(32))
    events: Mapped[int] = mapped_column(Integer)
    merged_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    merged_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
