"""Signed audit checkpoints outside the database: what they catch that the log alone cannot
(a rollback to an old copy, a history rewritten consistently with its head, a wrong key)."""

from __future__ import annotations

import hashlib
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
    load_checkpoints,
    make_checkpoint,
    origin,
    signer,
)
from mamori.audit.models import AuditEvent
from mamori.audit.verify import LogReport, verify_log


def _activity(world: World, patient: dict[str, Any], n: int = 3) -> None:
    for _ in range(n):
        world.http.get(f"/api/v1/patients/{patient['id']}/chart", headers=world.h("dr_aiko"))


def _verify(world: World) -> LogReport:
    trusted = [signer(world.settings).verifier()]
    cps, bad = load_checkpoints(world.settings.checkpoint_dir, trusted, origin(world.settings))
    assert bad == []
    with world.db.session(write=False) as s:
        return verify_log(s, cps)


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


def test_a_consistent_rewrite_passes_the_log_but_not_the_checkpoints(
    world: World, patient: dict[str, Any]
) -> None:
    _activity(world, patient)
    make_checkpoint(world.db, world.settings)
    _rewrite_tail_consistently(world, start=2)
    with world.db.session(write=False) as s:
        assert verify_log(s).ok  # without checkpoints the rewrite is invisible…
    report = _verify(world)  # …with them it is not
    assert not report.ok and "signed checkpoint" in report.problems[0][1]
    with pytest.raises(CheckpointRefused):
        make_checkpoint(world.db, world.settings)  # and nothing new is signed over it


def test_rollback_to_an_old_copy_is_detected(world: World, patient: dict[str, Any]) -> None:
    _activity(world, patient, 2)
    with world.db.session(write=False) as s:
        old_size = len(s.scalars(select(AuditEvent.seq)).all())
        old_head = s.execute(text("SELECT chain_hash, frontier FROM audit_head")).one()
    _activity(world, patient, 3)
    make_checkpoint(world.db, world.settings)
    # "restore last week's database": the events after old_size vanish, the head goes back
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
    with world.db.session(write=False) as s:
        assert verify_log(s).ok  # an old copy is a perfectly valid *old* log…
    report = _verify(world)
    assert not report.ok and "old copy" in report.problems[-1][1]
    with pytest.raises(CheckpointRefused, match="old copy"):
        make_checkpoint(world.db, world.settings)


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
