"""The audit log tables: events (insert-only) and the one-row head the appender advances."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from mamori.db import Base, UTCDateTime


class AuditEvent(Base):
    """One event, stored as the exact canonical bytes that were hashed.

    ``seq`` is contiguous from 1 (assigned under the head row's lock); ``leaf_hash`` is the
    RFC 9162 leaf hash of ``body``; ``chain_hash`` = SHA-256(previous chain ‖ SHA-256(body)).
    Rows are never updated or deleted: database triggers refuse both.
    """

    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    tag: Mapped[str] = mapped_column(String(48), index=True)
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
