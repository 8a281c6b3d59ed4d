"""Reviewing the audit trail: who opened this patient, what did this user open, recorded
reviews (MHLW checklist evidence), and the patient's "who has looked at my record" report.

Reading the log needs ``audit:read`` (director, security officer, auditor); recording a review
needs ``audit:review``. Reading the log is itself logged, with the patients it showed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mamori.audit.models import (
    AuditEvent,
    AuditEventPatient,
    AuditEventUser,
    AuditHead,
    AuditReview,
)
from mamori.audit.trail import AuditTag, record
from mamori.authz import gate
from mamori.authz.actor import Actor, Intent
from mamori.authz.permissions import Permission
from mamori.authz.roles import Role
from mamori.clinic.models import StaffUser
from mamori.db import new_id, utcnow
from mamori.errors import InvalidInput
from mamori.patients.access import patient_for
from mamori.patients.models import Patient

MAX_ROWS = 2000

TAG_JA = {
    "patient:chart:viewed": "カルテを閲覧",
    "patient:chart:printed": "カルテを印刷",
    "patient:prescription:printed": "処方箋を印刷",
    "continuity:bundle:written": "ダウンタイム用資料を作成",
    "continuity:bundle:closed": "ダウンタイム番号の残りを未使用として閉じる",
    "continuity:standby-log:merged": "待機系の監査記録を取り込み",
    "continuity:isolation:on": "サーバーを隔離",
    "continuity:isolation:lifted": "隔離を解除",
    "continuity:drill:recorded": "ダウンタイム訓練を記録",
    "continuity:standby-key:added": "待機用の鍵を登録",
    "continuity:standby-key:revoked": "待機用の鍵を失効",
    "patient:record:viewed": "記録を閲覧",
    "detection:pass:completed": "不審アクセス検知の実行",
    "detection:queue:viewed": "不審アクセスの確認一覧を閲覧",
    "detection:case:reviewed": "不審アクセスの事例を判定",
    "admin:roster:changed": "勤務表を変更",
    "admin:staff-facts:changed": "職員の世帯情報・家族の登録を変更",
    "patient:list:viewed": "一覧・検索結果に表示",
    "patient:data:exported": "データを出力",
    "record:created": "記録を作成",
    "record:updated": "記録を更新",
    "record:finalised": "記録を確定",
    "record:confirmed": "代行入力を承認",
    "record:amended": "確定後に修正",
    "record:entered-in-error": "記録を取消",
    "record:merged": "患者統合",
    "record:status-changed": "状態を変更",
    "audit:log:viewed": "監査証跡を閲覧",
    "auth:login:succeeded": "ログイン",
    "auth:login:failed": "ログイン失敗",
    "auth:factor:failed": "2要素認証の失敗",
    "auth:factor:enrolled": "2要素認証を登録",
    "auth:factor:revoked": "2要素認証を解除",
    "auth:account:locked": "アカウントロック",
    "auth:session:ended": "ログアウト",
    "auth:session:expired": "セッション期限切れ",
    "auth:session:revoked": "セッションを強制終了",
    "auth:reauth:succeeded": "本人再確認",
    "auth:password:changed": "パスワード変更",
    "auth:token:issued": "APIトークンを発行",
    "auth:token:revoked": "APIトークンを失効",
    "admin:staff:created": "職員アカウントを作成",
    "access:permission:denied": "権限なしで拒否",
    "access:break-glass:granted": "緊急時アクセス",
    "access:restricted:opened": "閲覧制限患者を閲覧",
    "system:record:integrity-failed": "記録の改ざんを検知",
}


def tag_ja(tag: str) -> str:
    return TAG_JA.get(tag, tag)


WHAT_JA = {  # what an access reached, as a reviewer reads it
    "chart": "カルテ",
    "Patient": "患者基本情報",
    "Coverage": "保険",
    "Encounter": "受診",
    "ProgressNote": "経過記録",
    "Condition": "病名",
    "AllergyIntolerance": "アレルギー",
    "MedicationRequest": "処方",
    "Observation": "検査・バイタル",
    "Document": "文書",
    "Patient:search": "患者検索",
    "Patient:duplicates": "重複候補",
    "Patient:awaiting-confirmation": "承認待ち一覧",
    "Encounter:day-list": "受付一覧",
    "Encounter:bookings": "予約一覧",
    "verify": "記録の検証",
    "ContactLog": "電話・窓口対応",
    "detection-review": "不審アクセスの確認",
}


def what_ja(what: str | None) -> str:
    return WHAT_JA.get(what or "", what or "")


@dataclass(frozen=True)
class Access:
    seq: int
    at: dt.datetime
    tag: str
    user_id: str | None
    user_name: str
    role: str
    patients: list[str]
    what: str | None
    ip: str | None
    # the patients as a reviewer reads them ("No.12 山田 花子"), filled by the list views
    patient_labels: tuple[str, ...] = ()


def _require_reviewer(actor: Actor, permission: Permission = Permission.AUDIT_READ) -> None:
    actor.require(permission)


def _hashed_time(spelled: object, column: dt.datetime) -> dt.datetime:
    """An event's time as its hashed body spells it (``…T…Z``, always UTC)."""
    if isinstance(spelled, str):
        try:
            return dt.datetime.fromisoformat(spelled.replace("Z", "+00:00"))
        except ValueError:
            pass
    return column


