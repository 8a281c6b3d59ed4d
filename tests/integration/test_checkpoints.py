"""Signed audit checkpoints outside the database: what they catch that the log alone cannot
(a rollback to an old copy, a history rewritten consistently with its head, a wrong key)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from tests.conftest import World, drop_insert_only_triggers

from mamori.app import create_app
from mamori.audit import merkle
from mamori.audit.checkpoint import Checkpoint, NoteSigner, open_note, sign
from mamori.audit.checkpointer import (
    CheckpointRefused,
    all_checkpoints,
    load_checkpoints,
    make_checkpoint,
    origin,
    signer,
)
from mamori.audit.models import AuditEvent
from mamori.audit.verify import LogReport, verify_log
from mamori.errors import InstanceError
from mamori.settings import load_settings


def _activity(world: World, patient: dict[str, Any], n: int = 3) -> None:
    for _ in range(n):
        world.http.get(f"/api/v1/patients/{patient['id']}/chart", headers=world.h("dr_aiko"))


def _verify(world: World, workers: int = 1) -> LogReport:
    trusted = [signer(world.settings).verifier()]
    cps, bad = load_checkpoints(world.settings.checkpoint_dir, trusted, origin(world.settings))
    assert bad == []
    with world.db.session(write=False) as s:
        return verify_log(s, cps, workers=workers)


@pytest.fixture
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """1: one pass in this process; 2: worker processes over ranges of 2 events, so a
    checkpoint's size falls inside, at the end of and between ranges."""
    monkeypatch.setattr("mamori.audit.verify.SEGMENT", 2)
    return int(request.param)


def test_checkpoints_are_signed_and_only_written_when_the_log_grows(
    world: World, patient: dict[str, Any]
) -> None:
    _activity(world, patient)
    first = make_checkpoint(world.db, world.settings)
    assert first.path is not None and first.path.parent == world.settings.checkpoint_dir
    assert not first.path.is_relative_to(world.settings.home / "data")
    cp = open_note(first.path.read_text(), [signer(world.settings).verifier()])
    with world.db.session(write=False) as s:
        report = verify_log(s)
    assert (cp.size, cp.root) == (report.size, report.root) == (first.size, first.root)
    assert make_checkpoint(world.db, world.settings).path is None  # nothing new
    _activity(world, patient, 1)
    assert make_checkpoint(world.db, world.settings).size == first.size + 1
    assert _verify(world).ok


def _rewrite_tail_consistently(world: World, start: int) -> None:
    """The strongest attacker without the signing key: edit event ``start`` and recompute every
    later leaf, chain hash and the head, so the log is internally perfect."""
    drop_insert_only_triggers(world.db.engine)
    with world.db.engine.begin() as conn:
        rows = conn.execute(text("SELECT seq, body FROM audit_event ORDER BY seq")).all()
        frontier, chain = merkle.Frontier(), b"\x00" * 32
        for seq, body in rows:
            body = bytes(body)
            if seq == start:
                body = body.replace(b'"physician"', b'"nurse"')
                conn.execute(
                    text("UPDATE audit_event SET body = :b WHERE seq = :s"), {"b": body, "s": seq}
                )
            leaf = merkle.leaf_hash(body)
            chain = hashlib.sha256(chain + hashlib.sha256(body).digest()).digest()
            frontier.append(leaf)
            conn.execute(
                text("UPDATE audit_event SET leaf_hash = :l, chain_hash = :c WHERE seq = :s"),
                {"l": leaf, "c": chain, "s": seq},
            )
        conn.execute(
            text("UPDATE audit_head SET chain_hash = :c, frontier = :f WHERE id = 1"),
            {"c": chain, "f": __import__("json").dumps([n.hex() for n in frontier.nodes])},
        )


@pytest.mark.parametrize("workers", [1, 2], indirect=True)
def test_a_consistent_rewrite_passes_the_log_but_not_the_checkpoints(
    world: World, patient: dict[str, Any], workers: int
) -> None:
    _activity(world, patient)
    make_checkpoint(world.db, world.settings)
    assert _verify(world, workers).ok
    _rewrite_tail_consistently(world, start=2)
    with world.db.session(write=False) as s:
        assert verify_log(s, workers=workers).ok  # without checkpoints the rewrite is invisible…
    report = _verify(world, workers)  # …with them it is not
    assert not report.ok and "signed checkpoint" in report.problems[0][1]
    with pytest.raises(CheckpointRefused):
        make_checkpoint(world.db, world.settings)  # and nothing new is signed over it


@pytest.mark.parametrize("workers", [1, 2], indirect=True)
def test_rollback_to_an_old_copy_is_detected(
    world: World, patient: dict[str, Any], workers: int
) -> None:
    _activity(world, patient, 2)
    with world.db.session(write=False) as s:
        old_size = len(s.scalars(select(AuditEvent.seq)).all())
        old_head = s.execute(text("SELECT chain_hash, frontier FROM audit_head")).one()
    _activity(world, patient, 3)
    make_checkpoint(world.db, world.settings)
    _roll_back(world, old_size, old_head)
    with world.db.session(write=False) as s:
        assert verify_log(s, workers=workers).ok  # an old copy is a perfectly valid *old* log…
    report = _verify(world, workers)
    assert not report.ok and "old copy" in report.problems[-1][1]
    with pytest.raises(CheckpointRefused, match="old copy"):
        make_checkpoint(world.db, world.settings)


