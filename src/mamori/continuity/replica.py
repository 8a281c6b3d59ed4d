"""The read-only standby of a PostgreSQL clinic: a streaming replica on the standby PC, served
read-only by the same code path as the SQLite standby (``continuity.standby``).

A hot standby cannot be served directly: mamori writes on every copy it serves — the sessions
of the staff signed in, the sign-in throttle, alerts and above all its own audit trail of
every read. So the standby PC keeps two kinds of PostgreSQL server, both started by
``mamori standby --replica …`` itself, listening on Unix sockets only:

* **the replica** (``ROOT/pg/replica``): ``pg_basebackup -R -X stream`` from the main server
  once, then a hot standby streaming the main server's WAL for as long as the standby runs —
  seconds behind it, however often backups are made;
* **the served snapshot** (``ROOT/pg/<copy>``): every refresh, ``pg_basebackup`` *of the
  replica* (PostgreSQL takes base backups from a standby) started as a server of its own. It
  is an ordinary mamori copy — ``READ_ONLY`` with the standby's marker, its own audit log
  continuing the main log's chain from the snapshot's last event, its segments merged back
  by ``mamori standby merge-log`` — so every write refusal, the banner, the RPO shown and the
  merge are those of the SQLite standby, unchanged.

The instance files (settings, the audit key, checkpoints, the KEK) and the documents come from
the newest verified backup generation (``backup.restore.restore_files``), kept in
``ROOT/files`` and refreshed when a newer generation verifies; a document scanned after that
generation is not on the standby until the next one.

A snapshot is served only after the proofs a restore gives: the audit trail against the
signed checkpoints, and no counted table smaller than in the snapshot before (records are
never deleted, so a table that shrank on the main server is destruction replicating, and
the previous snapshot keeps being served with the failure in its banner).

As root (a standby started with ``sudo``) the PostgreSQL programs run as the ``postgres``
user, which PostgreSQL requires; ``ROOT/pg`` is then theirs, and ``ROOT`` is opened to
traversal only (0711).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from mamori import copies
from mamori.backup.fetch import Say
from mamori.backup.restore import restore_files, verify_audit
from mamori.backup.sources import pg_facts, pg_tool
from mamori.continuity.pgserver import (
    as_postgres,
    hand_over,
    remove,
    run_pg,
    start,
)
from mamori.continuity.standby import (
    Copy,
    Primary,
    Source,
    StandbyError,
    _allow_origins,
    _own_certificate,
    _write_json,
    current,
    newest_generation,
)
from mamori.errors import MamoriError
from mamori.instance import open_instance

REPLICA_PORT = 54320
COPY_PORTS = (54321, 54322)  # the served snapshot and the next one, alternately
FILES = "files"
_SIGNALS = ("standby.signal", "recovery.signal")
# hot-standby settings that must be at least the main server's (pg_controldata's names)
_AT_LEAST = {
    "max_connections": "max_connections setting",
    "max_worker_processes": "max_worker_processes setting",
    "max_wal_senders": "max_wal_senders setting",
    "max_prepared_transactions": "max_prepared_xacts setting",
    "max_locks_per_transaction": "max_locks_per_xact setting",
}


# ------------------------------------------------------------------ the PostgreSQL programs


def _pg_dir(root: Path) -> Path:
    pg = root / "pg"
    if not pg.exists():
        pg.mkdir(mode=0o700)
        (pg / "run").mkdir(mode=0o700)
        hand_over(pg)
        hand_over(pg / "run")
    if as_postgres():
        # the postgres user passes through to ROOT/pg and lists nothing
        os.chmod(root, 0o711)  # noqa: S103 - traversal only, no read
        try:
            run_pg(["test", "-w", str(pg)], "test")
        except StandbyError as exc:
            raise StandbyError(
                f"postgres ユーザーが {pg} に入れません。{root} の親ディレクトリに実行権限"
                "（chmod o+x）を与えるか、postgres が入れる場所を --dir に指定してください。",
                f"The postgres user cannot reach {pg}: give {root}'s parent directories "
                "o+x, or choose a --dir it can reach.",
            ) from exc
    return pg


def _settings(data: Path, port: int, run_dir: Path, *, hot: bool) -> None:
    """This PC's own configuration in the data directory (the main server's, if it was in
    there, is replaced: a Debian server keeps it in /etc, and its addresses and paths are
    not this PC's): Unix socket only, trust for the OS user that owns the socket directory
    (0700) and nobody else, and the hot-standby limits at least the main server's."""
    control = run_pg([pg_tool("pg_controldata"), "-D", str(data)], "pg_controldata")
    found = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in control.splitlines())
    )
    lines = [
        "listen_addresses = ''",
        f"port = {port}",
        f"unix_socket_directories = '{run_dir}'",
        "hot_standby = on" if hot else "hot_standby = off",
        "fsync = on",
        "logging_collector = off",
    ]
    for name, label in _AT_LEAST.items():
        if found.get(label, "").isdigit():
            lines.append(f"{name} = {max(int(found[label]), 10)}")
    conf = data / "postgresql.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    hba = data / "pg_hba.conf"
    hba.write_text("local all all trust\nlocal replication all trust\n", encoding="utf-8")
    (data / "pg_ident.conf").write_text("", encoding="utf-8")
    for f in (conf, hba, data / "pg_ident.conf"):
        os.chmod(f, 0o600)
        hand_over(f)


