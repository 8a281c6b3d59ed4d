"""The isolation switch (BCP 3-2): backup path first, then external links; the console still
reads; nothing is written; both switching on and lifting are audited and alerted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pyrage
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import SAMPLE_PATIENT, World

from mamori import isolation
from mamori.app import create_app
from mamori.audit.models import AuditEvent
from mamori.auth.models import SecurityAlert
from mamori.backup.fmt import BackupError
from mamori.backup.service import run_and_record
from mamori.continuity import service
from mamori.errors import InvalidInput, Isolated
from mamori.patients.schemas import PatientNew
from mamori.patients.service import register_patient


def test_isolation_cuts_backups_tokens_other_hosts_and_writes_then_lifts(
    world: World, patient: dict[str, Any], tmp_path: Path
) -> None:
    home = world.settings.home
    director = dataclasses.replace(world.actors["director"], channel="cli")
    officer = dataclasses.replace(world.actors["sec_sae"], channel="cli")
    with world.db.session(write=True) as s:
        service.add_standby_key(
            s, director, str(pyrage.x25519.Identity.generate().to_public()), "USB"
        )
        with pytest.raises(InvalidInput):  # a reason is required
            service.isolate(s, officer, home, " ")
        service.isolate(s, officer, home, "不審な暗号化ファイルを発見")  # the security officer may
        s.commit()
    assert isolation.marker(home)["reason"] == "不審な暗号化ファイルを発見"
    local = TestClient(create_app(world.settings, world.db), client=("127.0.0.1", 40000))
    # 1. the backup path: no backup, no bundle
    with pytest.raises(BackupError, match="Isolated"):
        run_and_record(world.settings, world.db)
    world.db.isolated = True
    with world.db.session(write=True) as s, pytest.raises(Isolated):
        service.write_bundle(s, director, [tmp_path])
    assert not list(tmp_path.glob("*.tar.age"))
    # 2. external links: another computer, and any API token even from the console
    r = world.http.get("/healthz")  # TestClient's default client is not loopback
    assert r.status_code == 503 and r.json()["error"]["code"] == "isolated"
    assert "隔離中" in r.json()["error"]["message_ja"]
    r = local.get(f"/api/v1/patients/{patient['id']}", headers=world.h("clerk_chika"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "isolated"
    assert local.get("/healthz").status_code == 200  # the console is still answered
    # 3. nothing is written (a console session or command alike)
    with world.db.session(write=True) as s, pytest.raises(Isolated):
        register_patient(
            s,
            world.actors["clerk_chika"],
            PatientNew(**{**SAMPLE_PATIENT, "family_kana": "カクリ"}),
        )
    # lifted: everything as before, audited and alerted both ways
    with world.db.session(write=True) as s:
        service.lift_isolation(s, director, home, "調査完了・安全を確認")
        s.commit()
    assert isolation.marker(home) is None
    r = world.http.get(f"/api/v1/patients/{patient['id']}", headers=world.h("clerk_chika"))
    assert r.status_code == 200
    assert not world.db.isolated  # refreshed by the next request
    with world.db.session(write=False) as s:
        tags = [
            json.loads(e.body)
            for e in s.scalars(
                select(AuditEvent).where(AuditEvent.tag.like("continuity:isolation:%"))
            )
        ]
        alerts = s.scalars(select(SecurityAlert).where(SecurityAlert.kind == "isolated")).all()
    assert [t["tag"] for t in tags] == ["continuity:isolation:on", "continuity:isolation:lifted"]
    assert tags[0]["actor"]["user"] == str(officer.user_id)
    assert tags[0]["detail"]["reason"] == "不審な暗号化ファイルを発見"
    assert len(alerts) == 2 and "隔離しました" in alerts[0].summary
    with world.db.session(write=True) as s, pytest.raises(InvalidInput):
        service.lift_isolation(s, director, home, "二度目")  # not isolated any more
    local.close()


def test_a_clerk_cannot_isolate(world: World) -> None:
    from mamori.errors import Forbidden

    with world.db.session(write=True) as s, pytest.raises(Forbidden):
        service.isolate(s, world.actors["clerk_chika"], world.settings.home, "試し")
    assert isolation.marker(world.settings.home) is None