def _rows(
    session: Session,
    actor: Actor,
    seqs_stmt: Any,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> list[Access]:
    stmt = select(AuditEvent.seq, AuditEvent.recorded_at, AuditEvent.tag, AuditEvent.body).where(
        AuditEvent.seq.in_(seqs_stmt)
    )
    if since:
        stmt = stmt.where(AuditEvent.recorded_at >= since)
    if until:
        stmt = stmt.where(AuditEvent.recorded_at < until)
    rows = session.execute(stmt.order_by(AuditEvent.seq.desc()).limit(min(limit, MAX_ROWS))).all()
    names = {
        str(u.id): (u.display_name, Role(u.role).label_ja)
        for u in session.scalars(select(StaffUser).where(StaffUser.clinic_id == actor.clinic_id))
    }
    out = []
    for seq, at, tag, body in rows:
        event = json.loads(bytes(body))
        who = event.get("actor", {})
        if who.get("clinic") not in (None, str(actor.clinic_id)):
            continue  # another clinic's staff on a shared instance: not this reviewer's to see
        uid = who.get("user")
        name, role = names.get(
            uid or "", ("（システム）" if uid is None else "（他院）", who.get("role", ""))
        )
        out.append(
            Access(
                seq=seq,
                # what was hashed, not the columns beside it (an edited column is a finding of
                # ``mamori audit verify``; the review never shows it as the truth)
                at=_hashed_time(event.get("at"), at),
                tag=str(event.get("tag", tag)),
                user_id=uid,
                user_name=name,
                role=role,
                patients=event.get("patients", []),
                what=(event.get("detail") or {}).get("what"),
                ip=who.get("ip"),
            )
        )
    return out


def _labelled(session: Session, actor: Actor, rows: list[Access]) -> list[Access]:
    """Each row with its patients named (患者番号 and name): a review asks "was this access
    right?", which nobody can answer from an ID. The list view that shows them is logged by
    the caller with the same patients."""
    wanted = {p for r in rows for p in r.patients}
    if not wanted:
        return rows
    found = session.scalars(
        select(Patient).where(
            Patient.clinic_id == actor.clinic_id, Patient.id.in_([uuid.UUID(p) for p in wanted])
        )
    ).all()
    label = {str(p.id): f"No.{p.patient_number} {p.full_name}" for p in found}
    return [
        dataclasses.replace(r, patient_labels=tuple(label.get(p, "—") for p in r.patients))
        for r in rows
    ]


def unreviewed(session: Session, actor: Actor, limit: int = 100) -> list[Access]:
    """The patient accesses since the last recorded review, newest first: what "mark as
    reviewed" asks the reviewer to have looked at."""
    _require_reviewer(actor)
    last = session.scalar(
        select(func.max(AuditReview.through_seq)).where(AuditReview.clinic_id == actor.clinic_id)
    )
    seqs = select(AuditEventPatient.seq).where(AuditEventPatient.seq > (last or 0))
    rows = _labelled(session, actor, _rows(session, actor, seqs, None, None, limit))
    record(
        session,
        actor,
        AuditTag.AUDIT_VIEWED,
        patients=sorted({uuid.UUID(p) for r in rows for p in r.patients}),
        detail={"scope": "unreviewed", "rows": len(rows)},
    )
    return rows


def who_opened(
    session: Session,
    actor: Actor,
    patient_id: uuid.UUID,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 500,
) -> list[Access]:
    """Every logged access to one patient, newest first."""
    _require_reviewer(actor)
    patient = patient_for(session, actor, patient_id, Intent.READ, "audit-review")
    seqs = select(AuditEventPatient.seq).where(AuditEventPatient.patient_id == patient.id)
    rows = _rows(session, actor, seqs, since, until, limit)
    record(
        session,
        actor,
        AuditTag.AUDIT_VIEWED,
        patients=[patient.id],
        detail={"scope": "patient", "rows": len(rows)},
    )
    return rows


def what_user_opened(
    session: Session,
    actor: Actor,
    user_id: uuid.UUID,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 500,
) -> list[Access]:
    """Everything one staff member did, newest first (the patients shown are logged)."""
    _require_reviewer(actor)
    user = gate.clinic_row_for(session, actor, StaffUser, user_id, "staff")
    seqs = select(AuditEventUser.seq).where(AuditEventUser.user_id == user.id)
    rows = _labelled(session, actor, _rows(session, actor, seqs, since, until, limit))
    shown = sorted({uuid.UUID(p) for r in rows for p in r.patients})
    record(
        session,
        actor,
        AuditTag.AUDIT_VIEWED,
        patients=shown,
        detail={"scope": "user", "user": str(user.id), "rows": len(rows)},
    )
    return rows


def record_review(
    session: Session,
    actor: Actor,
    *,
    scope: str,
    subject_id: uuid.UUID | None,
    outcome: str,
    finding: str,
) -> AuditReview:
    """A completed review: who, when, which part of the log (through the current size), and
    the finding. Kept forever (insert-only), logged in the trail as well."""
    _require_reviewer(actor, Permission.AUDIT_REVIEW)
    if scope not in ("period", "patient", "user") or outcome not in ("no-issue", "follow-up"):
        raise InvalidInput(
            "レビューの範囲または結果が正しくありません。",
            "Invalid review scope or outcome.",
            field="scope",
        )
    if outcome == "follow-up" and not finding.strip():
        raise InvalidInput(
            "要対応の場合は所見を入力してください。",
            "A follow-up needs a finding.",
            field="finding",
        )
    size = session.scalar(select(AuditHead.size).where(AuditHead.id == 1)) or 0
    review = AuditReview(
        id=new_id(),
        clinic_id=actor.clinic_id,
        reviewer_id=actor.user_id,
        reviewed_at=utcnow(),
        scope=scope,
        subject_id=subject_id,
        through_seq=size,
        outcome=outcome,
        finding=finding.strip(),
    )
    session.add(review)
    record(
        session,
        actor,
        AuditTag.REVIEW_RECORDED,
        detail={"scope": scope, "through_seq": size, "outcome": outcome},
    )
    return review


def list_reviews(session: Session, actor: Actor, limit: int = 100) -> Sequence[AuditReview]:
    _require_reviewer(actor)
    return session.scalars(
        select(AuditReview)
        .where(AuditReview.clinic_id == actor.clinic_id)
        .order_by(AuditReview.reviewed_at.desc())
        .limit(limit)
    ).all()


def review_status(session: Session, actor: Actor) -> dict[str, Any]:
    """When the log was last reviewed and how much has been logged since (checklist evidence)."""
    _require_reviewer(actor)
    last = (
        session.scalar(
            select(func.max(AuditReview.through_seq)).where(
                AuditReview.clinic_id == actor.clinic_id
            )
        )
        or 0
    )
    head = session.get(AuditHead, 1)
    size = head.size if head else 0
    root = head.merkle_frontier().root() if head else b""
    return {
        "log_size": size,
        "root": root.hex(),
        "reviewed_through": last,
        "unreviewed_events": size - last,
    }


def patient_of(session: Session, actor: Actor, patient_id: uuid.UUID) -> Patient:
    _require_reviewer(actor)
    return patient_for(session, actor, patient_id, Intent.READ, "audit-review")