def _basebackup(args: list[str], dest: Path, what: str, password: str | None = None) -> None:
    """Synced to disk before it returns (the default): a power cut never leaves a replica or a
    served snapshot that PostgreSQL would start on with pages missing."""
    run_pg(
        [pg_tool("pg_basebackup"), "-D", str(dest), "-X", "stream", "-c", "fast",
         *args],
        what, password=password,
    )  # fmt: skip


# ------------------------------------------------------------------ the replica


def _role_and_db(primary: Primary) -> tuple[str, str]:
    u = make_url(primary.uri.replace("postgresql://", "postgresql+psycopg://", 1))
    if not u.username or not u.database:
        raise StandbyError(
            "--replica には複製用ロールとデータベース名を含めてください"
            "（postgresql://replicator@本番のアドレス:5432/mamori）。",
            "--replica needs the replication role and the database: "
            "postgresql://replicator@main-server:5432/mamori",
        )
    return u.username, u.database


def ensure_replica(root: Path, primary: Primary) -> Path:
    """The hot standby streaming from the main server, cloned once and started."""
    pg = _pg_dir(root)
    data = pg / "replica"
    if not (data / "PG_VERSION").exists():
        remove(data)
        part = pg / "replica.part"
        remove(part)
        try:
            _basebackup(
                ["-R", "-d", primary.uri], part, "本番からの複製（pg_basebackup）",
                primary.password,
            )  # fmt: skip
            _settings(part, REPLICA_PORT, pg / "run", hot=True)
        except BaseException:
            remove(part)
            raise
        _rename(part, data)
    start(data, REPLICA_PORT, pg / "run")
    return data


def _promoted(root: Path, primary: Primary, port: int, timeout: float = 300) -> None:
    """Wait until the snapshot has replayed its WAL and left recovery (it takes writes: the
    copy's own sessions and audit trail); ``pg_ctl -w`` returns as soon as it answers."""
    import psycopg  # PostgreSQL deployments only

    deadline = time.monotonic() + timeout
    while True:
        try:
            if _query(root, primary, port, "SELECT NOT pg_is_in_recovery()"):
                return
        except psycopg.OperationalError:
            pass  # still starting
        if time.monotonic() > deadline:
            raise StandbyError(
                "待機系の写しが起動しません（復旧が終わりません）。",
                "The standby snapshot did not finish recovery.",
            )
        time.sleep(0.2)


def _rename(src: Path, dst: Path) -> None:
    if as_postgres():
        run_pg(["mv", "-T", "--", str(src), str(dst)], "mv")
    else:
        src.rename(dst)


def _query(root: Path, primary: Primary, port: int, sql: str) -> Any:
    import psycopg  # PostgreSQL deployments only

    role, db = _role_and_db(primary)
    with psycopg.connect(
        host=str(root / "pg" / "run"), port=port, user=role, dbname=db, autocommit=True
    ) as con:
        row = con.execute(sql).fetchone()
    return row[0] if row else None


# ------------------------------------------------------------------ files from the backups


