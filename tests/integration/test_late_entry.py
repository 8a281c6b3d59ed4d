"""事後入力 after downtime: a paper note typed in with its time of care and downtime number,
a paper registration with its number; each number once, only numbers a bundle issued; the
reconciliation list shows what has been entered."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pyrage
import pytest
from tests.conftest import SAMPLE_PATIENT, World

from mamori.authz.roles import Role
from mamori.clinic.calendar import JST
from mamori.continuity import service
from mamori.continuity.entries import reconciliation


def _bundle(world: World, tmp_path: Path) -> None:
    director = dataclasses.replace(world.actors["director"], channel="cli")
    with world.db.session(write=True) as s:
        service.add_standby_key(
            s, director, str(pyrage.x25519.Identity.generate().to_public()), "USB"
        )
        service.write_bundle(s, director, [tmp_path])  # reserves DT-000001..DT-000040
        s.commit()


def test_paper_records_are_entered_once_each_with_their_time_of_care(
    world: World, patient: dict[str, Any], tmp_path: Path
) -> None:
    _bundle(world, tmp_path)
    pid, h = patient["id"], world.h("dr_aiko")
    care = (dt.datetime.now(JST) - dt.timedelta(hours=3)).replace(microsecond=0)
    note = {
        "subjective": "停電中の受診。咳嗽3日。",
        "plan": "経過観察",
        "late": {"downtime_number": 12, "care_at": care.isoformat(), "paper_ref": "12/8 綴り"},
    }
    r = world.http.post(f"/api/v1/patients/{pid}/notes", json=note, headers=h)
    assert r.status_code == 201, r.text
    entered = r.json()
    assert entered["downtime_number"] == 12 and entered["paper_ref"] == "12/8 綴り"
    assert dt.datetime.fromisoformat(entered["care_at"]) == care
    assert dt.datetime.fromisoformat(entered["created_at"]) > care  # typed later, kept apart
    # the same paper again, a number never issued, a time of care in the future
    r = world.http.post(f"/api/v1/patients/{pid}/notes", json=note, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "downtime_number_used"
    for late, field in (
        ({**note["late"], "downtime_number": 99}, "downtime_number"),
        (
            {
                **note["late"],
                "downtime_number": 13,
                "care_at": (dt.datetime.now(JST) + dt.timedelta(days=1)).isoformat(),
            },
            "care_at",
        ),
    ):
        r = world.http.post(f"/api/v1/patients/{pid}/notes", json={**note, "late": late}, headers=h)
        assert r.status_code == 422, r.text
        assert field in str(r.json()["error"]), r.text
    # a paper 新患登録票: registered with its number (once)
    paper = {
        **SAMPLE_PATIENT,
        "family_kana": "テガキ",
        "family_name": "手書",
        "downtime_number": 40,
    }
    r = world.http.post("/api/v1/patients", json=paper, headers=world.h("clerk_chika"))
    assert r.status_code == 201, r.text
    r = world.http.post(
        "/api/v1/patients",
        json={**paper, "family_kana": "テガキニ"},
        headers=world.h("clerk_chika"),
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "downtime_number_used"
    director = world.actors["director"]
    with world.db.session(write=False) as s:
        (rec,) = reconciliation(s, director)
    assert [(e.number, e.record_type) for e in rec.entered] == [
        (12, "ProgressNote"),
        (40, "Patient"),
    ]
    # the record's history keeps the late-entry facts in its hashed version
    history = world.http.get(
        f"/api/v1/records/ProgressNote/{entered['id']}/history", headers=world.h("director")
    ).json()
    assert history[0]["content"]["downtime_number"] == 12
    assert history[0]["content"]["paper_ref"] == "12/8 綴り"


def test_the_director_closes_what_was_never_used_and_the_list_empties(
    world: World, patient: dict[str, Any], tmp_path: Path
) -> None:
    """Still open = issued, not entered, not closed. A bundle some paper came back from stays
    pending until the director closes the rest as unused (audited, once); a closed number can
    no longer be entered; only the continuity roles close, and only their own clinic's."""
    from sqlalchemy import select

    from mamori.audit.models import AuditEvent
    from mamori.continuity.entries import close_unused
    from mamori.errors import Conflict, Forbidden, NotFound

    _bundle(world, tmp_path)
    pid, h = patient["id"], world.h("dr_aiko")
    care = (dt.datetime.now(JST) - dt.timedelta(hours=1)).isoformat()
    note = {"subjective": "紙から", "late": {"downtime_number": 3, "care_at": care}}
    assert world.http.post(f"/api/v1/patients/{pid}/notes", json=note, headers=h).status_code == 201
    with world.db.session(write=False) as s:
        (row,) = reconciliation(s, world.actors["director"])
    assert row.pending and len(row.open) == 39 and 3 not in row.open
    with world.db.session(write=True) as s:
        with pytest.raises(Forbidden):
            close_unused(s, world.actors["nurse_ben"], row.bundle.id)
        other = dataclasses.replace(world.actors["dr_chen"], role=Role.DIRECTOR)
        with pytest.raises(NotFound):
            close_unused(s, other, row.bundle.id)  # another clinic's director
        close_unused(s, world.actors["director"], row.bundle.id)
        s.commit()
    with world.db.session(write=True) as s, pytest.raises(Conflict):
        close_unused(s, world.actors["sec_sae"], row.bundle.id)
    with world.db.session(write=False) as s:
        (row,) = reconciliation(s, world.actors["director"])
        tags = [t for t in s.scalars(select(AuditEvent.tag)) if t == "continuity:bundle:closed"]
    assert not row.pending and row.open == [] and len(tags) == 1
    late = {"subjective": "後から見つかった用紙", "late": {"downtime_number": 4, "care_at": care}}
    r = world.http.post(f"/api/v1/patients/{pid}/notes", json=late, headers=h)
    assert r.status_code == 422 and "閉じられています" in r.json()["error"]["message_ja"]
