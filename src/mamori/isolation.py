"""The isolation switch (BCP 3-2: 隔離): on a suspected intrusion the server is cut off from
everything outside it, in the order of the MHLW 手引き — the backup path first, then the
external links — and keeps serving read-only to the console, so the copies stay out of the
attacker's reach and the record cannot be changed while it is examined.

``mamori isolate`` leaves ``ISOLATED`` in the instance (who, when, why); every part of mamori
that reaches outside or writes checks it where it acts:

1. backups (scheduled and ``mamori backup run``) and downtime bundles are not written;
2. the audit stream to the SIEM pauses (it resumes from its cursor, nothing is lost);
3. API tokens are refused, and every request from an address other than the server's own
   (loopback) is answered 503 — so a console session can still read and examine;
4. no record is written (``records.versioning`` refuses a version); the audit trail itself
   goes on recording every read.

``mamori isolate --lift`` removes the marker; both are audited and raise an alert.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from mamori.errors import Isolated

__all__ = ["MARKER", "Isolated", "is_local", "mark", "marker", "unmark"]

MARKER = "ISOLATED"


def mark(home: Path, why: dict[str, Any]) -> None:
    body = {"since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **why}
    fd = os.open(home / MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(body, ensure_ascii=False).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def marker(home: Path) -> dict[str, Any] | None:
    try:
        raw = (home / MARKER).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    # a marker that cannot be read still isolates: fail closed
    return found if isinstance(found, dict) else {"since": "", "reason": "(unreadable marker)"}


def unmark(home: Path) -> None:
    (home / MARKER).unlink(missing_ok=True)


def is_local(host: str | None) -> bool:
    """The server's own address (loopback); anything else — or no address — is not."""
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
