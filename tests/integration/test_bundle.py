"""The offline auditor bundle: its generated verifier runs without mamori and rejects
edited events, invented events, edited checkpoints and the wrong key."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.conftest import SAMPLE_PATIENT, World

from mamori.audit.bundle import BundleRefused, write_bundle
from mamori.audit.checkpoint import NoteSigner
from mamori.audit.checkpointer import make_checkpoint, origin, signer


def _bundle(world: World, out: Path, patient: str | None = None) -> dict[str, int]:
    with world.db.session(write=False) as s:
        return write_bundle(
            s,
            out,
            world.settings.checkpoint_dir,
            signer(world.settings).verifier(),
            origin(world.settings),
            uuid.UUID(patient) if patient else None,
        )


def _run(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -I: isolated mode; the verifier must not need mamori (it does not import it at all)
    return subprocess.run(
        [sys.executable, "-I", str(out / "verify_bundle.py"), str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def logged(world: World, patient: dict[str, Any]) -> World:
    other = world.http.post(
        "/api/v1/patients",
        json={**SAMPLE_PATIENT, "given_name": "別", "register_anyway": True},
        headers=world.h("clerk_chika"),
    ).json()
    for pid in (patient["id"], other["id"], patient["id"]):
        world.http.get(f"/api/v1/patients/{pid}/chart", headers=world.h("dr_aiko"))
        make_checkpoint(world.db, world.settings)
    return world


def test_complete_bundle_verifies_offline(logged: World, tmp_path: Path) -> None:
    out = tmp_path / "b"
    stats = _bundle(logged, out)
    assert stats["checkpoints"] == 3 and stats["events"] == stats["tree_size"]
    script = (out / "verify_bundle.py").read_text()
    assert "import mamori" not in script and "from mamori" not in script
    r = _run(out)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].startswith("OK:"), r.stdout
    vkey = (out / "audit.vkey").read_text().strip()
    assert _run(out, vkey).returncode == 0


def test_patient_bundle_holds_only_that_patient_with_proofs(
    logged: World, patient: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "p"
    stats = _bundle(logged, out, patient["id"])
    lines = (out / "events.jsonl").read_text().splitlines()
    assert stats["events"] == len(lines) >= 3
    assert all(patient["id"] in line for line in lines)
    assert _run(out).returncode == 0


@pytest.mark.parametrize("attack", ["edit", "invent", "move", "checkpoint", "key"])
def test_the_verifier_rejects_tampering(
    logged: World, patient: dict[str, Any], tmp_path: Path, attack: str
) -> None:
    out = tmp_path / attack
    _bundle(logged, out, patient["id"])
    events = out / "events.jsonl"
    lines = events.read_bytes().splitlines()
    args: list[str] = []
    if attack == "edit":
        lines[0] = lines[0].replace(b'"physician"', b'"nurse"').replace(b'"reception"', b'"nurse"')
        events.write_bytes(b"\n".join(lines) + b"\n")
    elif attack == "invent":  # a copy of an event claiming another position
        lines.append(lines[-1].replace(b'"seq":', b'"seq":1', 1))
        events.write_bytes(b"\n".join(lines) + b"\n")
    elif attack == "move":
        import json

        proofs = json.loads((out / "proofs.json").read_text())
        keys = list(proofs["inclusion"])
        proofs["inclusion"][keys[0]], proofs["inclusion"][keys[1]] = (
            proofs["inclusion"][keys[1]],
            proofs["inclusion"][keys[0]],
        )
        (out / "proofs.json").write_text(json.dumps(proofs))
    elif attack == "checkpoint":
        note = sorted((out / "checkpoints").glob("*.note"))[-1]
        text = note.read_text().split("\n")
        text[1] = str(int(text[1]) + 1)
        note.write_text("\n".join(text))
    else:
        args = [NoteSigner(origin(logged.settings), Ed25519PrivateKey.generate()).verifier().vkey()]
    r = _run(out, *args)
    assert r.returncode == 1
    assert "FAIL" in r.stdout and "Traceback" not in r.stderr, (r.stdout, r.stderr)


def test_no_bundle_from_a_damaged_log(logged: World, tmp_path: Path) -> None:
    from tests.conftest import drop_insert_only_triggers

    drop_insert_only_triggers(logged.db.engine)
    with logged.db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_event WHERE seq = 2")
    with pytest.raises(BundleRefused):
        _bundle(logged, tmp_path / "x")
