"""Detection as a service: the nightly and immediate passes over the audit log, the review
queue, the roster, the staff's household facts and the 電話対応 log.

The passes run as mamori itself (``record_system``): they read the log and the facts that
explain an access, open the household facts of the patients whose access stayed unexplained
(listed in the pass's own audit event), and write the ledger and the cases. The queue is read
and decided by the director and the security officer only (``detection:review``); reading it
is logged with the patients it showed, and every decision is recorded as a log review, the
checklist's evidence.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mamori.audit.models import AuditEvent, AuditHead, AuditReview
from mamori.audit.trail import AuditTag, record, record_system
from mamori.auth.models import SecurityAlert, VendorWindow
from mamori.authz.actor import Actor, Intent
from mamori.authz.models import PatientRestriction
from mamori.authz.permissions import Permission
from mamori.authz.roles import Role
from mamori.clinic.calendar import JST, clinic_today
from mamori.clinic.models import StaffUser
from mamori.clinical.models import Encounter
from mamori.db import new_id, utcnow
from mamori.detection import engine
from mamori.detection.engine import Event, PatientFacts, Shift, Staff, World
from mamori.detection.models import (
    ContactLog,
    DetectionAccess,
    DetectionCase,
    DetectionRun,
    StaffPatientLink,
    StaffProfile,
    StaffRoster,
)
from mamori.errors import Conflict, InvalidInput, NotFound
from mamori.patients.access import patient_for
from mamori.patients.kana import search_key, to_katakana
from mamori.patients.models import Patient
from mamori.patients.service import active_patient
from mamori.records.versioning import ChangeKind, write_version

FULL = ("nightly", "on-demand")  # the passes that read everything; "immediate" reads for B2/B8
MERGE_DAYS = 30  # a new hit joins an open case of the same user and patient this recent
FIRST_PASS = dt.timedelta(days=56)  # how far back the very first pass reads
LOOKBACK = dt.timedelta(days=1)  # writes and calls this long before the pass explain its reads
PREFETCH_DAYS = 90
_ROUTE_PATIENT = re.compile(r"/patients/([0-9a-f-]{36})")


# --- reading the log ------------------------------------------------------------------------


def _event(seq: int, at: dt.datetime, tag: str, raw: bytes, clinic: str) -> Event | None:
    body = json.loads(bytes(raw))
    who = body.get("actor") or {}
    if who.get("clinic") not in (None, clinic):
        return None
    user = who.get("user")
    detail = body.get("detail") or {}
    patients = tuple(uuid.UUID(p) for p in body.get("patients") or ())
    if tag == engine.DENIED_TAG and not patients:
        found = _ROUTE_PATIENT.search(str(detail.get("route", "")))
        if found:
            try:
                patients = (uuid.UUID(found.group(1)),)
            except ValueError:
                patients = ()
    records = body.get("records") or ()
    return Event(
        seq=seq,
        at=at,
        tag=tag,
        user=uuid.UUID(user) if user else None,
        role=str(who.get("role", "")),
        patients=patients,
        what=str(detail.get("what", "")),
        session=who.get("session"),
        ip=who.get("ip"),
        ua=who.get("ua"),
        outcome=str(body.get("outcome", "success")),
        record_type=str(records[0].get("type", "")) if records else "",
        exported=len(patients) if tag == engine.EXPORT_TAG else 0,
    )


def read_events(session: Session, clinic_id: uuid.UUID, after: int, through: int) -> list[Event]:
    """The clinic's events with ``after < seq <= through``, in order."""
    out: list[Event] = []
    clinic = str(clinic_id)
    stmt = (
        select(AuditEvent.seq, AuditEvent.recorded_at, AuditEvent.tag, AuditEvent.body)
        .where(AuditEvent.seq > after, AuditEvent.seq <= through)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=5000)
    )
    for seq, at, tag, raw in session.execute(stmt):
        if not (tag.startswith(("patient:", "record:", "access:", "auth:login"))):
            continue
        ev = _event(seq, at, tag, raw, clinic)
        if ev is not None:
            out.append(ev)
    return out


def log_size(session: Session) -> int:
    return int(session.scalar(select(AuditHead.size).where(AuditHead.id == 1)) or 0)


def seq_at(session: Session, when: dt.datetime) -> int:
    """The last event before ``when`` (the log's times rise with its sequence; a binary
    search on the primary key, since the time column has no index)."""
    lo, hi = 0, log_size(session)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        at = session.scalar(select(AuditEvent.recorded_at).where(AuditEvent.seq == mid))
        if at is not None and at < when:
            lo = mid
        else:
            hi = mid - 1
    return lo


# --- the world ------------------------------------------------------------------------------


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _address(value: str) -> str:
    import unicodedata

    return re.sub(r"[\s\-‐－ー−]", "", unicodedata.normalize("NFKC", value))


