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
import glob
import hashlib
import io
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import zstandard
from sqlalchemy.engine import make_url

from mamori.backup import fmt
from mamori.backup.config import TargetSpec
from mamori.backup.fmt import BackupError, PageMap
from mamori.backup.identity import load_recipients
from mamori.backup.targets import Target, medium_of, open_target
from mamori.settings import Settings

STATE_FILE = "state.json"
LOCK_FILE = "run.lock"
COUNTED_TABLES = (
    "patient",
    "coverage",
    "encounter",
    "progress_note",
    "condition",
    "medication_request",
    "allergy_intolerance",
    "observation",
    "document",
    "record_version",
    "audit_event",
    "staff_user",
)
HISTORY = 48
DELTA_LIMIT = 0.5  # a delta bigger than half the database is written as a full instead
FULL_OBJECT = {"sqlite": "db.full.sqlite.zst.age", "postgresql": "db.full.pgdump.zst.age"}
Progress = Callable[[str, int, int], None]


@dataclass
class TargetResult:
    target: str
    ok: bool
    kind: str = ""
    medium: str = ""
    link: int = 0
    manifest: str = ""
    bytes: int = 0
    documents: int = 0
    error: str = ""
    error_ja: str = ""
    pruned: list[int] = field(default_factory=list)


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
        return state
    except FileNotFoundError:
        return {"generation": 0, "media": {}, "history": [], "hold": None, "documents": {}}


def save_state(settings: Settings, state: dict[str, Any]) -> None:
    fmt.write_private(state_path(settings), json.dumps(state, indent=1).encode())


@contextmanager
def run_lock(settings: Settings) -> Iterator[None]:
    """One backup at a time per instance (scheduler and CLI)."""
    import fcntl

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


def database_engine(settings: Settings) -> str:
    """``sqlite`` or ``postgresql``: the two databases mamori runs on, and backs up."""
    name = make_url(settings.database_url).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise BackupError(
            f"このデータベース（{name}）のバックアップには対応していません。",
            f"Backups of a {name} database are not supported.",
        )
    return name


def sqlite_path(settings: Settings) -> Path:
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise BackupError(
            "SQLite のインスタンスではありません。", "This instance does not run on SQLite."
        )
    return Path(url.database)


def pg_tool(name: str) -> str:
    """``pg_dump`` or ``pg_restore``: the newest Debian PostgreSQL's (a dump can be read by
    the same or a newer major version only), else the one on PATH."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} がありません。Debian のパッケージ postgresql-client を入れてください。",
            f"{name} not found: install the Debian package postgresql-client.",
        )
    return path


def libpq(url: str) -> tuple[str, str | None]:
    """A SQLAlchemy PostgreSQL URL as a libpq connection URI *without* the password, and the
    password (passed to the tools through ``PGPASSWORD``, never on a command line)."""
    u = make_url(url)
    plain = u.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), u.password


def run_pg_tool(args: list[str], password: str | None, what: str) -> None:
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    done = subprocess.run(  # noqa: S603 - fixed tool, arguments are ours
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=6 * 3600
    )
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[-500:]
        raise BackupError(f"{what} に失敗しました: {detail}", f"{what} failed: {detail}")


def pg_snapshot(url: str, dest: Path) -> dict[str, Any]:
    """``pg_dump`` of one exported snapshot, and the facts read in that same snapshot (so the
    manifest's counts are the dump's, while the server keeps writing). Custom format, which
    ``pg_restore`` reads (also selectively and in parallel); uncompressed, because zstd and
    age follow."""
    import psycopg

    uri, password = libpq(url)
    with psycopg.connect(uri, password=password) as con:
        con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = con.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        facts = _facts(_pg_tables(con), lambda sql: con.execute(sql).fetchall())
        args = [pg_tool("pg_dump"), "--format=custom", "--compress=0", f"--snapshot={row[0]}"]
        run_pg_tool([*args, "--file", str(dest), "--dbname", uri], password, "pg_dump")
        con.rollback()
    os.chmod(dest, 0o600)
    return facts


def snapshot(db_path: Path, dest: Path) -> dict[str, Any]:
    """A consistent copy through the online backup API, in one step; and what it holds."""
    src = sqlite3.connect(db_path, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            # a scratch copy: no journal, no syncs (a crash throws it away) — 1.7× faster
            dst.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
            src.backup(dst)  # pages=-1: one read transaction, writers carry on (WAL)
        finally:
            dst.close()
    finally:
        src.close()
    os.chmod(dest, 0o600)
    return db_facts(dest)


def db_facts(path: Path) -> dict[str, Any]:
    """Row counts and the last committed audit event (every write commits one): the RPO mark."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return _facts(tables, lambda sql: con.execute(sql).fetchall())
    finally:
        con.close()