def _files(root: Path) -> Path | None:
    try:
        found = json.loads((root / FILES / "CURRENT").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return root / FILES / str(found["dir"])


def ensure_files(root: Path, source: Source, *, progress: Say | None = None) -> Path:
    """The instance files and documents of the newest verified generation (kept, and replaced
    only when a newer one verifies; a failure leaves the kept ones)."""
    held = _files(root)
    generation, manifest = newest_generation(source)
    if held is not None and (held / ".generation").read_text() == manifest:
        return held
    base = root / FILES
    base.mkdir(mode=0o700, exist_ok=True)
    dest = base / f"g{generation}-{uuid.uuid4().hex[:8]}"
    restore_files(
        source.spec, source.ident, dest, key_dir=source.key_dir, progress=progress,
    )  # fmt: skip
    (dest / ".generation").write_text(manifest)
    _write_json(base / "CURRENT", {"dir": dest.name, "generation": generation})
    if held is not None:
        shutil.rmtree(held, ignore_errors=True)
    return dest


# ------------------------------------------------------------------ snapshots


def refresh(
    root: Path,
    source: Source,
    primary: Primary,
    *,
    progress: Say | None = None,
    origins: tuple[str, ...] | list[str] = (),
) -> Copy | None:
    """A new served snapshot of the replica, if it has replayed anything since the served
    one; None otherwise. The served copy is untouched either way (``standby.switch`` changes
    it). Raises, leaving nothing half-made, when the snapshot fails a proof."""
    try:
        files = ensure_files(root, source, progress=progress)
    except MamoriError:
        held = _files(root)
        if held is None:
            raise  # nothing to serve the records with: say why
        files = held  # the backups are out of reach (the NAS went down with the server): the
        # records still come from the replica, with the settings and documents already held
    ensure_replica(root, primary)
    caught_up(root, primary)
    pg = root / "pg"
    served = current(root)
    served_mark = (copies.marker(served.home) or {}) if served is not None else {}
    lsn = str(_query(root, primary, REPLICA_PORT, "SELECT pg_last_wal_replay_lsn()::text"))
    if served is not None and served_mark.get("pg", {}).get("lsn") == lsn:
        return None
    port = (
        COPY_PORTS[1] if served_mark.get("pg", {}).get("port") == COPY_PORTS[0] else COPY_PORTS[0]
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    name = f"r{stamp}-{uuid.uuid4().hex[:6]}"
    data = pg / name
    home = root / "copies" / name
    home.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    role, _db = _role_and_db(primary)
    try:
        if progress:
            progress("database", 0, 1)
        _basebackup(
            ["-h", str(pg / "run"), "-p", str(REPLICA_PORT), "-U", role], data,
            "待機系の複製からの取り出し（pg_basebackup）",
        )  # fmt: skip
        for signal_file in _SIGNALS:
            (data / signal_file).unlink(missing_ok=True)
        _settings(data, port, pg / "run", hot=True)
        start(data, port, pg / "run")
        _promoted(root, primary, port)
        if progress:
            progress("database", 1, 1)
        shutil.copytree(files, home, copy_function=_link_or_copy, dirs_exist_ok=True)
        (home / ".generation").unlink(missing_ok=True)
        url = _copy_url(files, pg / "run", port)
        _set_database(home, url)
        facts = pg_facts(url)
        _no_shrink(served_mark.get("pg", {}).get("counts"), facts["counts"])
        _verify_audit(home)
        generation = json.loads((root / FILES / "CURRENT").read_text())["generation"]
        copies.mark(
            home,
            {
                "standby": True,
                "replica": True,
                "generation": generation,
                "manifest": f"replica:{lsn}",
                "copy_id": str(uuid.uuid4()),
                "base_seq": facts["last_event_seq"],
                "as_of": facts["last_event_at"],
                "refreshed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "pg": {"data": name, "port": port, "lsn": lsn, "counts": facts["counts"]},
            },
        )
        _own_certificate(root, home)
        _allow_origins(home, list(origins))
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        remove(data)
        raise
    return Copy(home, generation, f"replica:{lsn}", facts["last_event_at"])


def _link_or_copy(src: str, dst: str) -> None:
    """Documents (content-addressed, never rewritten) are hard-linked into each snapshot's
    home; the small settings files are copied."""
    if "/documents/" in src:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def _copy_url(files: Path, run_dir: Path, port: int) -> str:
    """mamori's database URL on the snapshot: the main server's role and database (from the
    restored settings), over the snapshot's socket, with no password (the socket's directory
    is this PC user's alone)."""
    settings = tomllib.loads((files / "mamori.toml").read_text(encoding="utf-8"))
    u = make_url(str(settings["database"]["url"]))
    return (
        u.set(password=None, host=None, port=None, query={"host": str(run_dir), "port": str(port)})
    ).render_as_string(hide_password=False)


def _set_database(home: Path, url: str) -> None:
    from mamori.backup.restore import _replace_section, _toml_escape

    toml = home / "mamori.toml"
    text = toml.read_text(encoding="utf-8")
    text = _replace_section(text, "database", f'url = "{_toml_escape(url)}"\n')
    toml.write_text(text, encoding="utf-8")


def _no_shrink(before: dict[str, int] | None, after: dict[str, int]) -> None:
    if not before:
        return
    shrunk = {t: (n, after.get(t, 0)) for t, n in before.items() if after.get(t, 0) < n}
    if shrunk:
        listed = ", ".join(f"{t} {a}→{b}" for t, (a, b) in sorted(shrunk.items()))
        raise StandbyError(
            f"本番のデータが減っています（記録は削除されないはずです）: {listed}。破壊が複製された"
            "おそれがあるため、前のデータで参照を続けます。",
            f"Rows are missing on the main server (records are never deleted): {listed}. "
            "Destruction may be replicating; the previous snapshot stays served.",
        )


def _verify_audit(home: Path) -> None:
    """The snapshot's audit trail against the signed checkpoints, as a restore proves it."""
    inst = open_instance(str(home))
    try:
        verify_audit(inst)
    finally:
        inst.close()


_CAUGHT_UP = (
    "SELECT (SELECT pg_last_wal_replay_lsn() >= latest_end_lsn FROM pg_stat_wal_receiver "
    "WHERE status = 'streaming' AND latest_end_lsn IS NOT NULL)"
)


def caught_up(root: Path, primary: Primary, timeout: float = 60, unreachable: float = 5) -> bool:
    """Wait (bounded) until the replica has replayed everything the main server last reported
    having; False at once when it is not streaming after ``unreachable`` seconds (the main
    server is down: what the replica holds is served, its age in the banner)."""
    started = time.monotonic()
    while True:
        found = _query(root, primary, REPLICA_PORT, _CAUGHT_UP)
        if found:
            return True
        waited = time.monotonic() - started
        if (found is None and waited > unreachable) or waited > timeout:
            return False
        time.sleep(0.2)
