"""The detector's logic: explain each access from the clinic's own data, score what stays
unexplained with named rules, and group the hits into cases. Pure functions over what
``detection.service`` loads (the log's events and a :class:`World`), so the same log and the
same settings always give the same cases, and the benchmark runs exactly this code.

Order (``../shared/reference/audit-and-anomaly.md`` §2.3): explanations first (E0–E7), then
the relationship flags (R1–R6) and behaviour (B1–B8) on what is left. An explained access
raises nothing, except a bulk export or an account that should not be working at all (B2, B8),
which are checked on every event.
"""

from __future__ import annotations

import datetime as dt
import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mamori.clinic.calendar import JST
from mamori.patients.kana import search_key

# what an access reached: the patient's own details (demographics, contact) or clinical data
DEMOGRAPHIC = frozenset(
    {"Patient", "patient", "Coverage", "Encounter", "ContactLog", "fhir:Patient", "fhir:Coverage"}
)
CLINICAL_LABELS = {
    "chart": "カルテ",
    "ProgressNote": "経過記録",
    "Observation": "検査結果",
    "Condition": "病名",
    "MedicationRequest": "処方",
    "AllergyIntolerance": "アレルギー",
    "Document": "文書",
}
# reads that are the oversight itself (the audit review, this queue, a record's verification)
OVERSIGHT = frozenset({"audit-review", "detection-review", "verify"})
READ_TAGS = frozenset({"patient:chart:viewed", "patient:record:viewed", "access:restricted:opened"})
PRINT_TAGS = frozenset({"patient:chart:printed", "patient:prescription:printed"})
EXPORT_TAG = "patient:data:exported"
SEARCH_TAG = "patient:list:viewed"
LOGIN_TAG = "auth:login:succeeded"
DENIED_TAG = "access:permission:denied"
BREAK_GLASS_TAG = "access:break-glass:granted"

# Thresholds: named, so the benchmark's report and the docs can cite them.
CASE_SCORE = 3  # a user–patient pair is a case from this score
NO_VISIT_DAYS = 180  # R5: no visit this long before (and none booked within 30 days after)
CARE_DAYS = 365  # E5: the physician who saw the patient within a year
RECEIPT_DAYS = 10  # E3: レセプト work, days 1–10 of the month, on last month's visits
VOLUME_FLOOR = 4  # B1: unexplained distinct patients in one day, at least
VOLUME_MADS = 4  # B1: above the median by this many median absolute deviations
HARVEST_DAYS = 60  # B6: window for demographics-only unexplained patients
HARVEST_FLOOR = 6
DORMANT_DAYS = 90  # B6 counts patients with no visit this long before (nor booked soon)
FOLD_PAIRS = 3  # a user's lesser pair hits in one pass from this many: one case, not many
STRONG_PAIR_RULES = frozenset({"R1", "R2", "R3", "B4", "B5"})  # always a case of their own
REPEAT_DAYS = 90  # B5: the same unexplained patient on this many distinct days…
REPEAT_TIMES = 3  # …this often
CROWD_HOURS = 72  # B4: distinct unexplained users on one patient within…
CROWD_USERS = 4  # a visit's own prep nurse and 会計 clerk are two…
SMALL_CROWD = 3  # …and in a clinic of fewer than ten people, fewer;
SMALL_CLINIC = 10
LARGE_CROWD = 5  # in one of 25 or more, more
LARGE_CLINIC = 25
BROWSE_MINUTES = 30  # B3: searches then unexplained opens of several patients
BROWSE_SEARCHES = 3
EXPORT_PATIENTS = 100  # B2: one export of this many patients, or…
PRINT_BURST = 20  # …this many prints or PDFs within
PRINT_MINUTES = 15
NIGHT = (22, 6)  # B7: 22:00–06:00 JST
POINTS = {
    "R1": 3,  # another staff member or their family, as a patient
    "R2": 3,  # the user's own household
    "R3": 3,  # restricted: VIP or staff
    "R4": 2,  # sensitive category
    "R5": 1,  # no visit for half a year, none booked
    "R6": 3,  # data the role does not work with, or refused again and again
    "B1": 4,
    "B2": 5,
    "B3": 3,
    "B4": 3,
    "B5": 3,
    "B6": 3,
    "B7": 3,
    "B8": 5,
    "clinical": 1,  # clinical data read (not only the desk's demographics)
}
IMMEDIATE_RULES = frozenset({"B2", "B8"})
DAILY_RULES = frozenset({"R1", "R2", "R3", "B1", "B4", "B5", "B6"})