def _facts(tables: set[str], query: Callable[[str], list[Any]]) -> dict[str, Any]:
    counts = {
        t: int(query(f'SELECT count(*) FROM "{t}"')[0][0])  # noqa: S608 - our table names
        for t in COUNTED_TABLES
        if t in tables
    }
    rows = (
        query("SELECT seq, recorded_at FROM audit_event ORDER BY seq DESC LIMIT 1")
        if "audit_event" in tables
        else []
    )
    last = rows[0] if rows else None
    at = last[1] if last else None
    if isinstance(at, dt.datetime):  # PostgreSQL: the same spelling SQLite stores
        at = at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    return {
        "counts": counts,
        "last_event_seq": int(last[0]) if last else 0,
        "last_event_at": str(at) if at is not None else None,
    }


def pg_facts(url: str) -> dict[str, Any]:
    """The same facts of a PostgreSQL database (a restored one, to compare with a manifest)."""
    import psycopg

    uri, password = libpq(url)
    with psycopg.connect(uri, password=password) as con:
        return _facts(_pg_tables(con), lambda sql: con.execute(sql).fetchall())


def pg_table_names(url: str) -> set[str]:
    import psycopg

    uri, password = libpq(url)
    with psycopg.connect(uri, password=password) as con:
        return _pg_tables(con)


def _pg_tables(con: Any) -> set[str]:
    rows = con.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {str(r[0]) for r in rows}


def instance_bundle(settings: Settings, kek: Any, dest_tar: Path) -> dict[str, Any]:
    """Settings, secrets, checkpoints, TLS files and — for file and passphrase keys — the KEK
    itself, for a restore on a new machine. Encrypted to the offline keys like everything else."""
    home = settings.home
    with tarfile.open(dest_tar, "w") as tar:
        for rel in ("mamori.toml", "secrets", "checkpoints", "tls"):
            if (home / rel).exists():
                tar.add(home / rel, arcname=rel)
        kek_info: dict[str, Any] = {"source": settings.keys.source, "included": False}
        if kek is not None:
            kek_info["kek_id"] = kek.kek_id
            raw = getattr(kek, "raw", None)
            if raw is not None:
                from mamori.crypto.kek import key_file_text

                data = key_file_text(raw).encode()
                info = tarfile.TarInfo(f"kek/{kek.kek_id}.kek")
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
                kek_info["included"] = True
    return kek_info


def documents_on_disk(settings: Settings, state: dict[str, Any]) -> tuple[dict[str, str], int]:
    """Stored document files → SHA-256 of their bytes (cached by size and mtime), and how many
    changed files are no longer mamori ciphertext (the ransomware signal for documents)."""
    root = settings.documents_dir
    cache: dict[str, list[Any]] = state.setdefault("documents", {})
    seen: dict[str, str] = {}
    foreign = 0
    if not root.exists():
        return seen, 0
    for path in sorted(root.glob("v1/*/*/*")):
        if path.name.startswith("."):
            continue
        rel = path.relative_to(root).as_posix()
        st = path.stat()
        hit = cache.get(rel)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            seen[rel] = hit[2]
            continue
        digest = fmt.sha256_file(path)
        with path.open("rb") as fh:
            if fh.read(2) != b"M1":  # every mamori document starts with its seal header
                foreign += 1
        cache[rel] = [st.st_size, st.st_mtime_ns, digest]
        seen[rel] = digest
    for rel in set(cache) - set(seen):
        del cache[rel]
    return seen, foreign


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


def retain_until(spec: TargetSpec, settings: Settings, now: dt.datetime) -> dt.datetime | None:
    """Object Lock retention: as long as a daily generation is kept; monthly fulls get their
    lock extended by the policy (docs/backup.md) — never shortened."""
    if spec.kind != "s3" or not spec.lock_mode:
        return None
    return now + dt.timedelta(days=settings.backup.keep_daily + 1)


# ---------------------------------------------------------------- the run


