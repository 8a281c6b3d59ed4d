"""A synthetic clinic's months, written through mamori's own services and audit trail, with
insider incidents injected and labelled apart (``../shared/reference/audit-and-anomaly.md``
Part 3).

The generator knows nothing of the detector: it does not import ``mamori.detection.engine``
and none of its thresholds. It writes what a clinic does — bookings by phone, chart prep,
check-in, intake, the doctor's review, results read days later, 会計, follow-up calls,
evening documentation, the monthly レセプト run, vendor maintenance windows — through the
same gate and record core the web and API edges use (``gate.patient_ref``, ``gate.listed``,
``write_version``, ``detection.service.log_contact``), one transaction per request, so the
audit events are exactly production's. A simulated clock stands in for the wall clock (the
trail and the version writer read it through ``utcnow``).

The hard negatives of §3.1 are in every run: mis-clicks on a same-surname patient, a
colleague covering a sick physician, staff who are real patients, parents of child patients,
on-call consults with a logged call, onboarding weeks, unlogged phone questions (30 %),
roster errors (2 % of shifts). Incidents S1–S12 (§3.2) start in week 9 at 1–2 a week; their
labels go to the ground truth only, never into the log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jpholiday

from mamori.audit import trail
from mamori.audit.trail import AuditTag, record
from mamori.auth.models import VendorWindow
from mamori.authz import gate
from mamori.authz.actor import Actor, Intent
from mamori.authz.roles import Role
from mamori.clinic import service as clinic_service
from mamori.clinic.calendar import JST
from mamori.clinical.models import Encounter, Observation, ProgressNote
from mamori.detection import service as detection
from mamori.errors import Forbidden, MamoriError
from mamori.patients.schemas import PatientIn
from mamori.patients.service import register_patient
from mamori.records import versioning
from mamori.records.versioning import ChangeKind, write_version
from mamori.synth import vocab

SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12")
IMMEDIATE = {"S7", "S12"}  # their target: detected within 15 minutes


@dataclass(frozen=True)
class Profile:
    physicians: int
    nurses: int
    reception: int
    techs: int
    managers: int
    patients: int
    visits: int  # a full day's visits

    @property
    def staff(self) -> int:
        return self.physicians + self.nurses + self.reception + self.techs + self.managers


PROFILES = {
    "S": Profile(1, 2, 2, 0, 0, 3000, 40),
    "M": Profile(3, 5, 5, 1, 1, 8000, 120),
    "L": Profile(5, 10, 10, 3, 2, 15000, 250),
}


@dataclass(frozen=True)
class Variant:
    """The research's stress variants (§3.3)."""

    name: str = "standard"
    misclick: float = 0.03
    roster_error: float = 0.02
    incidents_per_week: tuple[int, int] = (1, 2)  # drawn per week
    every_weeks: int = 1  # incidents only every n-th week (low base rate: 4)
    contaminated: bool = False  # an S6 or S4 snooper active from week 1


VARIANTS = {
    "standard": Variant(),
    "noisy": Variant("noisy", misclick=0.06, roster_error=0.05),
    "rare": Variant("rare", incidents_per_week=(1, 1), every_weeks=4),
    "contaminated": Variant("contaminated", contaminated=True),
}


@dataclass
class Person:
    key: str
    role: Role
    kind: str  # physician | nurse | reception | tech | manager | vendor
    user_id: uuid.UUID
    actor: Actor
    ws_ip: str
    ws_ua: str
    kana: str = ""
    household: int = -1  # the household they live in (their own, among the patients')
    self_patient: uuid.UUID | None = None
    family: list[uuid.UUID] = field(default_factory=list)
    joined_week: int = 0


@dataclass
class Incident:
    id: str
    scenario: str
    user: str  # the actor's user id (str)
    patients: list[str]
    first_seq: int = 0
    last_seq: int = 0
    first_at: str = ""
    user_level: bool = False  # a volume, export or account incident (no one patient)
    days: list[str] = field(default_factory=list)  # the days it happened on (JST)


@dataclass
class PatientRow:
    id: uuid.UUID
    family_kana: str
    given_kana: str
    birth: dt.date
    household: int
    chronic: bool
    child: bool


