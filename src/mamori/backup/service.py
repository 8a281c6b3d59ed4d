"""A backup run recorded in the audit trail: the one entry point for the CLI and the
scheduler inside ``mamori serve``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import Any

from mamori import isolation
from mamori.audit.trail import AuditTag, record_system, release
from mamori.backup import engine, fmt, writer
from mamori.backup.alarm import DatabaseDamaged
from mamori.backup.fmt import BackupError
from mamori.backup.identity import RECIPIENTS_FILE, load_recipients
from mamori.continuity import escrow
from mamori.db import Database
from mamori.errors import MamoriError
from mamori.settings import Settings

log = logging.getLogger("mamori.backup")


def _record(db: Database, events: list[tuple[AuditTag, dict[str, Any]]], channel: str) -> None:
    session = db.session(write=True)
    try:
        for tag, detail in events:
            record_system(session, tag, detail, channel=channel)
        session.commit()
    finally:
        session.close()


def audit_events(result: engine.RunResult) -> list[tuple[AuditTag, dict[str, Any]]]:
    events: list[tuple[AuditTag, dict[str, Any]]] = []
    if result.alarm:
        events.append((AuditTag.BACKUP_ALARM, {"generation": result.generation, **result.alarm}))
    for t in result.targets:
        detail: dict[str, Any] = {"target": t.target, "generation": result.generation}
        if not t.ok:
            events.append((AuditTag.BACKUP_FAILED, detail | {"error": t.error[:300]}))
            continue
        detail |= {
            "medium": t.medium,
            "kind": t.kind,
            "link": t.link,
            "manifest": t.manifest,
            "bytes": t.bytes,
            "documents": t.documents,
        }
        events.append((AuditTag.BACKUP_COMPLETED, detail))
        if t.pruned:
            events.append(
                (
                    AuditTag.BACKUP_PRUNED,
                    {"target": t.target, "medium": t.medium, "generations": t.pruned},
                )
            )
    return events


def run_and_record(
    settings: Settings,
    db: Database,
    *,
    full: bool = False,
    only: str | None = None,
    progress: writer.Progress | None = None,
    channel: str = "cli",
    readable: bool = True,
) -> engine.RunResult:
    """One backup run, recorded. A readable copy made ahead (``prepare_readable``) goes into
    this generation; with ``readable`` a due one is made now if none is waiting (the CLI),
    without it the run never waits for one (the scheduler: its own task makes them)."""
    if isolation.marker(settings.home) is not None:
        # the backup path is the first thing isolation cuts: malware here must not reach it
        raise BackupError(
            "隔離中のためバックアップは書き出しません（mamori isolate --lift で解除）。",
            "Isolated: no backup is written (mamori isolate --lift ends it).",
        )
    if db.read_only:
        # a standby or restored copy must not write generations beside the original's: the
        # targets would hold two histories of one clinic
        raise BackupError(
            "参照専用のコピーはバックアップを書き出しません（本番にするには mamori promote）。",
            "A read-only copy writes no backups (mamori promote makes it the clinic's record).",
        )
    kek = db.keyring.kek if db.keyring is not None else None
    copy = _pending(settings)
    if copy is None and readable and settings.backup.readable:
        copy = _make_readable(settings, db, channel)
    try:
        result = engine.run_backup(
            settings, kek, full=full, only=only, progress=progress, readable=copy
        )
    except DatabaseDamaged:
        raise  # nothing can be written into the damaged database; the alarm is beside it
    except MamoriError as exc:
        _record(db, [(AuditTag.BACKUP_FAILED, {"error": exc.en[:300]})], channel)
        raise
    if copy is not None and any(t.ok for t in result.targets):
        _drop_pending(settings)  # carried; until then it waits for the next run
    _record(db, audit_events(result), channel)
    return result


PENDING = "readable-pending.tar.zst.age"  # made ahead, waiting for the run that carries it


def prepare_readable(settings: Settings, db: Database, channel: str = "scheduler") -> bool:
    """``mamori serve``'s own task: make today's readable copy, if one is due and none is
    waiting, so that the next backup run carries it without waiting for it (an L clinic's full
    copy takes tens of minutes; the 15-minute runs go on meanwhile)."""
    if (
        not settings.backup.readable
        or db.read_only
        or isolation.marker(settings.home) is not None
        or _pending(settings) is not None
    ):
        return False
    return _make_readable(settings, db, channel) is not None


def _pending(settings: Settings) -> tuple[fmt.Sealed, dict[str, Any]] | None:
    """The readable copy waiting for a run: its object, and the note written after it."""
    path = settings.backup_dir / PENDING
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        sealed = fmt.Sealed(path, meta.pop("_sha256"), meta.pop("_size"))
        if path.stat().st_size != sealed.size:
            return None
    except (OSError, ValueError, KeyError):
        return None
    return sealed, meta


def _drop_pending(settings: Settings) -> None:
    path = settings.backup_dir / PENDING
    path.with_suffix(".json").unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _make_readable(
    settings: Settings, db: Database, channel: str
) -> tuple[fmt.Sealed, dict[str, Any]] | None:
    """Today's readable copy, sealed to the offline recipients, if one is due (once a day; a
    full one weekly), left waiting in ``PENDING``. A failure is recorded and the backup goes on
    without it: a missing readable copy must never cost the generation itself."""
    now = dt.datetime.now(dt.UTC)
    when = escrow.due(engine.load_state(settings), now)
    if when is None:
        return None
    dest = settings.backup_dir / f".{PENDING}.{now:%Y%m%dT%H%M%S}"
    try:
        recipients = load_recipients(settings.backup_dir)
        with db.session(write=False) as session:
            actor = escrow.escrow_actor(session, settings.backup.readable_as or None)
            sealed, meta = escrow.write(session, actor, dest, recipients, when, now)
            session.commit()
        release(session)
    except MamoriError as exc:
        dest.unlink(missing_ok=True)
        log.error("readable copy not made: %s / %s", exc.en, exc.ja)
        _record(
            db, [(AuditTag.BACKUP_FAILED, {"error": f"readable copy: {exc.en}"[:300]})], channel
        )
        return None
    final = settings.backup_dir / PENDING
    os.replace(dest, final)  # the object first, then what says it is complete
    note = {**meta, "_sha256": sealed.sha256, "_size": sealed.size}
    tmp = final.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(note, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, final.with_suffix(".json"))
    return fmt.Sealed(final, sealed.sha256, sealed.size), meta


def configured(settings: Settings) -> bool:
    return bool(settings.backup.targets) and (settings.backup_dir / RECIPIENTS_FILE).is_file()


def scheduled_run(settings: Settings, db: Database) -> None:
    """One run from the scheduler: failures are logged loudly and audited, never raised into
    the server (the clinic keeps working; the administrator's status shows the failure)."""
    try:
        result = run_and_record(settings, db, channel="scheduler", readable=False)
    except MamoriError as exc:
        log.critical("BACKUP FAILED: %s / %s", exc.en, exc.ja)
        return
    except Exception:
        log.exception("backup run crashed")
        return
    for t in result.targets:
        if not t.ok:
            log.error("backup to %s failed: %s", t.target, t.error)
    if result.alarm:
        log.critical("RANSOMWARE ALARM (backup): %s — generations held", result.alarm)


def status(settings: Settings) -> dict[str, Any]:
    """For the administrator's screen: targets, each medium (a rotated disk is one medium per
    disk) with its newest generation and when it was last written, and an alarm hold."""
    state = engine.load_state(settings)
    media = []
    for mid, m in state.get("media", {}).items():
        last = m.get("last") or {}
        media.append(
            {
                "target": m.get("target", ""),
                "medium": mid[:12],
                "generation": last.get("generation"),
                "kind": last.get("kind", ""),
                "at": last.get("at", ""),
                "chain": m.get("link"),
                "base": (m.get("base") or {}).get("generation"),
            }
        )
    media.sort(key=lambda m: str(m["at"]), reverse=True)
    return {
        "configured": configured(settings),
        "targets": [(t.name, t.kind) for t in settings.backup.targets],
        "interval_minutes": settings.backup.interval_minutes,
        "schedule": settings.backup.schedule,
        "generation": state.get("generation", 0),
        "media": media,
        "hold": state.get("hold"),
    }
