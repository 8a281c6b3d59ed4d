"""PostgreSQL: the application's role works normally but cannot change the log or history,
or delete anything, even after the owner's triggers are gone."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from tests.conftest import SAMPLE_PATIENT, drop_insert_only_triggers, person_token
from tests.pg import PgServer

from mamori import migrate
from mamori.app import create_app
from mamori.audit.verify import verify_log
from mamori.clinic import service as clinic_service
from mamori.instance import create_instance
from mamori.models import open_database


def test_app_role_has_least_privilege(pg_server: PgServer, tmp_path: Path) -> None:
    base = pg_server.base_url
    u = make_url(base)
    name, role = f"roles_{uuid.uuid4().hex[:8]}", f"mamori_app_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True
    )
    admin.execute(f'CREATE DATABASE "{name}"')
    admin.execute(f'CREATE ROLE "{role}" LOGIN')
    owner = open_database(f"{base}/{name}")
    try:
        migrate.upgrade(owner.engine)
        granted = migrate.grant_app_role(owner.engine, role)
        assert granted["audit_event"] == "SELECT, INSERT"
        # a version's ciphertext may be re-encrypted under a new data key, nothing else
        assert granted["record_version"] == "SELECT, INSERT, UPDATE (sealed)"
        assert all("DELETE" not in p for p in granted.values())
        app_url = f"postgresql+psycopg://{role}@{u.host}:{u.port}/{name}"
        created = create_instance(
            tmp_path / "i",
            clinic_name="権限試験",
            institution_code="1310123455",
            database_url=app_url,
        )
        client = TestClient(create_app(created.instance.settings, created.instance.db))
        with created.instance.db.session(write=True) as s:
            director = clinic_service.find_staff(s, created.clinic.id, created.admin_login)
            assert director is not None
            h = {"Authorization": f"Bearer {person_token(s, created.instance.settings, director)}"}
            s.commit()
        pid = client.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=h).json()["id"]
        note = client.post(
            f"/api/v1/patients/{pid}/notes", json={"subjective": "x"}, headers=h
        ).json()
        assert (
            client.post(
                f"/api/v1/notes/{note['id']}/finalise", json={"expected_version": 1}, headers=h
            ).status_code
            == 200
        )
        assert client.get(f"/api/v1/patients/{pid}/chart", headers=h).status_code == 200
        drop_insert_only_triggers(owner.engine)  # the owner's triggers are gone…
        app_engine = create_engine(app_url)
        for sql in (
            "UPDATE audit_event SET tag = 'x'",
            "DELETE FROM audit_event",
            "UPDATE record_version SET content_hash = 'x'",
            "UPDATE record_version SET version = 9",
            "DELETE FROM record_version",
            "DELETE FROM patient",
            "TRUNCATE audit_event",
            "UPDATE audit_review SET finding = 'x'",
        ):
            with (
                pytest.raises(ProgrammingError, match="permission denied"),
                app_engine.begin() as c,
            ):
                c.execute(text(sql))  # …and the application's role still cannot
        app_engine.dispose()
        with created.instance.db.session(write=False) as s:
            assert verify_log(s).ok
        client.close()
        created.instance.db.dispose()
    finally:
        owner.dispose()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()
