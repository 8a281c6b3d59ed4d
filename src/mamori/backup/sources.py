"""What a backup reads: a consistent copy of the database (SQLite's online backup, or
``pg_dump``), the row counts and last audit event that are its RPO mark, the instance's own
files, and the documents on disk."""

from __future__ import annotations

import datetime as dt
import glob
import io
import os
import shutil
import sqlite3
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from mamori.backup import fmt
from mamori.backup.fmt import BackupError
from mamori.crypto.kek import key_file_text
from mamori.models import patient_data_tables
from mamori.settings import Settings


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
    import psycopg  # PostgreSQL instances only

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


def counted_tables() -> list[str]:
    """The tables a generation counts (a sudden drop is the ransomware alarm): every table of
    patient data, derived from the models, and the version log, audit log and staff."""
    return [*patient_data_tables(), "record_version", "audit_event", "staff_user"]


def _facts(tables: set[str], query: Callable[[str], list[Any]]) -> dict[str, Any]:
    counts = {
        t: int(query(f'SELECT count(*) FROM "{t}"')[0][0])  # noqa: S608 - our table names
        for t in counted_tables()
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
    import psycopg  # PostgreSQL instances only

    uri, password = libpq(url)
    with psycopg.connect(uri, password=password) as con:
        return _facts(_pg_tables(con), lambda sql: con.execute(sql).fetchall())


def pg_table_names(url: str) -> set[str]:
    import psycopg  # PostgreSQL instances only

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