RULE_JA = {
    "R1": "職員・職員家族のカルテ",
    "R2": "同一世帯の患者",
    "R3": "閲覧制限（VIP・職員）の患者",
    "R4": "配慮を要する記録",
    "R5": "長期間受診のない患者",
    "R6": "職種の業務にない記録",
    "B1": "閲覧件数が通常より多い",
    "B2": "大量の書き出し・印刷",
    "B3": "氏名検索を繰り返した後の閲覧",
    "B4": "同じ患者に複数の職員が集中",
    "B5": "同じ患者を繰り返し閲覧",
    "B6": "連絡先だけを多数閲覧",
    "B7": "勤務時間外・休日の閲覧",
    "B8": "アカウントの不正使用の疑い",
}


@dataclass(frozen=True)
class Event:
    """One audit event as the detector reads it."""

    seq: int
    at: dt.datetime
    tag: str
    user: uuid.UUID | None
    role: str
    patients: tuple[uuid.UUID, ...]
    what: str = ""
    session: str | None = None
    ip: str | None = None
    ua: str | None = None
    outcome: str = "success"
    record_type: str = ""  # a write's record type
    exported: int = 0  # an export's patient count


@dataclass
class Staff:
    role: str
    name: str
    active: bool = True
    disabled_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    family_kana: str = ""
    address: str = ""  # normalised
    phone: str = ""  # digits only
    integration: bool = False
    left_on: dt.date | None = None  # 退職日: the account should not work from this day


@dataclass
class Shift:
    kind: str  # work | off | leave | oncall
    start: int | None = None  # minutes from 00:00 JST
    end: int | None = None


@dataclass
class PatientFacts:
    """What the pass knows of a patient it has to judge (household facts opened only for the
    patients of unexplained accesses)."""

    restricted_staff: bool = False
    vip: bool = False
    sensitive: bool = False
    deceased: bool = False
    family_kana: str = ""
    address: str = ""
    phone: str = ""


@dataclass
class World:
    """Everything outside the log that explains or flags an access."""

    staff: dict[uuid.UUID, Staff]
    # patient → [(visit day, attending, planned)]
    visits: dict[uuid.UUID, list[tuple[dt.date, uuid.UUID | None, bool]]]
    links: dict[uuid.UUID, list[tuple[uuid.UUID, str]]]  # patient → [(staff user, relation)]
    roster: dict[tuple[uuid.UUID, dt.date], Shift]
    vendor_windows: dict[uuid.UUID, list[tuple[dt.datetime, dt.datetime]]]
    suppressed: dict[tuple[uuid.UUID, uuid.UUID], dt.date]
    # the ledger before this pass: (user, patient) → unexplained days; patient → [(day, user)]
    prior_days: dict[tuple[uuid.UUID, uuid.UUID], set[dt.date]] = field(default_factory=dict)
    prior_by_patient: dict[uuid.UUID, list[tuple[dt.date, uuid.UUID]]] = field(default_factory=dict)
    # user → unexplained distinct patients per working day before this pass (B1 baseline)
    daily_counts: dict[uuid.UUID, list[int]] = field(default_factory=dict)
    # user → demographics-only unexplained patients in the harvest window before this pass
    prior_demographic: dict[uuid.UUID, set[uuid.UUID]] = field(default_factory=dict)
    known_devices: dict[uuid.UUID, set[str]] = field(default_factory=dict)
    facts: dict[uuid.UUID, PatientFacts] = field(default_factory=dict)


def jst_day(at: dt.datetime) -> dt.date:
    return at.astimezone(JST).date()


def default_shift(role: str, day: dt.date) -> Shift:
    """A day without a roster entry: the typical 診療所 week — Monday to Saturday 08:30–18:30,
    Thursday and Saturday afternoons off; Sundays and public holidays off. Physicians finish
    their notes in the evening, so their day runs to 22:00."""
    import jpholiday

    if day.weekday() == 6 or jpholiday.is_holiday(day):
        return Shift("off")
    end = 13 * 60 if day.weekday() in (3, 5) else 18 * 60 + 30
    if role in ("physician", "director"):
        end = 22 * 60
    return Shift("work", 8 * 60 + 30, end)


def shift_of(world: World, user: uuid.UUID, day: dt.date) -> Shift:
    found = world.roster.get((user, day))
    if found is not None:
        return found
    staff = world.staff.get(user)
    return default_shift(staff.role if staff else "", day)


WEAK = "E1w"  # on duty on the patient's visit day, nothing more
WORKED_PATIENTS = 3  # records for this many patients in a day: at work, whatever the roster
SLACK = 60  # minutes before and after a shift still counted as at work


