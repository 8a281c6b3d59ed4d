"""What the law says an incident needs, as pure functions: the APPI deadlines from the day the
clinic knew, and whether an incident is reportable, proposed from its facts for the director
to decide (``jp-regulation.md`` Part 5).

Deadlines. The clock starts on the day the clinic *knew* (知った日). The 速報 is due
"promptly" — the PPC reads that as about 3 to 5 days — and the 確報 within 30 days, or 60
when the leak may have been done for an improper purpose (規則第7条第3号: ransomware,
unauthorised access, theft by staff). mamori counts the day the clinic knew as day 1 and does
not move a deadline off a weekend or holiday: the PPC's guidance reads the period that way as
we understand it, and it is in any case the earlier of the two possible readings (the civil
code's, 民法第140条, starts on the next day), so a clinic that keeps mamori's dates is on time
under either.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from mamori.errors import InvalidInput

PROMPT_FIRST_DAY = 3  # 速報: "about 3 to 5 days" — the 3rd day…
PROMPT_LAST_DAY = 5  # …to the 5th
FINAL_DAYS = 30  # 確報
FINAL_DAYS_MALICIOUS = 60  # 確報, 規則第7条第3号
OVER_PEOPLE = 1000  # 規則第7条第4号: more than this many people
REMIND_DAYS = 2  # reminders from this many days before a deadline

# the kinds of incident, with whether they are malicious by nature (condition 3 proposed)
KINDS: dict[str, tuple[str, str, bool]] = {
    "ransomware": ("ランサムウェア・マルウェア感染", "Ransomware or malware", True),
    "unauthorised": ("不正アクセス", "Unauthorised access", True),
    "device": ("端末・媒体の紛失・盗難", "Lost or stolen device", False),
    "insider": ("職員による不正な閲覧", "Insider snooping", True),
    "misdirected": ("FAX・郵便・メールの誤送信", "Mis-sent fax, mail or e-mail", False),
    "phishing": ("フィッシング・不審メール", "Phishing", True),
    "fault": ("システム障害", "System fault", False),
    "other": ("その他", "Other", False),
}
STAGES = {
    "open": ("対応中", "open"),
    "contained": ("封じ込め済み", "contained"),
    "recovering": ("復旧中", "recovering"),
    "closed": ("終結", "closed"),
}
SEVERITIES = {
    "unknown": ("未評価", "not assessed"),
    "low": ("低", "low"),
    "medium": ("中", "medium"),
    "high": ("高", "high"),
    "critical": ("重大（診療停止）", "critical (care stopped)"),
}


def day_n(knew_on: dt.date, n: int) -> dt.date:
    """The ``n``-th day of the period, the day the clinic knew being day 1."""
    return knew_on + dt.timedelta(days=n - 1)


def prompt_window(knew_on: dt.date) -> tuple[dt.date, dt.date]:
    """The 速報's window: the 3rd to the 5th day."""
    return day_n(knew_on, PROMPT_FIRST_DAY), day_n(knew_on, PROMPT_LAST_DAY)


def final_due(knew_on: dt.date, malicious: bool) -> dt.date:
    """The 確報's last day: the 30th day, or the 60th for an improper purpose."""
    return day_n(knew_on, FINAL_DAYS_MALICIOUS if malicious else FINAL_DAYS)


def check_dates(knew_on: dt.date, occurred_on: dt.date | None, today: dt.date) -> None:
    """A knew-on date cannot be in the future, nor before the incident happened."""
    if knew_on > today:
        raise InvalidInput(
            "知った日に未来の日付は入力できません。",
            "The date the clinic knew cannot be in the future.",
            field="knew_on",
        )
    if occurred_on is not None and occurred_on > today:
        raise InvalidInput(
            "発生日に未来の日付は入力できません。",
            "The date it happened cannot be in the future.",
            field="occurred_on",
        )
    if occurred_on is not None and knew_on < occurred_on:
        raise InvalidInput(
            "知った日が発生日より前になっています。発生日か知った日を確かめてください。",
            "The date the clinic knew is before the date it happened: check both.",
            field="knew_on",
        )


@dataclass(frozen=True)
class Deadline:
    key: str  # prompt | final
    label_ja: str
    label_en: str
    due: dt.date
    starts: dt.date | None  # the 速報's window opens
    sent_on: dt.date | None
    days_left: int  # from today to the due date (negative: overdue)

    @property
    def state(self) -> str:
        """sent | overdue | today | soon | pending"""
        if self.sent_on is not None:
            return "sent"
        if self.days_left < 0:
            return "overdue"
        if self.days_left == 0:
            return "today"
        if self.days_left <= REMIND_DAYS:
            return "soon"
        return "pending"


