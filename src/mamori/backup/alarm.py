"""The loudest alarm: the database itself is no longer a database.

Ransomware encrypts the files it finds, the database among them; a disk can fail the same
way. mamori cannot write that into the audit trail (the trail is in the damaged file), so the
alarm is kept beside it, outside the database: ``backup/ALARM.json`` holds every generation
(nothing is pruned or rotated away until a person releases the hold), each sighting is
appended to ``backup/alarms.jsonl``, the server answers ``/healthz`` unhealthy, and every
command stops with what the director should do. ``mamori backup release-hold`` clears it
after the clinic has restored or otherwise resolved it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
from typing import Any

from sqlalchemy.exc import DatabaseError as SQLAlchemyDatabaseError

from mamori.errors import InstanceError
from mamori.settings import Settings

ALARM_FILE = "ALARM.json"
LOG_FILE = "alarms.jsonl"
log = logging.getLogger("mamori.backup")

WHAT_TO_DO_JA = (
    "データベースが読めません（ランサムウェアによる暗号化、またはディスクの破損の可能性）。"
    "1) このサーバーの LAN ケーブルを抜き、Wi-Fi を切ってネットワークから切り離してください。"
    "2) 電源は切らずに院長と保守業者へ連絡してください。"
    "3) 診療は紙の運用に切り替えてください。"
    "4) 別の PC に、最新の正常なバックアップから復元してください（mamori restore）。"
    "バックアップの世代は保留され、削除されません。"
)
WHAT_TO_DO_EN = (
    "The database cannot be read (ransomware encryption or a failing disk). 1) Unplug this "
    "server's network cable and turn off its Wi-Fi. 2) Do not power it off; call the director "
    "and the maintenance vendor. 3) Switch to paper for patient care. 4) Restore the newest "
    "good backup onto another PC (mamori restore). Every backup generation is held; none is "
    "deleted."
)


class DatabaseDamaged(InstanceError):
    status = 503
    code = "database_damaged"


def is_damage(exc: BaseException) -> bool:
    """An error that says the file is not (or no longer) a sound SQLite database."""
    inner = exc.orig if isinstance(exc, SQLAlchemyDatabaseError) else exc
    if not isinstance(inner, sqlite3.DatabaseError) or isinstance(
        inner, sqlite3.OperationalError | sqlite3.IntegrityError | sqlite3.ProgrammingError
    ):
        return False
    text = str(inner).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def raise_alarm(settings: Settings, exc: BaseException, where: str) -> DatabaseDamaged:
    """Record the alarm beside the database and return the error to raise."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    entry: dict[str, Any] = {"at": now, "where": where, "error": str(exc)[:300]}
    directory = settings.backup_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    held = directory / ALARM_FILE
    if not held.exists():
        hold = {"since": now, "alarm": {"database_unreadable": entry["error"], "where": where}}
        _write_private(held, json.dumps(hold, ensure_ascii=False).encode())
    fd = os.open(directory / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(entry, ensure_ascii=False) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    log.critical("DATABASE UNREADABLE (%s): %s — %s", where, entry["error"], WHAT_TO_DO_EN)
    return DatabaseDamaged(WHAT_TO_DO_JA, WHAT_TO_DO_EN)


def raised(settings: Settings) -> dict[str, Any] | None:
    """The standing alarm, if any (for ``/healthz``, the status screen and the backup hold)."""
    try:
        found: dict[str, Any] = json.loads((settings.backup_dir / ALARM_FILE).read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return found


def clear(settings: Settings) -> None:
    (settings.backup_dir / ALARM_FILE).unlink(missing_ok=True)


def _write_private(path: os.PathLike[str], data: bytes) -> None:
    tmp = f"{os.fspath(path)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