def off_roster(world: World, user: uuid.UUID, at: dt.datetime) -> str | None:
    """Why this moment is outside the user's work ('leave', 'off', 'night', 'outside'), or
    None. On call counts as at work."""
    local = at.astimezone(JST)
    shift = shift_of(world, user, local.date())
    if shift.kind == "oncall":
        return None
    if shift.kind in ("leave", "off"):
        return shift.kind
    minute = local.hour * 60 + local.minute
    if shift.start is not None and shift.end is not None:
        if shift.start - SLACK <= minute <= shift.end + SLACK:
            return None
        return "night" if local.hour >= NIGHT[0] or local.hour < NIGHT[1] else "outside"
    return None


@dataclass
class Access:
    """One user's reads of one patient on one day, merged."""

    user: uuid.UUID
    patient: uuid.UUID
    day: dt.date
    first_seq: int
    last_seq: int
    first_at: dt.datetime
    last_at: dt.datetime
    opens: int = 0
    kinds: set[str] = field(default_factory=set)
    explained_by: str | None = None
    off: str | None = None  # off-roster reason at the first read
    dormant: bool = False  # no visit for three months before, none booked a month ahead


@dataclass
class Hit:
    user: uuid.UUID
    patient: uuid.UUID | None
    rules: set[str]
    first_seq: int
    last_seq: int
    first_at: dt.datetime
    last_at: dt.datetime
    facts: dict[str, object]

    @property
    def score(self) -> int:
        return sum(POINTS[r] for r in self.rules) + int(bool(self.facts.get("clinical")))

    @property
    def tier(self) -> str:
        if self.rules & IMMEDIATE_RULES:
            return "immediate"
        if self.rules & DAILY_RULES:
            return "daily"
        return "weekly"


@dataclass
class Outcome:
    accesses: list[Access]
    hits: list[Hit]
    reads: int  # read events considered
    explained_reads: int


def kind_of(ev: Event) -> str:
    if ev.tag == "access:restricted:opened":
        return "clinical" if ev.what == "break-glass" else "Patient"
    return ev.what or "chart"


def is_clinical(kind: str) -> bool:
    return kind not in DEMOGRAPHIC and not kind.startswith("Patient:")


# --- explanations -----------------------------------------------------------------------------


@dataclass
class Explainer:
    world: World
    writes: dict[tuple[uuid.UUID, uuid.UUID], list[dt.date]]
    contacts: dict[uuid.UUID, list[dt.date]]
    glass: dict[tuple[uuid.UUID, uuid.UUID], list[dt.date]]
    worked: dict[tuple[uuid.UUID, dt.date], set[uuid.UUID]]

    @classmethod
    def over(cls, world: World, events: Iterable[Event]) -> Explainer:
        writes: dict[tuple[uuid.UUID, uuid.UUID], list[dt.date]] = defaultdict(list)
        contacts: dict[uuid.UUID, list[dt.date]] = defaultdict(list)
        glass: dict[tuple[uuid.UUID, uuid.UUID], list[dt.date]] = defaultdict(list)
        for ev in events:
            if ev.user is None or not ev.patients:
                continue
            day = jst_day(ev.at)
            if ev.tag.startswith("record:"):
                for p in ev.patients:
                    writes[(ev.user, p)].append(day)
                    if ev.record_type == "ContactLog":
                        contacts[p].append(day)
            elif ev.tag == BREAK_GLASS_TAG:
                for p in ev.patients:
                    glass[(ev.user, p)].append(day)
        worked: dict[tuple[uuid.UUID, dt.date], set[uuid.UUID]] = defaultdict(set)
        for (user, patient), days in writes.items():
            for day in days:
                worked[(user, day)].add(patient)
        return cls(world, writes, contacts, glass, worked)

    def on_duty(self, user: uuid.UUID, day: dt.date) -> bool:
        """Rostered (or on call) that day — or evidently at work whatever the roster says:
        records written for several patients that day (a roster error is not an alarm)."""
        if shift_of(self.world, user, day).kind in ("work", "oncall"):
            return True
        return len(self.worked.get((user, day), ())) >= WORKED_PATIENTS

    def explain(self, a: Access, role: str) -> str | None:
        """The first explanation that holds, by name, or None."""
        if a.kinds <= OVERSIGHT:
            return "E8"  # the review itself: the audit trail and this queue, audited as such
        near = (a.day - dt.timedelta(days=1), a.day + dt.timedelta(days=1))
        if any(near[0] <= d <= near[1] for d in self.writes.get((a.user, a.patient), ())):
            return "E2"  # the user recorded something for this patient (intake, exam, 会計)
        if any(near[0] <= d <= near[1] for d in self.contacts.get(a.patient, ())):
            return "E4"  # a phone call or desk question about the patient was logged
        if a.day in self.glass.get((a.user, a.patient), ()):
            return "E6"  # break-the-glass with a reason (reviewed as its own alert)
        if role == "vendor":
            windows = self.world.vendor_windows.get(a.user, ())
            return "E7" if any(s <= a.first_at <= e for s, e in windows) else None
        visits = self.world.visits.get(a.patient, ())
        # at work that day and at that hour (a read at 23:00 is not the day's work)
        on_duty = self.on_duty(a.user, a.day) and a.off not in ("night", "outside")
        weak = False
        for day, attending, _planned in visits:
            if near[0] <= day <= near[1]:
                if attending == a.user:
                    return "E1"  # the attending physician of a visit or booking
                # someone on duty on a visit day (prep, check-in, 会計): explained, but weakly
                # — a crowd of such reads on one patient is still a crowd (B4) — unless a
                # stronger reason below holds as well (the desk's レセプト on a patient who
                # also comes today is レセプト work, not one more of a crowd)
                weak = weak or on_duty
        if role in ("physician", "director"):
            year = a.day - dt.timedelta(days=CARE_DAYS)
            if any(year <= day <= a.day and att == a.user for day, att, pl in visits if not pl):
                return "E5"  # the physician who has seen this patient within a year
        if role == "reception" and a.day.day <= RECEIPT_DAYS:
            first = a.day.replace(day=1)
            last_month = (first - dt.timedelta(days=1)).replace(day=1)
            if any(last_month <= day < first and not pl for day, _a, pl in visits):
                return "E3"  # レセプト: last month's visits, in the first days of the month
        return WEAK if weak else None


