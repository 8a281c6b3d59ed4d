"""The cyber-BCP (サイバー攻撃を想定した事業継続計画) generated from the clinic's actual state,
in the structure of the MHLW ひな形 (2024-06-06): scenarios, the contact chart, detection and
first response (the clinic's own ransomware playbook), the paper fallback for each function,
the backup table (what, where, how often, which copy is offline), recovery priority and the
restore steps with the last drill's RTO, after-action, and approvals: the director approves a
version (its text's SHA-256 kept), staff acknowledge having read it, and a review date is set
(the duties calendar reminds when it passes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record
from mamori.auth import admin
from mamori.authz.actor import Actor
from mamori.authz.permissions import Permission
from mamori.authz.roles import Role
from mamori.clinic.calendar import JST, clinic_today
from mamori.clinic.service import clinic_of
from mamori.continuity.models import DowntimeDrill
from mamori.db import new_id
from mamori.errors import Conflict, InvalidInput, NotAllowed
from mamori.incidents import service as incidents
from mamori.programme.logquery import last_event
from mamori.programme.models import BcpAcknowledgement, BcpApproval

REVIEW_MONTHS = 12

SCENARIOS = (
    ("記録が見られない", "電子カルテのサーバーが暗号化・故障し、画面が開かない。"
     "→ ダウンタイム資料（受付一覧・カルテ要約）と参照専用の待機系で診療を続ける。"),
    ("記録が入力できない", "閲覧はできるが記録が書けない（隔離中・読み取り専用）。"
     "→ 番号入りの紙の記録用紙に書き、復旧後に事後入力する。"),
    ("職員間の連絡がとれない", "院内ネットワークやメールが使えない。"
     "→ 連絡体制図の電話番号で連絡する。"),
    ("機器の不具合", "端末・プリンタ・ネットワーク機器が動かない。"
     "→ 保守ベンダーに連絡し、別の端末を使う。"),
)  # fmt: skip
FALLBACK = (
    ("受付・予約", "受付票（番号入り）と当日の受付一覧",
     "ダウンタイム資料 00_受付一覧・20_記録用紙"),
    ("診察記録", "経過記録（SOAP）用紙", "20_記録用紙"),
    ("処方", "処方控え（RP ごと）。院外処方箋は手書き", "20_記録用紙"),
    ("検査・バイタル", "バイタル・検査記録用紙", "20_記録用紙"),
    ("新患登録", "新患登録票（ダウンタイム番号で後から照合）", "20_記録用紙"),
    ("カルテの参照", "カルテ要約（病名・処方・アレルギー・最近の記録と検査）・参照専用の待機系",
     "10_カルテ要約、mamori standby"),
    ("連絡", "連絡体制図（A4 1枚）", "30_連絡体制図"),
)  # fmt: skip
PRIORITY = (
    "カルテの参照（待機系・カルテ要約）",
    "受付・会計",
    "処方（院外処方箋）",
    "診察記録の入力（事後入力を含む）",
    "検査結果の取り込み",
    "連携（検査会社・レセプト）",
)


@dataclass
class Document:
    clinic: str
    made_on: dt.date
    contacts: list[incidents.ContactLine]
    playbook: list[dict[str, str]]
    backups: list[tuple[str, str, str, str]]  # name, kind/where, how often, offline?
    last_drill: str
    standby: str
    downtime: str
    approval: BcpApproval | None
    text: str = ""
    acknowledged: int = 0
    staff: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _latest(session: Session, actor: Actor) -> BcpApproval | None:
    return session.scalar(
        select(BcpApproval)
        .where(BcpApproval.clinic_id == actor.clinic_id)
        .order_by(BcpApproval.version.desc())
        .limit(1)
    )


def document(session: Session, actor: Actor, settings: Any) -> Document:
    """The BCP as it stands now (everyone on staff may read it: it holds no patient data)."""
    actor.require(Permission.INCIDENT_REPORT)
    clinic = clinic_of(session, actor)
    every = settings.backup.interval_minutes
    backups = [
        (
            t.name,
            f"{t.kind}: {t.url()}",
            f"{every}分ごと" if settings.backup.schedule else "手動（mamori backup run）",
            "オフライン（取り外す媒体）"
            if t.offline
            else "書き換え不可（オブジェクトロック）"
            if t.kind == "s3" and t.lock_mode
            else "常時接続",
        )
        for t in settings.backup.targets
    ]
    drill = last_event(session, "system:backup:drilled", 400)
    last_drill = (
        f"{drill[0].astimezone(JST):%Y-%m-%d}（RTO "
        f"{(drill[1].get('detail') or {}).get('rto_seconds', '—')} 秒、"
        f"{'成功' if (drill[1].get('detail') or {}).get('ok', True) else '失敗'}）"
        if drill
        else "まだ実施されていません"
    )
    dt_drill = session.scalar(
        select(func.max(DowntimeDrill.held_on)).where(DowntimeDrill.clinic_id == actor.clinic_id)
    )
    doc = Document(
        clinic=clinic.name,
        made_on=clinic_today(),
        contacts=incidents.contact_chart(session, actor),
        playbook=incidents.playbook(session, actor.clinic_id, "ransomware"),
        backups=backups,
        last_drill=last_drill,
        standby="ダウンタイム資料の送り先: "
        + ("、".join(str(d) for d in settings.downtime.destinations) or "未設定")
        + "。待機系: mamori standby（別の PC）",
        downtime=f"最後のダウンタイム訓練: {dt_drill:%Y-%m-%d}" if dt_drill else "訓練の記録なし",
        approval=_latest(session, actor),
    )
    if not backups:
        doc.missing.append("バックアップの保存先が設定されていません")
    elif not any(b[3] != "常時接続" for b in backups):
        doc.missing.append("オフラインまたは書き換え不可のバックアップがありません")
    if not settings.downtime.enabled:
        doc.missing.append("ダウンタイム資料の自動作成が設定されていません")
    gaps = incidents.contact_gaps(doc.contacts)
    if gaps:
        doc.missing.append("連絡体制図の不足: " + "、".join(g.label_ja for g in gaps))
    doc.text = _text(doc)
    if doc.approval is not None:
        doc.acknowledged = int(
            session.scalar(
                select(func.count())
                .select_from(BcpAcknowledgement)
                .where(BcpAcknowledgement.approval_id == doc.approval.id)
            )
            or 0
        )
    return doc


def _text(doc: Document) -> str:
    """The plan as text (what the director approves; its SHA-256 is kept with the approval)."""
    lines = [f"{doc.clinic} サイバー攻撃を想定した事業継続計画"]
    lines += [f"想定: {a} — {b}" for a, b in SCENARIOS]
    for line in doc.contacts:
        who = "、".join(f"{r.organisation} {r.name} {r.phone}".strip() for r in line.active) or (
            line.shipped or {}
        ).get("organisation", "")
        lines.append(f"連絡: {line.label_ja}: {who}")
    lines += [f"初動{n}: {s['title']}" for n, s in enumerate(doc.playbook, 1)]
    lines += [f"代替: {a}: {b}" for a, b, _ in FALLBACK]
    lines += [f"バックアップ: {' / '.join(b)}" for b in doc.backups]
    lines += [f"優先順位{n}: {p}" for n, p in enumerate(PRIORITY, 1)]
    return "\n".join(lines)


def approve(session: Session, actor: Actor, settings: Any, note: str = "") -> BcpApproval:
    """The director approves the plan as generated now; the review date is a year on."""
    actor.require(Permission.PROGRAMME_MANAGE)
    if actor.role is not Role.DIRECTOR:
        raise NotAllowed("BCP を承認するのは院長です。", "The director approves the BCP.")
    doc = document(session, actor, settings)
    last = doc.approval
    if last is not None and last.text_sha256 == doc.sha256 and last.approved_on == clinic_today():
        raise Conflict("この内容は本日承認済みです。", "Already approved today as it stands.")
    today = clinic_today()
    try:
        review = today.replace(year=today.year + 1)
    except ValueError:  # 29 February
        review = today + dt.timedelta(days=365)
    row = BcpApproval(
        id=new_id(),
        clinic_id=actor.clinic_id,
        version=(last.version + 1) if last else 1,
        approved_by_id=actor.user_id,
        approved_on=today,
        review_on=review,
        text_sha256=doc.sha256,
        note=note.strip()[:500],
    )
    session.add(row)
    record(
        session,
        actor,
        AuditTag.BCP_APPROVED,
        detail={"version": row.version, "sha256": doc.sha256, "review_on": review.isoformat()},
    )
    session.flush()
    return row


def acknowledge(session: Session, actor: Actor) -> BcpAcknowledgement:
    """A staff member has read the approved plan."""
    actor.require(Permission.INCIDENT_REPORT)
    latest = _latest(session, actor)
    if latest is None:
        raise InvalidInput(
            "承認された BCP がまだありません。", "No approved BCP yet.", field="version"
        )
    done = session.scalar(
        select(BcpAcknowledgement).where(
            BcpAcknowledgement.approval_id == latest.id,
            BcpAcknowledgement.user_id == actor.user_id,
        )
    )
    if done is not None:
        return done
    row = BcpAcknowledgement(
        id=new_id(), clinic_id=actor.clinic_id, approval_id=latest.id, user_id=actor.user_id
    )
    session.add(row)
    record(session, actor, AuditTag.BCP_READ, detail={"version": latest.version})
    session.flush()
    return row


def unread(session: Session, actor: Actor) -> list[str]:
    """Staff who have not acknowledged the latest approved version (for the director)."""
    actor.require(Permission.PROGRAMME_READ)
    latest = _latest(session, actor)
    read = (
        set(
            session.scalars(
                select(BcpAcknowledgement.user_id).where(
                    BcpAcknowledgement.approval_id == latest.id
                )
            )
        )
        if latest
        else set()
    )
    return [
        v.display_name
        for v in admin.list_staff(session, actor)
        if v.active and v.kind == "person" and v.role != Role.VENDOR.value and v.id not in read
    ]


def has_read(session: Session, actor: Actor) -> bool:
    latest = _latest(session, actor)
    if latest is None:
        return False
    return (
        session.scalar(
            select(BcpAcknowledgement.id).where(
                BcpAcknowledgement.approval_id == latest.id,
                BcpAcknowledgement.user_id == actor.user_id,
            )
        )
        is not None
    )


def last_approved(session: Session, actor: Actor) -> dt.date | None:
    latest = _latest(session, actor)
    return latest.approved_on if latest else None
