"""Migrations reach head on both databases and match the models exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import SAMPLE_PATIENT, World, person_token

from mamori import migrate
from mamori.app import create_app
from mamori.clinic.models import StaffUser
from mamori.errors import InstanceError
from mamori.models import open_database


def test_upgrade_head_matches_models(db_url: str) -> None:
    db = open_database(db_url)
    try:
        assert migrate.current_revision(db.engine) == migrate.head_revision()
        assert migrate.model_differences(db.engine) == []
    finally:
        db.dispose()


def test_server_refuses_an_unmigrated_database(world: World) -> None:
    with world.db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM alembic_version")
    with pytest.raises(InstanceError) as exc:
        create_app(world.settings, world.db)
    assert "mamori db upgrade" in exc.value.ja and "mamori db upgrade" in exc.value.en


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.dispose()


def test_the_latest_migration_upgrades_a_clinic_with_data(world: World) -> None:
    """Not only an empty database: one with staff, patients and records that everything else
    refers to goes down the latest revisions and back up (a SQLite table rebuild of staff_user would
    have failed on the foreign keys)."""
    from alembic import command

    r = world.http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=world.h("clerk_chika"))
    assert r.status_code == 201
    with world.db.engine.begin() as conn:
        cfg = migrate.alembic_config(world.db.engine.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")  # through 0008 (tokens) and 0009 (import batches)
    assert migrate.current_revision(world.db.engine) != migrate.head_revision()
    migrate.upgrade(world.db.engine)
    assert migrate.current_revision(world.db.engine) == migrate.head_revision()
    assert migrate.model_differences(world.db.engine) == []
    # going down through 0008 dropped the tokens' scopes: coming back up, 0008 revokes every
    # token without a scope or expiry, as it revoked those ``init`` used to hand out
    url = "/api/v1/patients/" + r.json()["id"]
    assert world.http.get(url, headers=world.h("dr_aiko")).status_code == 401
    with world.db.session(write=True) as s:
        user = s.get(StaffUser, world.actors["dr_aiko"].user_id)
        assert user is not None
        fresh = person_token(s, world.settings, user)
        s.commit()
    assert world.http.get(url, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
