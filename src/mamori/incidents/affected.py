"""The affected-patient list, from the audit trail: the patients an account, a device or a
session touched in a time window (or everything in a window), the patients one export held,
or every patient a backup generation contained — with how often, when, and which data items
(基本情報 / 診療録 / 検査 / 文書 …), as the evidence for 規則第8条 items 2 and 3.

Only what the log says was disclosed or changed counts: a denied request, another clinic's
ID tried, and the incident response's own reads of this list are left out. The events that
make up the list are kept (their sequence numbers) so that the report's evidence is a
verifiable audit bundle of exactly those events (``audit.bundle.write_bundle``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit.models import AuditEvent, AuditEventUser
from mamori.auth.models import AuthSession
from mamori.authz.permissions import ROLE_PERMISSIONS, Permission
from mamori.authz.roles import Role
from mamori.clinic.calendar import JST
from mamori.detection.service import log_size, seq_at
from mamori.errors import InvalidInput, NotFound
from mamori.patients.models import Patient

# the data items of 規則第8条第2号, as a clinic names them
ITEMS: dict[str, tuple[str, str]] = {
    "demographics": (
        "基本情報（氏名・生年月日・住所・電話）",
        "demographics (name, birth date, address, phone)",
    ),
    "insurance": ("保険情報", "insurance"),
    "visits": ("受診・予約の記録", "visits and bookings"),
    "notes": ("診療録（経過記録）", "clinical notes"),
    "diagnoses": ("病名", "diagnoses"),
    "prescriptions": ("処方", "prescriptions"),
    "allergies": ("アレルギー", "allergies"),
    "labs": ("検査結果・バイタル", "labs and vitals"),
    "documents": ("文書（紹介状・スキャン等）", "documents"),
    "contacts": ("電話対応の記録", "call log"),
}
# the same, short, for a table cell
ITEMS_SHORT: dict[str, str] = {
    "demographics": "基本情報",
    "insurance": "保険",
    "visits": "受診",
    "notes": "診療録",
    "diagnoses": "病名",
    "prescriptions": "処方",
    "allergies": "アレルギー",
    "labs": "検査",
    "documents": "文書",
    "contacts": "電話対応",
}
CLINICAL_ITEMS = frozenset(
    {"notes", "diagnoses", "prescriptions", "allergies", "labs", "documents"}
)
_KIND_ITEM = {
    "Patient": "demographics",
    "patient": "demographics",
    "Coverage": "insurance",
    "Encounter": "visits",
    "ProgressNote": "notes",
    "Condition": "diagnoses",
    "MedicationRequest": "prescriptions",
    "AllergyIntolerance": "allergies",
    "Observation": "labs",
    "Document": "documents",
    "ContactLog": "contacts",
}
_PERMISSION_ITEM = {
    Permission.PATIENT_READ: "demographics",
    Permission.INSURANCE_READ: "insurance",
    Permission.ENCOUNTER_READ: "visits",
    Permission.NOTE_READ: "notes",
    Permission.CONDITION_READ: "diagnoses",
    Permission.PRESCRIPTION_READ: "prescriptions",
    Permission.ALLERGY_READ: "allergies",
    Permission.OBSERVATION_READ: "labs",
    Permission.DOCUMENT_READ: "documents",
}
# the response's own reads, and requests that disclosed nothing
_LEFT_OUT_WHAT = frozenset({"incident-affected"})
_LEFT_OUT_TAGS = frozenset(
    {"access:permission:denied", "access:other-clinic:attempted", "incident:draft:printed"}
)


def _role_items(role: str) -> set[str]:
    """What a whole chart (or an export) showed this role: the items it may read."""
    try:
        granted = ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        granted = frozenset()
    found = {item for perm, item in _PERMISSION_ITEM.items() if perm in granted}
    return found or {"demographics"}


def items_of(tag: str, what: str, role: str, record_type: str) -> set[str]:
    """The data items one event reached."""
    if tag.startswith("record:"):
        return {_KIND_ITEM.get(record_type, "demographics")}
    if tag in ("patient:data:exported", "patient:chart:printed") or what == "chart":
        return _role_items(role)
    if tag == "patient:prescription:printed":
        return {"demographics", "prescriptions"}
    if tag == "access:restricted:opened":
        return _role_items(role) if what == "break-glass" else {"demographics"}
    kind = what.removeprefix("fhir:")
    if kind in _KIND_ITEM:
        return {_KIND_ITEM[kind]}
    if kind.startswith("Encounter:"):
        return {"demographics", "visits"}
    return {"demographics"}  # searches, lists, the review screens: names were shown


@dataclass(frozen=True)
class Scope:
    """Whose or what access makes a patient affected. At least one of a user, a session, a
    device, a window, an export or a generation."""

    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    device_id: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    export_seq: int | None = None
    generation: int | None = None

    def check(self) -> None:
        if not any((self.user_id, self.session_id, self.device_id, self.start, self.end)) and (
            self.export_seq is None and self.generation is None
        ):
            raise InvalidInput(
                "アカウント・端末・セッション・期間・書き出し・バックアップ世代のいずれかを指定してください。",
                "Give an account, device, session, time window, export or backup generation.",
                field="scope",
            )
        if self.start and self.end and self.end <= self.start:
            raise InvalidInput(
                "期間の終わりが始まりより前です。", "The window ends before it starts.", field="end"
            )

    def as_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in ("user_id", "session_id", "device_id", "start", "end"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.isoformat() if isinstance(value, dt.datetime) else str(value)
        if self.export_seq is not None:
            out["export_seq"] = str(self.export_seq)
        if self.generation is not None:
            out["generation"] = str(self.generation)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, str]) -> Scope:
        def when(key: str) -> dt.datetime | None:
            return dt.datetime.fromisoformat(raw[key]) if raw.get(key) else None

        return cls(
            user_id=uuid.UUID(raw["user_id"]) if raw.get("user_id") else None,
            session_id=uuid.UUID(raw["session_id"]) if raw.get("session_id") else None,
            device_id=raw.get("device_id") or None,
            start=when("start"),
            end=when("end"),
            export_seq=int(raw["export_seq"]) if raw.get("export_seq") else None,
            generation=int(raw["generation"]) if raw.get("generation") else None,
        )


@dataclass
class Row:
    patient_id: uuid.UUID
    opens: int = 0
    writes: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    items: set[str] = field(default_factory=set)

    def saw(self, at: dt.datetime, items: Iterable[str], write: bool) -> None:
        if write:
            self.writes += 1
        else:
            self.opens += 1
        self.first = at if self.first is None or at < self.first else self.first
        self.last = at if self.last is None or at > self.last else self.last
        self.items.update(items)


@dataclass
class Found:
    rows: dict[uuid.UUID, Row]
    seqs: list[int]  # the events the list is made of (the evidence)
    events: int
    first_seq: int
    last_seq: int

    def item_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for row in self.rows.values():
            for item in row.items:
                counts[item] += 1
        return {k: counts[k] for k in ITEMS if counts.get(k)}

    @property
    def clinical(self) -> bool:
        return any(r.items & CLINICAL_ITEMS for r in self.rows.values())


def _sessions_of_device(session: Session, clinic_id: uuid.UUID, device: str) -> set[str]:
    rows = session.scalars(
        select(AuthSession.id).where(
            AuthSession.device_id == device, AuthSession.clinic_id == clinic_id
        )
    )
    return {str(r) for r in rows}


def _generation_time(session: Session, clinic_id: uuid.UUID, generation: int) -> dt.datetime:
    stmt = select(AuditEvent.recorded_at, AuditEvent.body).where(
        AuditEvent.tag == "system:backup:completed"
    )
    for at, raw in session.execute(stmt):
        detail = json.loads(bytes(raw)).get("detail") or {}
        if detail.get("generation") == generation:
            return at
    raise NotFound("backup generation")


def find(session: Session, clinic_id: uuid.UUID, scope: Scope) -> Found:
    """Read the log for the scope; the caller has checked permission and records the read."""
    scope.check()
    clinic = str(clinic_id)
    if scope.generation is not None:
        at = _generation_time(session, clinic_id, scope.generation)
        rows: dict[uuid.UUID, Row] = {}
        everything = set(ITEMS)
        patients = select(Patient.id, Patient.created_at).where(
            Patient.clinic_id == clinic_id, Patient.created_at <= at
        )
        for pid, created in session.execute(patients):
            rows[pid] = Row(pid, first=created, last=at, items=set(everything))
        return Found(rows, [], 0, 0, 0)
    if scope.export_seq is not None:
        lo = hi = scope.export_seq
    else:
        lo = seq_at(session, scope.start) + 1 if scope.start else 1
        hi = seq_at(session, scope.end) if scope.end else log_size(session)
    sessions: set[str] | None = None
    if scope.device_id:
        sessions = _sessions_of_device(session, clinic_id, scope.device_id)
    if scope.session_id:
        sessions = (sessions or {str(scope.session_id)}) & {str(scope.session_id)}
    stmt = select(AuditEvent.seq, AuditEvent.recorded_at, AuditEvent.tag, AuditEvent.body).where(
        AuditEvent.seq >= lo, AuditEvent.seq <= hi
    )
    if scope.user_id is not None:
        stmt = stmt.where(
            AuditEvent.seq.in_(
                select(AuditEventUser.seq).where(
                    AuditEventUser.user_id == scope.user_id,
                    AuditEventUser.seq >= lo,
                    AuditEventUser.seq <= hi,
                )
            )
        )
    out: dict[uuid.UUID, Row] = {}
    seqs: list[int] = []
    for seq, at, tag, raw in session.execute(
        stmt.order_by(AuditEvent.seq).execution_options(yield_per=5000)
    ):
        if tag in _LEFT_OUT_TAGS or not tag.startswith(("patient:", "record:", "access:")):
            continue
        body = json.loads(bytes(raw))
        who = body.get("actor") or {}
        if who.get("clinic") != clinic or not body.get("patients"):
            continue
        if body.get("outcome", "success") != "success":
            continue
        if sessions is not None and who.get("session") not in sessions:
            continue
        if scope.export_seq is not None and tag != "patient:data:exported":
            raise InvalidInput(
                "指定した番号は一括書き出しの記録ではありません。",
                "That event is not an export.",
                field="export_seq",
            )
        detail = body.get("detail") or {}
        what = str(detail.get("what", ""))
        if what in _LEFT_OUT_WHAT:
            continue
        records = body.get("records") or ()
        rtype = str(records[0].get("type", "")) if records else ""
        items = items_of(tag, what, str(who.get("role", "")), rtype)
        write = tag.startswith("record:")
        for p in body["patients"]:
            pid = uuid.UUID(p)
            out.setdefault(pid, Row(pid)).saw(at, items, write)
        seqs.append(seq)
    return Found(out, seqs, len(seqs), lo, hi)


def describe(scope: Scope, names: dict[uuid.UUID, str], lang: str = "ja") -> str:
    """The scope in words, for the list's heading and the report's field 1."""
    parts: list[str] = []
    ja = lang == "ja"
    if scope.user_id:
        who = names.get(scope.user_id, str(scope.user_id)[:8])
        parts.append(f"アカウント {who}" if ja else f"account {who}")
    if scope.device_id:
        parts.append(f"端末 {scope.device_id[:8]}" if ja else f"device {scope.device_id[:8]}")
    if scope.session_id:
        s = str(scope.session_id)[:8]
        parts.append(f"セッション {s}" if ja else f"session {s}")
    if scope.start or scope.end:

        def fmt(v: dt.datetime | None) -> str:
            return f"{v.astimezone(JST):%Y-%m-%d %H:%M}" if v else "…"

        parts.append(f"{fmt(scope.start)} 〜 {fmt(scope.end)}")
    if scope.export_seq is not None:
        parts.append(
            f"一括書き出し（監査番号 {scope.export_seq}）"
            if ja
            else f"export (event {scope.export_seq})"
        )
    if scope.generation is not None:
        parts.append(
            f"バックアップ世代 {scope.generation}"
            if ja
            else f"backup generation {scope.generation}"
        )
    return "、".join(parts) if ja else ", ".join(parts)
