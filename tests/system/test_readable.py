"""The readable copy (escrow) in the backup: once a day the generation carries the clinic's
records as FHIR NDJSON and chart PDFs, encrypted to the offline keys, readable with Debian's
age, zstd and tar alone; daily copies hold only what changed, a weekly one everything."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from sqlalchemy import select
from tests.system.test_backup import AGE, ZSTD, _instance, _keys, _targets

from mamori.audit.models import AuditEvent
from mamori.backup import engine, fmt
from mamori.backup.config import spec_from_url
from mamori.backup.service import run_and_record
from mamori.backup.targets import open_target
from mamori.backup.verify import verify_target
from mamori.clinical.notes import write_note
from mamori.clinical.schemas import NoteIn
from mamori.continuity import escrow
from mamori.fhir import bulk
from mamori.instance import Instance
from mamori.restrictions.service import set_flags


def _open(usb: Path, inst: Instance, generation: int, keys: Path, out: Path) -> Path | None:
    """The generation's readable copy opened with age, zstd and tar only (no mamori)."""
    gen = usb / "mamori-backup" / inst.settings.instance_id / "generations" / f"{generation:010d}"
    sealed = gen / "readable.tar.zst.age"
    if not sealed.exists():
        return None
    out.mkdir()
    assert AGE and ZSTD, ".ci/run installs age and zstd"
    pipeline = (
        f"{AGE} -d -i {keys / 'mamori-backup-breakglass.txt'} {sealed} | {ZSTD} -d -q"
        f" | tar -x -C {out}"
    )
    subprocess.run(pipeline, shell=True, check=True)  # noqa: S602 - this test's own paths
    return out


def _lines(root: Path, rtype: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for part in sorted((root / "fhir" / rtype).glob("*.ndjson"))
        for line in part.read_text(encoding="utf-8").splitlines()
    ]


@pytest.fixture
def clinic(tmp_path: Path) -> Any:
    created = _instance(tmp_path)
    keys = _keys(created.instance, tmp_path / "offline")
    usb = tmp_path / "usb"
    usb.mkdir()
    inst = _targets(created.instance, {"name": "usb", "kind": "dir", "path": str(usb)})
    yield inst, keys, usb
    inst.db.dispose()


