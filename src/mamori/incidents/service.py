"""Incidents as a service: a staff member's 「インシデントかも？」, the register the director and
the security officer run, the response steps in order, the APPI decision and its deadlines,
the affected-patient list from the audit trail, notices to patients, the post-incident review,
the contact chart and the playbooks.

Every change of an incident is a version (``write_version``): hash-chained, audited, never
overwritten. The timeline's entries are written once; each one is also counted in the
incident's own version, so a timeline row edited or removed in the database is found when the
incident is next read (``RecordIntegrityFailed``) and by ``mamori verify``.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record, record_system
from mamori.auth.models import AuthSession, SecurityAlert
from mamori.authz import gate
from mamori.authz.actor import Actor, Intent
from mamori.authz.permissions import Permission
from mamori.authz.roles import Role
from mamori.canonical import canonical_json
from mamori.clinic.calendar import JST, clinic_today
from mamori.clinic.models import StaffUser
from mamori.db import new_id, utcnow
from mamori.errors import Conflict, InvalidInput, NotFound, RecordIntegrityFailed
from mamori.incidents import affected as affected_mod
from mamori.incidents import rules
from mamori.incidents.affected import Found, Scope
from mamori.incidents.models import (
    Incident,
    IncidentContact,
    IncidentEntry,
    IncidentNotice,
    IncidentPlaybook,
)
from mamori.patients.models import Patient
from mamori.records.versioning import (
    ChangeKind,
    RecordStatus,
    check_head,
    check_heads,
    write_version,
)

ROLES = {
    "anyone": ("発見者・全職員", "anyone on staff"),
    "security_officer": ("安全管理者", "security officer"),
    "director": ("院長・管理者", "director"),
    "reception": ("受付", "reception"),
    "vendor": ("保守ベンダー", "vendor"),
}
ACTIONS = {
    "": ("", ""),
    "isolate": ("隔離スイッチ・業務継続", "isolation switch"),
    "downtime": ("ダウンタイム資料・待機系・事後入力", "downtime bundle, standby, late entry"),
    "revoke": ("セッションの失効・アカウント停止", "revoke sessions, disable the account"),
    "evidence": ("証拠の監査バンドル", "audit bundle as evidence"),
    "affected": ("影響を受けた患者", "affected patients"),
    "decide": ("報告要否の判断", "reportability decision"),
    "contacts": ("連絡体制図", "contact chart"),
    "notices": ("本人への通知", "notices to patients"),
    "review": ("事後対応", "post-incident review"),
}
_ROLE_BY_LABEL = {ja: key for key, (ja, _) in ROLES.items()}
_ACTION_BY_LABEL = {ja: key for key, (ja, _) in ACTIONS.items() if key}
METHODS = {
    "mail": ("郵送", "post"),
    "hand": ("手渡し", "by hand"),
    "phone": ("電話", "phone"),
    "email": ("電子メール", "e-mail"),
}
# the contact chart's duties: internal escalation first, then the outside bodies
DUTIES: dict[str, tuple[str, str, str]] = {
    "director": ("internal", "院長・管理者（経営層）", "director (management)"),
    "security_officer": ("internal", "安全管理者・対応責任者", "security officer (responder)"),
    "it_staff": ("internal", "院内のシステム担当", "in-house IT contact"),
    "vendor": ("external", "電子カルテ・システムの保守ベンダー", "system vendor"),
    "network": ("external", "ネットワーク・回線の事業者", "network provider"),
    "mhlw": ("external", "厚生労働省", "MHLW"),
    "ppc": ("external", "個人情報保護委員会", "Personal Information Protection Commission"),
    "police": ("external", "都道府県警察 サイバー犯罪相談窓口", "prefectural police cyber desk"),
    "hokenjo": ("external", "保健所（所管の自治体）", "public health centre"),
    "ishikai": ("external", "医師会", "medical association"),
}
# the duties that must have an active contact (BCP 2-3, CL-3-1)
REQUIRED_DUTIES = ("director", "security_officer", "vendor", "mhlw", "ppc", "police", "hokenjo")
# outside bodies whose numbers are public: shipped so the chart is never empty
# (the MHLW office and number from its 2025 guidance, as the seeds quote it)
SHIPPED_CONTACTS: dict[str, dict[str, str]] = {
    "mhlw": {
        "organisation": "厚生労働省 医政局 特定医薬品開発支援・医療情報担当参事官室",
        "phone": "03-6812-7837",
        "when_to_call": "サイバー攻撃（疑いを含む）で診療に支障が出たとき・"
        "個人情報が漏えいしたおそれがあるとき。"
        "または「医療機関向けセキュリティ教育支援ポータルサイト」の「インシデントかも？」から連絡",
    },
    "ppc": {
        "organisation": "個人情報保護委員会",
        "phone": "",
        "when_to_call": "漏えい等報告（速報・確報）はウェブサイトの報告フォームから"
        "（https://www.ppc.go.jp/personalinfo/legal/leakAction/）",
    },
}


def today() -> dt.date:
    """The clinic's date (JST): the deadlines' "today" (a test can freeze it here)."""
    return clinic_today()


def _label(pair: tuple[str, str] | tuple[str, str, bool], lang: str) -> str:
    return pair[0] if lang == "ja" else pair[1]


def kind_label(kind: str, lang: str = "ja") -> str:
    return _label(rules.KINDS.get(kind, (kind, kind, False)), lang)


# --- playbooks ------------------------------------------------------------------------------


def shipped_playbooks() -> dict[str, list[dict[str, str]]]:
    raw = resources.files("mamori.incidents").joinpath("playbooks.json").read_text("utf-8")
    data = json.loads(raw)
    return {k: v for k, v in data.items() if k in rules.KINDS}


def playbook(session: Session, clinic_id: uuid.UUID, kind: str) -> list[dict[str, str]]:
    row = session.scalar(
        select(IncidentPlaybook).where(
            IncidentPlaybook.clinic_id == clinic_id, IncidentPlaybook.kind == kind
        )
    )
    if row is not None:
        return [dict(s) for s in row.steps]
    return shipped_playbooks().get(kind, [])


def playbook_text(steps: list[dict[str, str]]) -> str:
    """One step per line: ``役割 | 手順 | 操作`` (the edit form's text)."""
    return "\n".join(
        " | ".join(
            x
            for x in (
                ROLES.get(s["role"], (s["role"],))[0],
                s["title"],
                ACTIONS.get(s.get("action", ""), ("",))[0],
            )
            if x
        )
        for s in steps
    )


def parse_playbook(text: str) -> list[dict[str, str]]:
    steps: list[dict[str, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 2 or not parts[1]:
            raise InvalidInput(
                f"{n}行目: 「役割 | 手順 | 操作（省略可）」の形で書いてください。",
                f"Line {n}: write 'role | step | action (optional)'.",
                field="steps",
            )
        # the Japanese labels the form shows, or the codes
        role = _ROLE_BY_LABEL.get(parts[0], parts[0])
        title = parts[1]
        action = parts[2] if len(parts) > 2 else ""
        action = _ACTION_BY_LABEL.get(action, action)
        if role not in ROLES:
            raise InvalidInput(
                f"{n}行目: 役割「{parts[0]}」はありません"
                f"（{'、'.join(r[0] for r in ROLES.values())}）。",
                f"Line {n}: no role {role!r} ({', '.join(ROLES)}).",
                field="steps",
            )
        if action not in ACTIONS:
            raise InvalidInput(
                f"{n}行目: 操作「{action}」はありません"
                f"（{'、'.join(a[0] for k, a in ACTIONS.items() if k)}）。",
                f"Line {n}: no action {action!r}.",
                field="steps",
            )
        steps.append({"role": role, "title": title[:300], "action": action})
    if not steps:
        raise InvalidInput("手順が一つもありません。", "There are no steps.", field="steps")
    if len(steps) > 40:
        raise InvalidInput("手順は40個までです。", "At most 40 steps.", field="steps")
    return steps


def set_playbook(session: Session, actor: Actor, kind: str, text: str) -> list[dict[str, str]]:
    actor.require(Permission.INCIDENT_MANAGE)
    _kind(kind)
    steps = parse_playbook(text)
    row = session.scalar(
        select(IncidentPlaybook).where(
            IncidentPlaybook.clinic_id == actor.clinic_id, IncidentPlaybook.kind == kind
        )
    )
    if row is None:
        row = IncidentPlaybook(clinic_id=actor.clinic_id, kind=kind, version=1, steps=steps)
        row.updated_by_id = actor.user_id
        session.add(row)
    else:
        row.version += 1
        row.steps = steps
        row.updated_by_id, row.updated_at = actor.user_id, utcnow()
    record(
        session,
        actor,
        AuditTag.PLAYBOOK_CHANGED,
        detail={"kind": kind, "version": row.version, "steps": len(steps)},
    )
    session.flush()
    return steps


# --- opening ----------------------------------------------------------------------------------


def _kind(kind: str) -> str:
    if kind not in rules.KINDS:
        raise InvalidInput("インシデントの種類を選んでください。", "Choose a kind.", field="kind")
    return kind


def _text(value: str, field: str, limit: int, *, required: bool = False) -> str:
    value = (value or "").strip()
    if required and not value:
        raise InvalidInput("入力してください。", "This field is required.", field=field)
    if len(value) > limit:
        raise InvalidInput(
            f"{limit}文字以内で入力してください。", f"At most {limit} characters.", field=field
        )
    return value


def _next_number(session: Session, clinic_id: uuid.UUID) -> int:
    top = session.scalar(select(func.max(Incident.number)).where(Incident.clinic_id == clinic_id))
    return int(top or 0) + 1


def _alert(session: Session, actor: Actor, incident: Incident, summary: str) -> None:
    session.add(
        SecurityAlert(
            clinic_id=actor.clinic_id,
            kind="incident",
            user_id=actor.user_id,
            ref_id=incident.id,
            summary=summary[:300],
        )
    )


def _entry(
    session: Session,
    actor: Actor,
    incident: Incident,
    kind: str,
    text: str = "",
    *,
    step_no: int | None = None,
    outcome: str = "",
    owner_id: uuid.UUID | None = None,
    due_on: dt.date | None = None,
) -> IncidentEntry:
    """One timeline line, and the incident's next version counting it."""
    entry = IncidentEntry(
        incident_id=incident.id,
        kind=kind,
        step_no=step_no,
        outcome=outcome,
        text=text,
        owner_id=owner_id,
        due_on=due_on,
        status=RecordStatus.ACTIVE.value,
    )
    write_version(session, actor, entry, ChangeKind.CREATED)
    incident.entries += 1
    write_version(session, actor, incident, ChangeKind.UPDATED)
    return entry


def report(
    session: Session,
    actor: Actor,
    *,
    seen: str,
    place: str = "",
    device: str = "",
    when: str = "",
    kind: str = "other",
) -> Incident:
    """「インシデントかも？」 (BCP 2-1, 2-2): anyone on staff; the security officer and the
    director are alerted at once. The reporter gets the number, not the register."""
    actor.require(Permission.INCIDENT_REPORT)
    _kind(kind)
    seen = _text(seen, "seen", 2000, required=True)
    now = today()
    incident = Incident(
        number=_next_number(session, actor.clinic_id),
        kind=kind,
        stage="open",
        severity="unknown",
        knew_on=now,
        occurred_on=None,
        reporter_id=actor.user_id,
        owner_id=None,
        source="report",
        steps=canonical_json(playbook(session, actor.clinic_id, kind)),
        malicious=rules.KINDS[kind][2],
        status=RecordStatus.ACTIVE.value,
    )
    incident.title = seen.splitlines()[0][:60]
    incident.seen = seen
    incident.place = _text(place, "place", 200)
    incident.device = _text(device, "device", 200)
    write_version(session, actor, incident, ChangeKind.CREATED)
    when = _text(when, "when", 100)
    _entry(
        session,
        actor,
        incident,
        "opened",
        f"職員からの報告（インシデントかも？）。いつ: {when or '（未記入）'}",
    )
    _alert(session, actor, incident, f"インシデントかも？ No.{incident.number}: {incident.title}")
    return incident


def open_incident(
    session: Session,
    actor: Actor,
    *,
    kind: str,
    title: str,
    seen: str,
    knew_on: dt.date,
    occurred_on: dt.date | None = None,
    place: str = "",
    device: str = "",
    severity: str = "unknown",
    source: str = "direct",
    owner_id: uuid.UUID | None = None,
) -> Incident:
    """The security officer or the director opens an incident (directly, or from a detection
    case, an alert, the backup alarm, a failed verification or a lost device)."""
    actor.require(Permission.INCIDENT_MANAGE)
    _kind(kind)
    rules.check_dates(knew_on, occurred_on, today())
    if severity not in rules.SEVERITIES:
        raise InvalidInput("重大度を選んでください。", "Choose a severity.", field="severity")
    if owner_id is not None:
        _owner(session, actor, owner_id)
    incident = Incident(
        number=_next_number(session, actor.clinic_id),
        kind=kind,
        stage="open",
        severity=severity,
        knew_on=knew_on,
        occurred_on=occurred_on,
        reporter_id=actor.user_id,
        owner_id=owner_id or actor.user_id,
        source=_text(source, "source", 80) or "direct",
        steps=canonical_json(playbook(session, actor.clinic_id, kind)),
        malicious=rules.KINDS[kind][2],
        status=RecordStatus.ACTIVE.value,
    )
    incident.title = _text(title, "title", 120, required=True)
    incident.seen = _text(seen, "seen", 4000)
    incident.place = _text(place, "place", 200)
    incident.device = _text(device, "device", 200)
    write_version(session, actor, incident, ChangeKind.CREATED)
    _entry(session, actor, incident, "opened", f"登録（{_source_ja(incident.source)}）")
    _alert(session, actor, incident, f"インシデント No.{incident.number} を登録: {incident.title}")
    return incident


def _source_ja(source: str) -> str:
    head = source.split(":", 1)[0]
    return {
        "report": "職員からの報告",
        "direct": "安全管理者・院長が直接登録",
        "detection-case": "不審アクセスの事例から",
        "alert": "セキュリティ警告から",
        "backup-alarm": "バックアップのランサムウェア警報から",
        "audit-verify": "監査証跡の検証失敗から",
        "device": "端末のセッション失効（紛失・盗難）から",
    }.get(head, source)


def _owner(session: Session, actor: Actor, user_id: uuid.UUID) -> StaffUser:
    """An incident is run by the director or the security officer."""
    user = _staff(session, actor, user_id, "owner_id")
    if user.role not in (Role.DIRECTOR.value, Role.SECURITY_OFFICER.value):
        raise InvalidInput(
            "担当は院長か安全管理者です。",
            "The owner is the director or the security officer.",
            field="owner_id",
        )
    return user


def _staff(session: Session, actor: Actor, user_id: uuid.UUID, field: str) -> StaffUser:
    user = gate.clinic_reference(session, actor, StaffUser, user_id)
    if user is None:
        raise InvalidInput("その職員はいません。", "No such staff member.", field=field)
    return user


# --- reading ----------------------------------------------------------------------------------


def _load(session: Session, actor: Actor, incident_id: uuid.UUID, *, write: bool) -> Incident:
    actor.require(Permission.INCIDENT_MANAGE if write else Permission.INCIDENT_READ)
    incident = gate.clinic_row_for(session, actor, Incident, incident_id, "incident")
    check_head(session, incident)
    return incident


@dataclass
class StepView:
    no: int
    role: str
    title: str
    action: str
    outcome: str = ""  # done | skipped | ""
    by: uuid.UUID | None = None
    at: dt.datetime | None = None
    note: str = ""


@dataclass
class View:
    incident: Incident
    entries: list[IncidentEntry]
    steps: list[StepView]
    deadlines: list[rules.Deadline]
    proposal: rules.Proposal
    saved: Saved
    notices: int
    measures: list[IncidentEntry] = field(default_factory=list)

    @property
    def next_step(self) -> int | None:
        for s in self.steps:
            if not s.outcome:
                return s.no
        return None

    @property
    def scope(self) -> Scope | None:
        return self.saved.scope

    @property
    def affected_count(self) -> int:
        return self.saved.patients

    @property
    def deadlines_apply(self) -> bool:
        """The APPI clock runs unless the director decided the incident is not reportable."""
        i = self.incident
        return i.reportable == "yes" or (i.reportable == "" and self.proposal.reportable)


def _steps(incident: Incident, entries: list[IncidentEntry]) -> list[StepView]:
    out = [
        StepView(n, s["role"], s["title"], s.get("action", ""))
        for n, s in enumerate(json.loads(incident.steps), 1)
    ]
    for e in entries:
        if e.kind == "step" and e.step_no and 1 <= e.step_no <= len(out):
            s = out[e.step_no - 1]
            s.outcome, s.by, s.at, s.note = e.outcome, e.created_by_id, e.created_at, e.text
    return out


def _entries(session: Session, incident: Incident) -> list[IncidentEntry]:
    rows = list(
        session.scalars(
            select(IncidentEntry)
            .where(IncidentEntry.incident_id == incident.id)
            .order_by(IncidentEntry.created_at, IncidentEntry.id)
        )
    )
    for row in rows:  # each against its version, content too: a timeline is short
        check_head(session, row)
    if len(rows) != incident.entries:
        raise RecordIntegrityFailed(
            "Incident", incident.id, None, f"{incident.entries} entries recorded, {len(rows)} found"
        )
    return rows


@dataclass(frozen=True)
class Saved:
    """The affected-patient list as last saved: its scope and what it found then."""

    scope: Scope | None = None
    patients: int = 0
    clinical: bool = False
    items: dict[str, int] = field(default_factory=dict)
    events: int = 0


def _saved_scope(entries: list[IncidentEntry]) -> Saved:
    for e in reversed(entries):
        if e.kind == "affected":
            data = json.loads(e.text)
            return Saved(
                Scope.from_dict(data["scope"]),
                int(data["patients"]),
                bool(data["clinical"]),
                dict(data.get("items") or {}),
                int(data.get("events") or 0),
            )
    return Saved()


def _view(session: Session, incident: Incident) -> View:
    entries = _entries(session, incident)
    saved = _saved_scope(entries)
    proposal = rules.propose(
        rules.Facts(
            kind=incident.kind,
            patients=saved.patients,
            clinical=saved.clinical,
            malicious=incident.malicious,
            encrypted=incident.encrypted,
            backup_copy=saved.scope is not None and saved.scope.generation is not None,
        )
    )
    notices = int(
        session.scalar(
            select(func.count())
            .select_from(IncidentNotice)
            .where(IncidentNotice.incident_id == incident.id)
        )
        or 0
    )
    return View(
        incident=incident,
        entries=entries,
        steps=_steps(incident, entries),
        deadlines=rules.deadlines(
            incident.knew_on,
            incident.malicious,
            incident.prompt_sent_on,
            incident.final_sent_on,
            today(),
        ),
        proposal=proposal,
        saved=saved,
        notices=notices,
        measures=[e for e in entries if e.kind == "measure"],
    )


def get(session: Session, actor: Actor, incident_id: uuid.UUID) -> View:
    incident = _load(session, actor, incident_id, write=False)
    view = _view(session, incident)
    record(
        session,
        actor,
        AuditTag.INCIDENT_VIEWED,
        detail={"incident": str(incident.id), "number": incident.number},
    )
    return view


def list_incidents(session: Session, actor: Actor, *, include_closed: bool = True) -> list[View]:
    actor.require(Permission.INCIDENT_READ)
    stmt = select(Incident).where(Incident.clinic_id == actor.clinic_id)
    if not include_closed:
        stmt = stmt.where(Incident.stage != "closed")
    rows = list(session.scalars(stmt.order_by(Incident.number.desc())))
    check_heads(session, rows)
    record(session, actor, AuditTag.INCIDENT_VIEWED, detail={"list": len(rows)})
    return [_view(session, i) for i in rows]


def by_number(session: Session, actor: Actor, number: int) -> uuid.UUID:
    actor.require(Permission.INCIDENT_READ)
    found = session.scalar(
        select(Incident.id).where(Incident.clinic_id == actor.clinic_id, Incident.number == number)
    )
    if found is None:
        raise NotFound("incident")
    return found


# --- the response ------------------------------------------------------------------------------


def add_note(session: Session, actor: Actor, incident_id: uuid.UUID, text: str) -> IncidentEntry:
    incident = _load(session, actor, incident_id, write=True)
    return _entry(session, actor, incident, "note", _text(text, "text", 4000, required=True))


def check_step(
    session: Session,
    actor: Actor,
    incident_id: uuid.UUID,
    step_no: int,
    *,
    outcome: str,
    note: str = "",
) -> IncidentEntry:
    """Check a step off — done, or skipped with a reason — in the playbook's order."""
    incident = _load(session, actor, incident_id, write=True)
    view = _view(session, incident)
    if outcome not in ("done", "skipped"):
        raise InvalidInput(
            "「実施」か「該当なし」を選んでください。", "Done or skipped?", field="outcome"
        )
    if not 1 <= step_no <= len(view.steps):
        raise NotFound("step")
    step = view.steps[step_no - 1]
    if step.outcome:
        raise Conflict("この手順は記録済みです。", "This step is already checked off.")
    if view.next_step != step_no:
        raise Conflict(
            f"手順は順番に記録します。先に手順 {view.next_step} を記録してください。",
            f"Steps are checked off in order: step {view.next_step} first.",
        )
    note = _text(note, "note", 1000, required=outcome == "skipped")
    return _entry(session, actor, incident, "step", note, step_no=step_no, outcome=outcome)


def update(
    session: Session,
    actor: Actor,
    incident_id: uuid.UUID,
    *,
    stage: str | None = None,
    severity: str | None = None,
    owner_id: uuid.UUID | None = None,
    kind: str | None = None,
    note: str = "",
) -> Incident:
    incident = _load(session, actor, incident_id, write=True)
    changes: list[str] = []
    if stage is not None and stage != incident.stage:
        if stage not in rules.STAGES:
            raise InvalidInput("状態を選んでください。", "Choose a stage.", field="stage")
        if stage == "closed":
            _check_closable(session, incident)
            incident.closed_on = today()
        changes.append(f"状態: {rules.STAGES[incident.stage][0]} → {rules.STAGES[stage][0]}")
        incident.stage = stage
    if severity is not None and severity != incident.severity:
        if severity not in rules.SEVERITIES:
            raise InvalidInput("重大度を選んでください。", "Choose a severity.", field="severity")
        changes.append(
            f"重大度: {rules.SEVERITIES[incident.severity][0]} → {rules.SEVERITIES[severity][0]}"
        )
        incident.severity = severity
    if owner_id is not None and owner_id != incident.owner_id:
        user = _owner(session, actor, owner_id)
        changes.append(f"担当: {user.display_name}")
        incident.owner_id = owner_id
    if kind is not None and kind != incident.kind:
        _kind(kind)
        changes.append(f"種類: {kind_label(incident.kind)} → {kind_label(kind)}")
        incident.kind = kind
        incident.malicious = incident.malicious or rules.KINDS[kind][2]
        done = any(s.outcome for s in _view(session, incident).steps)
        if not done:  # the playbook of the right kind, while no step is checked yet
            incident.steps = canonical_json(playbook(session, actor.clinic_id, kind))
    if not changes:
        raise InvalidInput("変更がありません。", "Nothing changed.", field="stage")
    text = "、".join(changes) + (f"。{_text(note, 'note', 1000)}" if note.strip() else "")
    write_version(session, actor, incident, ChangeKind.UPDATED)
    _entry(session, actor, incident, "stage", text)
    return incident


def _check_closable(session: Session, incident: Incident) -> None:
    view = _view(session, incident)
    if view.deadlines_apply and (incident.final_sent_on is None or incident.reportable == ""):
        raise Conflict(
            "報告要否の判断と確報の送付を記録してから終結してください。",
            "Record the reportability decision and the final report before closing.",
        )
    if not incident.review_result.strip():
        raise Conflict(
            "事後対応（結果・漏えいの有無・再発防止策）を記録してから終結してください。",
            "Record the post-incident review before closing.",
        )


def decide(
    session: Session,
    actor: Actor,
    incident_id: uuid.UUID,
    *,
    reportable: bool,
    reason: str,
    malicious: bool,
    encrypted: bool,
) -> Incident:
    """The director decides whether the incident is reportable, with a recorded reason."""
    actor.require(Permission.INCIDENT_DECIDE)
    incident = _load(session, actor, incident_id, write=True)
    reason = _text(reason, "reason", 2000, required=True)
    incident.reportable = "yes" if reportable else "no"
    incident.malicious, incident.encrypted = malicious, encrypted
    incident.decision_reason = reason
    incident.decided_by_id, incident.decided_on = actor.user_id, today()
    write_version(session, actor, incident, ChangeKind.UPDATED)
    verdict = "報告対象" if reportable else "報告対象外"
    _entry(session, actor, incident, "decision", f"{verdict}と判断。理由: {reason}")
    return incident


SENT = {
    "prompt": ("prompt_sent_on", "速報を送付"),
    "final": ("final_sent_on", "確報を送付"),
    "public": ("published_on", "公表"),
}


def mark_sent(
    session: Session, actor: Actor, incident_id: uuid.UUID, which: str, on: dt.date, note: str = ""
) -> Incident:
    incident = _load(session, actor, incident_id, write=True)
    if which not in SENT:
        raise InvalidInput("どの報告かを選んでください。", "Which report?", field="which")
    if on > today():
        raise InvalidInput("未来の日付は入力できません。", "No future dates.", field="on")
    if on < incident.knew_on:
        raise InvalidInput(
            "知った日より前の日付です。", "That is before the clinic knew.", field="on"
        )
    if which == "final" and incident.prompt_sent_on is None:
        raise Conflict("先に速報の送付を記録してください。", "Record the prompt report first.")
    column, label = SENT[which]
    if getattr(incident, column) is not None:
        raise Conflict("記録済みです。", "Already recorded.")
    setattr(incident, column, on)
    write_version(session, actor, incident, ChangeKind.UPDATED)
    extra = _text(note, "note", 1000)
    _entry(
        session, actor, incident, "sent", f"{label}（{on:%Y-%m-%d}）{'。' + extra if extra else ''}"
    )
    return incident


def set_review(
    session: Session,
    actor: Actor,
    incident_id: uuid.UUID,
    *,
    result: str,
    leak: str,
    missing: str,
) -> Incident:
    """事後対応 (BCP 5-1): the result, whether data leaked, what was missing."""
    incident = _load(session, actor, incident_id, write=True)
    incident.review_result = _text(result, "result", 4000, required=True)
    incident.review_leak = _text(leak, "leak", 2000, required=True)
    incident.review_missing = _text(missing, "missing", 4000)
    write_version(session, actor, incident, ChangeKind.UPDATED)
    _entry(session, actor, incident, "note", "事後対応（結果・漏えいの有無・不足）を記録")
    return incident


def add_measure(
    session: Session,
    actor: Actor,
    incident_id: uuid.UUID,
    *,
    text: str,
    owner_id: uuid.UUID,
    due_on: dt.date,
) -> IncidentEntry:
    """A preventive measure (BCP 5-2–5-4) with its owner and date."""
    incident = _load(session, actor, incident_id, write=True)
    _staff(session, actor, owner_id, "owner_id")
    if due_on < today():
        raise InvalidInput("期日が過去です。", "The date is in the past.", field="due_on")
    return _entry(
        session,
        actor,
        incident,
        "measure",
        _text(text, "text", 1000, required=True),
        owner_id=owner_id,
        due_on=due_on,
    )


# --- affected patients ---------------------------------------------------------------------


@dataclass
class AffectedRow:
    patient_id: uuid.UUID
    number: int
    name: str
    kana: str
    address: str
    opens: int
    writes: int
    first: dt.datetime | None
    last: dt.datetime | None
    items: list[str]
    noticed: dt.date | None = None


@dataclass
class Affected:
    scope: Scope
    rows: list[AffectedRow]
    item_counts: dict[str, int]
    events: int
    seqs: list[int]
    clinical: bool


def _address(p: Patient) -> str:
    zipcode = f"〒{p.postal_code} " if p.postal_code else ""
    return f"{zipcode}{p.prefecture}{p.city}{p.address_line}".strip()


def _rows(session: Session, actor: Actor, incident: Incident, found: Found) -> list[AffectedRow]:
    ids = list(found.rows)
    gate.listed(session, actor, "incident-affected", ids)
    patients: dict[uuid.UUID, Patient] = {}
    for at in range(0, len(ids), 500):
        for loaded in session.scalars(select(Patient).where(Patient.id.in_(ids[at : at + 500]))):
            patients[loaded.id] = loaded
    noticed = dict(
        session.execute(
            select(IncidentNotice.patient_id, IncidentNotice.sent_on).where(
                IncidentNotice.incident_id == incident.id
            )
        ).all()
    )
    out: list[AffectedRow] = []
    for pid, row in found.rows.items():
        p = patients.get(pid)
        if p is None or p.clinic_id != actor.clinic_id:
            continue
        out.append(
            AffectedRow(
                patient_id=pid,
                number=p.patient_number,
                name=p.full_name,
                kana=p.full_kana,
                address=_address(p),
                opens=row.opens,
                writes=row.writes,
                first=row.first,
                last=row.last,
                items=[k for k in affected_mod.ITEMS if k in row.items],
                noticed=noticed.get(pid),
            )
        )
    out.sort(key=lambda r: r.number)
    return out


def preview_affected(
    session: Session, actor: Actor, incident_id: uuid.UUID, scope: Scope
) -> Affected:
    """The list for a scope, without saving it (the officer tries a window first)."""
    incident = _load(session, actor, incident_id, write=False)
    actor.require(Permission.INCIDENT_MANAGE)
    return _affected(session, actor, incident, scope)


def _affected(session: Session, actor: Actor, incident: Incident, scope: Scope) -> Affected:
    found = affected_mod.find(session, actor.clinic_id, scope)
    rows = _rows(session, actor, incident, found)
    return Affected(scope, rows, found.item_counts(), found.events, found.seqs, found.clinical)


def save_scope(session: Session, actor: Actor, incident_id: uuid.UUID, scope: Scope) -> Affected:
    """Make this scope the incident's affected-patient list (its count and items feed the
    proposal and the report's fields 2 and 3)."""
    incident = _load(session, actor, incident_id, write=True)
    found = _affected(session, actor, incident, scope)
    summary = {
        "scope": scope.as_dict(),
        "patients": len(found.rows),
        "clinical": found.clinical,
        "items": found.item_counts,
        "events": found.events,
    }
    _entry(session, actor, incident, "affected", json.dumps(summary, ensure_ascii=False))
    return found


def affected_list(session: Session, actor: Actor, incident_id: uuid.UUID) -> Affected | None:
    """The incident's saved affected-patient list (read by the register's readers; the read
    names patients and is audited as a list)."""
    incident = _load(session, actor, incident_id, write=False)
    scope = _saved_scope(_entries(session, incident)).scope
    if scope is None:
        return None
    return _affected(session, actor, incident, scope)


def record_notice(
    session: Session,
    actor: Actor,
    incident_id: uuid.UUID,
    patient_id: uuid.UUID,
    *,
    method: str,
    sent_on: dt.date,
) -> IncidentNotice:
    """What was sent to whom and when (the address as it was)."""
    incident = _load(session, actor, incident_id, write=True)
    if method not in METHODS:
        raise InvalidInput("通知の方法を選んでください。", "Choose how.", field="method")
    if sent_on > today() or sent_on < incident.knew_on:
        raise InvalidInput(
            "通知日は知った日から今日までの日付です。",
            "The date is between the knew-on date and today.",
            field="sent_on",
        )
    ref = gate.patient_ref(session, actor, patient_id, Intent.WRITE, "IncidentNotice")
    exists = session.scalar(
        select(IncidentNotice.id).where(
            IncidentNotice.incident_id == incident.id, IncidentNotice.patient_id == ref.id
        )
    )
    if exists is not None:
        raise Conflict("この患者への通知は記録済みです。", "Already recorded for this patient.")
    patient = session.get(Patient, ref.id)
    assert patient is not None
    notice = IncidentNotice(
        incident_id=incident.id,
        patient_id=ref.id,
        method=method,
        sent_on=sent_on,
        status=RecordStatus.ACTIVE.value,
    )
    notice.address = _address(patient)
    write_version(session, actor, notice, ChangeKind.CREATED)
    _entry(
        session,
        actor,
        incident,
        "notice",
        f"No.{patient.patient_number} に通知（{METHODS[method][0]}、{sent_on:%Y-%m-%d}）",
    )
    return notice


def letters_printed(
    session: Session, actor: Actor, incident: Incident, patient_ids: list[uuid.UUID]
) -> None:
    """Notice letters drafted: a print naming each patient (like a chart printed)."""
    record(
        session,
        actor,
        AuditTag.INCIDENT_PRINTED,
        patients=patient_ids,
        detail={"what": "notice-letter", "incident": str(incident.id)},
    )


# --- deadlines and reminders -----------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    incident_id: uuid.UUID
    number: int
    title: str
    deadline: rules.Deadline


def due_soon(session: Session, actor: Actor) -> list[Due]:
    """The APPI deadlines not yet met, nearest first (the banner of every page for those who
    run incidents, and the director's start page)."""
    if not actor.can(Permission.INCIDENT_READ):
        return []
    return _dues(session, actor.clinic_id)


def _dues(session: Session, clinic_id: uuid.UUID) -> list[Due]:
    out: list[Due] = []
    rows = session.scalars(
        select(Incident).where(
            Incident.clinic_id == clinic_id,
            Incident.stage != "closed",
            Incident.reportable != "no",
            Incident.final_sent_on.is_(None),
        )
    )
    for incident in rows:
        try:
            view = _view(session, incident)
        except RecordIntegrityFailed:
            continue  # refused where it is opened (and alerted there), never on every page
        if not view.deadlines_apply:
            continue
        for d in view.deadlines:
            if d.sent_on is None:
                out.append(Due(incident.id, incident.number, incident.title, d))
    out.sort(key=lambda d: d.deadline.due)
    return out


def remind(session: Session, clinic_id: uuid.UUID) -> int:
    """Once a day per deadline, from two days before until the report is marked sent: an
    alert for the security officer and the director (``mamori serve`` calls this)."""
    made = 0
    start = dt.datetime.combine(today(), dt.time(0, 0), JST)
    for due in _dues(session, clinic_id):
        d = due.deadline
        if d.state not in ("soon", "today", "overdue"):
            continue
        when = {
            "soon": f"あと{d.days_left}日",
            "today": "本日が期限",
            "overdue": f"期限を{-d.days_left}日過ぎています",
        }[d.state]
        summary = f"No.{due.number} {d.label_ja}: {d.due:%m月%d日}まで（{when}）"[:300]
        exists = session.scalar(
            select(SecurityAlert.id).where(
                SecurityAlert.clinic_id == clinic_id,
                SecurityAlert.kind == "incident-deadline",
                SecurityAlert.ref_id == due.incident_id,
                SecurityAlert.summary == summary,
                SecurityAlert.created_at >= start,
            )
        )
        if exists is not None:
            continue
        session.add(
            SecurityAlert(
                clinic_id=clinic_id,
                kind="incident-deadline",
                ref_id=due.incident_id,
                summary=summary,
            )
        )
        record_system(
            session,
            AuditTag.INCIDENT_REMINDED,
            {"incident": str(due.incident_id), "deadline": d.key, "state": d.state},
            channel="serve",
        )
        made += 1
    return made


def remind_due(database: Any) -> int:
    """``mamori serve``'s task: reminders for every clinic of the instance."""
    from mamori.clinic.models import Clinic

    made = 0
    with database.session(write=True) as session:
        for clinic_id in session.scalars(select(Clinic.id)):
            made += remind(session, clinic_id)
        session.commit()
    return made


# --- from other parts of mamori --------------------------------------------------------------


@dataclass
class Prefill:
    kind: str = "other"
    title: str = ""
    seen: str = ""
    source: str = "direct"
    scope: Scope | None = None


def prefill(session: Session, actor: Actor, source: str, ref: str, settings: Any = None) -> Prefill:
    """The open form, filled from where the incident was noticed."""
    actor.require(Permission.INCIDENT_MANAGE)
    if source == "detection-case":
        from mamori.detection.service import get_case

        view = get_case(session, actor, uuid.UUID(ref))
        case = view.case
        return Prefill(
            kind="insider",
            title="不審アクセス（職員による閲覧）",
            seen=view.sentence,
            source=f"detection-case:{case.id}",
            scope=Scope(
                user_id=case.user_id,
                start=case.first_at - dt.timedelta(days=1),
                end=case.last_at + dt.timedelta(hours=1),
            ),
        )
    if source == "alert":
        alert = gate.clinic_row_for(session, actor, SecurityAlert, uuid.UUID(ref), "alert")
        return Prefill(
            kind="unauthorised",
            title=f"警告: {alert.summary[:80]}",
            seen=alert.summary,
            source=f"alert:{alert.id}",
            scope=Scope(
                user_id=alert.user_id,
                start=alert.created_at - dt.timedelta(days=1),
                end=alert.created_at + dt.timedelta(hours=1),
            )
            if alert.user_id
            else None,
        )
    if source == "device":
        row = session.scalar(
            select(AuthSession).where(
                AuthSession.device_id == ref, AuthSession.clinic_id == actor.clinic_id
            )
        )
        if row is None:
            raise NotFound("device")
        return Prefill(
            kind="device",
            title="端末の紛失・盗難",
            seen=f"端末 {ref[:8]} のセッションを失効（{row.user_agent[:80]}）",
            source=f"device:{ref}",
            scope=Scope(device_id=ref),
        )
    if source == "backup-alarm":
        from mamori.backup import alarm

        standing = alarm.raised(settings) if settings is not None else None
        seen = json.dumps(standing, ensure_ascii=False)[:2000] if standing else ""
        return Prefill(
            kind="ransomware",
            title="バックアップのランサムウェア警報（大量の変更・暗号化の兆候）",
            seen=seen or "バックアップ時に大量の変更または暗号化の兆候を検知",
            source="backup-alarm",
        )
    if source == "audit-verify":
        return Prefill(
            kind="unauthorised",
            title="監査証跡の検証に失敗（改ざんの疑い）",
            seen="mamori audit verify が失敗しました。検証結果を添付してください。",
            source="audit-verify",
        )
    return Prefill()


# --- the contact chart ---------------------------------------------------------------------------


@dataclass
class ContactLine:
    duty: str
    scope: str
    label_ja: str
    label_en: str
    rows: list[IncidentContact]
    shipped: dict[str, str] | None

    @property
    def active(self) -> list[IncidentContact]:
        return [r for r in self.rows if r.active and (r.phone.strip() or r.name.strip())]

    @property
    def missing(self) -> bool:
        """A duty that must be reachable (BCP 2-3) has nobody: no active contact entered and
        nothing mamori could fill in."""
        return self.duty in REQUIRED_DUTIES and not self.active and not self.shipped

    @property
    def no_phone(self) -> bool:
        """Someone answers the duty, but no number is written down to reach them."""
        if self.duty not in REQUIRED_DUTIES or self.missing:
            return False
        if self.active:
            return not any(r.phone.strip() for r in self.active)
        return not (self.shipped or {}).get("phone") and self.duty != "ppc"


# the clinic's own accounts answer these duties until the chart names someone
_ROLE_DUTY = {"director": Role.DIRECTOR, "security_officer": Role.SECURITY_OFFICER}


def contact_chart(session: Session, actor: Actor) -> list[ContactLine]:
    """The contact chart, duty by duty: what the clinic entered, else the shipped outside
    bodies and, for the director and the security officer, the clinic's own accounts in those
    roles; ``missing`` marks a duty nobody answers, ``no_phone`` one with no number."""
    actor.require(Permission.INCIDENT_REPORT)  # everyone may see whom to call
    rows = list(
        session.scalars(
            select(IncidentContact)
            .where(IncidentContact.clinic_id == actor.clinic_id)
            .order_by(IncidentContact.position, IncidentContact.updated_at)
        )
    )
    holders: dict[str, list[str]] = {}
    for duty, role in _ROLE_DUTY.items():
        users = session.scalars(
            select(StaffUser).where(
                StaffUser.clinic_id == actor.clinic_id, StaffUser.role == role.value
            )
        )
        holders[duty] = [u.display_name for u in users if u.usable(utcnow())]
    out: list[ContactLine] = []
    for duty, (scope, ja, en) in DUTIES.items():
        mine = [r for r in rows if r.duty == duty]
        shipped = SHIPPED_CONTACTS.get(duty)
        if holders.get(duty):
            shipped = {"organisation": "院内", "name": "、".join(holders[duty]), "phone": ""}
        out.append(ContactLine(duty, scope, ja, en, mine, None if mine else shipped))
    return out


def contact_gaps(lines: list[ContactLine]) -> list[ContactLine]:
    """Duties that must be reachable and have nobody, or nobody with a number."""
    return [line for line in lines if line.missing or line.no_phone]


def set_contact(
    session: Session,
    actor: Actor,
    *,
    contact_id: uuid.UUID | None,
    duty: str,
    organisation: str,
    name: str,
    deputy: str,
    phone: str,
    when_to_call: str,
    active: bool,
    position: int = 0,
) -> IncidentContact:
    actor.require(Permission.INCIDENT_MANAGE)
    if duty not in DUTIES:
        raise InvalidInput("役割を選んでください。", "Choose a duty.", field="duty")
    phone = _text(phone, "phone", 40)
    if phone and not all(ch.isdigit() or ch in "-+() 　" for ch in phone):
        raise InvalidInput(
            "電話番号は数字とハイフンで入力してください。",
            "Digits and hyphens only.",
            field="phone",
        )
    if contact_id is None:
        row = IncidentContact(
            id=new_id(),
            clinic_id=actor.clinic_id,
            version=1,
            scope=DUTIES[duty][0],
            duty=duty,
            updated_by_id=actor.user_id,
        )
        session.add(row)
    else:
        row = gate.clinic_row_for(session, actor, IncidentContact, contact_id, "contact")
        row.version += 1
        row.duty, row.scope = duty, DUTIES[duty][0]
    row.organisation = _text(organisation, "organisation", 120)
    row.name = _text(name, "name", 80)
    row.deputy = _text(deputy, "deputy", 80)
    row.phone = phone
    row.when_to_call = _text(when_to_call, "when_to_call", 300)
    if not (row.name or row.organisation):
        raise InvalidInput(
            "氏名か組織名を入力してください。", "Give a name or an organisation.", field="name"
        )
    row.active = active
    row.position = max(0, min(position, 99))
    row.updated_by_id, row.updated_at = actor.user_id, utcnow()
    record(
        session,
        actor,
        AuditTag.CONTACTS_CHANGED,
        detail={"contact": str(row.id), "duty": duty, "version": row.version, "active": active},
    )
    session.flush()
    return row


def open_count(session: Session, actor: Actor) -> int:
    """Incidents not closed, for the menu (a count, no patient)."""
    if not actor.can(Permission.INCIDENT_READ):
        return 0
    return int(
        session.scalar(
            select(func.count())
            .select_from(Incident)
            .where(Incident.clinic_id == actor.clinic_id, Incident.stage != "closed")
        )
        or 0
    )
