"""Bulk-imported records are inside the audit's reach (issue 25).

A bulk import logs one event per batch with a Merkle root over the batch's version hashes.
Someone holding the database *and* the key can rewrite an imported record consistently — its
ciphertext re-sealed, its version hash recomputed, its head to match — so that every record
chain verifies. ``audit verify`` recomputes each batch's root from the rows that name the
batch, and so finds the rewrite, a removed imported record and one slipped into a batch."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text, update
from tests.conftest import World, drop_insert_only_triggers

from mamori.audit.verify import LogReport, verify_log
from mamori.clinical.models import AllergyIntolerance
from mamori.crypto.sealed import aad_for
from mamori.db import utcnow
from mamori.records.bulk import BulkWriter
from mamori.records.service import verify_all
from mamori.records.versioning import RecordVersion, version_hash

SUBSTANCES = ("卵", "小麦", "そば")


def _import(world: World, patient_id: str) -> None:
    director = world.actors["director"]
    at = utcnow() - dt.timedelta(days=30)
    with world.db.session(write=True) as s:
        writer = BulkWriter(s, director.clinic_id)
        for substance in SUBSTANCES:
            writer.add(
                AllergyIntolerance,
                {
                    "patient_id": uuid.UUID(patient_id),
                    "category": "food",
                    "substance": substance,
                    "substance_code": "",
                    "code_system": "",
                    "reaction": "蕁麻疹",
                    "severity": "moderate",
                    "is_contraindication": False,
                    "verification": "confirmed",
                    "onset_date": None,
                    "status": "active",
                },
                by=director.user_id,
                at=at,
            )
        writer.flush()
        s.commit()


def _verify(world: World) -> LogReport:
    with world.db.session(write=False) as s:
        return verify_log(s)


def _records_ok(world: World) -> bool:
    with world.db.session(write=True) as s:
        _, problems = verify_all(s)
        s.rollback()
    return not problems


def _rewrite_consistently(world: World, old: str, new: str) -> None:
    """The insider with the key: the version re-sealed with other content, its hash
    recomputed from the envelope, the head re-sealed to match."""
    keyring = world.db.keyring  # type: ignore[attr-defined]
    versions, heads = RecordVersion.__table__, AllergyIntolerance.__table__
    drop_insert_only_triggers(world.db.engine)
    with world.db.engine.begin() as conn:
        for table in (versions, heads):
            for row in conn.execute(select(table)).all():
                aad = aad_for(
                    RecordVersion if table is versions else AllergyIntolerance, row._mapping.get
                )
                plain = keyring.open(row.sealed, aad, "test")
                if old.encode() in plain:
                    forged = keyring.seal(plain.replace(old.encode(), new.encode()), aad)
                    conn.execute(update(table).where(table.c.id == row.id).values(sealed=forged))
    with world.db.session(write=False) as s:  # the envelope as mamori reads it now
        forged_versions = [
            (v.id, v.record_id, version_hash(v.envelope()))
            for v in s.scalars(
                select(RecordVersion).where(RecordVersion.record_type == "AllergyIntolerance")
            )
            if new in v.content
        ]
    assert forged_versions
    with world.db.engine.begin() as conn:
        for vid, rid, digest in forged_versions:
            conn.execute(update(versions).where(versions.c.id == vid).values(content_hash=digest))
            conn.execute(update(heads).where(heads.c.id == rid).values(content_hash=digest))


def test_an_import_is_checked_against_its_rows(world: World, patient: dict[str, Any]) -> None:
    _import(world, patient["id"])
    report = _verify(world)
    assert report.ok and report.imports_checked == 1 and report.imports_unchecked == 0


@pytest.mark.parametrize("attack", ["rewritten", "removed", "slipped-in"])
def test_a_changed_import_fails_the_audit_check(
    world: World, patient: dict[str, Any], attack: str
) -> None:
    _import(world, patient["id"])
    with world.db.session(write=False) as s:
        seq = s.execute(
            text("SELECT seq FROM audit_event WHERE tag = 'system:data:imported'")
        ).scalar_one()
    if attack == "rewritten":
        _rewrite_consistently(world, "そば", "えび")
        assert _records_ok(world)  # every record chain verifies: the rewrite is consistent
    elif attack == "removed":
        drop_insert_only_triggers(world.db.engine)
        with world.db.engine.begin() as conn:
            rid = conn.execute(
                text("SELECT record_id FROM record_version WHERE import_batch IS NOT NULL LIMIT 1")
            ).scalar_one()
            conn.execute(text("DELETE FROM record_version WHERE record_id = :r"), {"r": rid})
            conn.execute(text("DELETE FROM allergy_intolerance WHERE id = :r"), {"r": rid})
        assert _records_ok(world)
    else:
        # an allergy written through the API, then claimed to have been part of the import
        r = world.http.post(
            f"/api/v1/patients/{patient['id']}/allergies",
            json={"category": "food", "substance": "牛乳"},
            headers=world.h("dr_aiko"),
        )
        assert r.status_code == 201, r.text
        drop_insert_only_triggers(world.db.engine)
        with world.db.engine.begin() as conn:
            batch = conn.execute(
                text(
                    "SELECT import_batch FROM record_version WHERE import_batch IS NOT NULL LIMIT 1"
                )
            ).scalar_one()
            conn.execute(
                text("UPDATE record_version SET import_batch = :b WHERE import_batch IS NULL"),
                {"b": batch},
            )
    report = _verify(world)
    assert not report.ok
    assert [s for s, _ in report.problems] == [seq], report.problems
    assert "bulk import" in report.problems[0][1]
