"""The checklist's answers (MHLW サイバーセキュリティ対策チェックリスト), one per fiscal year,
form and item: a versioned record of the clinic, so every change of an answer is kept,
hash-chained and audited — the history of every fiscal year for the 立入検査."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mamori.authz.permissions import Permission, RecordAccess
from mamori.crypto.sealed import sealed_str
from mamori.db import Base, UTCDateTime, new_id, utcnow
from mamori.records.versioning import Versioned


class ChecklistAnswer(Versioned, Base):
    """はい / いいえ / 該当なし for one item of one fiscal year's form, who checked it and when,
    the target date of a いいえ, and the evidence as it stood when a person signed it off."""

    __tablename__ = "checklist_answer"
    __record_type__ = "ChecklistAnswer"
    __access__ = RecordAccess(Permission.PROGRAMME_READ, Permission.PROGRAMME_MANAGE)
    __content_fields__ = (
        "fiscal_year",
        "form",
        "item_id",
        "edition",
        "item_set_sha256",
        "answer",
        "checked_on",
        "checked_by_id",
        "target_on",
        "proposed",
        "evidence",
        "note",
    )
    __table_args__ = (UniqueConstraint("clinic_id", "fiscal_year", "form", "item_id"),)
    __clinic_index__ = False  # the unique (clinic_id, fiscal_year, …) serves

    fiscal_year: Mapped[int] = mapped_column(Integer)  # 2025 = 令和7年度 (April–March)
    form: Mapped[str] = mapped_column(String(12))  # clinic | vendor
    item_id: Mapped[str] = mapped_column(String(16))  # CL-2-10 …
    edition: Mapped[str] = mapped_column(String(40))  # the item set answered (令和7年度版)
    item_set_sha256: Mapped[str] = mapped_column(String(64))  # that data file, exactly
    answer: Mapped[str] = mapped_column(String(8))  # yes | no | na
    checked_on: Mapped[dt.date] = mapped_column(Date)  # 確認日
    checked_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    target_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)  # いいえ: 目標日
    proposed: Mapped[str] = mapped_column(String(8), default="")  # mamori's proposal then
    evidence = sealed_str()  # the dated evidence snapshot signed off
    note = sealed_str()


class AccountReview(Base):
    """An account review (アカウントの棚卸し, CL-2-5): who reviewed, when, and what was decided
    for each account flagged then. Insert-only; the checklist and the duties read the latest."""

    __tablename__ = "account_review"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    reviewer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    reviewed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    accounts: Mapped[int] = mapped_column(Integer)  # active accounts looked at
    # [{user, name, flags, decision: keep | disabled, reason}]
    decisions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    finding: Mapped[str] = mapped_column(String(1000), default="")


class DutyDone(Base):
    """A recurring duty recorded as done (週1回のログ確認, 年1回の BCP 見直し …): who, when, a
    note. Insert-only; duties that mamori can see done by itself are read from its records."""

    __tablename__ = "duty_done"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    duty: Mapped[str] = mapped_column(String(24))
    done_on: Mapped[dt.date] = mapped_column(Date)
    done_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    note: Mapped[str] = mapped_column(String(500), default="")


class TrainingSession(Base):
    """A security training session or a phishing drill (seeds 000, 004): when, what, who took
    part; a drill's results as entered from the service that ran it (mamori sends no mail)."""

    __tablename__ = "training_session"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    held_on: Mapped[dt.date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(16))  # lecture | phishing-drill
    topic: Mapped[str] = mapped_column(String(200))
    material: Mapped[str] = mapped_column(String(300), default="")
    attendees: Mapped[list[str]] = mapped_column(JSON)  # staff user IDs
    sent: Mapped[int | None] = mapped_column(Integer, nullable=True)  # a drill: mails sent
    clicked: Mapped[int | None] = mapped_column(Integer, nullable=True)  # … links opened
    reported: Mapped[int | None] = mapped_column(Integer, nullable=True)  # … reported
    recorded_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BcpApproval(Base):
    """The director approved the cyber-BCP as generated then (its text's SHA-256), with the
    date it is next reviewed."""

    __tablename__ = "bcp_approval"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    approved_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    approved_on: Mapped[dt.date] = mapped_column(Date)
    review_on: Mapped[dt.date] = mapped_column(Date)
    text_sha256: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(String(500), default="")


class BcpAcknowledgement(Base):
    """A staff member has read an approved version of the BCP (周知)."""

    __tablename__ = "bcp_acknowledgement"
    __table_args__ = (UniqueConstraint("approval_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    approval_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("bcp_approval.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    read_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Asset(Base):
    """One line of the equipment ledger (CL-2-1, BCP 1-1a): a server, PC, tablet or network
    device, with what the checklist asks of it; a device mamori saw sign in can be added from
    its sessions and is then confirmed by a person."""

    __tablename__ = "asset"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    kind: Mapped[str] = mapped_column(
        String(16)
    )  # server | pc | tablet | network | printer | other
    name: Mapped[str] = mapped_column(String(100))
    os: Mapped[str] = mapped_column(String(100), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    location: Mapped[str] = mapped_column(String(100), default="")
    owner: Mapped[str] = mapped_column(String(100), default="")
    patch_state: Mapped[str] = mapped_column(String(200), default="")
    antivirus: Mapped[str] = mapped_column(String(100), default="")
    remote_maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    device_id: Mapped[str] = mapped_column(String(64), default="")  # seen signing in to mamori
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    stocktaken_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    note: Mapped[str] = mapped_column(String(500), default="")
    updated_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Vendor(Base):
    """One line of the vendor (委託先) ledger: the contract, what they maintain and how they
    reach it, the documents received (MDS/SDS, the vendor checklist), the contact, the last
    review; linked to the vendor accounts and maintenance windows mamori keeps."""

    __tablename__ = "vendor"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    contract: Mapped[str] = mapped_column(String(200), default="")
    maintains: Mapped[str] = mapped_column(String(300), default="")
    remote_route: Mapped[str] = mapped_column(String(200), default="")  # VPN, 保守回線 …
    sds_received_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    checklist_received_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    contact: Mapped[str] = mapped_column(String(200), default="")
    reviewed_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    accounts: Mapped[list[str]] = mapped_column(JSON, default=list)  # vendor staff accounts
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InventoryEntry(Base):
    """The clinic's own line of the information inventory: a correction of a generated line
    (same name) or a kind of information mamori does not hold (paper charts, the レセコン)."""

    __tablename__ = "inventory_entry"
    __table_args__ = (UniqueConstraint("clinic_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"))
    name: Mapped[str] = mapped_column(String(120))
    classification: Mapped[str] = mapped_column(String(120), default="")
    location: Mapped[str] = mapped_column(String(300), default="")
    protection: Mapped[str] = mapped_column(String(300), default="")
    keep: Mapped[str] = mapped_column(String(200), default="")
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)  # not held at this clinic
    updated_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
