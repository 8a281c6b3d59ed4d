"""A real PostgreSQL server for the tests, started with initdb/pg_ctl on loopback.

Uses ``MAMORI_TEST_PG_URL`` when set (an existing server); otherwise finds the Debian
PostgreSQL binaries, and as root runs them as the ``postgres`` user (initdb refuses root).
The server listens on 127.0.0.1 only, on a free port, with its socket in a private directory,
and is stopped when the test session ends.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PgServer:
    def __init__(self) -> None:
        self.base_url = os.environ.get("MAMORI_TEST_PG_URL", "")
        self.datadir: Path | None = None
        self.tmp: Path | None = None
        self.port = 0

    def _bin(self, name: str) -> str:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        if found:
            return found[-1]
        path = shutil.which(name)
        if path is None:
            raise RuntimeError(
                f"PostgreSQL binary {name} not found: install the Debian package 'postgresql' "
                "(.ci/run does) or set MAMORI_TEST_PG_URL"
            )
        return path

    def _run(self, args: list[str]) -> None:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(
            args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120
        )

    def start(self) -> str:
        if self.base_url:
            return self.base_url
        self.tmp = Path(tempfile.mkdtemp(prefix="mamori-pg-"))
        self.datadir = self.tmp / "data"
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres", "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run(
            [
                self._bin("initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        self._pg_ctl_start()
        self.base_url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"
        return self.base_url

    def _pg_ctl_start(self) -> None:
        assert self.tmp is not None and self.datadir is not None
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.tmp} -c fsync=on -c max_connections=100"
        )
        log = str(self.tmp / "server.log")
        pg_ctl = self._bin("pg_ctl")
        self._run(
            [pg_ctl, "-D", str(self.datadir), "-o", opts, "-w", "-t", "60", "-l", log, "start"]
        )

    def stop(self) -> None:
        if self.datadir is not None:
            try:
                self._run(
                    [self._bin("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"]
                )
            finally:
                time.sleep(0.1)
                shutil.rmtree(self.tmp or "", ignore_errors=True)
                self.datadir = None

    def kill_postmaster(self) -> None:
        """kill -9 the server (crash tests), then start it again on the same data."""
        assert self.datadir is not None
        pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 9)
        # Orphaned backends notice the postmaster's death and exit on their own; until they
        # have, the old shared memory is in use and a new postmaster refuses to start.
        deadline = time.monotonic() + 30
        while True:
            time.sleep(0.5)
            try:
                self._pg_ctl_start()
                return
            except subprocess.CalledProcessError as exc:
                if time.monotonic() > deadline:
                    log = (self.tmp / "server.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError("PostgreSQL did not restart after kill -9:\n" + log) from exc
