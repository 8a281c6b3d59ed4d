"""Two documents generated from mamori's actual configuration, for the clinic to adopt, edit
and date: a draft 運用管理規程 (checklist 2-⑭) written from the roles, password rules, second
factors, idle logoff, backups, log review, export rules and vendor access in force; and the
information inventory (取扱い情報の把握, guideline 6.0 ch. 6) from mamori's own model — every
kind of information it holds, its classification, where it lives and how it is protected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record
from mamori.auth import passwords
from mamori.authz.actor import Actor
from mamori.authz.permissions import PERMISSION_LABELS_JA, ROLE_PERMISSIONS, Permission
from mamori.authz.roles import ROLE_LABELS_JA
from mamori.clinic.service import clinic_of
from mamori.db import new_id, utcnow
from mamori.errors import InvalidInput
from mamori.models import record_types
from mamori.programme.models import InventoryEntry
from mamori.records.versioning import PatientRecord

_SENSITIVE = {
    "ProgressNote": "診療録（経過記録）",
    "Condition": "病名",
    "MedicationRequest": "処方",
    "AllergyIntolerance": "アレルギー",
    "Observation": "検査結果・バイタル",
    "Document": "文書（紹介状・スキャン）",
}
_PERSONAL = {
    "Patient": "患者基本情報（氏名・生年月日・住所・電話）",
    "Coverage": "保険情報",
    "Encounter": "受診・予約",
    "ContactLog": "電話・窓口対応の記録",
    "IncidentNotice": "本人への通知の記録（送付先住所）",
}


@dataclass(frozen=True)
class InfoKind:
    name: str
    classification: str
    where: str
    protection: str
    keep: str
    edited: bool = False  # the clinic's own line


def inventory(session: Session, actor: Actor) -> list[InfoKind]:
    """The generated inventory with the clinic's own lines applied (a correction replaces the
    generated line of the same name, a hidden one is left out, a new one is added)."""
    actor.require(Permission.PROGRAMME_READ)
    own = {
        e.name: e
        for e in session.scalars(
            select(InventoryEntry).where(InventoryEntry.clinic_id == actor.clinic_id)
        )
    }
    out: list[InfoKind] = []
    for k in _generated():
        e = own.pop(k.name, None)
        if e is None:
            out.append(k)
        elif not e.hidden:
            out.append(_merged(k, e))
    out += [_merged(None, e) for e in own.values() if not e.hidden]
    return out


def _merged(k: InfoKind | None, e: InventoryEntry) -> InfoKind:
    return InfoKind(
        e.name,
        e.classification or (k.classification if k else ""),
        e.location or (k.where if k else ""),
        e.protection or (k.protection if k else ""),
        e.keep or (k.keep if k else ""),
        edited=True,
    )


def edit_inventory(
    session: Session,
    actor: Actor,
    *,
    name: str,
    classification: str = "",
    location: str = "",
    protection: str = "",
    keep: str = "",
    hidden: bool = False,
) -> InventoryEntry:
    """Correct a line, add one mamori does not know of (紙カルテ, レセコン), or mark one as
    not held here."""
    actor.require(Permission.PROGRAMME_MANAGE)
    name = name.strip()[:120]
    if not name:
        raise InvalidInput("情報の名前を入力してください。", "Name the information.", field="name")
    row = session.scalar(
        select(InventoryEntry).where(
            InventoryEntry.clinic_id == actor.clinic_id, InventoryEntry.name == name
        )
    )
    if row is None:
        row = InventoryEntry(
            id=new_id(), clinic_id=actor.clinic_id, name=name, updated_by_id=actor.user_id
        )
        session.add(row)
    row.classification = classification.strip()[:120]
    row.location = location.strip()[:300]
    row.protection = protection.strip()[:300]
    row.keep = keep.strip()[:200]
    row.hidden = hidden
    row.updated_by_id, row.updated_at = actor.user_id, utcnow()
    record(
        session,
        actor,
        AuditTag.LEDGER_CHANGED,
        detail={"ledger": "inventory", "name": name, "hidden": hidden},
    )
    session.flush()
    return row


def _generated() -> list[InfoKind]:
    out: list[InfoKind] = []
    kinds = record_types()
    for name, model in kinds.items():
        if name in _SENSITIVE:
            label, cls = _SENSITIVE[name], "要配慮個人情報"
        elif name in _PERSONAL:
            label, cls = _PERSONAL[name], "個人情報（受診の事実は要配慮個人情報に当たりうる）"
        elif issubclass(model, PatientRecord):
            label, cls = name, "個人情報"
        else:
            label = {
                "Incident": "インシデント台帳（経過を含む）",
                "IncidentEntry": "インシデントの経過",
                "ChecklistAnswer": "チェックリストの回答",
            }.get(name, name)
            cls = "機密（院内の管理記録）"
        out.append(
            InfoKind(
                label,
                cls,
                f"データベース（{getattr(model, '__tablename__', name)}）"
                "と全版の履歴（record_version）",
                "項目ごとに AES-256-GCM で暗号化（鍵はデータと別に保管）、"
                "全版をハッシュ連鎖で保存、"
                "閲覧・変更はすべて監査証跡に記録",
                "削除しない（訂正は新しい版、取消は状態で記録）",
            )
        )
    out += [
        InfoKind(
            "監査証跡（誰がいつ何を見たか・書いたか）",
            "機密（改ざん防止が必要）",
            "データベース（audit_event）、署名付きチェックポイント、SIEM への転送（設定時）",
            "追記のみ・ハッシュ連鎖・署名、患者の氏名や記載内容は含まない（ID のみ）",
            "削除しない",
        ),
        InfoKind(
            "職員アカウント・認証情報",
            "機密",
            "データベース（staff_user、auth_factor、auth_session）",
            "パスワードは argon2 のハッシュ、二要素の秘密は暗号化、セッションは鍵付きハッシュ",
            "退職後も無効化して保持（監査証跡の説明のため）",
        ),
        InfoKind(
            "職員の世帯情報（不審アクセスの照合用）",
            "職員の個人情報",
            "データベース（staff_profile）",
            "暗号化、説明のつかない閲覧の照合にだけ使用（本人に通知してから保存）",
            "退職後に院長が判断",
        ),
        InfoKind(
            "文書ファイル（スキャン・紹介状）",
            "要配慮個人情報",
            "文書ストア（documents/）",
            "ファイルごとに暗号化、ハッシュで改ざんを検知",
            "削除しない",
        ),
        InfoKind(
            "バックアップ・読める写し",
            "要配慮個人情報",
            "設定した保存先（外付けディスク・NAS・SFTP・オブジェクトストレージ）",
            "age 形式でオフラインの鍵に暗号化、世代管理、検証",
            "世代の保持期間の設定どおり",
        ),
        InfoKind(
            "ダウンタイム資料（受付一覧・カルテ要約・記録用紙）",
            "要配慮個人情報",
            "設定した送り先（受付の USB・待機系 PC）",
            "待機用の鍵に age で暗号化、書き出すたびに監査証跡に患者を記録",
            "不要になった印刷物は溶解・裁断",
        ),
    ]
    return out


def inventory_text(kinds: list[InfoKind]) -> str:
    """The inventory as a Markdown table (part of the text the clinic edits and adopts)."""
    rows = [
        "## 別表（取り扱う情報の一覧）",
        "",
        "| 情報 | 分類 | 保存場所 | 保護 | 保存 |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows += [
        f"| {k.name} | {k.classification} | {k.where} | {k.protection} | {k.keep} |" for k in kinds
    ]
    return "\n".join(rows)


def rules_text(session: Session, actor: Actor, settings: Any) -> str:
    """The draft 運用管理規程, as Markdown text to adopt and edit."""
    actor.require(Permission.PROGRAMME_READ)
    clinic = clinic_of(session, actor)
    a = settings.auth
    b = settings.backup
    offline = [t.name for t in b.targets if t.offline or (t.kind == "s3" and t.lock_mode)]
    roles = []
    for role, perms in ROLE_PERMISSIONS.items():
        labels = "、".join(PERMISSION_LABELS_JA[p] for p in sorted(perms, key=lambda p: p.value))
        roles.append(f"| {ROLE_LABELS_JA[role]} | {labels} |")
    lines = [
        f"# {clinic.name} 医療情報システム運用管理規程（案）",
        "",
        "この案は電子カルテ mamori の現在の設定から作成したものです。院内の実情に合わせて"
        "修正し、制定日を記入して院長が承認してください。",
        "",
        "## 第1条（目的）",
        f"本規程は、{clinic.name}（以下「当院」）における医療情報システムの安全管理に必要な"
        "事項を定め、患者の個人情報を適切に保護することを目的とする。",
        "",
        "## 第2条（体制）",
        "1. 院長は医療情報システム安全管理責任者を任命する。"
        "安全管理責任者は本規程の運用を統括する。",
        "2. 安全管理者は、アクセスの記録の点検、アカウントの管理、保守作業の立会い、"
        "インシデントの対応を行う。",
        "",
        "## 第3条（利用者と権限）",
        "利用者は職種・業務に応じた次の役割のいずれかを持ち、役割に定めた範囲でのみ情報を扱う。",
        "",
        "| 役割 | 権限 |",
        "| --- | --- |",
        *roles,
        "",
        "## 第4条（アカウントの管理）",
        "1. アカウントの作成・役割の変更・無効化は院長が行う（本人確認の再入力を要する）。",
        "2. 退職・異動の際は当日中に無効化する。",
        "3. 3か月ごとにアカウントの棚卸しを行い、使用していないアカウントを停止する。",
        "4. アカウントの共用を禁止する。",
        "",
        "## 第5条（認証）",
        f"1. パスワードは{passwords.MIN_LENGTH}文字以上とし、直近{passwords.HISTORY}回と同じものを"
        "使わない。他のシステムとの使い回しを禁止する。",
        "2. すべての利用者は二要素認証（認証アプリまたはパスキー）を用いる。",
        f"3. 操作のない状態が{a.idle_minutes}分（受付等の共用端末は{a.shared_idle_minutes}分）"
        f"続くと自動的にログアウトする。1回のログインは最長{a.absolute_hours}時間とする。",
        "",
        "## 第6条（アクセスの記録と点検）",
        "1. 医療情報システムはすべてのログイン・閲覧・記録・印刷・書き出しを"
        "改ざんできない形で記録する。",
        "2. 安全管理者は週1回以上アクセスの記録を点検し、不審なアクセスの確認結果を記録する。",
        "3. 緊急時アクセス（閲覧制限のある患者の閲覧）は理由を入力して行い、事後に確認する。",
        "",
        "## 第7条（持ち出し・外部記録媒体）",
        "1. 患者情報の一括書き出しは院長のみが行い、その都度記録する。",
        "2. 私物の USB メモリ等の外部記録媒体を業務用端末に接続しない。",
        "3. 印刷物は必要な範囲にとどめ、不要になったら溶解・裁断する。",
        "",
        "## 第8条（保守作業）",
        "1. 保守事業者は、安全管理者が設定した作業時間枠の中でのみ医療情報システムに接続する。",
        "2. リモート保守の経路と対象機器を委託先台帳に記録する。事業者から MDS/SDS と"
        "事業者確認用チェックリストを受け取る。",
        "",
        "## 第9条（バックアップと復旧）",
        f"1. バックアップは{b.interval_minutes}分ごとに取得し、世代を管理する。保存先は "
        f"{len(b.targets)} か所（"
        + ("、".join(t.name for t in b.targets) or "未設定")
        + "）とし、少なくとも1つはオフラインまたは書き換え不可とする（現在: "
        + ("、".join(offline) or "なし")
        + "）。",
        "2. 毎月1回、バックアップからの復元訓練を行い、結果を記録する。",
        "",
        "## 第10条（インシデント対応）",
        "1. 職員は異常に気づいたら直ちに「インシデントかも？」で報告する。",
        "2. 安全管理者と院長は対応手順に従って対応し、連絡体制図に従って関係機関に連絡する。",
        "3. 個人データの漏えい等のおそれがある場合、"
        "院長は個人情報保護委員会への報告の要否を判断し、"
        "速報（知った日から3〜5日目）・確報（30日目、不正の目的のおそれがあれば60日目）を行う。",
        "",
        "## 第11条（教育・訓練）",
        "全職員は年1回以上セキュリティ研修を受ける。標的型メール訓練とダウンタイム訓練を定期的に行う。",
        "",
        "## 第12条（見直し）",
        "本規程は、サイバーセキュリティ対策チェックリスト・事業継続計画とともに年1回以上見直す。",
        "",
        "## 附則",
        "本規程は　　　　年　　月　　日から施行する。　　院長　＿＿＿＿＿＿＿＿＿＿（署名）",
    ]
    return "\n".join(lines)
