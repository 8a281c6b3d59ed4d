"""The newest event of one kind in the audit log, reading only the recent stretch of it (the
log's time rises with its sequence; the tag column has no index)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit.models import AuditEvent
from mamori.db import utcnow
from mamori.detection.service import seq_at


def last_event(session: Session, tag: str, days: int) -> tuple[dt.datetime, dict[str, Any]] | None:
    """The newest event with ``tag`` within ``days``, with its body."""
    since = seq_at(session, utcnow() - dt.timedelta(days=days))
    row = session.execute(
        select(AuditEvent.recorded_at, AuditEvent.body)
        .where(AuditEvent.seq > since, AuditEvent.tag == tag)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return row[0], json.loads(bytes(row[1]))
