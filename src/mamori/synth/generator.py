"""Deterministic synthetic clinic (``mamori demo`` and ``mamori synth``).

A day-by-day simulation of an internal-medicine clinic: chronic patients return every 4–8
weeks for Do処方 with labs every few months; acute episodes come 1–3 times; no visits on Sundays
or 祝日; Saturdays are half days; influenza in winter, pollen in spring. Same seed and end date →
same data. Every patient, note and document is marked synthetic (※合成データ).
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
import uuid
from collections.abc import Callable

import jpholiday
from sqlalchemy import update
from sqlalchemy.orm import Session

from mamori.clinic.calendar import JST
from mamori.clinic.models import Clinic
from mamori.clinical.models import (
    AllergyIntolerance,
    Condition,
    Encounter,
)
from mamori.detection.models import ContactLog
from mamori.detection.service import TOPICS
from mamori.documents.store import DocumentStore
from mamori.patients.insurance import with_check_digit
from mamori.patients.models import Coverage, Patient
from mamori.records.bulk import BulkWriter
from mamori.synth import vocab
from mamori.synth.entries import ClinicalEntries
from mamori.synth.population import SIZES, Addresses, PatientState, Size, Stats, ensure_staff
from mamori.synth.vocab import Dx

DEFAULT_END = dt.date(2026, 10, 30)


class Generator(ClinicalEntries):
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
        self.seed = seed
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
        self._contacts(open_days)
        self.bulk.flush()
        self.session.execute(
            update(Clinic)
            .where(Clinic.id == self.clinic.id)
            .values(next_patient_number=self.next_number)
        )
        stats.counts = dict(self.bulk.counts)
        stats.versions = self.bulk.version_count
        return stats

    def _contacts(self, open_days: list[dt.date]) -> None:
        """電話対応: calls, desk questions and messages logged in the last 60 open days, about
        one for every twentieth visit. Drawn from a stream of their own (and made last), so
        the rest of the clinic is the same as without them."""
        r = random.Random(f"contacts-{self.seed}")
        seen = [st for st in self.patients if st.visits]
        days = open_days[-60:]
        if not seen or not days:
            return
        notes = (
            "",
            "検査結果の問い合わせ。次回受診時に説明と伝えた。",
            "予約日の変更希望。",
            "薬の飲み方の確認。",
            "診断書の受け取り日の確認。",
            "家族からの問い合わせ。本人確認のうえ対応。",
        )
        for _ in range(max(5, len(days) * self.size.per_day // 20)):
            st = r.choice(seen)
            minute = r.randint(9 * 60, 17 * 60)
            at = dt.datetime.combine(
                r.choice(days), dt.time(minute // 60, minute % 60), tzinfo=JST
            ).astimezone(dt.UTC)
            self.bulk.add(
                ContactLog,
                {
                    "patient_id": st.row["id"],
                    "channel": r.choices(("phone", "desk", "message"), (7, 2, 1))[0],
                    "topic": r.choice(TOPICS),
                    "note": r.choice(notes),
                    "status": "final",
                },
                by=r.choice(self.staff.nurses),
                at=at,
            )

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
