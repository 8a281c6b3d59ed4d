"""Backups of a PostgreSQL instance against a real server on loopback: ``pg_dump`` of one
exported snapshot, sealed and signed like the SQLite generations, restored by ``mamori
restore`` into an empty database with every proof, refused over a non-empty one, restored by
Debian's ``age``, ``zstd`` and ``pg_restore`` alone, and the alarm for destroyed rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from tests.pg import PgServer
from tests.system.test_backup import AGE, PASS, ZSTD, _ident, _keys, _targets, _verify

from mamori.audit.models import AuditEvent
from mamori.backup import engine, sources
from mamori.backup.fmt import BackupError
from mamori.backup.restore import restore
from mamori.backup.targets import spec_from_url
from mamori.clinic.models import Clinic
from mamori.documents.store import DocumentStore
from mamori.errors import MamoriError
from mamori.instance import Instance, create_instance, open_instance
from mamori.patients.models import Patient
from mamori.synth.generator import generate


def _admin(base: str) -> psycopg.Connection:  # type: ignore[type-arg]
    u = make_url(base)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True
    )


@pytest.fixture
def databases(pg_server: PgServer) -> Iterator[Any]:
    """Empty databases made on demand, dropped afterwards."""
    made: list[str] = []

    def new() -> str:
        name = "bk_" + uuid.uuid4().hex[:12]
        with _admin(pg_server.base_url) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{pg_server.base_url}/{name}"

    yield new
    with _admin(pg_server.base_url) as con:
        for name in made:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_setup(tmp_path: Path, databases: Any) -> Iterator[tuple[Instance, Path, Path]]:
    created = create_instance(
        tmp_path / "home",
        clinic_name="バックアップ試験",
        institution_code="1310123455",
        database_url=databases(),
    )
    inst = created.instance
    with inst.transaction(write=True) as s:
        clinic = s.scalars(select(Clinic)).one()
        generate(s, clinic, "XS", seed=5, store=DocumentStore(inst.settings.documents_dir, inst.db))
    keys = _keys(inst, tmp_path / "offline")
    usb = tmp_path / "usb"
    usb.mkdir()
    inst = _targets(inst, {"name": "usb", "kind": "dir", "path": str(usb)})
    yield inst, keys, usb
    inst.db.dispose()


def _names(inst: Instance) -> list[str]:
    with inst.transaction(write=True) as s:
        from mamori.audit.trail import AuditTag, record_system

        names = sorted(p.family_name + p.given_name for p in s.scalars(select(Patient)))
        record_system(s, AuditTag.RECORDS_VERIFIED, {"test": "names"})
    return names


def test_postgresql_backup_restores_into_an_empty_database_with_every_proof(
    pg_setup: tuple[Instance, Path, Path], tmp_path: Path, databases: Any
) -> None:
    inst, keys, usb = pg_setup
    first = engine.run_backup(inst.settings, inst.db.keyring.kek)
    assert first.ok and first.targets[0].kind == "full", first.targets
    second = engine.run_backup(inst.settings, inst.db.keyring.kek)
    assert second.ok and second.targets[0].kind == "full"  # a dump has no pages to diff
    assert second.targets[0].documents == 0  # documents still go up once in their life
    gen = usb / "mamori-backup" / inst.settings.instance_id / "generations" / f"{2:010d}"
    manifest = json.loads((gen / "manifest.json").read_bytes())
    assert manifest["engine"] == "postgresql" and manifest["db"]["format"] == "pg_dump-custom"
    dump = gen / "db.full.pgdump.zst.age"
    assert dump.read_bytes().startswith(b"age-encryption.org/v1\n")
    # the manifest's counts are the dump's own snapshot
    assert manifest["db"]["counts"]["patient"] == len(_names(inst)) > 0
    report = _verify(inst)
    assert report.ok and len(report.generations) == 2, report.problems

    spec = spec_from_url(f"dir:{usb}")
    ident = _ident(keys)
    # a database that holds tables is never restored over
    with pytest.raises(BackupError) as refused:
        restore(spec, ident, tmp_path / "r0", database_url=inst.settings.database_url)
    assert "not empty" in refused.value.en
    with pytest.raises(BackupError):  # and a PostgreSQL generation needs a database at all
        restore(spec, ident, tmp_path / "r1")

    target_url = databases()
    done = restore(
        spec, ident, tmp_path / "restored", key_dir=tmp_path / "keys", database_url=target_url
    )
    assert done.engine == "postgresql" and done.generation == 2
    assert done.counts == manifest["db"]["counts"] and done.documents > 0
    assert "integrity" not in done.timings and done.timings["database"] > 0
    again = open_instance(str(tmp_path / "restored"))
    try:
        assert again.settings.database_url == target_url
        assert _names(again) == _names(inst)  # decrypted with the restored KEK
        with again.transaction(write=False) as s:
            bodies = s.scalars(select(AuditEvent.body).order_by(AuditEvent.seq.desc())).all()
        assert b"system:backup:restored" in bytes(bodies[1])  # [0]: the names just read
        with again.transaction(write=False) as s:
            size = s.execute(text("SELECT count(*) FROM audit_event")).scalar_one()
        assert size == done.audit_events + 2  # + the restore's own event, + the names read
    finally:
        again.db.dispose()


def test_a_failed_postgresql_restore_leaves_the_database_empty(
    pg_setup: tuple[Instance, Path, Path], tmp_path: Path, databases: Any
) -> None:
    inst, keys, usb = pg_setup
    assert engine.run_backup(inst.settings, inst.db.keyring.kek).ok
    gen = usb / "mamori-backup" / inst.settings.instance_id / "generations" / f"{1:010d}"
    # a document object altered on the medium: found after pg_restore has run
    doc = next((usb / "mamori-backup").rglob("documents/*/*.age"))
    raw = bytearray(doc.read_bytes())
    raw[-5] ^= 1
    doc.write_bytes(bytes(raw))
    target_url = databases()
    with pytest.raises(BackupError):
        restore(spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "r", database_url=target_url)
    u = make_url(target_url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database) as con:
        tables = con.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchone()
    assert tables == (0,)
    assert not (tmp_path / "r").exists()
    assert (gen / "manifest.json").exists()  # the backup itself is untouched


@pytest.fixture
def app_role(pg_server: PgServer) -> Iterator[str]:
    """A login role for the server; requested before the databases, so it is dropped after
    them (its grants go with them)."""
    role = f"mamori_app_{uuid.uuid4().hex[:8]}"
    with _admin(pg_server.base_url) as con:
        con.execute(f'CREATE ROLE "{role}" LOGIN')
    yield role
    with _admin(pg_server.base_url) as con:
        con.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_restore_gives_the_app_role_least_privilege_again(
    app_role: str, pg_setup: tuple[Instance, Path, Path], tmp_path: Path, databases: Any
) -> None:
    """``pg_restore --no-acl`` brings back no grants; ``app_role`` re-grants least privilege
    once everything is proven — and an unknown role undoes the restore, database emptied."""
    inst, keys, usb = pg_setup
    assert engine.run_backup(inst.settings, inst.db.keyring.kek).ok
    spec, ident = spec_from_url(f"dir:{usb}"), _ident(keys)
    bad = databases()
    with pytest.raises(BackupError) as refused:  # a role that does not exist
        restore(spec, ident, tmp_path / "r0", database_url=bad, app_role="no_such_role_here")
    assert "no_such_role_here" in refused.value.en and "undone" in refused.value.en
    assert sources.pg_facts(bad)["counts"] == {} and not (tmp_path / "r0").exists()
    with pytest.raises(MamoriError, match="Invalid role name"):  # checked before anything
        restore(spec, ident, tmp_path / "r1", database_url=databases(), app_role='x"; --')
    assert not (tmp_path / "r1").exists()
    url = databases()
    done = restore(spec, ident, tmp_path / "r", database_url=url, app_role=app_role)
    assert done.app_role == app_role and "grants" in done.timings
    u = make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port, user=app_role, dbname=u.database, autocommit=True
    ) as app:
        row = app.execute("SELECT count(*) FROM patient").fetchone()
        assert row == (done.counts["patient"],)
        for sql in ("DELETE FROM audit_event", "UPDATE record_version SET version = 9"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(sql)


def test_postgresql_restore_with_debian_age_zstd_and_pg_restore_only(
    pg_setup: tuple[Instance, Path, Path], databases: Any
) -> None:
    assert AGE and ZSTD, "Debian age and zstd are needed (.ci/run installs them)"
    inst, keys, usb = pg_setup
    assert engine.run_backup(inst.settings, inst.db.keyring.kek).ok
    gen = usb / "mamori-backup" / inst.settings.instance_id / "generations" / f"{1:010d}"
    manifest = json.loads((gen / "manifest.json").read_bytes())
    target_url = databases()
    u = make_url(target_url)
    pg_restore = sources.pg_tool("pg_restore")
    ident = keys / "mamori-backup-breakglass.txt"
    sh = (
        f"{AGE} -d -i {ident} {gen}/db.full.pgdump.zst.age | {ZSTD} -d -q | "
        f"{pg_restore} --no-owner --no-acl --exit-on-error -h {u.host} -p {u.port} "
        f"-U {u.username} -d {u.database}"
    )
    subprocess.run(["sh", "-c", sh], check=True, timeout=120)
    assert sources.pg_facts(target_url)["counts"] == manifest["db"]["counts"]


def test_rows_destroyed_behind_mamoris_back_raise_the_alarm(
    pg_setup: tuple[Instance, Path, Path],
) -> None:
    inst, _keys_dir, _usb = pg_setup
    assert engine.run_backup(inst.settings, inst.db.keyring.kek).alarm is None
    assert engine.run_backup(inst.settings, inst.db.keyring.kek).alarm is None  # usual: none
    u = make_url(inst.settings.database_url)
    with psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True
    ) as con:  # an intruder with the database's credentials empties a table
        con.execute("ALTER TABLE observation DISABLE TRIGGER ALL")
        con.execute("DELETE FROM observation")
    result = engine.run_backup(inst.settings, inst.db.keyring.kek)
    assert result.alarm is not None and result.alarm["shrunk_tables"] == ["observation"]
    assert engine.load_state(inst.settings)["hold"]


def test_cli_restore_and_drill_of_a_postgresql_generation(
    app_role: str, pg_setup: tuple[Instance, Path, Path], tmp_path: Path, databases: Any
) -> None:
    """The commands as an operator runs them (separate processes)."""
    inst, keys, usb = pg_setup
    env = {**os.environ, "MAMORI_HOME": str(inst.settings.home), "MAMORI_BACKUP_PASSPHRASE": PASS}

    def mamori(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mamori", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    out = mamori("backup", "run")
    assert out.returncode == 0, out.stdout + out.stderr
    scratch = databases()
    args = ["--from", f"dir:{usb}", "--identity", str(keys / "mamori-backup-primary.age")]
    out = mamori("drill", *args, "--report-dir", str(tmp_path / "d"))
    assert out.returncode != 0 and "--database-url" in out.stdout + out.stderr  # says what it needs
    live = inst.settings.database_url  # a drill pointed at the live database by mistake
    before = sources.pg_facts(live)["counts"]
    out = mamori("drill", *args, "--report-dir", str(tmp_path / "d"), "--database-url", live)
    assert out.returncode != 0 and "not empty" in (out.stdout + out.stderr).replace("\n", "")
    after = sources.pg_facts(live)["counts"]
    # refused, and the records left exactly as they were; the failed drill is itself logged
    # (the checklist's backup item reads it)
    assert {k: v for k, v in after.items() if not k.startswith("audit_")} == {
        k: v for k, v in before.items() if not k.startswith("audit_")
    }
    assert after["audit_event"] == before["audit_event"] + 1
    out = mamori("drill", *args, "--report-dir", str(tmp_path / "d"), "--database-url", scratch)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(next((tmp_path / "d").glob("drill-*.json")).read_bytes())
    assert report["engine"] == "postgresql" and report["result"] == "passed"
    assert sources.pg_facts(scratch)["counts"] == {}  # the scratch database is empty again
    restored = databases()
    out = mamori(
        "restore", *args, "--to", str(tmp_path / "r"), "--database-url", restored,
        "--app-role", app_role,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"least privilege granted to {app_role}" in " ".join(out.stdout.split())
    counts = sources.pg_facts(restored)["counts"]
    assert counts == {**report["counts"], "audit_event": report["counts"]["audit_event"] + 1}
