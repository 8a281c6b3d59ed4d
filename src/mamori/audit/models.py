"""The audit log tables: events (insert-only) and the one-row head the appender advances."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mamori.audit import merkle
from mamori.db import Base, UTCDateTime, new_id

GENESIS_CHAIN = b"\x00" * 32


def chain_next(previous: bytes, body: bytes) -> bytes:
    """The hash chain: chain_i = SHA-256(chain_{i-1} ‖ SHA-256(body_i))."""
    return hashlib.sha256(previous + hashlib.sha256(body).digest()).digest()


class AuditEvent(Base):
    """One event, stored as the exact canonical bytes that were hashed.

    ``seq`` is contiguous from 1 (assigned under the head row's lock); ``leaf_hash`` is the
    RFC 9162 leaf hash of ``body``; ``chain_hash`` = SHA-256(previous chain ‖ SHA-256(body)).
    Rows are never updated or deleted: database triggers refuse both.
    """

    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # not indexed: reviews reach events through the patient and user index tables and filter
    # by tag there; an index no query used cost every event a B-tree page (0006)
    tag: Mapped[str] = mapped_column(String(48))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    chain_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditHead(Base):
    """The appender's state: size, last chain hash and the Merkle frontier (one row, id 1).
    Updating it in every audited transaction serialises appends, which is what keeps ``seq``
    free of gaps."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(Integer)
    chain_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    frontier: Mapped[list[str]] = mapped_column(JSON)

    def merkle_frontier(self) -> merkle.Frontier:
        """The stored frontier (raises ValueError if it does not fit the size)."""
        return merkle.Frontier(self.size, [bytes.fromhex(h) for h in self.frontier])


class AuditEventPatient(Base):
    """Index: which patients an event names (for "who opened this patient"). Derived from the
    bodies and cross-checked by ``verify_log``, so deleting a row cannot hide an access."""

    __tablename__ = "audit_event_patient"
    __table_args__ = (Index("ix_audit_event_patient_patient_seq", "patient_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)


class AuditEventUser(Base):
    """Index: which staff member acted (for "what did this user open")."""

    __tablename__ = "audit_event_user"
    __table_args__ = (Index("ix_audit_event_user_user_seq", "user_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column()


class AuditReview(Base):
    """A completed log review (監査証跡のレビュー): who looked, when, at what, and the finding.
    Evidence for the MHLW checklist item on regular log review. Insert-only."""

    __tablename__ = "audit_review"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    reviewer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    reviewed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    scope: Mapped[str] = mapped_column(String(20))  # period | patient | user
    subject_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    through_seq: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))  # no-issue | follow-up
    finding: Mapped[str] = mapped_column(Text, default="")