def run_backup(
    settings: Settings,
    kek: Any,
    *,
    full: bool = False,
    only: str | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Snapshot once and write a generation to each target. Raises only when nothing could be
    attempted (no recipients, no targets, snapshot failed); a failed target is in the result."""
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
                facts = snapshot(db_path, snap)
                scan = scanner.submit(documents_on_disk, settings, state)
                pages = fmt.map_pages(snap)
                changed_since_last = (
                    len(pages.changed_since(PageMap.load(last_map)))
                    if last_map.exists()
                    else pages.page_count
                )
                share = changed_since_last / max(pages.page_count, 1)
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
            alarm = check_alarm(settings, state, share, foreign, shrunk) if ran_before else None
            if alarm and not state.get("hold"):
                state["hold"] = {"since": now.isoformat(timespec="seconds"), "alarm": alarm}
            result = RunResult(
                generation,
                int(db_meta["size"]),
                changed_since_last,
                pages.page_count if pages else 0,
                0.0,
            )
            result.alarm = alarm
            writer = _Writer(
                settings, state, staging, recipients, signer, pages, snap, {**facts, **db_meta},
                docs, bundle, kek_info, generation, now, full, say, alarm,
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
                if not alarm and share is not None:
                    state["history"] = [*state.get("history", []), share][-HISTORY:]
                state["counts"] = facts["counts"]
                state["generation"] = generation
            save_state(settings, state)
        finally:
            scanner.shutdown()  # a failed run waits for the listing before it cleans up
            shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.monotonic() - t0
    return result


class _Writer:
    """Writes one snapshot's generation to media, producing each object at most once."""

    def __init__(
        self,
        settings: Settings,
        state: dict[str, Any],
        staging: Path,
        recipients: list[Any],
        signer: Any,
        pages: PageMap | None,
        snap: Path,
        facts: dict[str, Any],
        docs: dict[str, str],
        bundle: fmt.Sealed,
        kek_info: dict[str, Any],
        generation: int,
        now: dt.datetime,
        force_full: bool,
        say: Progress,
        alarm: dict[str, Any] | None,
    ) -> None:
        self.settings, self.state, self.staging = settings, state, staging
        self.recipients, self.signer = recipients, signer
        self.pages, self.snap, self.facts, self.docs = pages, snap, facts, docs
        self.bundle, self.kek_info = bundle, kek_info
        self.generation, self.now, self.force_full = generation, now, force_full
        self.say, self.alarm = say, alarm
        self._sealed: dict[str, fmt.Sealed] = {}
        self._pagemap_saved = False
        self.engine = "sqlite" if pages is not None else "postgresql"  # no page map: a dump
        self._flushing: list[Future[None]] = []
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="mamori-backup-flush")

    def put_sealed(
        self,
        target: Target,
        path: str,
        source: Callable[[], BinaryIO],
        retain: dt.datetime | None,
        *,
        compress: bool,
        share: str | None = None,
        sync: bool = True,
        flush_behind: bool = False,
    ) -> fmt.Sealed:
        """Seal ``source`` onto ``target`` at ``path``: straight into the file on a mounted disk
        (no staging copy), through staging for SFTP and S3. An object ``share``d between media
        is sealed once and copied to the others. ``flush_behind``: a large object on a mounted
        disk is fsynced by a second thread while the run goes on (the documents), and
        ``flushed()`` waits for it before the manifest."""
        done = self._sealed.get(share) if share else None
        if done is not None:
            target.put_file(path, done.path, retain)
            return done
        local = target.local_file(path)
        if local is not None:
            box: list[tuple[str, int]] = []

            def produce(out: BinaryIO) -> None:
                with source() as src:
                    box.append(fmt.seal_to(src, out, self.recipients, compress=compress))

            target.put_stream(path, produce, retain, sync=sync and not flush_behind)
            sealed = fmt.Sealed(local, *box[0])
            if sync and flush_behind:
                self._flushing.append(self._flusher.submit(_fsync, local))
        else:
            staged = self.staging / f"{len(self._sealed)}-{PurePosixPath(path).name}"
            with source() as src:
                sealed = fmt.seal_file(src, staged, self.recipients, compress=compress)
            target.put_file(path, staged, retain)
        if share:
            self._sealed[share] = sealed
        return sealed

    def full_object(self, target: Target, path: str, retain: dt.datetime | None) -> fmt.Sealed:
        self.say("compress+encrypt database", 0, 1)
        sealed = self.put_sealed(
            target, path, lambda: self.snap.open("rb"), retain, compress=True, share="full",
            flush_behind=True,
        )  # fmt: skip
        self.say("compress+encrypt database", 1, 1)
        return sealed

    def delta_object(
        self,
        target: Target,
        path: str,
        retain: dt.datetime | None,
        base_generation: int,
        changed: list[int],
        base: PageMap,
    ) -> fmt.Sealed:
        pages = self.pages
        assert pages is not None  # deltas are of SQLite pages only

        def source() -> BinaryIO:
            return fmt.DeltaReader(self.snap, pages, base, changed)  # type: ignore[return-value]

        return self.put_sealed(
            target, path, source, retain, compress=True, share=f"delta-{base_generation}"
        )

    def flushed(self) -> None:
        """Every flush-behind finished (an I/O error surfaces here, before any manifest)."""
        while self._flushing:
            self._flushing.pop(0).result()

    def close(self) -> None:
        self._flusher.shutdown(wait=True)

    def save_pagemap(self) -> str | None:
        if self.pages is None:
            return None  # a PostgreSQL dump: never the base of a page delta
        name = f"pagemap-{self.generation}.bin"
        if not self._pagemap_saved:
            self.pages.save(self.settings.backup_dir / name)
            self._pagemap_saved = True
        return name

    def write_to(self, spec: TargetSpec) -> TargetResult:
        res = TargetResult(target=spec.name, ok=False)
        try:
            target = open_target(spec, self.settings.instance_id)
        except BackupError as exc:
            res.error, res.error_ja = exc.en, exc.ja
            return res
        try:
            self._write(target, spec, res)
            res.ok = True
        except BackupError as exc:
            res.error, res.error_ja = exc.en, exc.ja
        except OSError as exc:  # disk full, connection lost: this generation is not valid
            res.error = res.error_ja = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # SSH/S3 client errors: reported, never a half-valid backup
            res.error = res.error_ja = f"{type(exc).__name__}: {exc}"
        finally:
            for pending in self._flushing:  # a failed target's flush is its own, not the next's
                with suppress(Exception):
                    pending.result()
            self._flushing.clear()
            with suppress(Exception):
                target.close()
        return res

    def _write(self, target: Target, spec: TargetSpec, res: TargetResult) -> None:
        from mamori.backup.verify import read_manifests

        instance = self.settings.instance_id
        medium = medium_of(target, instance, create=True)
        assert medium is not None
        mid = medium["medium"]
        res.medium = mid
        mstate = self.state["media"].setdefault(mid, {"target": spec.name})
        gens, _problems, _incomplete, _dirs = read_manifests(
            target, self.signer.public_key(), instance, mid
        )
        good = [g for g in gens if g.ok]
        top = max(good, key=lambda g: g.link, default=None)
        head: dict[str, Any] | None = {"hash": top.hash, "link": top.link} if top else None
        known = mstate.get("head")
        # newer manifests signed by this instance are its own (a run killed before it saved
        # its state); the one it last wrote missing means deletion or a rollback of the medium
        if known and not any(g.hash == known for g in good):
            raise BackupError(
                "保存先に前回書いた目録がありません（削除・巻き戻し・改ざんの疑い）。"
                "書き込みを中止しました。`mamori backup verify` で確認してください。",
                "The manifest last written to this target is gone (deleted, rolled back or "
                "altered?). Nothing written; run `mamori backup verify`.",
            )
        base = mstate.get("base")
        gen_dir = f"generations/{self.generation:010d}"
        retain = retain_until(spec, self.settings, self.now)
        base_map_path = (
            self.settings.backup_dir / base["pagemap"] if base and base.get("pagemap") else None
        )
        objects: list[dict[str, Any]] = []
        kind = "full"
        manifest_base = None
        changed_pages = self.pages.page_count if self.pages else None
        if (
            not self.force_full
            and self.pages is not None
            and base
            and base_map_path is not None
            and base_map_path.exists()
            and self.now - dt.datetime.fromisoformat(base["at"])
            < dt.timedelta(hours=self.settings.backup.full_hours)
        ):
            base_map = PageMap.load(base_map_path)
            changed = self.pages.changed_since(base_map)
            if len(changed) <= DELTA_LIMIT * self.pages.page_count:
                kind = "delta"
                manifest_base = {
                    "generation": base["generation"],
                    "manifest": base["manifest"],
                    "sha256": base_map.sha256,
                }
                self.say(f"{spec.name}: delta", 0, 1)
                name = "db.delta.pages.zst.age"
                delta = self.delta_object(
                    target, f"{gen_dir}/{name}", retain, int(base["generation"]), changed, base_map
                )
                self.say(f"{spec.name}: delta", 1, 1)
                objects.append(_obj(name, delta))
                res.bytes += delta.size
                changed_pages = len(changed)
        if kind == "full":
            name = FULL_OBJECT[self.engine]
            sealed = self.full_object(target, f"{gen_dir}/{name}", retain)
            objects.append(_obj(name, sealed))
            res.bytes += sealed.size
        target.put_file(f"{gen_dir}/instance.tar.zst.age", self.bundle.path, retain)
        objects.append(_obj("instance.tar.zst.age", self.bundle))
        res.bytes += self.bundle.size
        index, known, uploaded, up_bytes = self._documents(target, mstate, retain, spec.name)
        res.documents, res.bytes = uploaded, res.bytes + up_bytes
        index_bytes = zstandard.ZstdCompressor(level=3).compress(
            json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        )
        target.put_bytes(f"{gen_dir}/documents.json.zst", index_bytes, retain)
        objects.append(
            {
                "name": "documents.json.zst",
                "sha256": hashlib.sha256(index_bytes).hexdigest(),
                "size": len(index_bytes),
            }
        )
        link = (head["link"] + 1) if head else 1
        manifest: dict[str, Any] = {
            "format": fmt.FORMAT,
            "instance": instance,
            "medium": mid,
            "target": spec.name,
            "link": link,
            "prev": head["hash"] if head else None,
            "generation": self.generation,
            "kind": kind,
            "base": manifest_base,
            "created": self.now.isoformat(timespec="seconds"),
            "engine": self.engine,
            "db": {**self.facts, **({"changed_pages": changed_pages} if self.pages else {})},
            "objects": objects,
            "documents": {"count": len(index["files"]), "objects": len(index["objects"])},
            "kek": self.kek_info,
            "alarm": self.alarm,
            "signer": fmt.public_text(self.signer),
        }
        body, sig = fmt.sign(manifest, self.signer)
        self.flushed()  # the database object, fsynced behind the documents
        target.sync()  # every object (documents were written unsynced) before the manifest
        # the manifest goes last, signature first: a manifest without its signature is invalid
        target.put_bytes(f"{gen_dir}/manifest.sig", sig, retain)
        target.put_bytes(f"{gen_dir}/manifest.json", body, retain)
        digest = fmt.manifest_hash(body)
        # the medium's documents are trusted from local state only once a manifest lists them
        mstate.update({"target": spec.name, "head": digest, "link": link, "documents": known})
        if kind == "full":
            mstate["base"] = {
                "generation": self.generation,
                "manifest": digest,
                "pagemap": self.save_pagemap(),
                "at": self.now.isoformat(),
            }
        mstate["last"] = {
            "generation": self.generation,
            "kind": kind,
            "at": self.now.isoformat(timespec="seconds"),
        }
        res.kind, res.link, res.manifest = kind, link, digest
        self._forget_unused_pagemaps()
        # an alarm holds every generation: nothing is pruned until a person has looked
        if spec.kind != "s3" and not self.state.get("hold"):
            gens, _p, _i, _d = read_manifests(target, self.signer.public_key(), instance, mid)
            res.pruned = prune(target, self.settings, gens, self.now)

    def _documents(
        self, target: Target, mstate: dict[str, Any], retain: dt.datetime | None, name: str
    ) -> tuple[dict[str, Any], dict[str, list[Any]], int, int]:
        """Upload the stored documents this medium lacks (encrypted once each, by content)."""
        objects: dict[str, list[Any]] = dict(mstate.get("documents", {}))
        if not objects:
            objects = _previous_index(target, mstate).get("objects", {})
        present = target.listing("documents")
        for digest in [d for d in objects if f"documents/{d[:2]}/{d}.age" not in present]:
            del objects[digest]  # lost from the medium (or never finished): written again
        missing = sorted({d for d in self.docs.values() if d not in objects})
        uploaded = up_bytes = 0
        where = {d: r for r, d in self.docs.items()}
        for i, digest in enumerate(missing):
            self.say(f"{name}: documents", i, len(missing))
            src = self.settings.documents_dir / where[digest]
            path = f"documents/{digest[:2]}/{digest}.age"
            sealed = self.put_sealed(
                target, path, partial(_open_rb, src), retain, compress=False, sync=False
            )
            if sealed.path.is_relative_to(self.staging):
                sealed.path.unlink()
            objects[digest] = [sealed.sha256, sealed.size]
            uploaded += 1
            up_bytes += sealed.size
        self.say(f"{name}: documents", len(missing), len(missing))
        used = sorted(set(self.docs.values()))
        return (
            {"files": dict(sorted(self.docs.items())), "objects": {d: objects[d] for d in used}},
            objects,
            uploaded,
            up_bytes,
        )

    def _forget_unused_pagemaps(self) -> None:
        keep = {"pagemap-last.bin"} | {
            m["base"]["pagemap"] for m in self.state["media"].values() if m.get("base")
        }
        if self._pagemap_saved:
            keep.add(f"pagemap-{self.generation}.bin")
        for p in self.settings.backup_dir.glob("pagemap-*.bin"):
            if p.name not in keep:
                p.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_rb(path: Path) -> BinaryIO:
    return path.open("rb")


