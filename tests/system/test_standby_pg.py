"""The read-only standby of a PostgreSQL clinic against real servers on this machine: a main
server (initdb on loopback), the standby's streaming replica (``pg_basebackup -R``, a hot
standby) and its served snapshot, all started by ``mamori standby --replica``. A patient
registered on the main server after the last backup is on the standby at the next refresh;
the copy refuses writes like every copy; its reads merge back into the main log verifiably;
and a table that shrinks on the main server is never served."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from tests.conftest import SAMPLE_PATIENT, person_token
from tests.pg import PgServer
from tests.system.test_backup import PASS, _keys, _run, _targets
from tests.system.test_standby import _cli, _verify
from tests.ui.test_standby_drill import _free_port, _listening
from typer.testing import CliRunner

from mamori import copies
from mamori.app import create_app
from mamori.audit.models import AuditEvent
from mamori.clinic.models import Clinic, StaffUser
from mamori.continuity import pgserver, standby
from mamori.documents.store import DocumentStore
from mamori.instance import Instance, create_instance, open_instance
from mamori.patients.models import Patient
from mamori.synth.generator import generate

runner = CliRunner()
REPLICATOR_PASSWORD = "replica-pass-試験"


@pytest.fixture(scope="module")
def primary_server() -> Iterator[PgServer]:
    """A main server of its own (the standby clones the whole cluster: none of the suite's
    other databases), with a replication role — started here even when the suite is pointed at
    an existing server (MAMORI_TEST_PG_URL), which the standby would clone whole."""
    server = PgServer()
    server.base_url = ""  # always a server of this test's own
    server.start()
    u = make_url(server.base_url)
    with psycopg.connect(host=u.host, port=u.port, user="postgres", dbname="postgres",
                         autocommit=True) as con:  # fmt: skip
        con.execute("CREATE DATABASE clinic")
        con.execute(
            f"CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '{REPLICATOR_PASSWORD}'"
        )
    yield server
    server.stop()


@pytest.fixture
def main(primary_server: PgServer, tmp_path: Path) -> Iterator[tuple[Instance, Path, Path, str]]:
    if os.geteuid() == 0:  # the standby's PostgreSQL runs as postgres: it passes through here
        for parent in (tmp_path, *tmp_path.parents):
            if parent == Path(tempfile.gettempdir()):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o111)  # noqa: S103 - traversal
    created = create_instance(
        tmp_path / "home", clinic_name="待機系試験", institution_code="1310123455",
        database_url=f"{primary_server.base_url}/clinic",
    )  # fmt: skip
    inst = created.instance
    with inst.transaction(write=True) as s:
        clinic = s.scalars(select(Clinic)).one()
        generate(s, clinic, "XS", seed=7, store=DocumentStore(inst.settings.documents_dir, inst.db))
    keys = _keys(inst, tmp_path / "offline")
    usb = tmp_path / "usb"
    usb.mkdir()
    inst = _targets(inst, {"name": "usb", "kind": "dir", "path": str(usb)})
    assert _run(inst).ok
    # the director's credential is made after the backup: the replica carries it anyway
    with inst.transaction(write=True) as s:
        director = s.scalars(select(StaffUser).where(StaffUser.login_id == "admin")).one()
        token = person_token(s, inst.settings, director)
    yield inst, keys, usb, token
    try:
        pgserver.stop_all(tmp_path / "sb")
    finally:
        inst.db.dispose()
        with psycopg.connect(host="127.0.0.1", port=primary_server.port, user="postgres",
                             dbname="postgres", autocommit=True) as con:  # fmt: skip
            con.execute("DROP DATABASE clinic WITH (FORCE)")
            con.execute("CREATE DATABASE clinic")


def _standby_once(tmp_path: Path, keys: Path, usb: Path, port: int) -> Any:
    os.environ["MAMORI_REPLICA_PASSWORD"] = REPLICATOR_PASSWORD
    try:
        return _cli(
            tmp_path, "standby", "--from", f"dir:{usb}", "--identity",
            str(keys / "mamori-backup-primary.age"), "--dir", str(tmp_path / "sb"),
            "--key-dir", str(tmp_path / "sbkeys"), "--once",
            "--replica", f"postgresql://replicator@127.0.0.1:{port}/clinic",
        )  # fmt: skip
    finally:
        os.environ.pop("MAMORI_REPLICA_PASSWORD", None)


def _count(inst: Instance, model: Any) -> int:
    with inst.transaction(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _served_patients(root: Path) -> int:
    """How many patients the copy being served holds (its server started if --once stopped
    it)."""
    served = standby.current(root)
    assert served is not None
    pgserver.ensure_up(root, served.home)
    copy = open_instance(str(served.home))
    try:
        return _count(copy, Patient)
    finally:
        copy.close()


def test_the_replica_standby_serves_what_the_main_server_wrote_after_the_backup(
    main: Any, primary_server: PgServer, tmp_path: Path
) -> None:
    inst, keys, usb, token = main
    bearer = {"Authorization": f"Bearer {token}"}
    # a patient registered on the main server after its last backup
    with TestClient(create_app(inst.settings, inst.db), base_url="https://testserver") as http:
        made = http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=bearer)
        assert made.status_code == 201, made.text
        new_id = made.json()["id"]

    out = _standby_once(tmp_path, keys, usb, primary_server.port)
    assert out.exit_code == 0, out.output
    root = tmp_path / "sb"
    served = standby.current(root)
    assert served is not None and served.manifest.startswith("replica:")
    marked = copies.marker(served.home)
    assert marked and marked["standby"] and marked["replica"] and marked["base_seq"] > 0
    assert (root / "pg" / "replica" / "standby.signal").exists()  # a hot standby, streaming
    assert "password" not in (served.home / "mamori.toml").read_text()
    banner = copies.copy_banner(served.home)
    assert banner and banner["as_of"] and banner["age_minutes"] is not None

    pgserver.ensure_up(root, served.home)  # --once stopped its servers
    copy = open_instance(str(served.home))
    try:
        assert copy.db.read_only
        assert _count(copy, Patient) == _count(inst, Patient)
        with TestClient(create_app(copy.settings, copy.db), base_url="https://testserver") as http:
            chart = http.get(f"/api/v1/patients/{new_id}/chart", headers=bearer)
            assert chart.status_code == 200, chart.text  # written after the backup, streamed
            refused = http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=bearer)
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "read_only_copy"
        # a scheduled backup from the copy would put a second history beside the original's
        done = _cli(tmp_path, "backup", "run", home=served.home)
        assert done.exit_code != 0 and "read-only copy" in done.output.replace("\n", " ")
    finally:
        copy.close()

    # another patient on the main server: the next refresh serves a new snapshot with it, the
    # old copy's reads become a segment, and its server and data go away
    with TestClient(create_app(inst.settings, inst.db), base_url="https://testserver") as http:
        second = dict(SAMPLE_PATIENT, family_kana="ヨビケイ", family_name="予備系")
        made = http.post("/api/v1/patients", json=second, headers=bearer)
        assert made.status_code == 201, made.text
    old = served
    out = _standby_once(tmp_path, keys, usb, primary_server.port)
    assert out.exit_code == 0, out.output
    served = standby.current(root)
    assert served is not None and served.home != old.home and not old.home.exists()
    assert not (root / "pg" / old.home.name).exists()
    assert len(list((root / "log").glob("standby-*.jsonl"))) == 1
    assert _served_patients(root) == _count(inst, Patient)

    # the backups out of reach (the NAS went down with the server): the records still come
    # from the replica, with the settings and documents already held
    usb.rename(usb.with_name("usb-gone"))
    with TestClient(create_app(inst.settings, inst.db), base_url="https://testserver") as http:
        third = dict(SAMPLE_PATIENT, family_kana="サンバン", family_name="三番")
        assert http.post("/api/v1/patients", json=third, headers=bearer).status_code == 201
    out = _standby_once(tmp_path, keys, usb, primary_server.port)
    assert out.exit_code == 0, out.output
    usb.with_name("usb-gone").rename(usb)
    assert _served_patients(root) == _count(inst, Patient)

    # after recovery the standby's reads go into the main log, verifiably
    before = _count(inst, AuditEvent)
    merged = _cli(tmp_path, "standby", "merge-log", "--from", str(root), "--as", "admin",
                  home=inst.settings.home)  # fmt: skip
    assert merged.exit_code == 0, merged.output
    with inst.transaction(write=False) as s:
        tags = [
            t
            for t in s.scalars(select(AuditEvent.tag).where(AuditEvent.seq > 0))
            if t in ("patient:chart:viewed", "continuity:standby-log:merged")
        ]
    assert _count(inst, AuditEvent) > before and "continuity:standby-log:merged" in tags
    assert _verify(inst).ok


def test_rows_destroyed_on_the_main_server_are_never_served(
    main: Any, primary_server: PgServer, tmp_path: Path
) -> None:
    """Ransomware with the database's own password deletes records: the replica faithfully
    copies the deletion, so the snapshot is compared with the one served and refused."""
    inst, keys, usb, _token = main
    assert _standby_once(tmp_path, keys, usb, primary_server.port).exit_code == 0
    root = tmp_path / "sb"
    served = standby.current(root)
    assert served is not None
    patients = _count(inst, Patient)

    with psycopg.connect(host="127.0.0.1", port=primary_server.port, user="postgres",
                         dbname="clinic", autocommit=True) as con:  # fmt: skip
        con.execute("SET session_replication_role = replica")  # no triggers, no foreign keys
        con.execute("DELETE FROM patient WHERE id IN (SELECT id FROM patient LIMIT 3)")
    out = _standby_once(tmp_path, keys, usb, primary_server.port)
    assert out.exit_code == 0, out.output  # the previous snapshot keeps being served
    assert "refresh failed" in out.output.replace("\n", " "), out.output
    still = standby.current(root)
    assert still is not None and still.home == served.home
    marked = copies.marker(still.home)
    assert marked and "patient" in marked["refresh_error"]["en"]
    pgserver.ensure_up(root, still.home)
    copy = open_instance(str(still.home))
    try:
        assert _count(copy, Patient) == patients
    finally:
        copy.close()
    snapshots = [p.name for p in (root / "pg").iterdir() if p.is_dir()]
    assert sorted(snapshots) == sorted([str(marked["pg"]["data"]), "replica", "run"])
    # the refused snapshot left nothing behind


def test_a_sqlite_generation_is_not_a_replica_standby(tmp_path: Path) -> None:
    """``--replica`` with a SQLite clinic's backups: a clear refusal, nothing made."""
    from tests.system.test_backup import _instance

    created = _instance(tmp_path)
    keys = _keys(created.instance, tmp_path / "offline")
    usb = tmp_path / "usb"
    usb.mkdir()
    inst = _targets(created.instance, {"name": "usb", "kind": "dir", "path": str(usb)})
    try:
        assert _run(inst).ok
        out = _standby_once(tmp_path, keys, usb, 1)
        assert out.exit_code != 0 and "PostgreSQL clinics" in out.output.replace("\n", " ")
        assert standby.current(tmp_path / "sb") is None
    finally:
        inst.db.dispose()


