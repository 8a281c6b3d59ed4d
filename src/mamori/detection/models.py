"""What explains an access and what the detector found.

* ``staff_roster``: who works when (a week at a time, entered by the director; a day without an
  entry follows the clinic's default hours, ``detection.roster``).
* ``staff_profile``: a staff member's household facts for the household match (kana surname,
  postcode, address, phone), sealed like patient data; ``staff_patient_link``: which patients
  are the staff member or their registered family (kept by the director, not inferred).
* ``contact_log``: 電話対応 — a phone call, message or desk question about a patient, a
  versioned record, so that the reads it needed are explained.
* ``detection_access``: the accesses the nightly pass could not explain (the ledger the
  behaviour rules read: repeated opens over weeks, a crowd on one patient), one row per
  user, patient and day.
* ``detection_case``: hits grouped per user (and patient), with the facts its sentence is
  made from (no name is stored: the sentence is rendered when a reviewer reads it) and the
  review's decision.
* ``detection_run``: each pass, with how many accesses it read and explained.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mamori.authz.permissions import Permission, RecordAccess
from mamori.crypto.sealed import Sealed, sealed_str
from mamori.db import Base, UTCDateTime, new_id, utcnow
from mamori.records.versioning import PatientRecord


class StaffRoster(Base):
    """One day of one staff member: worked (with hours), off, on leave or on call."""

    __tablename__ = "staff_roster"
    __table_args__ = (UniqueConstraint("user_id", "day"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    day: Mapped[dt.date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(12))  # work | off | leave | oncall
    start_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)  # JST, from 00:00
    end_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    entered_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    entered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StaffProfile(Sealed, Base):
    """A staff member's household facts, sealed: compared with a patient's only when an access
    by that staff member is otherwise unexplained (the staff notice says so)."""

    __tablename__ = "staff_profile"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"), unique=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # when the staff member was shown the notice (職員への通知) of what is kept and why
    notice_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    left_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)  # 退職日
    family_kana = sealed_str()
    postal_code = sealed_str()
    address = sealed_str()
    phone = sealed_str()


class StaffPatientLink(Base):
    """This patient is the staff member themself or one of their registered family."""

    __tablename__ = "staff_patient_link"
    __table_args__ = (UniqueConstraint("user_id", "patient_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), index=True)
    relation: Mapped[str] = mapped_column(String(12))  # self | family
    created_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ContactLog(PatientRecord, Base):
    """電話対応: a call, message or desk question about a patient, logged in two clicks."""

    __tablename__ = "contact_log"
    __record_type__ = "ContactLog"
    __access__ = RecordAccess(
        Permission.ENCOUNTER_READ,
        Permission.ENCOUNTER_WRITE,
        demographic=True,
        aliases=("Communication",),  # its FHIR resource
    )
    __content_fields__ = ("patient_id", "channel", "topic", "note")
    __table_args__ = (Index("ix_contact_log_patient_created", "patient_id", "created_at"),)

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"))
    channel: Mapped[str] = mapped_column(String(12))  # phone | desk | message
    topic = sealed_str()  # 予約 / 検査結果 / 処方 / 会計 / その他
    note = sealed_str()


class DetectionAccess(Base):
    """An access the pass could not explain: one row per user, patient and day (JST)."""

    __tablename__ = "detection_access"
    __table_args__ = (
        UniqueConstraint("user_id", "patient_id", "day"),
        Index("ix_detection_access_patient_day", "patient_id", "day"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    patient_id: Mapped[uuid.UUID] = mapped_column()
    day: Mapped[dt.date] = mapped_column(Date)
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)
    opens: Mapped[int] = mapped_column(Integer, default=0)
    kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    # explained only by being on duty on the patient's visit day: counted for a crowd (B4)
    weak: Mapped[bool] = mapped_column(Boolean, default=False)
    # the patient had no visit for three months and none booked (B6 counts these)
    dormant: Mapped[bool] = mapped_column(Boolean, default=False)


class DetectionCase(Base):
    """Rule hits of one user (on one patient, or on many), grouped, with the review's
    decision. ``facts`` holds counts, kinds and rule names; never a name or a note."""

    __tablename__ = "detection_case"
    __table_args__ = (Index("ix_detection_case_clinic_status", "clinic_id", "status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"), index=True)
    patient_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True, index=True)
    tier: Mapped[str] = mapped_column(String(12))  # immediate | daily | weekly
    score: Mapped[int] = mapped_column(Integer)
    rules: Mapped[list[str]] = mapped_column(JSON)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open|appropriate|follow-up
    reviewed_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff_user.id"), nullable=True
    )
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reason: Mapped[str] = mapped_column(String(500), default="")
    # "appropriate" may quiet this user–patient pair until then (a carer, a relative's visit)
    suppress_until: Mapped[dt.date | None] = mapped_column(Date, nullable=True)


class DetectionRun(Base):
    """One pass of the detector over the log: what it read and what it found."""

    __tablename__ = "detection_run"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    tier: Mapped[str] = mapped_column(String(12))  # nightly | immediate | on-demand
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    from_seq: Mapped[int] = mapped_column(Integer)
    through_seq: Mapped[int] = mapped_column(Integer)
    accesses: Mapped[int] = mapped_column(Integer)
    explained: Mapped[int] = mapped_column(Integer)
    cases_opened: Mapped[int] = mapped_column(Integer)
    cases_updated: Mapped[int] = mapped_column(Integer)
