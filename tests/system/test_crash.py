"""kill -9 during writes loses no acknowledged write and corrupts nothing.

A real ``mamori serve`` process takes patient registrations from a writer thread that records
every acknowledged (201) patient. The server is killed with SIGKILL while writes are in flight,
then the database is checked: every acknowledged patient is there with a valid hash chain, and
the restarted server works. On PostgreSQL the database server itself is killed as well.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text
from tests.conftest import integration_token
from tests.pg import PgServer

from mamori.audit.verify import verify_log
from mamori.crypto.startup import open_keys
from mamori.instance import create_instance
from mamori.models import open_database
from mamori.patients.models import Patient
from mamori.records.service import verify_all
from mamori.settings import load_settings

pytestmark = pytest.mark.slow
BODY = {
    "family_name": "試験",
    "given_name": "太郎",
    "family_kana": "シケン",
    "given_kana": "タロウ",
    "birth_date": "1960-05-05",
    "sex": "male",
    "register_anyway": True,  # the same body thousands of times: deliberately many patients
}


def connect(home: Path, port: int, timeout: float) -> http.client.HTTPSConnection:
    """HTTPS to the server, verifying the local certificate ``mamori serve`` made."""
    ctx = ssl.create_default_context(cafile=str(home / "tls" / "cert.pem"))
    return http.client.HTTPSConnection("localhost", port, timeout=timeout, context=ctx)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.home.parent / "server.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mamori",
                    "serve",
                    "--instance",
                    str(self.home),
                    "--port",
                    str(self.port),
                    "--without-backups",  # the crash is the subject, not the backups
                ],
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not (self.home / "tls" / "cert.pem").exists():
                time.sleep(0.1)
                continue
            c = connect(self.home, self.port, timeout=2)
            try:
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
            finally:
                c.close()
        raise RuntimeError(
            "server did not start: "
            + (self.home.parent / "server.log").read_text(errors="replace")[-2000:]
        )

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Writer(threading.Thread):
    """Registers patients as fast as it can; remembers the IDs the server acknowledged."""

    def __init__(self, home: Path, port: int, token: str, limit: int = 2000) -> None:
        super().__init__(daemon=True)
        self.home, self.port, self.token, self.limit = home, port, token, limit
        self.acked: list[str] = []
        self.stop_flag = threading.Event()
        self.conn: http.client.HTTPSConnection | None = None

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self) -> None:
        try:
            for i in range(self.limit):
                if self.stop_flag.is_set():
                    return
                self._register(i)
        finally:
            self._close()

    def _register(self, i: int) -> None:
        try:
            if self.conn is None:
                self.conn = connect(self.home, self.port, timeout=5)
            self.conn.request(
                "POST",
                "/api/v1/patients",
                body=json.dumps({**BODY, "phone": f"090-0000-{i:04d}"}),
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/json",
                },
            )
            resp = self.conn.getresponse()
            payload = resp.read()
            if resp.status == 201:
                self.acked.append(json.loads(payload)["id"])
        except (OSError, http.client.HTTPException):
            # the server killed mid-answer (IncompleteRead is not an OSError): not acknowledged
            self._close()
            time.sleep(0.05)


def _run_crash(home: Path, token: str, db_url: str, pg: PgServer | None = None) -> None:
    port = _free_port()
    server = Server(home, port)
    server.start()
    writer = Writer(home, port, token)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while len(writer.acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(writer.acked) >= 60, "writer made no progress"
        if pg is not None:
            pg.kill_postmaster()  # the database dies mid-write…
            time.sleep(0.3)
        server.kill9()  # …and so does mamori
        writer.stop_flag.set()
        writer.join(timeout=30)
        acked = set(writer.acked)
        db = open_database(db_url)
        open_keys(db, load_settings(home))
        try:
            with db.session(write=False) as s:
                stored = {str(i) for i in s.scalars(select(Patient.id))}
                assert acked <= stored, f"lost {len(acked - stored)} acknowledged writes"
                checked, problems = verify_all(s)
                assert problems == [] and checked >= len(acked)
                log = verify_log(s)  # the audit trail survived the crash intact and gap-free
                assert log.ok, log.problems[:3]
                assert log.size >= len(acked)
                numbers = sorted(p.patient_number for p in s.scalars(select(Patient)))
                assert numbers == list(range(1, len(numbers) + 1))  # no duplicates, no gaps
            if db.dialect == "sqlite":
                with db.engine.connect() as conn:
                    assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        finally:
            db.dispose()
        server.start()  # the instance starts again and takes writes
        after = Writer(home, port, token, limit=3)
        after.run()
        assert len(after.acked) == 3
    finally:
        writer.stop_flag.set()
        server.stop()


def test_kill9_sqlite(tmp_path: Path) -> None:
    created = create_instance(tmp_path / "i", clinic_name="試験", institution_code="1310123455")
    token = integration_token(created.instance.db, created.instance.settings)
    _run_crash(tmp_path / "i", token, created.instance.settings.database_url)


def test_kill9_postgresql(tmp_path: Path, pg_server: PgServer) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(pg_server.base_url)
    with psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True
    ) as con:
        con.execute("DROP DATABASE IF EXISTS crash_test WITH (FORCE)")
        con.execute("CREATE DATABASE crash_test")
    url = f"{pg_server.base_url}/crash_test"
    created = create_instance(
        tmp_path / "i", clinic_name="試験", institution_code="1310123455", database_url=url
    )
    token = integration_token(created.instance.db, created.instance.settings)
    created.instance.db.dispose()
    _run_crash(tmp_path / "i", token, url, pg=pg_server)


def test_more_concurrent_reads_than_pooled_connections_all_complete(tmp_path: Path) -> None:
    """Each audited read needs a second connection for its audit append; the edge releases
    the first before taking the second, so a burst larger than the pool cannot deadlock."""
    created = create_instance(tmp_path / "i", clinic_name="試験", institution_code="1310123455")
    token = integration_token(created.instance.db, created.instance.settings)
    port = _free_port()
    server = Server(tmp_path / "i", port)
    server.start()
    try:
        writer = Writer(tmp_path / "i", port, token, limit=3)
        writer.run()
        pid = writer.acked[0]
        statuses: list[int] = []
        lock = threading.Lock()

        def read() -> None:
            conn = connect(tmp_path / "i", port, timeout=60)
            try:
                for _ in range(3):
                    conn.request(
                        "GET",
                        f"/api/v1/patients/{pid}/chart",
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    resp = conn.getresponse()
                    resp.read()
                    with lock:
                        statuses.append(resp.status)
            finally:
                conn.close()

        threads = [threading.Thread(target=read) for _ in range(24)]  # pool: 5 + 10 overflow
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert statuses == [200] * 72
    finally:
        server.stop()