class Clock:
    """The simulated wall clock, read by the audit trail and the version writer."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        saved = trail.utcnow, versioning.utcnow
        trail.utcnow = self  # type: ignore[assignment]
        versioning.utcnow = self  # type: ignore[assignment]
        try:
            yield
        finally:
            trail.utcnow, versioning.utcnow = saved  # type: ignore[assignment]


def jst(day: dt.date, minute: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), JST).astimezone(dt.UTC) + dt.timedelta(
        minutes=minute
    )


class Clinic:
    """One run: a clinic's staff and patients, then its weeks day by day."""

    def __init__(
        self,
        instance: Any,
        profile: Profile,
        *,
        seed: int,
        weeks: int = 26,
        variant: Variant = VARIANTS["standard"],
        on_night: Callable[[dt.date, dt.datetime], None] | None = None,
        on_tick: Callable[[dt.datetime], None] | None = None,
    ) -> None:
        self.inst = instance
        self.db = instance.db
        self.profile = profile
        self.rng = random.Random(seed)
        self.weeks = weeks
        self.variant = variant
        self.clock = Clock()
        self.start = dt.date(2026, 1, 5)  # a Monday
        self.on_night = on_night
        self.on_tick = on_tick
        self.people: list[Person] = []
        self.patients: list[PatientRow] = []
        self.by_surname: dict[str, list[PatientRow]] = {}
        self.incidents: list[Incident] = []
        self.bookings: dict[uuid.UUID, list[tuple[dt.date, uuid.UUID]]] = {}
        self.visits_by_day: dict[dt.date, list[tuple[PatientRow, Person]]] = {}
        self.leave: set[tuple[str, dt.date]] = set()
        self.absent: set[tuple[str, dt.date]] = set()  # roster errors: rostered, not there
        self.extra: set[tuple[str, dt.date]] = set()  # roster errors: there, not rostered
        self.oncall: dict[dt.date, Person] = {}
        self.pending: list[tuple[dt.datetime, int, Callable[[], None]]] = []
        self.counter = 0
        self.reads = 0
        self.incident_reads = 0
        self.director: Actor | None = None
        self.open_incident: Incident | None = None
        self.vendor_windows: list[tuple[dt.datetime, dt.datetime]] = []

    # --- requests --------------------------------------------------------------------------

    def request(self, at: dt.datetime, person: Person, fn: Callable[[Any, Actor], Any]) -> Any:
        """One request at ``at``: its own transaction, as the web edge runs it."""
        week = (at.astimezone(JST).date() - self.start).days // 7
        if person.joined_week > week and self.open_incident is None:
            return None  # not yet hired, or gone: work planned for them does not happen
        self.clock.now = at
        with self.db.session(write=True) as s:
            try:
                out = fn(s, person.actor)
            except Forbidden as exc:
                s.rollback()
                record(
                    s,
                    person.actor,
                    AuditTag.ACCESS_DENIED,
                    patients=[],
                    detail={"route": getattr(fn, "route", "GET /patients"), "permission": exc.en},
                    outcome="failure",
                )
                out = None
            s.commit()
        if self.open_incident is not None:
            with self.db.session(write=False) as s:
                seq = detection.log_size(s)
            inc = self.open_incident
            inc.first_seq = inc.first_seq or seq
            inc.last_seq = seq
            inc.first_at = inc.first_at or at.isoformat()
            day = at.astimezone(JST).date().isoformat()
            if day not in inc.days:
                inc.days.append(day)
            self.incident_reads += 1
        return out

    def read(self, at: dt.datetime, person: Person, pid: uuid.UUID, what: str = "chart") -> None:
        self.reads += 1

        def fn(s: Any, actor: Actor) -> None:
            gate.patient_ref(s, actor, pid, Intent.READ, what)

        fn.route = f"GET /patients/{pid}/{what}"  # type: ignore[attr-defined]
        self.request(at, person, fn)

    def search(self, at: dt.datetime, person: Person, shown: list[uuid.UUID]) -> None:
        self.request(at, person, lambda s, a: gate.listed(s, a, "Patient:search", shown))

    def login(
        self, at: dt.datetime, person: Person, *, ip: str | None = None, ua: str | None = None
    ) -> None:
        actor = person.actor
        sid = uuid.UUID(int=self.rng.getrandbits(128))
        person.actor = Actor(
            user_id=actor.user_id,
            clinic_id=actor.clinic_id,
            role=actor.role,
            display_name=actor.display_name,
            channel="web",
            auth_method="totp",
            source_ip=ip or person.ws_ip,
            user_agent=ua or person.ws_ua,
            session_id=sid,
            permissions=actor.permissions,
        )
        self.request(at, person, lambda s, a: record(s, a, AuditTag.LOGIN_SUCCEEDED, detail={}))

    def write(self, at: dt.datetime, person: Person, pid: uuid.UUID, kind: str) -> None:
        def fn(s: Any, actor: Actor) -> None:
            gate.patient_ref(s, actor, pid, Intent.WRITE, kind)
            if kind == "Observation":
                row: Any = Observation(
                    patient_id=pid, encounter_id=None, category="vital-signs", code="BT",
                    code_system="", name="体温", value="36.5", unit="℃", effective_at=at,
                    status="final",
                )  # fmt: skip
            elif kind == "ProgressNote":
                row = ProgressNote(
                    patient_id=pid, encounter_id=None, kind="soap", subjective="※合成データ",
                    author_id=actor.user_id, entered_by_id=actor.user_id, status="draft",
                )  # fmt: skip
            else:
                row = Encounter(
                    patient_id=pid, visit_date=at.astimezone(JST).date(), visit_type="return",
                    department="内科", attending_id=None, coverage_id=None, status="finished",
                    arrived_at=at, started_at=None, ended_at=None,
                )  # fmt: skip
            write_version(s, actor, row, ChangeKind.CREATED)

        self.request(at, person, fn)

    def contact(self, at: dt.datetime, person: Person, pid: uuid.UUID) -> None:
        self.request(
            at,
            person,
            lambda s, a: detection.log_contact(s, a, pid, channel="phone", topic="予約"),
        )

    def book(
        self, at: dt.datetime, person: Person, pid: uuid.UUID, day: dt.date, doc: Person
    ) -> None:
        def fn(s: Any, actor: Actor) -> None:
            gate.patient_ref(s, actor, pid, Intent.WRITE, "Encounter")
            enc = Encounter(
                patient_id=pid, visit_date=day, visit_type="return", department="内科",
                attending_id=doc.user_id, coverage_id=None, status="planned", arrived_at=None,
                started_at=None, ended_at=None, scheduled_at=jst(day, 9 * 60), purpose="定期受診",
            )  # fmt: skip
            write_version(s, actor, enc, ChangeKind.CREATED)

        self.request(at, person, fn)
        self.bookings.setdefault(pid, []).append((day, doc.user_id))

    def visit(self, at: dt.datetime, clerk: Person, pid: uuid.UUID, doc: Person) -> None:
        """受付: today's visit with its attending physician (a finished encounter)."""

        def fn(s: Any, actor: Actor) -> None:
            gate.patient_ref(s, actor, pid, Intent.WRITE, "Encounter")
            enc = Encounter(
                patient_id=pid, visit_date=at.astimezone(JST).date(), visit_type="return",
                department="内科", attending_id=doc.user_id, coverage_id=None,
                status="finished", arrived_at=at, started_at=None, ended_at=None,
            )  # fmt: skip
            write_version(s, actor, enc, ChangeKind.CREATED)

        self.request(at, clerk, fn)

    # --- set-up ---------------------------------------------------------------------------

    def setup(self) -> None:
        p = self.profile
        with self.db.session(write=True) as s:
            clinic = clinic_service.the_clinic(s)
            director_user = clinic_service.find_staff(s, clinic.id, "admin")
            assert director_user is not None
            self.director = clinic_service.actor_for(director_user, "cli")
            plan = (
                [("physician", Role.PHYSICIAN)] * p.physicians
                + [("nurse", Role.NURSE)] * p.nurses
                + [("reception", Role.RECEPTION)] * p.reception
                + [("tech", Role.NURSE)] * p.techs  # 検査技師: a clinical reader
                + [("manager", Role.RECEPTION)] * p.managers  # 事務長
                + [("vendor", Role.VENDOR)]
            )
            for i, (kind, role) in enumerate(plan):
                if i == 0:
                    user = director_user  # the 院長 is the first physician
                else:
                    surname = self.rng.choice(vocab.SURNAMES)
                    given = self.rng.choice(vocab.FEMALE_NAMES + vocab.MALE_NAMES)
                    user = clinic_service.add_staff(
                        s, clinic, login_id=f"{kind}{i}", display_name=f"{surname[0]} {given[0]}",
                        role=role,
                    )  # fmt: skip
                actor = clinic_service.actor_for(user, "web")
                self.people.append(
                    Person(
                        key=user.login_id,
                        role=Role(user.role),
                        kind=kind,
                        user_id=user.id,
                        actor=actor,
                        ws_ip=f"10.0.0.{10 + i}",
                        ws_ua=f"ws-{i}",
                    )
                )
            s.commit()
        self._register_patients()
        self._staff_households()
        # one new hire in the tenth week (M and L): onboarding without a baseline
        if p.staff >= 10:
            self.people[-2].joined_week = 9

    def _register_patients(self) -> None:
        rng, n = self.rng, self.profile.patients
        household = 0
        made = 0
        assert self.director is not None
        with self.db.session(write=True) as s:
            while made < n:
                surname = rng.choice(vocab.SURNAMES)
                size = rng.choice((1, 1, 2, 2, 3, 4))
                town = rng.choice(("本郷", "湯島", "根津", "千駄木", "向丘", "弥生"))
                address = (
                    f"{town}{rng.randint(1, 6)}丁目{rng.randint(1, 30)}番{rng.randint(1, 20)}号"
                )
                phone = f"03-{rng.randint(3000, 5999)}-{rng.randint(0, 9999):04d}"
                for k in range(size):
                    child = k >= 2
                    male = rng.random() < 0.5
                    given = rng.choice(vocab.MALE_NAMES if male else vocab.FEMALE_NAMES)
                    age = rng.randint(2, 14) if child else rng.randint(20, 90)
                    birth = dt.date(2026 - age, rng.randint(1, 12), rng.randint(1, 28))
                    data = PatientIn(
                        family_name=surname[0], given_name=given[0], family_kana=surname[1],
                        given_kana=given[1], birth_date=birth, sex="male" if male else "female",
                        postal_code="113-0033", prefecture="東京都", city="文京区",
                        address_line=address, phone=phone,
                    )  # fmt: skip
                    try:
                        pt = register_patient(s, self.director, data)
                    except MamoriError:
                        continue
                    row = PatientRow(
                        pt.id, surname[1], given[1], birth, household,
                        chronic=rng.random() < 0.3, child=child,
                    )  # fmt: skip
                    self.patients.append(row)
                    self.by_surname.setdefault(surname[1], []).append(row)
                    made += 1
                household += 1
            s.commit()

    def _staff_households(self) -> None:
        """About half the staff are registered patients, some with family; the director keeps
        the links and each one's household facts (with the notice given)."""
        rng = self.rng
        by_household: dict[int, list[PatientRow]] = {}
        for row in self.patients:
            by_household.setdefault(row.household, []).append(row)
        homes = [rows for rows in by_household.values() if len(rows) >= 2 and not rows[0].child]
        rng.shuffle(homes)
        assert self.director is not None
        with self.db.session(write=True) as s:
            for person in self.people:
                if person.kind == "vendor":
                    continue
                if rng.random() < 0.5 and homes:
                    rows = homes.pop()
                    person.self_patient = rows[0].id
                    person.family = [r.id for r in rows[1:]]
                    person.household = rows[0].household
                    person.kana = rows[0].family_kana
                    detection.link_patient(s, self.director, person.user_id, rows[0].id, "self")
                    for r in rows[1:]:
                        detection.link_patient(s, self.director, person.user_id, r.id, "family")
                    phone_addr = self._household_contact(s, rows[0].id)
                else:
                    person.kana = rng.choice(vocab.SURNAMES)[1]
                    phone_addr = ("", f"西片{rng.randint(1, 3)}-{rng.randint(1, 20)}")
                detection.set_profile(
                    s, self.director, person.user_id, family_kana=person.kana, postal_code="",
                    address=phone_addr[1], phone=phone_addr[0], notice_given=True,
                )  # fmt: skip
            s.commit()

    def _household_contact(self, s: Any, pid: uuid.UUID) -> tuple[str, str]:
        from mamori.patients.models import Patient

        pt = s.get(Patient, pid)
        trail.record(
            s, self.director, AuditTag.RECORD_VIEWED, patients=[pid], detail={"what": "Patient"}
        )
        return pt.phone, f"{pt.prefecture}{pt.city}{pt.address_line}"

    # --- the days -------------------------------------------------------------------------

    def staff_of(self, *kinds: str, day: dt.date | None = None) -> list[Person]:
        out = [p for p in self.people if p.kind in kinds]
        if day is not None:
            week = (day - self.start).days // 7
            out = [p for p in out if p.joined_week <= week and self.at_work(p, day)]
        return out

    def at_work(self, p: Person, day: dt.date) -> bool:
        if (p.key, day) in self.absent or (p.key, day) in self.leave:
            return False
        if (p.key, day) in self.extra:
            return True
        return is_open(day)

    def roster_week(self, monday: dt.date) -> None:
        """The director's roster for the week: leave days and on-call, with roster errors."""
        rng = self.rng
        assert self.director is not None
        with self.db.session(write=True) as s:
            for p in self.people:
                if p.kind == "vendor":
                    continue
                for i in range(6):
                    day = monday + dt.timedelta(days=i)
                    if not is_open(day):
                        continue
                    others = [
                        q for q in self.people
                        if q.kind == p.kind and q is not p and (q.key, day) not in self.leave
                    ]  # fmt: skip
                    # about a day of leave a month, when a colleague of the same kind is in
                    if rng.random() < 0.05 and others:
                        self.leave.add((p.key, day))
                        detection.set_roster_day(s, self.director, p.user_id, day, "leave")
                    elif rng.random() < self.variant.roster_error:
                        # the roster says one thing, the day another
                        if rng.random() < 0.5:
                            detection.set_roster_day(s, self.director, p.user_id, day, "off")
                        else:
                            self.absent.add((p.key, day))
                # Sundays: one physician on call (phone consults at night)
                sunday = monday + dt.timedelta(days=6)
            docs = self.staff_of("physician")
            for i in range(7):
                day = monday + dt.timedelta(days=i)
                doc = docs[(day.toordinal()) % len(docs)]
                self.oncall[day] = doc
                if not is_open(day):
                    detection.set_roster_day(
                        s, self.director, doc.user_id, day, "oncall", "0:00", "23:59"
                    )
            _ = sunday
            s.commit()

    def run(self) -> None:
        self.setup()
        with self.clock.installed():
            self._chronic_bookings()
            if self.variant.contaminated:
                self._inject(self.rng.choice(("S4", "S6")), week=0)
            for week in range(self.weeks):
                monday = self.start + dt.timedelta(days=7 * week)
                self.roster_week(monday)
                if week >= 8 and week % self.variant.every_weeks == 0:
                    lo, hi = self.variant.incidents_per_week
                    for _ in range(self.rng.randint(lo, hi)):
                        self._inject(self.rng.choice(SCENARIOS), week)
                for i in range(7):
                    self.day(monday + dt.timedelta(days=i))

    def _chronic_bookings(self) -> None:
        """Chronic patients come every 2–4 weeks, booked ahead."""
        self.due: dict[dt.date, list[PatientRow]] = {}
        for row in self.patients:
            if row.chronic:
                first = self.start + dt.timedelta(days=self.rng.randint(0, 27))
                self.due.setdefault(first, []).append(row)

    def schedule(self, at: dt.datetime, fn: Callable[[], None]) -> None:
        self.counter += 1
        self.pending.append((at, self.counter, fn))

    def day(self, day: dt.date) -> None:
        rng = self.rng
        if is_open(day):
            self._clinic_day(day)
        else:
            doc = self.oncall.get(day)
            if doc is not None and rng.random() < 0.3:  # an on-call consult at night
                pt = rng.choice(self.patients)
                at = jst(day, rng.randint(19 * 60, 23 * 60))
                self.schedule(
                    at,
                    lambda: (
                        self.contact(at, doc, pt.id),
                        self.read(at + dt.timedelta(minutes=1), doc, pt.id),
                    ),
                )
        self._flush_until(jst(day + dt.timedelta(days=1), 2 * 60))
        if self.on_night is not None:
            self.on_night(day, jst(day + dt.timedelta(days=1), 2 * 60))

    def _flush_until(self, until: dt.datetime) -> None:
        self.pending.sort(key=lambda x: (x[0], x[1]))
        quarter = None
        while self.pending and self.pending[0][0] < until:
            at, _n, fn = self.pending.pop(0)
            q = at.replace(minute=at.minute - at.minute % 5, second=0, microsecond=0)
            if quarter is not None and q != quarter and self.on_tick is not None:
                self.on_tick(q)
            quarter = q
            fn()
        if quarter is not None and self.on_tick is not None:
            self.on_tick(quarter + dt.timedelta(minutes=5))

    def _clinic_day(self, day: dt.date) -> None:
        rng = self.rng
        half = day.weekday() in (3, 5)
        close = 13 * 60 if half else 18 * 60
        week = (day - self.start).days // 7

        def employed(*kinds: str) -> list[Person]:
            # the fallback when nobody of a kind is rostered: someone still on the staff, never
            # a leaver (a leaver's requests do nothing, so the day's visits would be in this
            # generator's own list of who came but not in the record — and next month's
            # レセプト would read patients the clinic never saw)
            return [p for p in self.staff_of(*kinds) if p.joined_week <= week]

        docs = self.staff_of("physician", day=day) or employed("physician")
        nurses = self.staff_of("nurse", "tech", day=day) or employed("nurse")
        clerks = (
            self.staff_of("reception", "manager", day=day)
            or employed("reception", "manager")
            or employed("nurse")  # every clerk gone: a nurse takes the desk
        )
        for p in self.people:
            if p.kind != "vendor" and p.joined_week <= week and self.at_work(p, day):
                self.schedule(
                    jst(day, 8 * 60 + rng.randint(15, 40)),
                    lambda p=p: self.login(jst(day, 8 * 60 + 30), p),
                )
        # who comes today: the booked chronic patients and walk-ins
        want = self.profile.visits // (2 if half else 1)
        coming = list(self.due.pop(day, []))
        while len(coming) < want:
            coming.append(rng.choice(self.patients))
        for row in coming[: want + 10]:
            start = rng.randint(9 * 60, close - 30)
            doc = next(
                (d for d in docs if self._booked_with(row.id, day) == d.user_id), None
            ) or rng.choice(docs)
            self._one_visit(day, start, row, doc, rng.choice(nurses), rng.choice(clerks), docs)
            if row.chronic:
                nxt = day + dt.timedelta(days=rng.choice((14, 21, 28)))
                self.due.setdefault(nxt, []).append(row)
                clerk = rng.choice(clerks)
                at = jst(day, rng.randint(9 * 60, close))
                self.schedule(
                    at,
                    lambda c=clerk, r=row, n=nxt, d=doc, at=at: self._phone_booking(at, c, r, n, d),
                )
        # phone and desk questions: 70 % logged as 電話対応, 30 % not
        recent = [r for d in list(self.visits_by_day)[-60:] for r, _ in self.visits_by_day[d]]
        for _ in range(max(2, want // 12)):
            clerk = rng.choice(clerks)
            # who calls: mostly the clinic's current patients, now and then an old one
            row = (
                rng.choice(recent) if recent and rng.random() < 0.85 else rng.choice(self.patients)
            )
            at = jst(day, rng.randint(9 * 60, close))
            logged = rng.random() < 0.7
            self.schedule(at, lambda c=clerk, r=row, at=at, lg=logged: self._question(at, c, r, lg))
        # レセプト: days 1–10, the desk goes through last month's patients
        if day.day <= 10:
            seen = [
                r
                for d, v in self.visits_by_day.items()
                if (d.month, d.year) == _last_month(day)
                for r, _ in v
            ]
            share = seen[(day.day - 1) :: 10]
            for row in share:
                clerk = rng.choice(clerks)
                at = jst(day, rng.randint(9 * 60, close))
                self.schedule(
                    at,
                    lambda c=clerk, r=row, at=at: (
                        self.read(at, c, r.id, "Condition"),
                        self.read(at + dt.timedelta(seconds=40), c, r.id, "MedicationRequest"),
                    ),
                )
        # the vendor's monthly maintenance window (first Wednesday)
        if day.weekday() == 2 and day.day <= 7:
            self._maintenance(day)

    def _booked_with(self, pid: uuid.UUID, day: dt.date) -> uuid.UUID | None:
        for d, doc in self.bookings.get(pid, ()):
            if d == day:
                return doc
        return None

    def _phone_booking(
        self, at: dt.datetime, clerk: Person, row: PatientRow, day: dt.date, doc: Person
    ) -> None:
        same = [r.id for r in self.by_surname.get(row.family_kana, [row])][:8]
        self.search(at, clerk, same)
        self._maybe_misclick(at, clerk, row)
        self.read(at + dt.timedelta(seconds=20), clerk, row.id, "Patient")
        self.book(at + dt.timedelta(seconds=60), clerk, row.id, day, doc)

    def _maybe_misclick(self, at: dt.datetime, clerk: Person, row: PatientRow) -> None:
        if self.rng.random() < self.variant.misclick:
            others = [r for r in self.by_surname.get(row.family_kana, []) if r.id != row.id]
            if others:
                self.read(
                    at + dt.timedelta(seconds=10), clerk, self.rng.choice(others).id, "Patient"
                )

    def _question(self, at: dt.datetime, clerk: Person, row: PatientRow, logged: bool) -> None:
        self.search(at, clerk, [r.id for r in self.by_surname.get(row.family_kana, [row])][:8])
        self._maybe_misclick(at, clerk, row)
        if logged:
            self.contact(at + dt.timedelta(seconds=30), clerk, row.id)
        self.read(at + dt.timedelta(seconds=40), clerk, row.id, "Patient")

    def _one_visit(
        self, day: dt.date, start: int, row: PatientRow, doc: Person, nurse: Person,
        clerk: Person, docs: list[Person],
    ) -> None:  # fmt: skip
        rng = self.rng
        self.visits_by_day.setdefault(day, []).append((row, doc))
        t = jst(day, start)
        if rng.random() < 0.5:  # chart prep the day before (or that morning)
            prep = (
                jst(day - dt.timedelta(days=1), rng.randint(15 * 60, 17 * 60))
                if is_open(day - dt.timedelta(days=1))
                else jst(day, 8 * 60 + 40)
            )
            self.schedule(prep, lambda: self.read(prep, nurse, row.id))
        self.schedule(
            t,
            lambda: (
                self.read(t, clerk, row.id, "Patient"),
                self.visit(t + dt.timedelta(seconds=30), clerk, row.id, doc),
            ),
        )
        t2 = t + dt.timedelta(minutes=rng.randint(5, 25))
        self.schedule(
            t2,
            lambda: (
                self.read(t2, nurse, row.id),
                self.write(t2 + dt.timedelta(minutes=2), nurse, row.id, "Observation"),
            ),
        )
        t3 = t2 + dt.timedelta(minutes=rng.randint(5, 40))
        evening = rng.random() < 0.2

        def doctor() -> None:
            self.read(t3, doc, row.id)
            self.read(t3 + dt.timedelta(seconds=30), doc, row.id, "Observation")
            self.read(t3 + dt.timedelta(seconds=60), doc, row.id, "ProgressNote")
            if not evening:
                self.write(t3 + dt.timedelta(minutes=5), doc, row.id, "ProgressNote")

        self.schedule(t3, doctor)
        if evening:  # notes finished after hours, sometimes from home
            te = jst(day, rng.randint(18 * 60 + 30, 21 * 60 + 30))
            home = rng.random() < 0.3

            def late() -> None:
                if home:
                    self.login(
                        te - dt.timedelta(minutes=2),
                        doc,
                        ip=f"203.0.113.{20 + docs.index(doc) if doc in docs else 20}",
                        ua=f"home-{doc.key}",
                    )
                self.read(te, doc, row.id)
                self.write(te + dt.timedelta(minutes=4), doc, row.id, "ProgressNote")

            self.schedule(te, late)
        t4 = t3 + dt.timedelta(minutes=rng.randint(10, 30))
        checkout = rng.choice([clerk] + (self.staff_of("reception", day=day) or [clerk]))
        self.schedule(
            t4,
            lambda: (
                self.read(t4, checkout, row.id, "Patient"),
                self.read(t4 + dt.timedelta(seconds=20), checkout, row.id, "Coverage"),
            ),
        )
        if rng.random() < 0.3:  # results a few days later, read by the ordering physician
            later = day + dt.timedelta(days=rng.randint(3, 7))
            tl = jst(later, rng.randint(9 * 60, 17 * 60))
            self.schedule(
                tl,
                lambda: (
                    self.read(tl, doc, row.id, "Observation") if self.at_work(doc, later) else None
                ),
            )
        if rng.random() < 0.05:  # a follow-up call by the nurse
            later = day + dt.timedelta(days=rng.randint(2, 5))
            tc = jst(later, rng.randint(9 * 60, 17 * 60))
            self.schedule(
                tc,
                lambda: (
                    (
                        self.contact(tc, nurse, row.id),
                        self.read(tc + dt.timedelta(seconds=40), nurse, row.id),
                    )
                    if self.at_work(nurse, later)
                    else None
                ),
            )

    def _maintenance(self, day: dt.date) -> None:
        vendor = next(p for p in self.people if p.kind == "vendor")
        starts = jst(day, 13 * 60 + 30)
        ends = starts + dt.timedelta(hours=2)
        with self.db.session(write=True) as s:
            s.add(
                VendorWindow(
                    clinic_id=vendor.actor.clinic_id,
                    vendor_user_id=vendor.user_id,
                    opened_by=self.people[0].user_id,
                    ticket="T-月次",
                    reason="定期保守",
                    starts_at=starts,
                    ends_at=ends,
                )
            )
            s.commit()
        self.vendor_windows.append((starts, ends))
        from mamori.authz.permissions import VENDOR_WINDOW_PERMISSIONS

        inside = dict(vars(vendor.actor))
        inside["permissions"] = VENDOR_WINDOW_PERMISSIONS
        vendor.actor = Actor(**inside)
        for k in range(self.rng.randint(2, 5)):
            at = starts + dt.timedelta(minutes=10 + 15 * k)
            row = self.rng.choice(self.patients)
            self.schedule(at, lambda at=at, row=row: self.read(at, vendor, row.id, "Patient"))

    # --- incidents --------------------------------------------------------------------------

    def _inject(self, scenario: str, week: int) -> None:
        """Plan one incident of ``scenario`` starting in ``week`` (its events are scheduled;
        the ground truth gets its id, actor and targets)."""
        rng = self.rng
        monday = self.start + dt.timedelta(days=7 * week)
        inc_id = f"{scenario}-{len(self.incidents) + 1}"
        workers = [p for p in self.people if p.kind != "vendor" and p.joined_week <= week]

        def open_day(offset_from: dt.date, within: int = 6) -> dt.date:
            for _ in range(20):
                d = offset_from + dt.timedelta(days=rng.randint(0, within))
                if is_open(d):
                    return d
            return offset_from

        def shift_time(d: dt.date) -> dt.datetime:
            return jst(d, rng.randint(9 * 60, 16 * 60))

        def wrap(inc: Incident, fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                self.open_incident = inc
                try:
                    fn()
                finally:
                    self.open_incident = None

            return run

        def add(actor: Person, patients: list[uuid.UUID], user_level: bool = False) -> Incident:
            inc = Incident(
                inc_id,
                scenario,
                str(actor.user_id),
                [str(p) for p in patients],
                user_level=user_level,
            )
            self.incidents.append(inc)
            return inc

        def no_visit_soon(row: PatientRow) -> bool:
            return not row.chronic

        if scenario == "S1":
            actor = rng.choice(workers)
            targets = [p for p in self.people if p is not actor and (p.self_patient or p.family)]
            if not targets:
                return
            other = rng.choice(targets)
            pid = other.self_patient or rng.choice(other.family)
            inc = add(actor, [pid])
            d = open_day(monday)
            for _k in range(rng.randint(1, 4)):
                at = (
                    shift_time(d + dt.timedelta(days=rng.randint(0, 1)))
                    if is_open(d + dt.timedelta(days=1))
                    else shift_time(d)
                )
                what = (
                    "Patient"
                    if actor.kind in ("reception", "manager")
                    else rng.choice(("chart", "Observation", "Condition"))
                )
                self.schedule(at, wrap(inc, lambda at=at, w=what: self.read(at, actor, pid, w)))
        elif scenario == "S2":
            cands = [p for p in workers if p.family]
            if not cands:
                return
            actor = rng.choice(cands)
            pid = rng.choice(actor.family)
            inc = add(actor, [pid])
            for _k in range(rng.randint(1, 6)):
                d = open_day(monday + dt.timedelta(days=rng.randint(0, 7 * rng.randint(2, 8))), 3)
                what = "Patient" if actor.kind in ("reception", "manager") else "chart"
                at = shift_time(d)
                self.schedule(at, wrap(inc, lambda at=at, w=what: self.read(at, actor, pid, w)))
        elif scenario == "S3":
            k = max(2, round(len(workers) * rng.uniform(0.2, 0.6)))
            row = rng.choice(self.patients)
            d = open_day(monday)
            treating = rng.choice(self.staff_of("physician"))
            self._one_visit(
                d,
                10 * 60,
                row,
                treating,
                rng.choice(self.staff_of("nurse")),
                rng.choice(self.staff_of("reception")),
                self.staff_of("physician"),
            )
            crowd = [p for p in workers if p is not treating]
            rng.shuffle(crowd)
            for actor in crowd[:k]:
                inc = add(actor, [row.id])
                inc.id = f"{inc_id}"
                at = jst(d, 11 * 60) + dt.timedelta(minutes=rng.randint(0, 72 * 60 - 11 * 60 - 120))
                if not self.at_work(actor, at.astimezone(JST).date()):
                    at = shift_time(open_day(d, 2))
                what = "Patient" if actor.kind in ("reception", "manager") else "chart"
                self.schedule(
                    at, wrap(inc, lambda at=at, a=actor, w=what: self.read(at, a, row.id, w))
                )
        elif scenario == "S4":
            actor = rng.choice([p for p in workers if p.kind != "physician"] or workers)
            row = rng.choice([r for r in self.patients if not r.child])
            inc = add(actor, [row.id])
            end = self.start + dt.timedelta(days=7 * self.weeks)
            d = monday + dt.timedelta(days=rng.randint(0, 4))
            span = dt.timedelta(days=rng.randint(60, 180))
            last = min(end, d + span)
            nxt_booking = d + dt.timedelta(days=rng.randint(14, 28))
            while d < last:
                if is_open(nxt_booking):
                    doc = rng.choice(self.staff_of("physician"))
                    bday = nxt_booking
                    clerk = rng.choice(self.staff_of("reception"))
                    bt = jst(bday - dt.timedelta(days=10), 10 * 60)
                    self.schedule(
                        bt, lambda c=clerk, b=bday, dd=doc, bt=bt: self.book(bt, c, row.id, b, dd)
                    )
                    self.due.setdefault(bday, []).append(row)
                if rng.random() < 0.5 and nxt_booking - d <= dt.timedelta(days=4):
                    day = nxt_booking - dt.timedelta(days=rng.choice((1, 2)))
                else:
                    day = d
                if is_open(day):
                    at = shift_time(day)
                    views = ["Patient", "Encounter"] + (
                        ["chart"] if actor.kind != "reception" and rng.random() < 0.5 else []
                    )
                    for j, w in enumerate(views[: rng.randint(1, 3)]):
                        t = at + dt.timedelta(seconds=30 * j)
                        self.schedule(t, wrap(inc, lambda t=t, w=w: self.read(t, actor, row.id, w)))
                d += dt.timedelta(days=rng.randint(3, 14))
                if d > nxt_booking:
                    nxt_booking = d + dt.timedelta(days=rng.randint(14, 35))
        elif scenario == "S5":
            actor = rng.choice(
                [p for p in workers if p.kind in ("reception", "tech", "manager")] or workers
            )
            pool = (
                [p.self_patient for p in self.people if p.self_patient]
                if rng.random() < 0.3
                else []
            )
            pool = pool or [r.id for r in rng.sample(self.patients, rng.randint(10, 40))]
            inc = add(actor, pool)
            d = monday
            end = self.start + dt.timedelta(days=7 * self.weeks)
            for pid in pool:
                d = d + dt.timedelta(days=rng.randint(2, 6))
                if d >= end:
                    break
                if is_open(d):
                    at = shift_time(d)
                    self.schedule(
                        at, wrap(inc, lambda at=at, pid=pid: self.read(at, actor, pid, "Patient"))
                    )
        elif scenario == "S6":
            actor = rng.choice([p for p in workers if p.kind in ("nurse", "reception")] or workers)
            end = self.start + dt.timedelta(days=7 * self.weeks)
            last = min(end, monday + dt.timedelta(days=rng.randint(30, 180)))
            pool = [r.id for r in rng.sample(self.patients, min(len(self.patients), 1500))]
            inc = add(actor, pool, user_level=True)
            d, n, k = monday, 0, 5
            while d < last and n < len(pool):
                if is_open(d):
                    for _j in range(min(30, k)):
                        if n >= len(pool):
                            break
                        at = shift_time(d)
                        what = "Patient" if actor.kind == "reception" else "chart"
                        self.schedule(
                            at,
                            wrap(
                                inc, lambda at=at, pid=pool[n], w=what: self.read(at, actor, pid, w)
                            ),
                        )
                        n += 1
                    k = min(30, k + 1)
                d += dt.timedelta(days=1)
        elif scenario == "S7":
            exporter = self.people[0]
            actor = (
                exporter if rng.random() < 0.5 else rng.choice(self.staff_of("physician", "nurse"))
            )
            d = open_day(monday)
            at = jst(d, rng.randint(19 * 60, 22 * 60)) if rng.random() < 0.5 else shift_time(d)
            if actor is exporter:
                pids = [r.id for r in rng.sample(self.patients, rng.randint(100, 400))]
                inc = add(actor, pids, user_level=True)
                self.schedule(
                    at,
                    wrap(
                        inc,
                        lambda: self.request(
                            at,
                            actor,
                            lambda s, a: record(
                                s,
                                a,
                                AuditTag.DATA_EXPORTED,
                                patients=pids,
                                detail={"what": "fhir:bulk", "chunk": 0},
                            ),
                        ),
                    ),
                )
            else:
                pids = [r.id for r in rng.sample(self.patients, 30)]
                inc = add(actor, pids, user_level=True)
                for j, pid in enumerate(pids):
                    t = at + dt.timedelta(seconds=20 * j)
                    self.schedule(t, wrap(inc, lambda t=t, pid=pid: self._print(t, actor, pid)))
        elif scenario == "S8":
            actor = rng.choice(workers)
            d = monday + dt.timedelta(days=rng.randint(0, 6))
            night = rng.random() < 0.5 or is_open(d)
            pids = [r.id for r in rng.sample(self.patients, rng.randint(1, 10))]
            inc = add(actor, pids)
            at = (
                jst(d, rng.randint(22 * 60, 23 * 60 + 30))
                if night
                else jst(d, rng.randint(10 * 60, 16 * 60))
            )
            if is_open(d) and not night:  # on a day of leave the roster shows
                self.leave.add((actor.key, d))
                assert self.director is not None
                with self.db.session(write=True) as s:
                    detection.set_roster_day(s, self.director, actor.user_id, d, "leave")
                    s.commit()
            ip, ua = f"198.51.100.{rng.randint(2, 200)}", f"home-{actor.key}"
            self.schedule(
                at - dt.timedelta(minutes=1),
                wrap(inc, lambda: self.login(at - dt.timedelta(minutes=1), actor, ip=ip, ua=ua)),
            )
            for j, pid in enumerate(pids):
                t = at + dt.timedelta(minutes=2 * j)
                self.schedule(t, wrap(inc, lambda t=t, pid=pid: self.read(t, actor, pid)))
        elif scenario == "S9":
            victim = rng.choice(workers)
            d = open_day(monday)
            ghost = Person(
                key=victim.key, role=victim.role, kind=victim.kind, user_id=victim.user_id,
                actor=victim.actor, ws_ip=f"192.0.2.{rng.randint(2, 200)}", ws_ua="attacker",
            )  # fmt: skip
            pids = [r.id for r in rng.sample(self.patients, rng.randint(3, 12))]
            inc = add(victim, pids, user_level=True)
            at = shift_time(d)
            typical = rng.random() < 0.5
            what = (
                ("Patient" if victim.kind == "reception" else "chart")
                if typical
                else "ProgressNote"
            )

            def attack() -> None:
                self.login(at, ghost)
                for j, pid in enumerate(pids):
                    t = at + dt.timedelta(minutes=1 + j)
                    self.read(t, ghost, pid, what)
                    if j % 2 == 0:  # the real user is at work meanwhile, on their own session
                        self.read(
                            t + dt.timedelta(seconds=20),
                            victim,
                            rng.choice(self.patients).id,
                            "Patient",
                        )

            self.schedule(at, wrap(inc, attack))
        elif scenario == "S10":
            actor = rng.choice(self.staff_of("reception") or workers)
            d = open_day(monday + dt.timedelta(days=0))
            if d.day <= 10:
                d = open_day(d + dt.timedelta(days=11 - d.day))
            pids = [r.id for r in rng.sample(self.patients, rng.randint(3, 20))]
            inc = add(actor, pids)
            at = shift_time(d)
            for j, pid in enumerate(pids):
                t = at + dt.timedelta(minutes=3 * j)
                w = rng.choice(("Condition", "MedicationRequest", "ProgressNote", "Observation"))
                self.schedule(t, wrap(inc, lambda t=t, pid=pid, w=w: self.read(t, actor, pid, w)))
        elif scenario == "S11":
            actor = rng.choice(workers)
            surname = rng.choice([k for k, v in self.by_surname.items() if len(v) >= 3])
            rows = self.by_surname[surname]
            opened = rng.sample(rows, min(len(rows), rng.randint(2, 6)))
            inc = add(actor, [r.id for r in opened])
            d = open_day(monday)
            at = shift_time(d)
            # a partial name: the list shows the same-name patients, those opened among them
            shown = [r.id for r in opened] + [r.id for r in rows if r not in opened][:6]
            for j in range(rng.randint(3, 10)):
                t = at + dt.timedelta(minutes=j)
                self.schedule(t, wrap(inc, lambda t=t: self.search(t, actor, shown)))
            for j, r in enumerate(opened):
                t = at + dt.timedelta(minutes=11 + j)
                self.schedule(t, wrap(inc, lambda t=t, r=r: self.read(t, actor, r.id, "Patient")))
        elif scenario == "S12":
            d = open_day(monday)
            pids = [r.id for r in rng.sample(self.patients, rng.randint(1, 6))]
            if rng.random() < 0.5:
                actor = next(p for p in self.people if p.kind == "vendor")
                at = jst(d, rng.randint(19 * 60, 22 * 60))
            else:
                actor = rng.choice([p for p in workers if p is not self.people[0]])
                at = jst(d, rng.randint(9 * 60, 20 * 60))
                left = monday  # left at the start of this week; the account was not closed
                assert self.director is not None
                with self.db.session(write=True) as s:
                    prof = detection.profile_of(s, self.director, actor.user_id)
                    kana = prof.family_kana if prof else ""
                    detection.set_profile(
                        s, self.director, actor.user_id, family_kana=kana,
                        postal_code="", address=prof.address if prof else "",
                        phone=prof.phone if prof else "", notice_given=True, left_on=left,
                    )  # fmt: skip
                    s.commit()
                actor.joined_week = 10**6  # gone: does no more ordinary work
            inc = add(actor, pids, user_level=True)
            self.schedule(
                at, wrap(inc, lambda: self.login(at, actor, ip="198.51.100.7", ua="old-pc"))
            )
            for j, pid in enumerate(pids):
                t = at + dt.timedelta(minutes=1 + j)
                self.schedule(t, wrap(inc, lambda t=t, pid=pid: self._vendor_read(t, actor, pid)))

    def _vendor_read(self, at: dt.datetime, person: Person, pid: uuid.UUID) -> None:
        """A read as the account stands: a vendor outside its window reads as if let in (the
        sign-in refusal is what production does; the benchmark checks detection of the
        attempt to read nonetheless)."""
        if person.kind == "vendor":
            from mamori.authz.permissions import VENDOR_WINDOW_PERMISSIONS

            inside = dict(vars(person.actor))
            inside["permissions"] = VENDOR_WINDOW_PERMISSIONS
            person.actor = Actor(**inside)
        self.read(at, person, pid, "Patient")

    def _print(self, at: dt.datetime, person: Person, pid: uuid.UUID) -> None:
        def fn(s: Any, actor: Actor) -> None:
            gate.patient_ref(s, actor, pid, Intent.READ, "chart")
            record(
                s, actor, AuditTag.CHART_PRINTED, patients=[pid], detail={"what": "chart-summary"}
            )

        self.request(at, person, fn)


def is_open(day: dt.date) -> bool:
    return day.weekday() != 6 and not jpholiday.is_holiday(day)


def _last_month(day: dt.date) -> tuple[int, int]:
    first = day.replace(day=1) - dt.timedelta(days=1)
    return first.month, first.year
