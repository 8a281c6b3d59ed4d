"""Shared fixtures: both databases, a migrated instance per test, personas in two clinics.

Every integration test runs against SQLite *and* a real PostgreSQL server. Isolation: each test
gets its own database, cloned from a template that was built once by ``alembic upgrade head``
(a file copy for SQLite, ``CREATE DATABASE … TEMPLATE`` for PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from mamori import migrate
from mamori.app import create_app
from mamori.auth import tokens
from mamori.auth.integrations import token_permissions
from mamori.authz.actor import Actor
from mamori.authz.permissions import Permission
from mamori.authz.roles import Role
from mamori.clinic import service as clinic_service
from mamori.clinic.models import StaffUser
from mamori.crypto.startup import open_keys
from mamori.db import Database, utcnow
from mamori.models import open_database
from mamori.settings import Settings, load_settings, write_instance_files
from tests.pg import PgServer

os.environ["MAMORI_ENV"] = "test"  # the audit safety net is strict in tests
# KEK files go outside every instance directory, as in production
os.environ["MAMORI_KEY_DIR"] = tempfile.mkdtemp(prefix="mamori-keys-")

CLINIC_A_CODE = "1310123455"  # valid 医療機関コード check digit
CLINIC_B_CODE = "2710543215"  # 大阪府, also valid


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends",
        default="sqlite,postgresql",
        help="comma-separated database backends to run integration tests on",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        backends = metafunc.config.getoption("--backends").split(",")
        if metafunc.definition.get_closest_marker("one_backend"):
            backends = backends[:1]  # backend-independent logic: walked once
        if metafunc.definition.get_closest_marker("sqlite_only"):
            backends = [b for b in backends if b == "sqlite"]
        metafunc.parametrize("backend", backends, scope="session")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer()
    server.start()
    yield server
    server.stop()


def _pg_admin(url: str) -> psycopg.Connection:  # type: ignore[type-arg]
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True
    )


@pytest.fixture(scope="session")
def templates(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, str]:
    """Migrated template databases, built once per session and backend."""
    out: dict[str, str] = {}
    backends = request.config.getoption("--backends").split(",")
    if "sqlite" in backends:
        path = tmp_path_factory.mktemp("tpl") / "template.db"
        db = open_database(f"sqlite:///{path}")
        migrate.upgrade(db.engine)
        db.engine.dispose()
        out["sqlite"] = str(path)
    if "postgresql" in backends:
        server: PgServer = request.getfixturevalue("pg_server")
        base = server.base_url
        with _pg_admin(base) as con:
            con.execute("DROP DATABASE IF EXISTS mamori_template")
            con.execute("CREATE DATABASE mamori_template")
        db = open_database(f"{base}/mamori_template")
        migrate.upgrade(db.engine)
        db.engine.dispose()
        out["postgresql"] = base
    return out


@pytest.fixture
def db_url(backend: str, templates: dict[str, str], tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        target = tmp_path / "mamori.db"
        shutil.copyfile(templates["sqlite"], target)
        yield f"sqlite:///{target}"
        return
    name = "t_" + uuid.uuid4().hex[:16]
    base = templates["postgresql"]
    with _pg_admin(base) as con:
        con.execute(f'CREATE DATABASE "{name}" TEMPLATE mamori_template')
    yield f"{base}/{name}"
    with _pg_admin(base) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def person_token(session: Session, settings: Settings, user: StaffUser) -> str:
    """The harness's stand-in for a signed-in session of ``user``: a bearer credential that
    holds whatever the role (or a vendor's open window) grants, valid for a day. The services
    cannot tell it from a session; production never issues one like it (no second factor
    behind it, signing in its scope) — the token rules are tested in
    ``tests/integration/test_tokens.py``."""
    _, token = tokens.store_token(
        session,
        settings.token_pepper,
        user,
        scope=frozenset(Permission),  # the role (or a vendor's window) is the ceiling
        expires_at=utcnow() + dt.timedelta(days=1),
        label="test harness",
    )
    return token


def integration_token(db: Database, settings: Settings, role: Role = Role.PHYSICIAN) -> str:
    """A token the way a clinic gets one: an integration account of the (only) clinic and the
    real issuing rules, scoped to everything a token of ``role`` may hold, for one day."""
    with db.session(write=True) as session:
        clinic = clinic_service.the_clinic(session)
        user = clinic_service.add_staff(
            session, clinic, login_id=f"link-{uuid.uuid4().hex[:8]}", display_name="連携", role=role
        )
        user.kind = tokens.INTEGRATION
        _, token = tokens.issue_token(
            session,
            settings.token_pepper,
            user,
            scope=[p.value for p in token_permissions(role)],
            days=1,
            label="test integration",
        )
        session.commit()
    return token


@dataclass
class World:
    """An instance with two clinics and the personas of STYLE.md."""

    settings: Settings
    db: Database
    tokens: dict[str, str] = field(default_factory=dict)
    actors: dict[str, Actor] = field(default_factory=dict)
    client: TestClient | None = None

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    @property
    def http(self) -> TestClient:
        assert self.client is not None
        return self.client


PERSONAS = {
    "A": [
        ("director", "院長 守", Role.DIRECTOR),
        ("dr_aiko", "山本 愛子", Role.PHYSICIAN),
        ("dr_kenji", "佐藤 健二", Role.PHYSICIAN),
        ("nurse_ben", "鈴木 勉", Role.NURSE),
        ("clerk_chika", "田中 千佳", Role.RECEPTION),
        ("scribe_dai", "高橋 大", Role.SCRIBE),
        ("sec_sae", "伊藤 冴", Role.SECURITY_OFFICER),
        ("vendor_vic", "保守 ベンダー", Role.VENDOR),
        ("audit_aki", "監査 明", Role.AUDITOR),
    ],
    "B": [("dr_chen", "陳 医師", Role.PHYSICIAN)],
}


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    home = tmp_path / "instance"
    write_instance_files(home, database_url=db_url, port=8000)
    settings = load_settings(home)
    db = open_database(db_url)
    open_keys(db, settings, create=True)
    w = World(settings=settings, db=db)
    with db.session(write=True) as session:
        for name, code, key in (
            ("まもり内科", CLINIC_A_CODE, "A"),
            ("別の診療所", CLINIC_B_CODE, "B"),
        ):
            clinic = clinic_service.create_clinic(session, name=name, institution_code=code)
            for login, display, role in PERSONAS[key]:
                user = clinic_service.add_staff(
                    session, clinic, login_id=login, display_name=display, role=role
                )
                w.tokens[login] = person_token(session, settings, user)
                w.actors[login] = clinic_service.actor_for(user, "test")
        session.commit()
    w.client = TestClient(create_app(settings, db), raise_server_exceptions=False)
    yield w
    w.client.close()
    db.dispose()


SAMPLE_PATIENT = {
    "family_name": "山田",
    "given_name": "花子",
    "family_kana": "ヤマダ",
    "given_kana": "ハナコ",
    "birth_date": "1948-04-03",
    "sex": "female",
    "postal_code": "113-0033",
    "prefecture": "東京都",
    "city": "文京区",
    "address_line": "本郷1丁目2番3号",
    "phone": "03-3812-0000",
}


@pytest.fixture
def patient(world: World) -> dict[str, object]:
    r = world.http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=world.h("clerk_chika"))
    assert r.status_code == 201, r.text
    return dict(r.json())


INSERT_ONLY_TABLES = (
    "audit_event",
    "record_version",
    "audit_event_patient",
    "audit_event_user",
    "audit_review",
)


def drop_insert_only_triggers(engine: object) -> None:
    """What a database administrator (or an intruder with DB credentials) can do first:
    remove the insert-only triggers. Tamper tests start here; detection must not depend on
    the triggers being present."""
    from sqlalchemy import Engine

    assert isinstance(engine, Engine)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for table in INSERT_ONLY_TABLES:
                for name in ("insert_only", "no_truncate", "no_delete", "fixed"):
                    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_{name} ON {table}")
        else:
            for table in INSERT_ONLY_TABLES:
                for name in ("no_update", "no_delete", "fixed"):
                    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_{name}")
