"""The PostgreSQL servers of the standby PC (``continuity.replica``): the programs run as the
``postgres`` user when mamori runs as root (PostgreSQL refuses root), started and stopped
on Unix sockets only; and the hooks the standby's supervisor calls for a copy whose database is
such a server (``ensure_up``, ``retire``, ``stop_all``). No import of the standby or the
replica module: both use this one."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from mamori import copies
from mamori.backup.sources import pg_tool
from mamori.errors import MamoriError

REPLICA = "replica"  # ROOT/pg/replica: the hot standby's data directory


class PgServerError(MamoriError):
    status = 409
    code = "standby_refused"


def as_postgres() -> bool:
    return os.geteuid() == 0


def run_pg(
    args: list[str], what: str, *, password: str | None = None, timeout: float = 3600
) -> str:
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    if password:
        env["PGPASSWORD"] = password
    if as_postgres():
        args = ["runuser", "-u", "postgres", "--", *args]
    done = subprocess.run(  # noqa: S603 - fixed PostgreSQL programs, arguments are ours
        args, env=env, capture_output=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[-500:]
        raise PgServerError(f"{what} に失敗しました: {detail}", f"{what} failed: {detail}")
    return done.stdout.decode("utf-8", "replace")


def hand_over(path: Path) -> None:
    """``path`` (made by mamori) handed to the user the PostgreSQL programs run as."""
    if as_postgres():
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def running(data: Path) -> bool:
    if not (data / "postmaster.pid").exists():
        return False
    try:
        run_pg([pg_tool("pg_ctl"), "-D", str(data), "status"], "pg_ctl status")
    except PgServerError:
        return False
    return True


def start(data: Path, port: int, run_dir: Path) -> None:
    if running(data):
        return
    opts = f"-c port={port} -c listen_addresses='' -c unix_socket_directories={run_dir}"
    log = data.parent / f"{data.name}.log"
    run_pg(
        [pg_tool("pg_ctl"), "-D", str(data), "-o", opts, "-w", "-t", "300", "-l", str(log),
         "start"],
        f"PostgreSQL の起動（{data.name}）",
    )  # fmt: skip


def stop(data: Path) -> None:
    if running(data):
        run_pg([pg_tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], "pg_ctl stop")


def remove(data: Path) -> None:
    if not data.exists():
        return
    stop(data)
    if as_postgres():
        run_pg(["rm", "-rf", "--", str(data)], "rm")  # its files are the postgres user's
    else:
        shutil.rmtree(data, ignore_errors=True)
    (data.parent / f"{data.name}.log").unlink(missing_ok=True)


def ensure_up(root: Path, home: Path) -> None:
    """The snapshot behind a replica copy running (a standby started again)."""
    found = (copies.marker(home) or {}).get("pg")
    if found:
        start(root / "pg" / str(found["data"]), int(found["port"]), root / "pg" / "run")


def retire(root: Path, home: Path) -> None:
    """Stop and remove the snapshot behind a replica copy (its log is already a segment)."""
    found = (copies.marker(home) or {}).get("pg")
    if found:
        remove(root / "pg" / str(found["data"]))


def stop_all(root: Path) -> None:
    """Every snapshot's server and the replica's stopped (the standby is stopping)."""
    pg = root / "pg"
    if not pg.is_dir():
        return
    for data in sorted(pg.iterdir()):
        if data.is_dir() and (data / "PG_VERSION").exists():
            stop(data)