def deadlines(
    knew_on: dt.date,
    malicious: bool,
    prompt_sent_on: dt.date | None,
    final_sent_on: dt.date | None,
    today: dt.date,
) -> list[Deadline]:
    first, last = prompt_window(knew_on)
    final = final_due(knew_on, malicious)
    days = FINAL_DAYS_MALICIOUS if malicious else FINAL_DAYS
    return [
        Deadline(
            "prompt",
            "速報（個人情報保護委員会）",
            "Prompt report (PPC)",
            last,
            first,
            prompt_sent_on,
            (last - today).days,
        ),
        Deadline(
            "final",
            f"確報（{days}日以内）",
            f"Final report (within {days} days)",
            final,
            None,
            final_sent_on,
            (final - today).days,
        ),
    ]


# --- reportability (規則第7条) ---------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    kind: str
    patients: int  # affected patients found (or estimated)
    clinical: bool  # clinical items (notes, labs, diagnoses, prescriptions …) among them
    malicious: bool  # 不正の目的のおそれ
    encrypted: bool  # protected by strong encryption, the key not lost with it
    backup_copy: bool = False  # the affected data is a backup generation (age, offline key)


@dataclass(frozen=True)
class Proposal:
    reportable: bool
    conditions: tuple[int, ...]  # 規則第7条 1–4 that are met
    exempt: bool
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (ja, en)


def propose(f: Facts) -> Proposal:
    """Whether the facts make the incident reportable — proposed, never decided: the director
    decides with a reason (``service.decide``). One person's medical data is enough."""
    reasons: list[tuple[str, str]] = []
    met: list[int] = []
    if f.patients == 0 and f.kind != "ransomware":
        reasons.append(
            (
                "影響を受けた患者が見つかっていません（漏えい等のおそれがなければ報告対象外）。",
                "No affected patient found (not reportable unless a leak may have happened).",
            )
        )
    touched = f.patients > 0 or f.kind == "ransomware"
    if touched and (f.clinical or f.kind in ("ransomware", "device", "misdirected")):
        met.append(1)
        reasons.append(
            (
                "要配慮個人情報（病歴・診療の記録）を含むため、1人でも報告対象です（第1号）。",
                "Medical data is sensitive personal information: even one person (no. 1).",
            )
        )
    elif touched:
        reasons.append(
            (
                "触れられたのは基本情報だけです。"
                "ただし受診の事実自体が要配慮個人情報に当たりうる点に注意してください。",
                "Only demographics were touched; "
                "the fact of being a patient may itself be sensitive.",
            )
        )
    if touched and f.malicious:
        met.append(3)
        reasons.append(
            (
                "不正の目的によるおそれがあります（不正アクセス・ランサムウェア・持ち出し等、"
                "第3号）。確報は60日以内です。",
                "It may have been done for an improper purpose (no. 3); "
                "the final report is due in 60 days.",
            )
        )
    if f.patients > OVER_PEOPLE:
        met.append(4)
        reasons.append(
            (
                f"{OVER_PEOPLE:,}人を超えています（第4号）。",
                f"More than {OVER_PEOPLE:,} people (no. 4).",
            )
        )
    exempt = f.encrypted or f.backup_copy
    if f.backup_copy:
        reasons.append(
            (
                "影響を受けたのはバックアップの世代で、age 形式で暗号化され鍵はオフラインに"
                "保管されています。高度な暗号化による除外に当たる可能性があります"
                "（鍵も失われていないか確かめてください）。",
                "The data is a backup generation, age-encrypted to an offline key: the "
                "strong-encryption exemption may apply (check the key was not lost too).",
            )
        )
    elif f.encrypted:
        reasons.append(
            (
                "高度な暗号化で保護され、鍵は失われていないとされています（報告・通知の対象外になりえます）。",
                "Protected by strong encryption with the key kept safe: may be exempt.",
            )
        )
    if f.kind == "ransomware" and not f.encrypted:
        reasons.append(
            (
                "暗号化されただけでも、持ち出し（漏えい）を否定できなければ報告対象です。"
                "無傷のバックアップがあれば滅失・毀損には当たりません。",
                "Encryption alone: reportable unless exfiltration is ruled out; "
                "an intact backup means no loss or damage.",
            )
        )
    return Proposal(bool(met) and not exempt, tuple(met), exempt, reasons)