# --- the pass -----------------------------------------------------------------------------------


def household(staff: Staff, p: PatientFacts) -> bool:
    """R2: the same kana surname and the same address or phone. A surname alone never is."""
    if not staff.family_kana or search_key(staff.family_kana) != search_key(p.family_kana):
        return False
    return bool(staff.address and staff.address == p.address) or bool(
        staff.phone and staff.phone == p.phone
    )


def merge_accesses(world: World, events: Sequence[Event]) -> list[Access]:
    found: dict[tuple[uuid.UUID, uuid.UUID, dt.date], Access] = {}
    for ev in events:
        if ev.tag not in READ_TAGS or ev.user is None or ev.outcome != "success":
            continue
        day = jst_day(ev.at)
        for p in ev.patients:
            key = (ev.user, p, day)
            a = found.get(key)
            if a is None:
                a = found[key] = Access(
                    ev.user,
                    p,
                    day,
                    ev.seq,
                    ev.seq,
                    ev.at,
                    ev.at,
                    off=off_roster(world, ev.user, ev.at),
                )
            a.last_seq, a.last_at = ev.seq, ev.at
            a.opens += 1
            a.kinds.add(kind_of(ev))
    return list(found.values())


def _median_mad(values: Sequence[int]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    med = statistics.median(values)
    return med, statistics.median(abs(v - med) for v in values)


def volume_threshold(world: World, user: uuid.UUID) -> float:
    """B1: more unexplained patients in a day than the user's own robust baseline *or* their
    role's (so a snooper present from the first week does not make snooping their normal),
    and never fewer than the floor."""
    own = world.daily_counts.get(user, [])
    role = world.staff[user].role if user in world.staff else ""
    peers = [
        c
        for u, counts in world.daily_counts.items()
        if u != user and world.staff.get(u) is not None and world.staff[u].role == role
        for c in counts
    ]
    limits = []
    for values in (own, peers):
        if len(values) >= 10:
            med, mad = _median_mad(values)
            limits.append(med + VOLUME_MADS * max(mad, 1.0))
    return max(float(VOLUME_FLOOR), min(limits) if limits else 0.0)


def account_misuse(world: World, ev: Event) -> str | None:
    """B8, the immediate part: an account that should not be working at all."""
    if ev.user is None:
        return None
    staff = world.staff.get(ev.user)
    if staff is None:
        return None
    if staff.disabled_at is not None and ev.at >= staff.disabled_at:
        return "disabled"
    if staff.expires_at is not None and ev.at >= staff.expires_at:
        return "expired"
    if staff.left_on is not None and jst_day(ev.at) >= staff.left_on:
        return "left"
    windows = world.vendor_windows.get(ev.user, ())
    if staff.role == "vendor" and ev.patients and not any(s <= ev.at <= e for s, e in windows):
        return "vendor-outside-window"
    return None


def immediate(world: World, events: Sequence[Event]) -> list[Hit]:
    """B2 and the account part of B8, on every event (explained or not): the tier ``mamori
    serve`` runs every few minutes."""
    hits: list[Hit] = []
    prints: dict[uuid.UUID, list[Event]] = defaultdict(list)
    for ev in events:
        if ev.user is None:
            continue
        why = account_misuse(world, ev)
        if why and (ev.patients or ev.tag == LOGIN_TAG):
            hits.append(_hit(ev, None, {"B8"}, {"misuse": why, "opens": 1}))
        if (
            ev.tag == EXPORT_TAG
            and ev.exported >= EXPORT_PATIENTS
            and world.staff.get(ev.user, Staff("", "")).role not in ("system",)
        ):
            hits.append(_hit(ev, None, {"B2"}, {"exported": ev.exported}))
        if ev.tag in PRINT_TAGS or (ev.tag == EXPORT_TAG and ev.exported < EXPORT_PATIENTS):
            burst = prints[ev.user]
            burst.append(ev)
            while burst and (ev.at - burst[0].at) > dt.timedelta(minutes=PRINT_MINUTES):
                burst.pop(0)
            if len(burst) == PRINT_BURST:
                patients = {p for e in burst for p in e.patients}
                first = burst[0]
                h = _hit(ev, None, {"B2"}, {"printed": len(burst), "patients": len(patients)})
                h.first_seq, h.first_at = first.seq, first.at
                hits.append(h)
    return _merge_hits(hits)


def _hit(ev: Event, patient: uuid.UUID | None, rules: set[str], facts: dict[str, object]) -> Hit:
    assert ev.user is not None
    return Hit(ev.user, patient, set(rules), ev.seq, ev.seq, ev.at, ev.at, dict(facts))


def _merge_hits(hits: Iterable[Hit]) -> list[Hit]:
    """One hit per user and patient (and per user for the user-level rules)."""
    out: dict[tuple[uuid.UUID, uuid.UUID | None], Hit] = {}
    for h in hits:
        key = (h.user, h.patient)
        have = out.get(key)
        if have is None:
            out[key] = h
            continue
        have.rules |= h.rules
        have.first_seq, have.first_at = (
            min(have.first_seq, h.first_seq),
            min(have.first_at, h.first_at),
        )
        have.last_seq, have.last_at = max(have.last_seq, h.last_seq), max(have.last_at, h.last_at)
        for k, v in h.facts.items():
            if isinstance(v, int) and isinstance(have.facts.get(k), int):
                have.facts[k] = int(have.facts[k]) + v  # type: ignore[call-overload]
            else:
                have.facts.setdefault(k, v)
    return list(out.values())


def credential_hits(world: World, events: Sequence[Event]) -> list[Hit]:
    """B8, the nightly part: a sign-in on a leave day; two sessions of one account active from
    two addresses at once (a shared or stolen password); a sign-in from a device never seen
    for this account (reported with the others only: alone it is a new PC)."""
    hits: list[Hit] = []
    # user → the last (session, address, time) seen, and the one before a switch
    last: dict[uuid.UUID, tuple[str, str, dt.datetime]] = {}
    left: dict[uuid.UUID, tuple[str, str, dt.datetime]] = {}
    window = dt.timedelta(minutes=10)
    for ev in events:
        if ev.user is None or world.staff.get(ev.user) is None:
            continue
        if ev.tag == LOGIN_TAG:
            if shift_of(world, ev.user, jst_day(ev.at)).kind == "leave":
                hits.append(_hit(ev, None, {"B8"}, {"misuse": "leave-login", "opens": 0}))
            device = ev.ua or ""
            known = world.known_devices.setdefault(ev.user, set())
            if device and known and device not in known:
                hits.append(_hit(ev, None, set(), {"new_device": 1}))
            if device:
                known.add(device)
        if not (ev.session and ev.ip):
            continue
        now = (ev.session, ev.ip, ev.at)
        before = last.get(ev.user)
        if before is not None and before[0] != ev.session:
            back = left.get(ev.user)
            # A → B → A within minutes, from two addresses: both sessions in use at once
            if (
                back is not None
                and back[0] == ev.session
                and back[1] != before[1]
                and ev.at - back[2] <= window
                and ev.at - before[2] <= window
            ):
                hits.append(_hit(ev, None, {"B8"}, {"misuse": "concurrent", "opens": 0}))
            left[ev.user] = before
        last[ev.user] = now
    return [h for h in _merge_hits(hits) if h.rules]


def run(world: World, events: Sequence[Event], context: Sequence[Event] = ()) -> Outcome:
    """The nightly pass over ``events`` (``context``: the events around them, for the writes
    and calls that explain an access made before or after them)."""
    explainer = Explainer.over(world, [*context, *events])
    accesses = merge_accesses(world, events)
    reads = sum(a.opens for a in accesses)
    explained = 0
    hits: list[Hit] = []
    unexplained: list[Access] = []
    weak: list[Access] = []
    for a in accesses:
        staff = world.staff.get(a.user)
        role = staff.role if staff else ""
        a.explained_by = explainer.explain(a, role)
        if a.off in ("off", "leave") and explainer.on_duty(a.user, a.day):
            a.off = None  # evidently at work that day: a roster error, not an alarm
        if a.explained_by:
            explained += a.opens
            if a.explained_by == WEAK:
                weak.append(a)
        else:
            unexplained.append(a)

    per_user_day: dict[tuple[uuid.UUID, dt.date], list[Access]] = defaultdict(list)
    for a in unexplained:
        a.dormant = dormant(world, a.patient, a.day)
        per_user_day[(a.user, a.day)].append(a)
        hits.append(_score_pair(world, a))

    # a pattern is not cleared by a booking: repeated unexplained opens of one patient, now
    # again just before their appointment (the 四日市 technician), is still B5
    for a in weak:
        hit = _repeated(world, a)
        if hit is not None:
            hits.append(hit)
        own = _own_household(world, a)
        if own is not None:
            hits.append(own)

    hits += _volume(world, per_user_day)
    hits += _harvest(world, unexplained)
    hits += _crowd(world, hits, unexplained, weak)
    _browse(events, per_user_day, hits)
    hits += credential_hits(world, events)
    hits += immediate(world, events)
    hits += _attempts(events)

    kept = [
        h
        for h in _merge_hits(hits)
        if h.rules
        and (h.score >= CASE_SCORE or h.rules & IMMEDIATE_RULES)
        and not _suppressed(world, h)
    ]
    return Outcome(accesses, fold(kept), reads, explained)


def dormant(world: World, patient: uuid.UUID, day: dt.date) -> bool:
    """No visit in the last three months and none booked within a month: not in the clinic's
    care just now (whose contact details nobody at the desk has a reason to look up)."""
    since = day - dt.timedelta(days=DORMANT_DAYS)
    until = day + dt.timedelta(days=30)
    return not any(since <= d <= until for d, _a, _p in world.visits.get(patient, ()))


def fold(hits: list[Hit]) -> list[Hit]:
    """One user's lesser pair hits (no colleague, household, VIP, crowd or repetition) are one
    case when there are several, or when the user has a case of their own already in this
    pass: the reviewer reads one line about the person, not one per patient."""
    by_user: dict[uuid.UUID, list[Hit]] = defaultdict(list)
    for h in hits:
        by_user[h.user].append(h)
    out: list[Hit] = []
    for user, mine in by_user.items():
        lesser = [h for h in mine if h.patient is not None and not h.rules & STRONG_PAIR_RULES]
        own = [h for h in mine if h.patient is None]
        if len(lesser) < FOLD_PAIRS and not own:
            out += mine
            continue
        out += [h for h in mine if h not in lesser and h.patient is not None]
        merged = _merge_hits(own) if own else []
        head = merged[0] if merged else Hit(
            user, None, set(), lesser[0].first_seq, lesser[0].last_seq, lesser[0].first_at,
            lesser[0].last_at, {},
        )  # fmt: skip
        for h in lesser:
            head.rules |= h.rules
            head.first_seq, head.first_at = (
                min(head.first_seq, h.first_seq),
                min(head.first_at, h.first_at),
            )
            head.last_seq, head.last_at = (
                max(head.last_seq, h.last_seq),
                max(head.last_at, h.last_at),
            )
            head.facts["clinical"] = bool(head.facts.get("clinical")) or bool(
                h.facts.get("clinical")
            )
            if h.facts.get("off"):
                head.facts["off"] = h.facts["off"]
        if lesser:
            folded = head.facts.get("folded", 0)
            head.facts["folded"] = (folded if isinstance(folded, int) else 0) + len(lesser)
            kinds: set[str] = set()
            for h in (head, *lesser):
                listed = h.facts.get("kinds", [])
                kinds |= set(listed) if isinstance(listed, list) else set()
            head.facts["kinds"] = sorted(kinds)
        out.append(head)
    return out


def _span(
    user: uuid.UUID, items: Sequence[Access], rules: set[str], facts: dict[str, object]
) -> Hit:
    first = min(items, key=lambda x: x.first_seq)
    last = max(items, key=lambda x: x.last_seq)
    return Hit(
        user, None, rules, first.first_seq, last.last_seq, first.first_at, last.last_at, facts
    )


def _volume(world: World, per_user_day: dict[tuple[uuid.UUID, dt.date], list[Access]]) -> list[Hit]:
    """B1 per user and day."""
    out = []
    for (user, day), items in per_user_day.items():
        count = len({a.patient for a in items})
        if count > volume_threshold(world, user):
            out.append(_span(user, items, {"B1"}, {"patients": count, "day": day.isoformat()}))
    return out


def harvest_threshold(world: World, user: uuid.UUID) -> int:
    """B6: more demographics-only unexplained patients in the window than the floor and than
    twice what the user's peers in the same role reach."""
    role = world.staff[user].role if user in world.staff else ""
    peers = sorted(
        len(seen)
        for u, seen in world.prior_demographic.items()
        if u != user and u in world.staff and world.staff[u].role == role
    )
    typical = statistics.median(peers) if peers else 0
    return max(HARVEST_FLOOR, int(2 * typical) + 2)


def _harvest(world: World, unexplained: Sequence[Access]) -> list[Hit]:
    """B6 contact harvesting: the details only, never the care, of many patients the clinic is
    not treating just now (the desk's unlogged calls come from patients who are)."""
    demo: dict[uuid.UUID, list[Access]] = defaultdict(list)
    for a in unexplained:
        if a.dormant and not any(is_clinical(k) for k in a.kinds):
            demo[a.user].append(a)
    out = []
    for user, items in demo.items():
        staff = world.staff.get(user)
        if staff is None or staff.role in ("physician", "director"):
            continue
        seen = world.prior_demographic.get(user, set()) | {a.patient for a in items}
        if len(seen) >= harvest_threshold(world, user):
            out.append(_span(user, items, {"B6"}, {"patients": len(seen), "days": HARVEST_DAYS}))
    return out


def crowd_threshold(world: World) -> int:
    """How many non-treating people on one patient make a crowd: a visit's own prep nurse and
    会計 clerk are already two, and a bigger clinic has more hands per visit."""
    people = sum(1 for st in world.staff.values() if st.active and st.role != "vendor")
    if people < SMALL_CLINIC:
        return SMALL_CROWD
    return CROWD_USERS if people < LARGE_CLINIC else LARGE_CROWD


def _crowd(
    world: World, hits: list[Hit], unexplained: Sequence[Access], weak: Sequence[Access]
) -> list[Hit]:
    """B4: several staff on one patient within 72 hours who neither treat nor write for them
    (unexplained, or only on duty that day). The 島根 pattern; the queue offers restriction."""
    users: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for a in (*unexplained, *weak):
        users[a.patient].add(a.user)
    for a in (*unexplained, *weak):
        since = a.day - dt.timedelta(hours=CROWD_HOURS)
        for day, user in world.prior_by_patient.get(a.patient, ()):
            if since <= day <= a.day:
                users[a.patient].add(user)
    least = crowd_threshold(world)
    crowds = {p: u for p, u in users.items() if len(u) >= least}
    out = []
    for h in hits:
        if h.patient in crowds:
            h.rules.add("B4")
            h.facts["crowd"] = len(crowds[h.patient])
    for a in weak:
        if a.patient in crowds:
            out.append(
                Hit(
                    a.user,
                    a.patient,
                    {"B4"},
                    a.first_seq,
                    a.last_seq,
                    a.first_at,
                    a.last_at,
                    {
                        "opens": a.opens,
                        "kinds": sorted(a.kinds),
                        "crowd": len(crowds[a.patient]),
                        "clinical": any(is_clinical(k) for k in a.kinds),
                        "visit_day": True,
                    },
                )
            )
    return out


def _browse(
    events: Sequence[Event],
    per_user_day: dict[tuple[uuid.UUID, dt.date], list[Access]],
    hits: list[Hit],
) -> None:
    """B3 name browsing: several patient searches, then unexplained opens of two or more of
    the patients one search showed (same-name patients, none of them anybody's work). A desk
    that searches all day and opens the one patient it needs raises nothing."""
    searches: dict[uuid.UUID, list[Event]] = defaultdict(list)
    for ev in events:
        if ev.tag == SEARCH_TAG and ev.user is not None and ev.what == "Patient:search":
            searches[ev.user].append(ev)
    window = dt.timedelta(minutes=BROWSE_MINUTES)
    for (user, _day), items in per_user_day.items():
        found = searches.get(user, [])
        if len(found) < BROWSE_SEARCHES:
            continue
        browsed: set[uuid.UUID] = set()
        for s in found:
            opened = {
                a.patient
                for a in items
                if a.patient in s.patients and dt.timedelta(0) <= a.first_at - s.at <= window
            }
            near = sum(1 for t in found if abs(t.at - s.at) <= window)
            if len(opened) >= 2 and near >= BROWSE_SEARCHES:
                browsed |= opened
        for h in hits:
            if h.user == user and h.patient in browsed:
                h.rules.add("B3")
                h.facts["browsed"] = len(browsed)


def _attempts(events: Sequence[Event]) -> list[Hit]:
    """R6, attempts: refused again and again on patients' data the role may not see."""
    denied: dict[uuid.UUID, list[Event]] = defaultdict(list)
    for ev in events:
        if ev.tag == DENIED_TAG and ev.user is not None and ev.patients:
            denied[ev.user].append(ev)
    out = []
    for _user, evs in denied.items():
        if len({p for e in evs for p in e.patients}) >= 3:
            h = _hit(evs[0], None, {"R6"}, {"denied": len(evs)})
            h.last_seq, h.last_at = evs[-1].seq, evs[-1].at
            out.append(h)
    return out


def _suppressed(world: World, h: Hit) -> bool:
    if h.patient is None or h.rules & IMMEDIATE_RULES:
        return False
    until = world.suppressed.get((h.user, h.patient))
    return until is not None and jst_day(h.last_at) <= until


def _score_pair(world: World, a: Access) -> Hit:
    staff = world.staff.get(a.user) or Staff("", "")
    p = world.facts.get(a.patient, PatientFacts())
    rules: set[str] = set()
    facts: dict[str, object] = {
        "opens": a.opens,
        "kinds": sorted(a.kinds),
        "clinical": any(is_clinical(k) for k in a.kinds),
    }
    for user, relation in world.links.get(a.patient, ()):
        if user == a.user:
            rules.add("R2")
            facts["own"] = relation
        else:
            rules.add("R1")
            facts["staff_of"] = str(user)
            facts["staff_relation"] = relation
    if p.restricted_staff and "R1" not in rules and "R2" not in rules:
        rules.add("R1")
    if household(staff, p):
        rules.add("R2")
        facts["household"] = True
    if p.vip:
        rules.add("R3")
    if p.sensitive:
        rules.add("R4")
    visits = world.visits.get(a.patient, ())
    recent = a.day - dt.timedelta(days=NO_VISIT_DAYS)
    soon = a.day + dt.timedelta(days=30)
    if not any(recent <= day <= soon for day, _att, _pl in visits):
        rules.add("R5")
    if staff.role in ("reception", "vendor") and facts["clinical"]:
        rules.add("R6")
    if a.off:
        rules.add("B7")
        facts["off"] = a.off
    prior = _prior_days(world, a)
    facts["prior_days"] = prior
    if prior + 1 >= REPEAT_TIMES:
        rules.add("B5")
        if _booked_soon(world, a):
            facts["before_booking"] = True
    return Hit(a.user, a.patient, rules, a.first_seq, a.last_seq, a.first_at, a.last_at, facts)


def _prior_days(world: World, a: Access) -> int:
    """Days within REPEAT_DAYS before this one on which the user opened this patient
    without explanation."""
    prior = world.prior_days.get((a.user, a.patient), set())
    return len({d for d in prior if a.day - dt.timedelta(days=REPEAT_DAYS) <= d < a.day})


def _booked_soon(world: World, a: Access) -> bool:
    soon = a.day + dt.timedelta(days=2)
    return any(pl and a.day <= day <= soon for day, _att, pl in world.visits.get(a.patient, ()))


def _own_household(world: World, a: Access) -> Hit | None:
    """R2 for an access explained only by being on duty on the visit day: a staff member
    reading their own family's record around its visit, writing nothing for it, is still
    reading their family's record (a colleague's visit, in turn, is everyday work)."""
    staff = world.staff.get(a.user) or Staff("", "")
    own = [rel for user, rel in world.links.get(a.patient, ()) if user == a.user]
    if not own and not household(staff, world.facts.get(a.patient, PatientFacts())):
        return None
    facts: dict[str, object] = {
        "opens": a.opens,
        "kinds": sorted(a.kinds),
        "clinical": any(is_clinical(k) for k in a.kinds),
        "visit_day": True,
    }
    if own:
        facts["own"] = own[0]
    else:
        facts["household"] = True
    return Hit(a.user, a.patient, {"R2"}, a.first_seq, a.last_seq, a.first_at, a.last_at, facts)


def _repeated(world: World, a: Access) -> Hit | None:
    """B5 for an access explained only by being on duty on the patient's visit day."""
    prior = _prior_days(world, a)
    if prior + 1 < REPEAT_TIMES:
        return None
    facts: dict[str, object] = {
        "opens": a.opens,
        "kinds": sorted(a.kinds),
        "clinical": any(is_clinical(k) for k in a.kinds),
        "prior_days": prior,
        "visit_day": True,
    }
    if _booked_soon(world, a):
        facts["before_booking"] = True
    return Hit(a.user, a.patient, {"B5"}, a.first_seq, a.last_seq, a.first_at, a.last_at, facts)