def test_a_readable_copy_a_day_full_then_deltas_opened_without_mamori(
    clinic: Any, tmp_path: Path
) -> None:
    inst, keys, usb = clinic
    with inst.transaction(write=True) as s:
        director = inst.actor(s, "admin")
        ids = bulk.patient_ids(s, director)
        set_flags(s, director, ids[0], vip=True, sensitive=False)
    assert run_and_record(inst.settings, inst.db).ok
    full = _open(usb, inst, 1, keys, tmp_path / "g1")
    assert full is not None
    readme = (full / "README.txt").read_text(encoding="utf-8")
    assert "age -d -i mamori-backup-breakglass.txt" in readme and "読める控え" in readme
    manifest = json.loads((full / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "full" and manifest["since"] is None
    patients = _lines(full, "Patient")
    assert sorted(p["id"] for p in patients) == sorted(str(i) for i in ids)  # restricted too
    assert len(_lines(full, "Observation")) == manifest["resources"]["Observation"] > 0
    charts = sorted((full / "charts").glob("*.pdf"))
    assert len(charts) == manifest["charts"] > 0
    text = PdfReader(charts[0]).pages[0].extract_text()
    assert "カルテ要約" in text and "読める控え" in text
    restricted_number = next(
        p["identifier"][0]["value"] for p in patients if p["id"] == str(ids[0])
    )
    assert not (full / "charts" / f"{int(restricted_number):06d}.pdf").exists()
    assert not list(inst.settings.backup_dir.glob("readable-*"))  # nothing left in the clear

    # the same day again: no second copy
    assert run_and_record(inst.settings, inst.db).ok
    assert _open(usb, inst, 2, keys, tmp_path / "g2") is None

    # the next day: only what changed since, and that patient's chart
    state = engine.load_state(inst.settings)
    day_before = dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)
    state["readable"]["at"] = day_before.isoformat()
    engine.save_state(inst.settings, state)
    with inst.transaction(write=True) as s:
        note = write_note(s, inst.actor(s, "admin"), ids[5], NoteIn(subjective="翌日の記録"))
        note_id = str(note.id)
    assert run_and_record(inst.settings, inst.db).ok
    delta = _open(usb, inst, 3, keys, tmp_path / "g3")
    assert delta is not None
    manifest = json.loads((delta / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "delta" and manifest["patients_changed"] == 1
    assert [d["id"] for d in _lines(delta, "DocumentReference")] == [note_id]
    assert _lines(delta, "Observation") == []
    assert len(list((delta / "charts").glob("*.pdf"))) == 1

    # a week on: a full one again
    state = engine.load_state(inst.settings)
    state["readable"]["at"] = day_before.isoformat()
    state["readable"]["full_at"] = (day_before - dt.timedelta(days=7)).isoformat()
    engine.save_state(inst.settings, state)
    assert run_and_record(inst.settings, inst.db).ok
    again = _open(usb, inst, 4, keys, tmp_path / "g4")
    assert again is not None
    assert json.loads((again / "manifest.json").read_text())["kind"] == "full"

    # every generation still verifies, and the reads are in the audit trail
    target = open_target(spec_from_url(f"dir:{usb}"), inst.settings.instance_id)
    try:
        signer = fmt.signing_key(inst.settings.audit_signing_key).public_key()
        report = verify_target(target, signer, inst.settings.instance_id, deep=True)
    finally:
        target.close()
    assert report.ok, report.problems
    with inst.transaction(write=False) as s:
        bodies = [json.loads(bytes(b)) for b in s.scalars(select(AuditEvent.body))]
    escrowed = {
        p for b in bodies if (b.get("detail") or {}).get("what") == "escrow" for p in b["patients"]
    }
    assert escrowed == {str(i) for i in ids}
    assert any(b["tag"] == "patient:chart:printed" for b in bodies)


def test_a_failed_readable_copy_never_costs_the_generation(clinic: Any) -> None:
    inst, _keys_dir, usb = clinic
    with inst.transaction(write=True) as s:  # no director to read it under
        from mamori.clinic.models import StaffUser

        for user in s.scalars(select(StaffUser).where(StaffUser.role == "director")):
            user.active = False
    result = run_and_record(inst.settings, inst.db)
    assert result.ok  # the backup itself is written
    gen = usb / "mamori-backup" / inst.settings.instance_id / "generations" / f"{1:010d}"
    assert (gen / "manifest.json").exists() and not (gen / "readable.tar.zst.age").exists()
    assert escrow.due(engine.load_state(inst.settings), dt.datetime.now(dt.UTC)) is not None
    with inst.transaction(write=False) as s:
        tags = list(s.scalars(select(AuditEvent.tag)))
    assert "system:backup:failed" in tags


def test_serve_makes_the_copy_ahead_and_the_next_run_carries_it(clinic: Any) -> None:
    """The scheduled runs never wait for a readable copy: serve's own task makes it ahead,
    and the next run carries it (an L clinic's full copy takes tens of minutes)."""
    from mamori.backup.service import PENDING, prepare_readable, scheduled_run

    inst, _keys_dir, usb = clinic
    gens = usb / "mamori-backup" / inst.settings.instance_id / "generations"
    scheduled_run(inst.settings, inst.db)
    assert not (gens / f"{1:010d}" / "readable.tar.zst.age").exists()
    assert prepare_readable(inst.settings, inst.db)
    assert (inst.settings.backup_dir / PENDING).exists()
    assert not prepare_readable(inst.settings, inst.db)  # one is waiting
    scheduled_run(inst.settings, inst.db)
    assert (gens / f"{2:010d}" / "readable.tar.zst.age").exists()
    assert not (inst.settings.backup_dir / PENDING).exists()
    assert not prepare_readable(inst.settings, inst.db)  # carried today: not due