def load_world(
    session: Session,
    clinic_id: uuid.UUID,
    events: Sequence[Event],
    today: dt.date,
    *,
    accounts_only: bool = False,
) -> World:
    """What explains and flags the accesses in ``events``. ``accounts_only``: the staff and
    the maintenance windows, all the immediate tier reads (every few minutes)."""
    staff: dict[uuid.UUID, Staff] = {}
    for uid, role, name, active, disabled, expires, kind in session.execute(
        select(
            StaffUser.id,
            StaffUser.role,
            StaffUser.display_name,
            StaffUser.active,
            StaffUser.disabled_at,
            StaffUser.expires_at,
            StaffUser.kind,
        ).where(StaffUser.clinic_id == clinic_id)
    ):
        staff[uid] = Staff(
            role=str(role),
            name=name,
            active=active,
            disabled_at=disabled,
            expires_at=expires,
            integration=kind == "integration",
        )
    for uid, left in session.execute(
        select(StaffProfile.user_id, StaffProfile.left_on).where(
            StaffProfile.clinic_id == clinic_id, StaffProfile.left_on.is_not(None)
        )
    ):
        if uid in staff:
            staff[uid].left_on = left
    if not accounts_only:  # the household facts: opened for the nightly pass only
        for prof in session.scalars(
            select(StaffProfile).where(StaffProfile.clinic_id == clinic_id)
        ):
            if prof.user_id in staff:
                st = staff[prof.user_id]
                st.family_kana = prof.family_kana
                st.address = _address(prof.address)
                st.phone = _digits(prof.phone)
    windows: dict[uuid.UUID, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    for w in session.scalars(select(VendorWindow).where(VendorWindow.clinic_id == clinic_id)):
        windows[w.vendor_user_id].append((w.starts_at, w.closed_at or w.ends_at))
    if accounts_only:
        return World(staff, {}, {}, {}, windows, {})
    days = {engine.jst_day(e.at) for e in events} or {today}
    first, last = min(days), max(days)
    roster = {
        (r.user_id, r.day): Shift(r.kind, r.start_minute, r.end_minute)
        for r in session.scalars(
            select(StaffRoster).where(
                StaffRoster.clinic_id == clinic_id,
                StaffRoster.day >= first - dt.timedelta(days=1),
                StaffRoster.day <= last + dt.timedelta(days=1),
            )
        )
    }
    patients = {p for e in events for p in e.patients}
    visits: dict[uuid.UUID, list[tuple[dt.date, uuid.UUID | None, bool]]] = defaultdict(list)
    for chunk in _chunks(sorted(patients), 500):
        for pid, day, attending, status in session.execute(
            select(
                Encounter.patient_id, Encounter.visit_date, Encounter.attending_id, Encounter.status
            ).where(
                Encounter.patient_id.in_(chunk),
                Encounter.visit_date >= first - dt.timedelta(days=engine.CARE_DAYS),
                Encounter.status.not_in(("cancelled", "entered-in-error")),
            )
        ):
            visits[pid].append((day, attending, status == "planned"))
    links: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = defaultdict(list)
    for link in session.scalars(
        select(StaffPatientLink).where(StaffPatientLink.clinic_id == clinic_id)
    ):
        links[link.patient_id].append((link.user_id, link.relation))
    suppressed = {
        (c.user_id, c.patient_id): c.suppress_until
        for c in session.scalars(
            select(DetectionCase).where(
                DetectionCase.clinic_id == clinic_id,
                DetectionCase.status == "appropriate",
                DetectionCase.suppress_until >= first,
            )
        )
        if c.patient_id is not None and c.suppress_until is not None
    }
    world = World(staff, visits, links, roster, windows, suppressed)
    _load_ledger(session, clinic_id, world, first)
    return world


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _load_ledger(session: Session, clinic_id: uuid.UUID, world: World, first: dt.date) -> None:
    since = first - dt.timedelta(days=max(engine.REPEAT_DAYS, engine.HARVEST_DAYS, 56))
    counts: dict[tuple[uuid.UUID, dt.date], set[uuid.UUID]] = defaultdict(set)
    harvest_from = first - dt.timedelta(days=engine.HARVEST_DAYS)
    baseline_from = first - dt.timedelta(days=56)
    rows = session.execute(
        select(
            DetectionAccess.user_id,
            DetectionAccess.patient_id,
            DetectionAccess.day,
            DetectionAccess.weak,
            DetectionAccess.kinds,
            DetectionAccess.dormant,
        ).where(
            DetectionAccess.clinic_id == clinic_id,
            DetectionAccess.day >= since,
            DetectionAccess.day < first,
        )
    )
    for user, patient, day, weak, kinds, dormant in rows:
        world.prior_by_patient.setdefault(patient, []).append((day, user))
        if weak:
            continue
        world.prior_days.setdefault((user, patient), set()).add(day)
        if day >= baseline_from:
            counts[(user, day)].add(patient)
        if dormant and day >= harvest_from and not any(engine.is_clinical(k) for k in kinds):
            world.prior_demographic.setdefault(user, set()).add(patient)
    # the baseline counts every working day of the last eight weeks, the quiet ones as 0
    for user, staff in world.staff.items():
        values = []
        day = first - dt.timedelta(days=56)
        while day < first:
            if engine.shift_of(world, user, day).kind == "work":
                values.append(len(counts.get((user, day), ())))
            day += dt.timedelta(days=1)
        if values and staff.active:
            world.daily_counts[user] = values


def _patient_facts(
    session: Session, world: World, patients: Iterable[uuid.UUID]
) -> list[uuid.UUID]:
    """Restriction flags for these patients and, where some member of staff has household
    facts, the patient's kana surname, address and phone (opened, so listed in the event)."""
    wanted = sorted(set(patients))
    opened: list[uuid.UUID] = []
    for chunk in _chunks(wanted, 500):
        for r in session.scalars(
            select(PatientRestriction).where(PatientRestriction.patient_id.in_(chunk))
        ):
            f = world.facts.setdefault(r.patient_id, PatientFacts())
            f.restricted_staff, f.vip, f.sensitive = r.staff, r.vip, r.sensitive
    kana = {search_key(s.family_kana) for s in world.staff.values() if s.family_kana}
    if not kana:
        return opened
    for chunk in _chunks(wanted, 200):
        for p in session.scalars(select(Patient).where(Patient.id.in_(chunk))):
            if search_key(p.family_kana) not in kana:
                continue
            f = world.facts.setdefault(p.id, PatientFacts())
            f.family_kana = p.family_kana
            f.address = _address(f"{p.prefecture}{p.city}{p.address_line}")
            f.phone = _digits(p.phone)
            f.deceased = p.deceased_date is not None
            opened.append(p.id)
    return opened


# --- the passes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    tier: str
    from_seq: int
    through_seq: int
    accesses: int
    explained: int
    opened: int
    updated: int

    @property
    def share_explained(self) -> float:
        return self.explained / self.accesses if self.accesses else 1.0


def watermark(session: Session, clinic_id: uuid.UUID, tiers: Sequence[str]) -> int:
    return int(
        session.scalar(
            select(func.max(DetectionRun.through_seq)).where(
                DetectionRun.clinic_id == clinic_id, DetectionRun.tier.in_(tiers)
            )
        )
        or 0
    )


def run(
    session: Session,
    clinic_id: uuid.UUID,
    *,
    tier: str = "nightly",
    since: dt.date | None = None,
    through: int | None = None,
    channel: str = "cli",
) -> RunSummary:
    """One pass over the log since the last one of its kind (or from ``since``)."""
    family = ("immediate",) if tier == "immediate" else FULL
    end = log_size(session) if through is None else through
    if since is not None:
        start = seq_at(session, dt.datetime.combine(since, dt.time(), JST))
    else:
        start = watermark(session, clinic_id, family)
        if start == 0 and end > 0:
            # the first pass on a clinic's existing log reads its last eight weeks (the
            # baselines' window), not years: measured from the log's newest event
            newest = session.scalar(select(AuditEvent.recorded_at).where(AuditEvent.seq == end))
            if newest is not None:
                start = seq_at(session, newest - FIRST_PASS)
    events = read_events(session, clinic_id, start, end)
    today = clinic_today()
    world = load_world(session, clinic_id, events, today, accounts_only=tier == "immediate")
    if tier == "immediate":
        # a print burst may straddle two passes: the quarter of an hour before this pass's
        # first event is read again, and only hits that reach a new event are kept
        before: list[Event] = []
        if events:
            window = dt.timedelta(minutes=engine.PRINT_MINUTES)
            before = read_events(session, clinic_id, seq_at(session, events[0].at - window), start)
        hits = [h for h in engine.immediate(world, [*before, *events]) if h.last_seq > start]
        outcome = engine.Outcome([], hits, 0, 0)
        opened: list[uuid.UUID] = []
    else:
        first_at = events[0].at if events else utcnow()
        context = read_events(session, clinic_id, seq_at(session, first_at - LOOKBACK), start)
        unexplained_patients = {p for e in events for p in e.patients}
        opened = _patient_facts(session, world, unexplained_patients)
        outcome = engine.run(world, events, context)
        _store_ledger(session, clinic_id, outcome.accesses)
    new, changed = _store_cases(session, clinic_id, outcome.hits, tier)
    summary = RunSummary(
        tier, start, end, outcome.reads, outcome.explained_reads, len(new), changed
    )
    session.add(
        DetectionRun(
            clinic_id=clinic_id,
            tier=tier,
            from_seq=start,
            through_seq=end,
            accesses=summary.accesses,
            explained=summary.explained,
            cases_opened=summary.opened,
            cases_updated=summary.updated,
        )
    )
    for case in new:
        if case.tier == "immediate":
            session.add(
                SecurityAlert(
                    clinic_id=clinic_id,
                    kind="detection",
                    user_id=case.user_id,
                    ref_id=case.id,
                    summary=sentence(case, {}, {}, lang="ja")[:300],
                )
            )
    queue_detail = {
        "tier": tier,
        "from_seq": start,
        "through_seq": end,
        "accesses": summary.accesses,
        "explained": summary.explained,
        "cases_opened": summary.opened,
        "cases_updated": summary.updated,
        "household_checked": len(opened),
    }
    record_system(session, AuditTag.DETECTION_RUN, queue_detail, channel=channel)
    if opened:
        # the patients whose household facts the pass opened: in their access report too
        from mamori.audit.trail import QUEUE

        session.info[QUEUE][-1]["patients"] = sorted(str(p) for p in opened)
    session.flush()
    return summary


def _store_ledger(
    session: Session, clinic_id: uuid.UUID, accesses: Sequence[engine.Access]
) -> None:
    rows = [a for a in accesses if a.explained_by in (None, engine.WEAK)]
    if not rows:
        return
    existing = {
        (r.user_id, r.patient_id, r.day): r
        for chunk in _chunks(sorted({a.user for a in rows}), 200)
        for r in session.scalars(
            select(DetectionAccess).where(
                DetectionAccess.user_id.in_(chunk),
                DetectionAccess.day >= min(a.day for a in rows),
                DetectionAccess.day <= max(a.day for a in rows),
            )
        )
    }
    for a in rows:
        have = existing.get((a.user, a.patient, a.day))
        if have is None:
            session.add(
                DetectionAccess(
                    clinic_id=clinic_id,
                    user_id=a.user,
                    patient_id=a.patient,
                    day=a.day,
                    first_seq=a.first_seq,
                    last_seq=a.last_seq,
                    opens=a.opens,
                    kinds=sorted(a.kinds),
                    weak=a.explained_by == engine.WEAK,
                    dormant=a.dormant,
                )
            )
        else:
            have.last_seq = max(have.last_seq, a.last_seq)
            have.opens += a.opens
            have.kinds = sorted(set(have.kinds) | a.kinds)
            have.weak = have.weak and a.explained_by == engine.WEAK


TIER_ORDER = {"weekly": 0, "daily": 1, "immediate": 2}


def _store_cases(
    session: Session, clinic_id: uuid.UUID, hits: Sequence[engine.Hit], tier: str
) -> tuple[list[DetectionCase], int]:
    new: list[DetectionCase] = []
    changed = 0
    for h in hits:
        recent = h.first_at - dt.timedelta(days=MERGE_DAYS)
        stmt = select(DetectionCase).where(
            DetectionCase.clinic_id == clinic_id,
            DetectionCase.user_id == h.user,
            DetectionCase.status == "open",
            DetectionCase.last_at >= recent,
        )
        stmt = stmt.where(
            DetectionCase.patient_id.is_(None)
            if h.patient is None
            else DetectionCase.patient_id == h.patient
        )
        have = None
        for c in session.scalars(stmt.order_by(DetectionCase.last_at.desc())):
            if h.patient is not None or set(c.rules) & h.rules:
                have = c
                break
        if have is not None:
            if h.last_seq <= have.last_seq and set(h.rules) <= set(have.rules):
                continue  # the same events seen again (an on-demand pass over old days)
            have.rules = sorted(set(have.rules) | h.rules)
            facts = dict(have.facts)
            for k, v in h.facts.items():
                if k == "opens" and isinstance(v, int):
                    facts[k] = int(facts.get(k, 0)) + v
                elif k == "kinds" and isinstance(v, list):
                    facts[k] = sorted(set(facts.get(k, [])) | set(v))
                else:
                    facts[k] = v
            facts["days"] = int(facts.get("days", 1)) + (
                engine.jst_day(h.first_at) != engine.jst_day(have.last_at)
            )
            have.facts = facts
            have.score = max(have.score, h.score)
            have.last_seq, have.last_at = (
                max(have.last_seq, h.last_seq),
                max(have.last_at, h.last_at),
            )
            if TIER_ORDER[h.tier] > TIER_ORDER[have.tier]:
                have.tier = h.tier
            changed += 1
            continue
        case = DetectionCase(
            clinic_id=clinic_id,
            user_id=h.user,
            patient_id=h.patient,
            tier=h.tier,
            score=h.score,
            rules=sorted(h.rules),
            facts={**h.facts, "days": 1},
            first_seq=h.first_seq,
            last_seq=h.last_seq,
            first_at=h.first_at,
            last_at=h.last_at,
            status="open",
        )
        session.add(case)
        session.flush()
        new.append(case)
    return new, changed


def run_due(database: Any, *, tier: str) -> list[RunSummary]:
    """The server's passes (``mamori serve``): the immediate tier every few minutes, the full
    pass once a night. A read-only copy detects nothing (its reads reach the main log)."""
    from mamori.clinic.models import Clinic

    out = []
    with database.session(write=True) as session:
        for clinic_id in session.scalars(select(Clinic.id)):
            out.append(run(session, clinic_id, tier=tier, channel="server"))
        session.commit()
    return out


# --- the review queue -----------------------------------------------------------------------


def _reviewer(actor: Actor) -> None:
    actor.require(Permission.DETECTION_REVIEW)


@dataclass(frozen=True)
class CaseView:
    case: DetectionCase
    user_name: str
    user_role: str
    patient_label: str
    sentence: str

    @property
    def rules_ja(self) -> list[str]:
        return [engine.RULE_JA.get(r, r) for r in self.case.rules]


def list_cases(
    session: Session,
    actor: Actor,
    *,
    status: str | None = "open",
    limit: int = 200,
    lang: str = "ja",
) -> list[CaseView]:
    """The queue, highest tier and score first; reading it is logged with the patients shown."""
    _reviewer(actor)
    stmt = select(DetectionCase).where(DetectionCase.clinic_id == actor.clinic_id)
    if status:
        stmt = stmt.where(DetectionCase.status == status)
    cases = list(session.scalars(stmt.order_by(DetectionCase.last_at.desc()).limit(limit)))
    cases.sort(key=lambda c: (-TIER_ORDER.get(c.tier, 0), -c.score, -c.last_at.timestamp()))
    return _views(session, actor, cases, lang)


def open_case_count(session: Session, actor: Actor) -> int:
    _reviewer(actor)
    return int(
        session.scalar(
            select(func.count())
            .select_from(DetectionCase)
            .where(DetectionCase.clinic_id == actor.clinic_id, DetectionCase.status == "open")
        )
        or 0
    )


def get_case(session: Session, actor: Actor, case_id: uuid.UUID, lang: str = "ja") -> CaseView:
    _reviewer(actor)
    case = session.get(DetectionCase, case_id)
    if case is None or case.clinic_id != actor.clinic_id:
        raise NotFound("case")
    return _views(session, actor, [case], lang)[0]


def _views(
    session: Session, actor: Actor, cases: Sequence[DetectionCase], lang: str
) -> list[CaseView]:
    users = {
        u.id: u
        for u in session.scalars(select(StaffUser).where(StaffUser.clinic_id == actor.clinic_id))
    }
    names = {u.id: (u.display_name, Role(u.role)) for u in users.values()}
    labels: dict[uuid.UUID, str] = {}
    for pid in {c.patient_id for c in cases if c.patient_id}:
        p = patient_for(session, actor, pid, Intent.READ, "detection-review")
        labels[pid] = f"No.{p.patient_number} {p.full_name}"
    if cases:
        record(
            session,
            actor,
            AuditTag.DETECTION_VIEWED,
            patients=sorted(labels),
            detail={"cases": len(cases)},
        )
    out = []
    for c in cases:
        name, role = names.get(c.user_id, ("?", Role.AUDITOR))
        out.append(
            CaseView(
                c,
                name,
                role.label_ja if lang == "ja" else role.value,
                labels.get(c.patient_id, "") if c.patient_id else "",
                sentence(c, names, labels, lang=lang),
            )
        )
    return out


OFF_JA = {"leave": "休暇中", "off": "休日", "night": "深夜", "outside": "勤務時間外"}
OFF_EN = {
    "leave": "on leave",
    "off": "on a day off",
    "night": "at night",
    "outside": "outside hours",
}
MISUSE_JA = {
    "disabled": "無効化されたアカウントでの操作",
    "expired": "有効期限の切れたアカウントでの操作",
    "left": "退職日以降のアカウントでの操作",
    "vendor-outside-window": "保守作業枠の外での保守アカウントによる患者データの閲覧",
    "leave-login": "休暇中のログイン",
    "concurrent": "同じアカウントが2か所から同時に使用",
}
MISUSE_EN = {
    "disabled": "activity on a disabled account",
    "expired": "activity on an expired account",
    "left": "activity after the staff member left",
    "vendor-outside-window": "vendor account reading patient data outside a maintenance window",
    "leave-login": "sign-in on a leave day",
    "concurrent": "one account in use from two places at once",
}


def sentence(
    case: DetectionCase,
    names: dict[uuid.UUID, tuple[str, Role]],
    labels: dict[uuid.UUID, str],
    *,
    lang: str = "ja",
) -> str:
    """One sentence of facts a director understands, from the case's facts and rules."""
    f = case.facts
    rules = set(case.rules)
    who_name, who_role = names.get(case.user_id, ("", None))
    if lang != "ja":
        return _sentence_en(case, who_name, who_role, labels)
    who = f"{who_role.label_ja if who_role else ''} {who_name}".strip() or "職員"
    parts: list[str] = []
    if case.patient_id is None:
        if "B2" in rules:
            if f.get("exported"):
                parts.append(f"{who} が患者{f['exported']}人分のデータを一括で書き出し")
            else:
                parts.append(
                    f"{who} が{engine.PRINT_MINUTES}分間に{f.get('printed', 0)}件を印刷・出力"
                    f"（患者{f.get('patients', 0)}人）"
                )
        if "B8" in rules:
            parts.append(f"{who}：{MISUSE_JA.get(str(f.get('misuse')), 'アカウントの不審な使用')}")
        if "B1" in rules:
            parts.append(
                f"{who} が {f.get('day', '')} に説明のつかない患者"
                f"{f.get('patients', 0)}人のカルテ等を閲覧"
                "（本人・同職種の通常を大きく超える）"
            )
        if "B6" in rules:
            parts.append(
                f"{who} が{engine.HARVEST_DAYS}日間に受診・予約・電話対応のない患者"
                f"{f.get('patients', 0)}人の基本情報・連絡先だけを閲覧"
            )
        if "R6" in rules and f.get("denied"):
            parts.append(
                f"{who} が権限のない患者記録を{f.get('denied', 0)}回開こうとして拒否された"
            )
        if f.get("folded"):
            kinds = [
                engine.CLINICAL_LABELS[k] for k in f.get("kinds", []) if k in engine.CLINICAL_LABELS
            ]
            what = "カルテ（" + "・".join(kinds) + "）" if kinds else "基本情報・連絡先"
            line = f"{who} が予約・受診・記録・電話対応のない患者{f['folded']}人の{what}を閲覧"
            if f.get("off"):
                line += f"（{OFF_JA.get(str(f['off']), '勤務時間外')}を含む）"
            parts.append(line)
        if not parts:
            parts.append(f"{who}：" + "・".join(engine.RULE_JA.get(r, r) for r in sorted(rules)))
        return "。".join(parts) + "。"
    patient = labels.get(case.patient_id, "患者")
    if f.get("own"):
        target = f"本人または家族（{patient}）"
    elif "R1" in rules and f.get("staff_of"):
        other = names.get(uuid.UUID(str(f["staff_of"])))
        if other and f.get("staff_relation") == "family":
            target = f"職員 {other[0]}（{other[1].label_ja}）の家族 {patient}"
        elif other:
            target = f"職員 {other[0]}（{other[1].label_ja}）本人（{patient}）"
        else:
            target = f"職員（{patient}）"
    elif "R1" in rules:
        target = f"職員（{patient}）"
    elif f.get("household"):
        target = f"同じ世帯と思われる患者 {patient}"
    else:
        target = patient
    kinds = [engine.CLINICAL_LABELS[k] for k in f.get("kinds", []) if k in engine.CLINICAL_LABELS]
    what = "カルテ" + (f"（{'・'.join(kinds)}）" if kinds and kinds != ["カルテ"] else "")
    if not kinds:
        what = "基本情報・連絡先"
    parts.append(f"{who} が {target}の{what}を{f.get('opens', 1)}回閲覧")
    if f.get("visit_day"):
        parts.append("受診日だが担当・記録なし")
    else:
        parts.append("前後1日の予約・受診・記録・電話対応なし")
    if f.get("off"):
        parts.append(OFF_JA.get(str(f["off"]), "勤務時間外"))
    if "R3" in rules:
        parts.append("閲覧制限（VIP）の患者")
    if "R4" in rules:
        parts.append("配慮を要する記録の患者")
    if "R5" in rules:
        parts.append(f"{engine.NO_VISIT_DAYS // 30}か月以上受診なし")
    if "B4" in rules:
        parts.append(f"{engine.CROWD_HOURS}時間内に職員{f.get('crowd', 0)}人がこの患者を閲覧")
    if "B3" in rules:
        parts.append("患者検索を繰り返した直後")
    prior = int(f.get("prior_days", 0))
    if "B5" in rules:
        parts.append(f"過去{engine.REPEAT_DAYS}日に同じ患者を{prior}日閲覧（今回を除く）")
        if f.get("before_booking"):
            parts.append("予約日の直前")
    elif not prior:
        parts.append(f"過去{engine.REPEAT_DAYS}日この患者の閲覧なし")
    if int(f.get("days", 1)) > 1:
        parts.append(f"{f['days']}日にわたる")
    return "。".join(parts) + "。"


def _sentence_en(
    case: DetectionCase, who_name: str, who_role: Role | None, labels: dict[uuid.UUID, str]
) -> str:
    f = case.facts
    who = f"{who_role.value if who_role else 'staff'} {who_name}".strip()
    rules = ", ".join(case.rules)
    if case.patient_id is None:
        misuse = MISUSE_EN.get(str(f.get("misuse")), "")
        return f"{who}: {misuse or 'unusual activity'} ({rules})."
    patient = labels.get(case.patient_id, "a patient")
    off = OFF_EN.get(str(f.get("off")), "")
    return (
        f"{who} opened {patient} {f.get('opens', 1)} times with no booking, visit, record or "
        f"call around it{', ' + off if off else ''} ({rules})."
    )


OUTCOMES = ("appropriate", "follow-up")


def decide(
    session: Session,
    actor: Actor,
    case_id: uuid.UUID,
    *,
    outcome: str,
    reason: str,
    suppress_days: int = 0,
) -> DetectionCase:
    """The reviewer's decision: appropriate (with the reason; may quiet this pair for a
    while) or needs follow-up. Recorded as a log review, the checklist's evidence."""
    _reviewer(actor)
    case = session.get(DetectionCase, case_id)
    if case is None or case.clinic_id != actor.clinic_id:
        raise NotFound("case")
    if outcome not in OUTCOMES:
        raise InvalidInput("判定を選んでください。", "Choose an outcome.", field="outcome")
    reason = reason.strip()
    if not reason:
        raise InvalidInput("理由を入力してください。", "Give a reason.", field="reason")
    if case.status != "open":
        raise Conflict("この事例はすでに判定済みです。", "This case has already been decided.")
    if not 0 <= suppress_days <= 365:
        raise InvalidInput(
            "抑止日数は0〜365日です。", "Suppression is 0 to 365 days.", field="suppress_days"
        )
    if suppress_days and (outcome != "appropriate" or case.patient_id is None):
        raise InvalidInput(
            "抑止できるのは「問題なし」と判定した患者ごとの事例だけです。",
            "Only a case on one patient judged appropriate can be quieted.",
            field="suppress_days",
        )
    now = utcnow()
    case.status, case.reason = outcome, reason[:500]
    case.reviewed_by_id, case.reviewed_at = actor.user_id, now
    if suppress_days:
        case.suppress_until = clinic_today() + dt.timedelta(days=suppress_days)
    session.add(
        AuditReview(
            clinic_id=actor.clinic_id,
            reviewer_id=actor.user_id,
            reviewed_at=now,
            scope="detection-case",
            subject_id=case.id,
            through_seq=case.last_seq,
            outcome="no-issue" if outcome == "appropriate" else "follow-up",
            finding=reason[:1000],
        )
    )
    record(
        session,
        actor,
        AuditTag.DETECTION_REVIEWED,
        patients=[case.patient_id] if case.patient_id else [],
        detail={
            "case": str(case.id),
            "outcome": outcome,
            "suppress_days": suppress_days,
            "user": str(case.user_id),
        },
    )
    session.flush()
    return case


def restrict_patient(session: Session, actor: Actor, case_id: uuid.UUID) -> None:
    """Make the patient of a case restricted (VIP): from now on every look needs
    break-the-glass with a reason. The 島根 lesson — restrict before the 312th look."""
    from mamori.restrictions import service as restrictions

    _reviewer(actor)
    case = session.get(DetectionCase, case_id)
    if case is None or case.clinic_id != actor.clinic_id or case.patient_id is None:
        raise NotFound("case")
    flags = restrictions.flags_of(session, actor, case.patient_id)
    restrictions.set_flags(
        session, actor, case.patient_id, vip=True, sensitive=bool(flags.get("sensitive"))
    )


def last_runs(session: Session, actor: Actor, limit: int = 10) -> list[DetectionRun]:
    _reviewer(actor)
    return list(
        session.scalars(
            select(DetectionRun)
            .where(DetectionRun.clinic_id == actor.clinic_id)
            .order_by(DetectionRun.started_at.desc())
            .limit(limit)
        )
    )


# --- roster and household facts -------------------------------------------------------------

KINDS = ("work", "off", "leave", "oncall")
KIND_JA = {"work": "勤務", "off": "休み", "leave": "休暇", "oncall": "オンコール"}


@dataclass(frozen=True)
class RosterDay:
    user_id: uuid.UUID
    day: dt.date
    kind: str
    start: int | None
    end: int | None
    entered: bool  # False: the clinic's default hours


def roster_week(
    session: Session, actor: Actor, monday: dt.date
) -> dict[uuid.UUID, list[RosterDay]]:
    actor.require(Permission.STAFF_ADMIN)
    monday = monday - dt.timedelta(days=monday.weekday())
    days = [monday + dt.timedelta(days=i) for i in range(7)]
    staff = list(
        session.scalars(
            select(StaffUser)
            .where(
                StaffUser.clinic_id == actor.clinic_id,
                StaffUser.active.is_(True),
                StaffUser.kind == "person",
                StaffUser.role.not_in((Role.VENDOR.value, Role.AUDITOR.value)),
            )
            .order_by(StaffUser.role, StaffUser.display_kana)
        )
    )
    entered = {
        (r.user_id, r.day): r
        for r in session.scalars(
            select(StaffRoster).where(
                StaffRoster.clinic_id == actor.clinic_id,
                StaffRoster.day >= days[0],
                StaffRoster.day <= days[-1],
            )
        )
    }
    out: dict[uuid.UUID, list[RosterDay]] = {}
    for u in staff:
        row = []
        for d in days:
            r = entered.get((u.id, d))
            if r is not None:
                row.append(RosterDay(u.id, d, r.kind, r.start_minute, r.end_minute, True))
            else:
                s = engine.default_shift(str(u.role), d)
                row.append(RosterDay(u.id, d, s.kind, s.start, s.end, False))
        out[u.id] = row
    return out


def _minutes(raw: str, field: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", raw)
    if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59:
        raise InvalidInput(
            "時刻は 8:30 のように入力してください。", "Times are like 8:30.", field=field
        )
    return int(m.group(1)) * 60 + int(m.group(2))


def set_roster_day(
    session: Session,
    actor: Actor,
    user_id: uuid.UUID,
    day: dt.date,
    kind: str,
    start: str = "",
    end: str = "",
) -> StaffRoster:
    """One day of one staff member (the week screen posts each changed day)."""
    actor.require(Permission.STAFF_ADMIN)
    user = session.get(StaffUser, user_id)
    if user is None or user.clinic_id != actor.clinic_id:
        raise NotFound("staff")
    if kind not in KINDS:
        raise InvalidInput("勤務の種類を選んでください。", "Choose a kind of day.", field="kind")
    s, e = _minutes(start, "start"), _minutes(end, "end")
    if kind in ("work", "oncall") and (s is None or e is None or e <= s):
        raise InvalidInput(
            "勤務の開始と終了の時刻を入力してください（終了は開始より後）。",
            "Give the start and end of the shift (end after start).",
            field="start",
        )
    if kind in ("off", "leave"):
        s = e = None
    row = session.scalar(
        select(StaffRoster).where(StaffRoster.user_id == user_id, StaffRoster.day == day)
    )
    if row is None:
        row = StaffRoster(
            clinic_id=actor.clinic_id, user_id=user_id, day=day, entered_by_id=actor.user_id
        )
        session.add(row)
    row.kind, row.start_minute, row.end_minute = kind, s, e
    row.entered_by_id, row.entered_at = actor.user_id, utcnow()
    record(
        session,
        actor,
        AuditTag.ROSTER_CHANGED,
        detail={"user": str(user_id), "day": day.isoformat(), "kind": kind},
    )
    session.flush()
    return row


def copy_previous_week(session: Session, actor: Actor, monday: dt.date) -> int:
    """The week starting ``monday`` as the one before it was entered (leave, on-call, changed
    hours); days the week before left at the default are left as they are. Returns how many
    days were copied."""
    actor.require(Permission.STAFF_ADMIN)
    monday = monday - dt.timedelta(days=monday.weekday())
    before = monday - dt.timedelta(days=7)
    rows = list(
        session.scalars(
            select(StaffRoster).where(
                StaffRoster.clinic_id == actor.clinic_id,
                StaffRoster.day >= before,
                StaffRoster.day < monday,
            )
        )
    )
    for r in rows:
        day = r.day + dt.timedelta(days=7)
        start = (
            f"{r.start_minute // 60}:{r.start_minute % 60:02d}"
            if r.start_minute is not None
            else ""
        )
        end = f"{r.end_minute // 60}:{r.end_minute % 60:02d}" if r.end_minute is not None else ""
        set_roster_day(session, actor, r.user_id, day, r.kind, start, end)
    return len(rows)


def profile_of(session: Session, actor: Actor, user_id: uuid.UUID) -> StaffProfile | None:
    actor.require(Permission.STAFF_ADMIN)
    return session.scalar(
        select(StaffProfile).where(
            StaffProfile.user_id == user_id, StaffProfile.clinic_id == actor.clinic_id
        )
    )


def set_profile(
    session: Session,
    actor: Actor,
    user_id: uuid.UUID,
    *,
    family_kana: str,
    postal_code: str,
    address: str,
    phone: str,
    notice_given: bool,
    left_on: dt.date | None = None,
) -> StaffProfile:
    """A staff member's household facts (sealed), kept for the household match only. The
    staff member must have been told (職員への通知) before they are kept."""
    actor.require(Permission.STAFF_ADMIN)
    user = session.get(StaffUser, user_id)
    if user is None or user.clinic_id != actor.clinic_id:
        raise NotFound("staff")
    prof = profile_of(session, actor, user_id)
    if not notice_given and (prof is None or prof.notice_at is None):
        raise InvalidInput(
            "本人に通知したことを確認してください（何を何のために保存するか）。",
            "Confirm the staff member has been given the notice first.",
            field="notice",
        )
    if prof is None:
        # the id and version are in the ciphertext's associated data: set before sealing
        prof = StaffProfile(
            id=new_id(),
            clinic_id=actor.clinic_id,
            user_id=user_id,
            version=1,
            updated_by_id=actor.user_id,
        )
        session.add(prof)
    else:
        prof.version += 1
    prof.family_kana = to_katakana(family_kana.strip())[:40]
    prof.postal_code = postal_code.strip()[:8]
    prof.address = address.strip()[:200]
    prof.phone = phone.strip()[:20]
    prof.left_on = left_on
    prof.updated_by_id, prof.updated_at = actor.user_id, utcnow()
    if notice_given and prof.notice_at is None:
        prof.notice_at = utcnow()
    record(
        session,
        actor,
        AuditTag.STAFF_FACTS_CHANGED,
        detail={"user": str(user_id), "version": prof.version},
    )
    session.flush()
    return prof


RELATIONS = ("self", "family")


def link_patient(
    session: Session, actor: Actor, user_id: uuid.UUID, patient_id: uuid.UUID, relation: str
) -> StaffPatientLink:
    """This patient is the staff member or one of their registered family (R1, R2)."""
    actor.require(Permission.STAFF_ADMIN)
    user = session.get(StaffUser, user_id)
    if user is None or user.clinic_id != actor.clinic_id:
        raise NotFound("staff")
    if relation not in RELATIONS:
        raise InvalidInput("続柄を選んでください。", "Choose a relation.", field="relation")
    patient = patient_for(session, actor, patient_id, Intent.READ, "Patient")
    have = session.scalar(
        select(StaffPatientLink).where(
            StaffPatientLink.user_id == user_id, StaffPatientLink.patient_id == patient.id
        )
    )
    if have is not None:
        raise Conflict("すでに登録されています。", "Already linked.")
    link = StaffPatientLink(
        clinic_id=actor.clinic_id,
        user_id=user_id,
        patient_id=patient.id,
        relation=relation,
        created_by_id=actor.user_id,
    )
    session.add(link)
    record(
        session,
        actor,
        AuditTag.STAFF_FACTS_CHANGED,
        patients=[patient.id],
        detail={"user": str(user_id), "link": relation},
    )
    session.flush()
    return link


def patient_by_number(session: Session, actor: Actor, number: int) -> uuid.UUID:
    """The patient with this 患者番号 (the number on the 診察券), through the search service."""
    from mamori.patients.service import search_patients

    found = search_patients(session, actor, patient_number=number, include_inactive=True, limit=2)
    if not found:
        raise InvalidInput(
            "この患者番号の患者は見つかりません。",
            "No patient has this number.",
            field="patient_number",
        )
    return found[0].id


def labelled_links(
    session: Session, actor: Actor, user_id: uuid.UUID
) -> list[tuple[StaffPatientLink, str]]:
    """A staff member's links with each patient as the director reads it (No. and name)."""
    out = []
    for link in links_of(session, actor):
        if link.user_id == user_id:
            p = patient_for(session, actor, link.patient_id, Intent.READ, "Patient")
            out.append((link, f"No.{p.patient_number} {p.full_name}"))
    return out


def links_of(session: Session, actor: Actor) -> list[StaffPatientLink]:
    actor.require(Permission.STAFF_ADMIN)
    return list(
        session.scalars(
            select(StaffPatientLink).where(StaffPatientLink.clinic_id == actor.clinic_id)
        )
    )


# --- 電話対応 -------------------------------------------------------------------------------

CHANNELS = {"phone": "電話", "desk": "窓口", "message": "メッセージ"}
TOPICS = ("予約", "検査結果", "処方", "会計", "書類", "その他")


def log_contact(
    session: Session,
    actor: Actor,
    patient_id: uuid.UUID,
    *,
    channel: str,
    topic: str,
    note: str = "",
) -> ContactLog:
    """A call or question about this patient, logged: the reads it needed are explained."""
    patient = active_patient(session, actor, patient_id, "ContactLog")
    if channel not in CHANNELS:
        raise InvalidInput("手段を選んでください。", "Choose how.", field="channel")
    if topic not in TOPICS:
        raise InvalidInput("用件を選んでください。", "Choose a topic.", field="topic")
    row = ContactLog(
        patient_id=patient.id, channel=channel, topic=topic, note=note.strip()[:200], status="final"
    )
    write_version(session, actor, row, ChangeKind.CREATED)
    return row
