"""A copy made by restore or drill is read-only until a person promotes it.

Two writable copies of one clinic's record fork it: each takes new notes the other never
sees, and both sign checkpoints for the same log. So ``mamori restore`` (and every drill)
leaves ``READ_ONLY`` in the restored instance: the copy serves and shows everything, staff
sign in and every read is audited, but no record is written (``records.versioning`` refuses
a version) until ``mamori promote`` — audited, with a reason, refused while the original
still answers — makes it the clinic's record.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from mamori.errors import ReadOnlyCopy

__all__ = ["MARKER", "ReadOnlyCopy", "mark", "marker", "unmark"]

MARKER = "READ_ONLY"


def mark(home: Path, why: dict[str, Any]) -> None:
    """Leave the marker in a copy just made (``why``: generation, manifest, restore or drill)."""
    body = {"since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **why}
    path = home / MARKER
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(body, ensure_ascii=False).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def marker(home: Path) -> dict[str, Any] | None:
    """The copy's marker (why and since when it is read-only), or None for a writable one."""
    try:
        found: dict[str, Any] = json.loads((home / MARKER).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return {"since": None, "damaged": True}  # still read-only: fail closed
    return found


def unmark(home: Path) -> None:
    (home / MARKER).unlink()
