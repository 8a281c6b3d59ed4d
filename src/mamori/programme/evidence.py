"""The answers mamori can propose from its own state, each with a dated evidence snapshot a
person signs off (jp-regulation.md Part 8): who holds administrator rights, two-factor
coverage counting every way in, accounts unused or kept after leaving, the log and its
reviews, the password rules in force, backups with an offline or immutable copy and the last
restore drill, the contact chart. Nothing here decides: a proposal is はい or いいえ with why,
or None where mamori cannot know (a person answers)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori import __version__
from mamori.audit.models import AuditReview
from mamori.auth import admin, passwords
from mamori.authz.actor import Actor
from mamori.authz.permissions import ROLE_PERMISSIONS, Permission
from mamori.authz.roles import Role
from mamori.backup import service as backups
from mamori.clinic.calendar import JST
from mamori.clinic.models import StaffUser
from mamori.continuity.models import DowntimeBundle, DowntimeDrill
from mamori.db import utcnow
from mamori.detection.models import StaffProfile
from mamori.incidents import service as incidents
from mamori.programme import bcp
from mamori.programme.logquery import last_event
from mamori.programme.models import AccountReview

UNUSED_DAYS = 90  # an account not signed in for this long is "unused" (CL-2-5)
REVIEW_DAYS = 93  # a log review within about a quarter (CL-2-6)
BACKUP_HOURS = 26  # a daily backup, with slack
DRILL_DAYS = 62  # a restore drill within about two months (monthly is the habit)
# the reviews of the log itself (a detection case decided is one; an account review is not)
LOG_SCOPES = ("period", "patient", "user", "detection-case")


@dataclass(frozen=True)
class Proposal:
    answer: str | None  # yes | no | None (a person answers)
    ja: str  # the evidence, dated
    en: str
    facts: dict[str, Any] = field(default_factory=dict)


def _on() -> str:
    return f"{dt.datetime.now(JST):%Y-%m-%d %H:%M}時点"


def _admins(session: Session, actor: Actor) -> list[admin.StaffView]:
    return [
        v
        for v in admin.list_staff(session, actor)
        if v.active and Permission.STAFF_ADMIN in ROLE_PERMISSIONS.get(Role(v.role), frozenset())
    ]


def propose(session: Session, actor: Actor, settings: Any, kind: str) -> Proposal | None:
    """The proposal for an item of this automatic kind (``auto`` in the item set)."""
    fn = _KINDS.get(kind)
    return fn(session, actor, settings) if fn else None


def _system(session: Session, actor: Actor, settings: Any) -> Proposal:
    return Proposal(
        "yes",
        f"{_on()}: 電子カルテ mamori {__version__} を運用中。",
        f"mamori {__version__} in use.",
    )


def _manager(session: Session, actor: Actor, settings: Any) -> Proposal:
    views = [v for v in admin.list_staff(session, actor) if v.active]
    officers = [v.display_name for v in views if v.role == Role.SECURITY_OFFICER.value]
    directors = [v.display_name for v in views if v.role == Role.DIRECTOR.value]
    if officers:
        return Proposal(
            "yes",
            f"{_on()}: 安全管理者 {'、'.join(officers)}"
            f"（管理者 {'、'.join(directors) or 'なし'}）。",
            f"Security officer(s): {', '.join(officers)}.",
            {"officers": officers},
        )
    if directors:
        return Proposal(
            "yes",
            f"{_on()}: 安全管理者のアカウントはなく、院長 {'、'.join(directors)} が兼務"
            "（小規模の診療所では企画管理者との兼務も可）。任命日を記録してください。",
            f"No security officer account; the director ({', '.join(directors)}) holds it.",
            {"officers": directors},
        )
    return Proposal("no", f"{_on()}: 安全管理者・院長のアカウントがありません。", "No manager.")


def _access(session: Session, actor: Actor, settings: Any) -> Proposal:
    views = [v for v in admin.list_staff(session, actor) if v.active]
    roles: dict[str, int] = {}
    for v in views:
        roles[v.role_ja] = roles.get(v.role_ja, 0) + 1
    holders = [f"{v.display_name}（{v.role_ja}）" for v in _admins(session, actor)]
    vendors = [v.display_name for v in views if v.role == Role.VENDOR.value]
    return Proposal(
        "yes" if holders else "no",
        f"{_on()}: 役割ごとの権限（"
        + "、".join(f"{k} {n}人" for k, n in sorted(roles.items()))
        + f"）。管理者権限（職員と権限の管理）を持つ者: {'、'.join(holders) or 'なし'}。"
        + (f"保守ベンダー（保守時間枠の中だけ閲覧）: {'、'.join(vendors)}。" if vendors else ""),
        f"Role-based access; administrator rights: {', '.join(holders) or 'none'}.",
        {"admins": holders, "roles": roles},
    )


def _accounts(session: Session, actor: Actor, settings: Any) -> Proposal:
    now = utcnow()
    today = now.astimezone(JST).date()
    views = [v for v in admin.list_staff(session, actor) if v.active and v.kind == "person"]
    unused = [
        v.display_name
        for v in views
        if v.last_sign_in is not None and v.last_sign_in < now - dt.timedelta(days=UNUSED_DAYS)
    ]
    never = [
        v.display_name for v in views if v.last_sign_in is None and v.role != Role.VENDOR.value
    ]
    left = [
        v.display_name
        for v in views
        for p in session.scalars(
            select(StaffProfile).where(
                StaffProfile.user_id == v.id, StaffProfile.left_on.is_not(None)
            )
        )
        if p.left_on is not None and p.left_on < today
    ]
    reviewed = session.scalar(
        select(AccountReview.reviewed_at)
        .where(AccountReview.clinic_id == actor.clinic_id)
        .order_by(AccountReview.reviewed_at.desc())
        .limit(1)
    )
    review_text = (
        f"最後のアカウント棚卸し: {reviewed.astimezone(JST):%Y-%m-%d}。"
        if reviewed
        else "アカウント棚卸しの記録はまだありません（「アカウント棚卸し」画面）。"
    )
    # past the end date but never disabled: it cannot sign in, yet the account is still there
    expired = [
        u.display_name
        for u in session.scalars(
            select(StaffUser).where(
                StaffUser.clinic_id == actor.clinic_id,
                StaffUser.active.is_(True),
                StaffUser.expires_at.is_not(None),
                StaffUser.expires_at < now,
            )
        )
    ]
    problems = []
    if expired:
        problems.append(f"利用期限を過ぎても残っている: {'、'.join(expired)}")
    if unused:
        problems.append(f"{UNUSED_DAYS}日以上使われていない: {'、'.join(unused)}")
    if left:
        problems.append(f"退職日を過ぎても有効: {'、'.join(left)}")
    facts = {
        "unused": unused,
        "left": left,
        "never": never,
        "expired": expired,
        "active": len(views),
    }
    if problems:
        return Proposal(
            "no",
            f"{_on()}: "
            + "。".join(problems)
            + "。「アカウント棚卸し」で無効化するか、継続の理由を記録してください。"
            + review_text,
            "Unneeded accounts remain: " + "; ".join(problems),
            facts,
        )
    extra = f"（まだ一度もログインしていない: {'、'.join(never)}）" if never else ""
    return Proposal(
        "yes",
        f"{_on()}: 有効な職員アカウント {len(views)} 件に、{UNUSED_DAYS}日以上未使用・"
        f"退職日を過ぎたものはありません{extra}。{review_text}",
        f"{len(views)} active accounts; none unused for {UNUSED_DAYS} days or past leaving.",
        facts,
    )


def _log(session: Session, actor: Actor, settings: Any) -> Proposal:
    last = session.scalar(
        select(AuditReview.reviewed_at)
        .where(AuditReview.clinic_id == actor.clinic_id, AuditReview.scope.in_(LOG_SCOPES))
        .order_by(AuditReview.reviewed_at.desc())
        .limit(1)
    )
    recent = last is not None and last > utcnow() - dt.timedelta(days=REVIEW_DAYS)
    when = f"{last.astimezone(JST):%Y-%m-%d}" if last else "なし"
    text = (
        f"{_on()}: すべてのログイン・閲覧・記録を改ざん検知付き（ハッシュ連鎖・署名付き"
        f"チェックポイント）の監査証跡に記録。最後のログ確認（点検記録）: {when}。"
    )
    if recent:
        return Proposal("yes", text, f"Audit trail kept; last review {when}.", {"review": when})
    return Proposal(
        "no",
        text + f"直近{REVIEW_DAYS}日にログ確認の記録がありません（「アクセス確認」で点検を記録）。",
        f"No log review recorded in {REVIEW_DAYS} days (last: {when}).",
        {"review": when},
    )


def _password(session: Session, actor: Actor, settings: Any) -> Proposal:
    ok = passwords.MIN_LENGTH >= 13
    return Proposal(
        "yes" if ok else "no",
        f"{_on()}: mamori のパスワードは{passwords.MIN_LENGTH}文字以上"
        "（推測されやすいものは拒否）、"
        "全員に二要素認証を必須としているため定期変更は不要。OS・ネットワーク機器のパスワードは"
        "別に確認してください。",
        f"mamori passwords: {passwords.MIN_LENGTH}+ characters and a second factor for everyone.",
        {"min_length": passwords.MIN_LENGTH},
    )


def _reuse(session: Session, actor: Actor, settings: Any) -> Proposal:
    return Proposal(
        "yes" if passwords.HISTORY >= 1 else "no",
        f"{_on()}: mamori では直近{passwords.HISTORY}回のパスワードを再使用できません。"
        "他のシステム・機器での使い回しは mamori からは見えないため、院内で確認してください。",
        f"mamori refuses the last {passwords.HISTORY} passwords; other systems: confirm.",
        {"history": passwords.HISTORY},
    )


def _two_factor(session: Session, actor: Actor, settings: Any) -> Proposal:
    c = admin.two_factor_coverage(session, actor)
    views = [v for v in admin.list_staff(session, actor) if v.active]
    without = [v.display_name for v in views if v.kind == "person" and not v.factors]
    integrations = [v.display_name for v in views if v.kind != "person"]
    # every way in: a person without a factor, a token held without one, an integration
    # account that reads with a token alone — none of them is covered
    ways = c["active"] + c["integrations"]
    covered = c["with_2fa"]
    facts = {**c, "without": without, "integration_accounts": integrations}
    text = f"{_on()}: 二要素認証 {covered}/{ways}（職員 {c['with_2fa']}/{c['active']} 人"
    if c["integrations"]:
        text += f"、連携アカウント {c['integrations']} 件はトークンだけで読めるため未充足に数える"
    text += "）。"
    if without:
        text += f"未登録: {'、'.join(without)}。"
    if c["tokens_without_2fa"]:
        text += f"うち {c['tokens_without_2fa']} 人は二要素なしで API トークンを持っています。"
    if integrations:
        text += (
            f"連携: {'、'.join(integrations)}（スコープと期限付きトークン。接続元の制限を推奨）。"
        )
    en = f"Second factor: {covered} of {ways} ways in (people {c['with_2fa']}/{c['active']})."
    return Proposal("yes" if ways and covered == ways else "no", text, en, facts)


def _contacts(session: Session, actor: Actor, settings: Any) -> Proposal:
    gaps = incidents.contact_gaps(incidents.contact_chart(session, actor))
    if gaps:
        names = "、".join(g.label_ja for g in gaps)
        return Proposal(
            "no",
            f"{_on()}: 連絡体制図に連絡先または電話番号のない役割: {names}。",
            "Contact chart gaps: " + ", ".join(g.label_en for g in gaps),
            {"gaps": [g.duty for g in gaps]},
        )
    return Proposal(
        "yes",
        f"{_on()}: 連絡体制図（院内・保守ベンダー・厚生労働省・警察・保健所・個人情報保護委員会）に"
        "すべて連絡先あり。A4 で印刷でき、ダウンタイム資料にも入ります。",
        "The contact chart covers every required duty.",
    )


def _backup(session: Session, actor: Actor, settings: Any) -> Proposal:
    status = backups.status(settings)
    targets = settings.backup.targets
    offline = [t.name for t in targets if t.offline or (t.kind == "s3" and t.lock_mode)]
    now = dt.datetime.now(dt.UTC)
    newest = None
    for m in status["media"]:
        try:
            at = dt.datetime.fromisoformat(str(m["at"]))
        except ValueError:
            continue
        at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
        newest = at if newest is None or at > newest else newest
    drill = last_event(session, "system:backup:drilled", DRILL_DAYS + 30)
    drill_ok = (
        drill is not None
        and drill[0] > utcnow() - dt.timedelta(days=DRILL_DAYS)
        and (drill[1].get("detail") or {}).get("ok", True)
    )
    missing = []
    if not status["configured"]:
        missing.append("バックアップが設定されていません")
    if status["generation"] < 2:
        missing.append("世代が2つ未満です")
    if not offline:
        missing.append(
            "オフライン（取り外す媒体）または書き換え不可（オブジェクトロック）の保存先がありません"
        )
    if newest is None or newest < now - dt.timedelta(hours=BACKUP_HOURS):
        missing.append(f"直近{BACKUP_HOURS}時間にバックアップがありません")
    if not drill_ok:
        missing.append(
            f"直近{DRILL_DAYS}日に成功した復元訓練がありません（mamori drill）"
            if drill is None or drill[0] <= utcnow() - dt.timedelta(days=DRILL_DAYS)
            else "直近の復元訓練が失敗しています"
        )
    drill_text = (
        f"{drill[0].astimezone(JST):%Y-%m-%d}（"
        + ("成功" if (drill[1].get("detail") or {}).get("ok", True) else "失敗")
        + f"、RTO {(drill[1].get('detail') or {}).get('rto_seconds', '—')}秒）"
        if drill
        else "なし"
    )
    text = (
        f"{_on()}: 保存先 {len(targets)} か所（"
        + "、".join(f"{t.name}:{t.kind}{'・オフライン' if t.offline else ''}" for t in targets)
        + f"）、世代 {status['generation']}、最新 "
        + (f"{newest.astimezone(JST):%Y-%m-%d %H:%M}" if newest else "なし")
        + f"、オフライン／書き換え不可: {'、'.join(offline) or 'なし'}"
        + f"、最後の復元訓練: {drill_text}。"
    )
    facts = {"generation": status["generation"], "offline": offline, "drill": drill_text}
    if missing:
        return Proposal(
            "no", text + "不足: " + "。".join(missing) + "。", "; ".join(missing), facts
        )
    return Proposal("yes", text, "Backups with generations, an offline copy and a drill.", facts)


def _last_downtime_drill(session: Session, actor: Actor) -> DowntimeDrill | None:
    return session.scalar(
        select(DowntimeDrill)
        .where(DowntimeDrill.clinic_id == actor.clinic_id)
        .order_by(DowntimeDrill.held_on.desc())
        .limit(1)
    )


def _bcp(session: Session, actor: Actor, settings: Any) -> Proposal:
    doc = bcp.document(session, actor, settings)
    drill = _last_downtime_drill(session, actor)
    held = f"{drill.held_on:%Y-%m-%d}" if drill else "なし"
    a = doc.approval
    today = utcnow().astimezone(JST).date()
    if a is None:
        return Proposal(
            "no",
            f"{_on()}: BCP（事業継続計画）が承認されていません（「BCP」画面で院長が承認）。"
            f"最後のダウンタイム訓練: {held}。",
            "No approved BCP.",
            {"drill": held},
        )
    problems = []
    if a.text_sha256 != doc.sha256:
        problems.append("承認後に内容（連絡先・バックアップ等）が変わっています")
    if a.review_on < today:
        problems.append(f"見直し期限 {a.review_on:%Y-%m-%d} を過ぎています")
    text = (
        f"{_on()}: BCP 第{a.version}版（{a.approved_on:%Y-%m-%d} 院長承認、職員の既読 "
        f"{doc.acknowledged} 人、次回見直し {a.review_on:%Y-%m-%d}）。"
        f"最後のダウンタイム訓練: {held}。"
    )
    if problems:
        return Proposal("no", text + "。".join(problems) + "。", "; ".join(problems), {})
    return Proposal("yes", text, f"BCP version {a.version} approved {a.approved_on}.", {})


def _downtime_drill(session: Session, actor: Actor, settings: Any) -> Proposal:
    drill = _last_downtime_drill(session, actor)
    recent = drill is not None and drill.held_on > utcnow().astimezone(JST).date() - dt.timedelta(
        days=365
    )
    held = f"{drill.held_on:%Y-%m-%d}" if drill else "なし"
    return Proposal(
        "yes" if recent else "no",
        f"{_on()}: 最後のダウンタイム訓練 {held}（1年以内に必要）。紙の記録用紙は"
        "ダウンタイム資料に番号入りで入っています。",
        f"Last downtime drill: {held}.",
        {"drill": held},
    )


def _report_button(session: Session, actor: Actor, settings: Any) -> Proposal:
    return Proposal(
        "yes",
        f"{_on()}: 全職員の画面右上に「インシデントかも？」（見たこと・場所・端末・いつを記録し、"
        "安全管理者と院長にすぐ通知）。",
        "Every screen has the report button (what, where, which device, when).",
    )


def _isolation(session: Session, actor: Actor, settings: Any) -> Proposal:
    return Proposal(
        "yes",
        f"{_on()}: 隔離スイッチ（業務継続の画面・mamori isolate）はバックアップ経路→外部連携の順に"
        "遮断し、記録を読み取り専用にします。ネットワーク機器での遮断手順は別に確認してください。",
        "The isolation switch cuts the backup path, then the external links.",
    )


def _downtime(session: Session, actor: Actor, settings: Any) -> Proposal:
    last = session.scalar(
        select(DowntimeBundle.made_at)
        .where(DowntimeBundle.clinic_id == actor.clinic_id)
        .order_by(DowntimeBundle.made_at.desc())
        .limit(1)
    )
    ok = last is not None and last > utcnow() - dt.timedelta(days=2)
    when = f"{last.astimezone(JST):%Y-%m-%d %H:%M}" if last else "なし"
    return Proposal(
        "yes" if ok else "no",
        f"{_on()}: 代替運用 — ダウンタイム資料"
        f"（受付一覧・カルテ要約・番号入り記録用紙、最新 {when}）、"
        "参照専用の待機系、事後入力。"
        + ("" if ok else "直近2日にダウンタイム資料が作られていません。"),
        f"Paper fallback and standby; last downtime bundle {when}.",
        {"bundle": when},
    )


def _evidence(session: Session, actor: Actor, settings: Any) -> Proposal:
    return Proposal(
        "yes",
        f"{_on()}: 監査証跡の検証可能なバンドル（mamori incident report・mamori audit bundle）と、"
        "影響を受けた患者の一覧（インシデント台帳）で、診療を止めずに証拠を保全できます。",
        "Verifiable audit bundles and the affected-patient list preserve the evidence.",
    )


_KINDS = {
    "downtime-drill": _downtime_drill,
    "report-button": _report_button,
    "isolation": _isolation,
    "downtime": _downtime,
    "evidence": _evidence,
    "system": _system,
    "manager": _manager,
    "access": _access,
    "accounts": _accounts,
    "log": _log,
    "password": _password,
    "reuse": _reuse,
    "2fa": _two_factor,
    "contacts": _contacts,
    "backup": _backup,
    "bcp": _bcp,
}