def _previous_index(target: Target, mstate: dict[str, Any]) -> dict[str, Any]:
    """The document index of the medium's newest generation, when local state was lost."""
    last = mstate.get("last")
    if not last:
        return {}
    raw = target.get_bytes(f"generations/{int(last['generation']):010d}/documents.json.zst")
    if raw is None:
        return {}
    index: dict[str, Any] = json.loads(zstandard.ZstdDecompressor().decompress(raw))
    return index


def _obj(name: str, sealed: fmt.Sealed) -> dict[str, Any]:
    return {"name": name, "sha256": sealed.sha256, "size": sealed.size}


# ---------------------------------------------------------------- generations kept (GFS)


def keep_set(gens: list[Any], settings: Settings, now: dt.datetime) -> set[int]:
    """Grandfather-father-son over the valid generations of one medium: the newest full of
    each of the last ``keep_daily`` days, ``keep_weekly`` ISO weeks and ``keep_monthly``
    months; the deltas of kept fulls from the last ``keep_daily`` days; always the newest."""
    policy = settings.backup
    fulls = sorted((g for g in gens if g.kind == "full"), key=lambda g: g.created, reverse=True)
    keep: set[int] = set()
    for bucket, count in (
        (lambda d: d.date(), policy.keep_daily),
        (lambda d: d.isocalendar()[:2], policy.keep_weekly),
        (lambda d: (d.year, d.month), policy.keep_monthly),
    ):
        seen: list[Any] = []
        for g in fulls:
            b = bucket(dt.datetime.fromisoformat(g.created))
            if b not in seen:
                seen.append(b)
                if len(seen) > count:
                    break
                keep.add(g.generation)
    kept_hashes = {g.hash for g in gens if g.generation in keep}
    horizon = now - dt.timedelta(days=policy.keep_daily)
    for g in gens:
        based = (g.manifest.get("base") or {}).get("manifest")
        if g.kind == "delta" and based in kept_hashes and g.created >= horizon.isoformat():
            keep.add(g.generation)
    if gens:
        keep.add(max(gens, key=lambda g: g.link).generation)
    return keep


def prune(target: Target, settings: Settings, gens: list[Any], now: dt.datetime) -> list[int]:
    """Remove the objects of generations outside the policy on targets that cannot enforce
    retention themselves. The signed manifest stays (with a signed "pruned" mark), so the
    medium's chain remains checkable end to end."""
    signer = fmt.signing_key(settings.audit_signing_key)
    keep = keep_set([g for g in gens if g.ok and not g.pruned], settings, now)
    removed = []
    for g in gens:
        if not g.ok or g.pruned or g.generation in keep:
            continue
        gen_dir = f"generations/{g.generation:010d}"
        target.put_bytes(f"{gen_dir}/pruned.sig", fmt.prune_mark(g.hash, signer), None)
        for obj in g.manifest.get("objects", []):
            if obj["name"] != "documents.json.zst":  # tiny; documents themselves stay forever
                target.delete(f"{gen_dir}/{obj['name']}")
        removed.append(g.generation)
    return removed
