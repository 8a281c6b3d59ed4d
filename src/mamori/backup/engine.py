"""``mamori backup run``: one consistent snapshot, written to every configured target.

A run:

1. packs the instance files (settings, secrets, audit checkpoints, TLS, and the KEK when it is
   a file or passphrase key) — *before* the snapshot, so the checkpoints never get ahead of the
   database they travel with;
2. snapshots SQLite with the online backup API in a single step (stepwise copies restart under
   writes and may never finish); PostgreSQL with ``pg_dump`` (custom format) of a snapshot
   exported by a repeatable-read transaction, in which the row counts are read too; the
   server keeps serving either way;
3. SQLite: maps the snapshot's pages (BLAKE2b per page) and compares them with the previous
   run. An abnormal share of changed pages, a table that has fewer rows than at the last run
   (mamori never deletes records), or documents that are no longer mamori ciphertext raise
   the ransomware alarm, which records an audit event and holds every existing generation
   (no pruning) until an administrator releases it;
4. per medium, writes a full or — SQLite, when the medium holds the current base full — only
   the pages changed since that full, then the documents the medium lacks, then the signed
   manifest (last: a generation without a manifest is not a backup), chained to the medium's
   previous manifest. A PostgreSQL generation is always a whole dump (a logical dump has no
   stable pages to diff; continuous WAL archiving is the server's own incremental);
5. records ``system:backup:completed`` (or ``…:failed``) for each target in the audit trail,
   which is the tamper-evident record of every generation ``verify`` expects to find.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mamori.backup import alarm, fmt
from mamori.backup.fmt import BackupError, PageMap
from mamori.backup.identity import load_recipients
from mamori.backup.integrity import attest
from mamori.backup.sources import (
    database_engine,
    documents_on_disk,
    instance_bundle,
    pg_snapshot,
    snapshot,
    sqlite_path,
)
from mamori.backup.writer import GenerationWriter, Progress, TargetResult
from mamori.settings import Settings

STATE_FILE = "state.json"
LOCK_FILE = "run.lock"
HISTORY = 48


@dataclass
class RunResult:
    generation: int
    db_bytes: int
    changed_pages: int
    page_count: int
    seconds: float
    targets: list[TargetResult] = field(default_factory=list)
    alarm: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.targets) and all(t.ok for t in self.targets)


# ---------------------------------------------------------------- local state


def state_path(settings: Settings) -> Path:
    return settings.backup_dir / STATE_FILE


def load_state(settings: Settings) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(state_path(settings).read_text(encoding="utf-8"))
    except FileNotFoundError:
        state = {"generation": 0, "media": {}, "history": [], "hold": None, "documents": {}}
    if not state.get("hold"):
        state["hold"] = alarm.raised(settings)  # the damaged-database alarm holds too
    return state


def save_state(settings: Settings, state: dict[str, Any]) -> None:
    fmt.write_private(state_path(settings), json.dumps(state, indent=1).encode())


@contextmanager
def run_lock(settings: Settings) -> Iterator[None]:
    """One backup at a time per instance (scheduler and CLI)."""
    import fcntl  # POSIX file lock; only the backup run takes it

    settings.backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(settings.backup_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                "別のバックアップが実行中です。", "Another backup of this instance is running."
            ) from None
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- pieces


def shrunk_tables(state: dict[str, Any], counts: dict[str, int]) -> list[str]:
    """Tables with fewer rows than at the last run. mamori never deletes a record, a version
    or an audit event, so a count that went down means rows were destroyed behind its back."""
    before: dict[str, int] = state.get("counts") or {}
    return sorted(t for t, n in counts.items() if n < int(before.get(t, 0)))


def check_alarm(
    settings: Settings,
    state: dict[str, Any],
    share: float | None,
    foreign_docs: int,
    shrunk: Sequence[str] = (),
) -> dict[str, Any] | None:
    """``share`` of changed pages (SQLite; None for a PostgreSQL dump, which has no pages)."""
    history = [float(x) for x in state.get("history", [])]
    usual = statistics.median(history) if len(history) >= 3 else 0.0
    threshold = max(settings.backup.alarm_floor, settings.backup.alarm_factor * usual)
    if (share is not None and share > threshold) or foreign_docs > 0 or shrunk:
        return {
            "changed_share": round(share, 4) if share is not None else None,
            "threshold": round(threshold, 4),
            "usual_share": round(usual, 4),
            "foreign_documents": foreign_docs,
            "shrunk_tables": list(shrunk),
        }
    return None


# ---------------------------------------------------------------- the run


def run_backup(
    settings: Settings,
    kek: Any,
    *,
    full: bool = False,
    only: str | None = None,
    progress: Progress | None = None,
    readable: tuple[fmt.Sealed, dict[str, Any]] | None = None,
) -> RunResult:
    """Snapshot once and write a generation to each target. Raises only when nothing could be
    attempted (no recipients, no targets, snapshot failed); a failed target is in the result.
    ``readable``: today's readable copy (``continuity.escrow``), sealed, and its manifest: put
    in each generation; once a target holds it, the next one is due tomorrow."""
    t0 = time.monotonic()
    specs = [t for t in settings.backup.targets if only is None or t.name == only]
    if not specs:
        raise BackupError(
            "バックアップの保存先が設定されていません（mamori.toml の [[backup.targets]]）。",
            "No backup targets configured ([[backup.targets]] in mamori.toml).",
        )
    recipients = load_recipients(settings.backup_dir)
    signer = fmt.signing_key(settings.audit_signing_key)
    db_path = sqlite_path(settings) if database_engine(settings) == "sqlite" else None
    say = progress or (lambda _what, _done, _total: None)
    with run_lock(settings):
        state = load_state(settings)
        generation = int(state.get("generation", 0)) + 1
        now = dt.datetime.now(dt.UTC)
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=settings.backup_dir))
        scanner = ThreadPoolExecutor(1, thread_name_prefix="mamori-backup-scan")
        checker = ThreadPoolExecutor(1, thread_name_prefix="mamori-backup-attest")
        attestation: Future[dict[str, Any]] | None = None
        try:
            say("instance", 0, 1)
            bundle_tar = staging / "instance.tar"
            kek_info = instance_bundle(settings, kek, bundle_tar)
            with bundle_tar.open("rb") as fh:
                bundle = fmt.seal_file(
                    fh, staging / "instance.tar.zst.age", recipients, compress=True
                )
            say("snapshot", 0, 1)
            last_map = settings.backup_dir / "pagemap-last.bin"
            pages: PageMap | None = None
            share: float | None = None
            # the documents are listed (and new ones hashed: cold reads) beside the page map
            # (CPU on the warm snapshot), after the snapshot: every document its database names
            # was stored before that transaction, so the listing holds them all
            if db_path is not None:
                snap = staging / "snapshot.db"
                try:
                    facts = snapshot(db_path, snap)
                except Exception as exc:
                    if alarm.is_damage(exc):  # encrypted or broken: no generation from it
                        raise alarm.raise_alarm(settings, exc, "backup snapshot") from exc
                    raise
                scan = scanner.submit(documents_on_disk, settings, state)
                pages = fmt.map_pages(snap)
                changed_since_last = (
                    len(pages.changed_since(PageMap.load(last_map)))
                    if last_map.exists()
                    else pages.page_count
                )
                share = changed_since_last / max(pages.page_count, 1)
                # the full integrity check of this snapshot, beside the writing (SQLite runs
                # it off the GIL); the manifest carries the result, and a restore that proves
                # the same SHA-256 need not run it again
                attestation = checker.submit(attest, snap, pages.sha256, pages.page_count)
                db_meta: dict[str, Any] = {
                    "sha256": pages.sha256,
                    "size": pages.size,
                    "page_size": pages.page_size,
                    "page_count": pages.page_count,
                }
            else:
                snap = staging / "snapshot.pgdump"
                facts = pg_snapshot(settings.database_url, snap)
                scan = scanner.submit(documents_on_disk, settings, state)
                changed_since_last = 0
                db_meta = {
                    "sha256": fmt.sha256_file(snap),
                    "size": snap.stat().st_size,
                    "format": "pg_dump-custom",
                }
            say("snapshot", 1, 1)
            docs, foreign = scan.result()
            shrunk = shrunk_tables(state, facts["counts"])
            ran_before = last_map.exists() or bool(state.get("counts"))
            change = check_alarm(settings, state, share, foreign, shrunk) if ran_before else None
            if change and not state.get("hold"):
                state["hold"] = {"since": now.isoformat(timespec="seconds"), "alarm": change}
            result = RunResult(
                generation,
                int(db_meta["size"]),
                changed_since_last,
                pages.page_count if pages else 0,
                0.0,
            )
            result.alarm = change
            writer = GenerationWriter(
                settings, state, staging, recipients, signer, pages, snap, {**facts, **db_meta},
                docs, bundle, kek_info, generation, now, full, say, change, readable,
                attestation,
            )  # fmt: skip
            try:
                for spec in specs:
                    result.targets.append(writer.write_to(spec))
            finally:
                writer.close()
            # the page map of this run becomes the comparison point for the next alarm check
            if any(t.ok for t in result.targets):
                if pages is not None:
                    pages.save(last_map)
                if not change and share is not None:
                    state["history"] = [*state.get("history", []), share][-HISTORY:]
                state["counts"] = facts["counts"]
                state["generation"] = generation
                if readable is not None:
                    meta = readable[1]
                    last = state.get("readable") or {}
                    state["readable"] = {
                        "at": now.isoformat(),
                        "started": meta["started"],  # the next delta: changes after this
                        "full_at": now.isoformat() if meta["kind"] == "full" else last["full_at"],
                        "generation": generation,
                    }
            save_state(settings, state)
        finally:
            scanner.shutdown()  # a failed run waits for the listing before it cleans up
            checker.shutdown()  # and for the check reading the snapshot
            shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.monotonic() - t0
    return result


# ---------------------------------------------------------------- generations kept (GFS)
