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

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from mamori.errors import ReadOnlyCopy

__all__ = ["MARKER", "ReadOnlyCopy", "copy_banner", "install", "mark", "marker", "unmark"]

MARKER = "READ_ONLY"

# What a copy may still write: the sessions of the people signed in to it, the sign-in throttle,
# the alerts it raises, and a break-the-glass grant (an access, audited, like a read) — and
# its own audit trail, which the append writes outside the ORM. Signing in also moves a second
# factor's replay guard (TOTP step, WebAuthn counter, a recovery code used) and may rehash a
# password; nothing else of an account changes. Everything else is refused before it is
# flushed, whichever edge (page, API, CLI) asked: a forked record is a data-integrity incident.
ALLOWED_ON_COPY = frozenset(
    {"auth_session", "auth_throttle", "security_alert", "break_glass_grant"}
)
SIGN_IN_COLUMNS = {
    "auth_factor": frozenset({"last_step", "last_used_at", "sign_count", "used_at"}),
    "staff_user": frozenset({"password_hash"}),
}


def mark(home: Path, why: dict[str, Any]) -> None:
    """Leave the marker in a copy just made (``why``: generation, manifest, restore or drill).
    Replaced atomically: a server reading it for a page never sees half of it."""
    body = {"since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **why}
    path = home / MARKER
    tmp = home / f".{MARKER}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(body, ensure_ascii=False).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


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


def _refuse_on_copy(session: Session, _context: object, _instances: object) -> None:
    db = session.info.get("mamori_db")
    if db is None or not db.read_only:
        return
    for obj in (*session.new, *session.deleted):
        if getattr(obj, "__tablename__", None) not in ALLOWED_ON_COPY:
            raise ReadOnlyCopy()
    for obj in session.dirty:
        table = getattr(obj, "__tablename__", None)
        if table in ALLOWED_ON_COPY or not session.is_modified(obj):
            continue
        state = inspect(obj)
        changed = {a.key for a in state.attrs if a.history.has_changes()}
        if not changed <= SIGN_IN_COLUMNS.get(str(table), frozenset()):
            raise ReadOnlyCopy()


def install() -> None:
    if not event.contains(Session, "before_flush", _refuse_on_copy):
        event.listen(Session, "before_flush", _refuse_on_copy)


def copy_banner(home: Path) -> dict[str, Any] | None:
    """What a standby copy's banner shows: the time its data is from, its age (the RPO), the
    last refresh attempt and any failure; None for a copy that is not a standby."""
    from mamori.clinic.calendar import JST

    marked = marker(home)
    if not marked or not marked.get("standby"):
        return None
    out: dict[str, Any] = {"as_of": None, "age_minutes": None, "error": marked.get("refresh_error")}
    raw = marked.get("as_of")
    if raw:
        at = dt.datetime.fromisoformat(str(raw))
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        out["as_of"] = at.astimezone(JST).strftime("%Y-%m-%d %H:%M")
        out["age_minutes"] = max(0, int((dt.datetime.now(dt.UTC) - at).total_seconds() // 60))
    checked = marked.get("checked_at") or marked.get("refreshed_at")
    if checked:
        out["checked"] = dt.datetime.fromisoformat(str(checked)).astimezone(JST).strftime("%H:%M")
    return out