def _roll_back(world: World, old_size: int, old_head: Any) -> None:
    """ "Restore last week's database": the events after old_size vanish, the head goes back."""
    drop_insert_only_triggers(world.db.engine)
    with world.db.engine.begin() as conn:
        for table in ("audit_event", "audit_event_patient", "audit_event_user"):
            conn.execute(text(f"DELETE FROM {table} WHERE seq > :n"), {"n": old_size})
        conn.execute(
            text("UPDATE audit_head SET size = :n, chain_hash = :c, frontier = :f"),
            {
                "n": old_size,
                "c": old_head[0],
                "f": old_head[1]
                if isinstance(old_head[1], str)
                else __import__("json").dumps(old_head[1]),
            },
        )


def test_an_outside_copy_catches_a_rollback_of_the_whole_instance(
    world: World, patient: dict[str, Any], tmp_path: Path
) -> None:
    """The intruder restores last week's database *and* last week's checkpoints/ (both live in
    the instance directory); the copy on the NAS share, which they did not reach, disagrees."""
    outside = tmp_path / "nas-share"
    settings = dataclasses.replace(world.settings, checkpoint_copies=(outside,))
    _activity(world, patient, 2)
    first = make_checkpoint(world.db, settings)
    assert first.path is not None and "missing" in first.copy_errors[0]
    assert not outside.exists()  # an unmounted share is never replaced by a local folder
    old_checkpoints = tmp_path / "old-checkpoints"
    shutil.copytree(settings.checkpoint_dir, old_checkpoints)
    with world.db.session(write=False) as s:
        old_size = len(s.scalars(select(AuditEvent.seq)).all())
        old_head = s.execute(text("SELECT chain_hash, frontier FROM audit_head")).one()
    outside.mkdir()  # the share is mounted again
    _activity(world, patient, 3)
    second = make_checkpoint(world.db, settings)
    assert second.copy_errors == []
    names = sorted(p.name for p in settings.checkpoint_dir.glob("*.note"))
    assert sorted(p.name for p in outside.glob("*.note")) == names and len(names) == 2
    assert (outside / "audit.vkey").exists()  # the earlier note caught up, with the key

    _roll_back(world, old_size, old_head)
    shutil.rmtree(settings.checkpoint_dir)
    shutil.copytree(old_checkpoints, settings.checkpoint_dir)
    trusted = [signer(settings).verifier()]
    assert _verify(world).ok  # the instance directory agrees with itself…
    cps, bad = all_checkpoints(settings, trusted)
    assert bad == []
    with world.db.session(write=False) as s:
        report = verify_log(s, cps)
    assert not report.ok and "old copy" in report.problems[-1][1]  # …the outside copy does not


def test_a_checkpoint_copy_inside_the_instance_is_refused(world: World) -> None:
    home = world.settings.home
    toml = home / "mamori.toml"
    text = re.sub(r"(?m)^checkpoint_copies = .*\n", "", toml.read_text(encoding="utf-8"))
    toml.write_text(
        text.replace("[audit]", f'[audit]\ncheckpoint_copies = ["{home / "copy"}"]', 1),
        encoding="utf-8",
    )
    with pytest.raises(InstanceError, match="outside the instance"):
        load_settings(home)


def test_checkpoints_from_another_key_or_edited_are_reported(
    world: World, patient: dict[str, Any]
) -> None:
    _activity(world, patient)
    good = make_checkpoint(world.db, world.settings)
    assert good.path is not None
    forger = NoteSigner(origin(world.settings), Ed25519PrivateKey.generate())
    (world.settings.checkpoint_dir / "999999999999.note").write_text(
        sign(Checkpoint(origin(world.settings), 10**6, b"\x01" * 32), [forger])
    )
    good.path.write_text(good.path.read_text().replace(f"\n{good.size}\n", f"\n{good.size + 1}\n"))
    trusted = [signer(world.settings).verifier()]
    cps, bad = load_checkpoints(world.settings.checkpoint_dir, trusted, origin(world.settings))
    assert cps == []
    assert any("999999999999" in p and "trusted key" in p for p in bad)
    assert any(good.path.name in p and "bad signature" in p for p in bad)


def test_server_signs_a_checkpoint_at_shutdown(world: World, patient: dict[str, Any]) -> None:
    _activity(world, patient)
    before = set(world.settings.checkpoint_dir.glob("*.note"))
    with TestClient(create_app(world.settings, world.db)) as client:  # runs the lifespan
        client.get(f"/api/v1/patients/{patient['id']}", headers=world.h("dr_aiko"))
    after = set(world.settings.checkpoint_dir.glob("*.note")) - before
    assert len(after) == 1
    assert _verify(world).ok