def test_the_running_standby_streams_refreshes_and_stops_its_servers(
    main: Any, primary_server: PgServer, tmp_path: Path
) -> None:
    """``mamori standby --replica`` as a clinic runs it: served over HTTPS with the banner, a
    patient registered on the main server while it runs is served after the next refresh (no
    backup in between), and at the stop its log is a segment and its servers are down."""
    inst, keys, usb, token = main
    port = _free_port()
    root = tmp_path / "sb"
    env = {**os.environ, "MAMORI_BACKUP_PASSPHRASE": PASS,
           "MAMORI_REPLICA_PASSWORD": REPLICATOR_PASSWORD}  # fmt: skip
    log = (tmp_path / "standby.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mamori", "standby", "--from", f"dir:{usb}", "--identity",
         str(keys / "mamori-backup-primary.age"), "--dir", str(root), "--key-dir",
         str(tmp_path / "sbkeys"), "--port", str(port), "--every", "0.05",
         "--replica", f"postgresql://replicator@127.0.0.1:{primary_server.port}/clinic"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE

    def get(path: str) -> tuple[int, str]:
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, context=tls, timeout=10) as r:  # noqa: S310
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert proc.poll() is None, (tmp_path / "standby.log").read_text()
            assert time.monotonic() < deadline, "the standby did not come up"
            time.sleep(0.3)
        status, body = get("/login")
        assert status == 200 and "参照専用" in body and "時点のデータ" in body
        with TestClient(create_app(inst.settings, inst.db), base_url="https://testserver") as h:
            made = h.post("/api/v1/patients", json=SAMPLE_PATIENT,
                          headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert made.status_code == 201, made.text
        new_id = made.json()["id"]
        deadline = time.monotonic() + 90
        while True:  # the next refresh (every 3 s here) serves a snapshot with the patient
            if _listening(port) and get(f"/api/v1/patients/{new_id}/chart")[0] == 200:
                break
            assert proc.poll() is None, (tmp_path / "standby.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "standby.log").read_text()
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    assert list((root / "log").glob("standby-*.jsonl"))  # its reads, ready for merge-log
    assert not (root / "pg" / "replica" / "postmaster.pid").exists()
    served = standby.current(root)
    assert served is not None
    data = (copies.marker(served.home) or {})["pg"]["data"]
    assert not (root / "pg" / str(data) / "postmaster.pid").exists()
