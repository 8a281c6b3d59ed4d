"""A bundle written by the server's schedule: under the configured director's account, marked
as the schedule's doing; a failure becomes an alert, never a crash, and writes nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pyrage
from sqlalchemy import select
from tests.conftest import World

from mamori.audit.models import AuditEvent
from mamori.auth.models import SecurityAlert
from mamori.clinic.calendar import clinic_today
from mamori.continuity import service
from mamori.continuity.models import DowntimeBundle
from mamori.continuity.schedule import DowntimeSettings


def test_a_scheduled_bundle_and_a_failed_one(
    world: World, patient: dict[str, Any], tmp_path: Path
) -> None:
    director = dataclasses.replace(world.actors["director"], channel="cli")
    with world.db.session(write=True) as s:
        key = str(pyrage.x25519.Identity.generate().to_public())
        service.add_standby_key(s, director, key, "受付USB")
        s.commit()
    usb = tmp_path / "usb"
    usb.mkdir()
    conf = DowntimeSettings(destinations=(usb,), run_as="director")
    settings = dataclasses.replace(world.settings, downtime=conf)
    written = service.run_scheduled(world.db, settings, clinic_today())
    assert written is not None and len(list(usb.glob("*.tar.age"))) == 1
    with world.db.session(write=False) as s:
        (event,) = [
            json.loads(e.body)
            for e in s.scalars(
                select(AuditEvent).where(AuditEvent.tag == "continuity:bundle:written")
            )
        ]
    assert event["actor"]["channel"] == "schedule"
    assert event["actor"]["user"] == str(world.actors["director"].user_id)
    # the USB disk unplugged: an alert, no bundle recorded, the earlier file untouched
    gone = dataclasses.replace(
        settings, downtime=dataclasses.replace(conf, destinations=(tmp_path / "x",))
    )
    assert service.run_scheduled(world.db, gone, clinic_today()) is None
    nobody = dataclasses.replace(settings, downtime=dataclasses.replace(conf, run_as="nobody"))
    assert service.run_scheduled(world.db, nobody, clinic_today()) is None
    with world.db.session(write=False) as s:
        alerts = s.scalars(
            select(SecurityAlert).where(SecurityAlert.kind == "downtime-failed")
        ).all()
        assert len(alerts) == 2
        assert "書き出し先のフォルダがありません" in alerts[0].summary
        assert "nobody" in alerts[1].summary
        assert len(s.scalars(select(DowntimeBundle)).all()) == 1
    assert len(list(usb.glob("*.tar.age"))) == 1
