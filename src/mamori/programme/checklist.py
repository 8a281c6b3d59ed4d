"""The MHLW cybersecurity checklist (医療機関におけるサイバーセキュリティ対策チェックリスト),
answered per fiscal year (April–March) from mamori's own state.

Item sets are data files (``checklists/*.json``: edition, fiscal year, form, source, the items
with their official numbers and scope); each answer names the edition and the SHA-256 of the
file it answered, so a later edition never rewrites an earlier year. A fiscal year with no item
set of its own is answered against the newest earlier edition, and the screen says so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record
from mamori.authz.actor import Actor
from mamori.authz.permissions import Permission
from mamori.clinic.calendar import clinic_today
from mamori.errors import InvalidInput, NotFound
from mamori.programme import evidence
from mamori.programme.models import ChecklistAnswer
from mamori.records.versioning import ChangeKind, RecordStatus, check_heads, write_version

FORMS = {
    "clinic": ("医療機関確認用", "clinic form"),
    "vendor": ("事業者確認用", "vendor form"),
    "bcp": ("BCP確認表", "BCP checklist"),
}
ANSWERS = {"yes": ("はい", "yes"), "no": ("いいえ", "no"), "na": ("該当なし", "n/a")}
REIWA = 2018  # 令和N年度 = fiscal year 2018 + N


def today() -> dt.date:
    return clinic_today()


def fiscal_year_of(day: dt.date) -> int:
    """The Japanese fiscal year (年度) a day falls in: April to the next March."""
    return day.year if day.month >= 4 else day.year - 1


def fiscal_range(year: int) -> tuple[dt.date, dt.date]:
    return dt.date(year, 4, 1), dt.date(year + 1, 3, 31)


def nendo(year: int) -> str:
    """2025 → 令和7年度."""
    n = year - REIWA
    return f"令和{'元' if n == 1 else n}年度"


@dataclass(frozen=True)
class Item:
    id: str
    no: str
    section: str
    text: str
    scope: str
    auto: str
    target: str  # FY | FY2027 (two-factor authentication: by 令和9年度)


@dataclass(frozen=True)
class ItemSet:
    edition: str
    fiscal_year: int
    form: str
    title: str
    published: str
    source: str
    note: str
    items: tuple[Item, ...]
    sha256: str
    yearly: bool = True  # a new edition each fiscal year (the BCP 確認表 is not)


def item_sets() -> list[ItemSet]:
    out = []
    folder = resources.files("mamori.programme").joinpath("checklists")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        raw = entry.read_bytes()
        data = json.loads(raw)
        out.append(
            ItemSet(
                edition=data["edition"],
                fiscal_year=int(data["fiscal_year"]),
                form=data["form"],
                title=data["title"],
                published=data["published"],
                source=data["source"],
                note=data.get("note", ""),
                items=tuple(Item(**i) for i in data["items"]),
                sha256=hashlib.sha256(raw).hexdigest(),
                yearly=bool(data.get("yearly", True)),
            )
        )
    return out


def item_set_for(year: int, form: str) -> tuple[ItemSet, bool]:
    """The item set a fiscal year is answered against, and whether it is carried over from an
    earlier year (no edition of that year shipped yet)."""
    if form not in FORMS:
        raise InvalidInput("様式を選んでください。", "Choose a form.", field="form")
    sets = sorted(
        (s for s in item_sets() if s.form == form and s.fiscal_year <= year),
        key=lambda s: s.fiscal_year,
    )
    if not sets:
        shipped = sorted({nendo(s.fiscal_year) for s in item_sets()})
        raise InvalidInput(
            f"{nendo(year)}のチェックリストの項目は収録されていません"
            f"（収録: {'、'.join(shipped)}）。",
            f"No checklist items are shipped for fiscal year {year}.",
            field="year",
        )
    chosen = sets[-1]
    return chosen, chosen.yearly and chosen.fiscal_year != year


@dataclass
class Row:
    item: Item
    answer: ChecklistAnswer | None
    proposal: evidence.Proposal | None

    @property
    def changed(self) -> bool:
        """mamori's proposal no longer matches the signed-off answer (someone disabled 2FA)."""
        return (
            self.answer is not None
            and self.proposal is not None
            and self.proposal.answer is not None
            and self.answer.answer in ("yes", "no")
            and self.proposal.answer != self.answer.answer
        )


@dataclass
class View:
    year: int
    form: str
    items: ItemSet
    carried: bool
    rows: list[Row] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(1 for r in self.rows if r.answer is not None)

    @property
    def changed(self) -> list[Row]:
        return [r for r in self.rows if r.changed]


def _answers(session: Session, clinic_id: Any, year: int, form: str) -> dict[str, ChecklistAnswer]:
    rows = list(
        session.scalars(
            select(ChecklistAnswer).where(
                ChecklistAnswer.clinic_id == clinic_id,
                ChecklistAnswer.fiscal_year == year,
                ChecklistAnswer.form == form,
            )
        )
    )
    check_heads(session, rows)
    return {r.item_id: r for r in rows}


def view(session: Session, actor: Actor, settings: Any, year: int, form: str = "clinic") -> View:
    actor.require(Permission.PROGRAMME_READ)
    items, carried = item_set_for(year, form)
    answers = _answers(session, actor.clinic_id, year, form)
    live = year == fiscal_year_of(today())  # proposals read today's state: this year only
    out = View(year, form, items, carried)
    for item in items.items:
        proposal = evidence.propose(session, actor, settings, item.auto) if live else None
        out.rows.append(Row(item, answers.get(item.id), proposal))
    record(
        session,
        actor,
        AuditTag.CHECKLIST_VIEWED,
        detail={"year": year, "form": form, "answered": out.answered},
    )
    return out


def _target_limit(item: Item, year: int) -> dt.date:
    if item.target == "FY2027":  # 二要素認証: 令和9年度までの導入が目標
        return max(fiscal_range(year)[1], fiscal_range(2027)[1])
    return fiscal_range(year)[1]


def answer(
    session: Session,
    actor: Actor,
    settings: Any,
    *,
    year: int,
    form: str,
    item_id: str,
    value: str,
    checked_on: dt.date,
    target_on: dt.date | None,
    note: str = "",
) -> ChecklistAnswer:
    """Sign off one item: the answer, the date checked, a target date for いいえ (within the
    fiscal year), and mamori's evidence as it stands now."""
    actor.require(Permission.PROGRAMME_MANAGE)
    items, _ = item_set_for(year, form)
    item = next((i for i in items.items if i.id == item_id), None)
    if item is None:
        raise NotFound("checklist item")
    if value not in ANSWERS:
        raise InvalidInput(
            "はい・いいえ・該当なしのどれかを選んでください。",
            "Answer yes, no or n/a.",
            field="value",
        )
    first, last = fiscal_range(year)
    if checked_on > today():
        raise InvalidInput(
            "確認日に未来の日付は入力できません。", "The date checked is in the future.",
            field="checked_on",
        )  # fmt: skip
    if checked_on > last:
        raise InvalidInput(
            f"確認日は{nendo(year)}の末日（{last:%Y-%m-%d}）までです。",
            f"The date checked must fall by the end of fiscal year {year} ({last}).",
            field="checked_on",
        )
    if value == "no":
        limit = _target_limit(item, year)
        if target_on is None:
            raise InvalidInput(
                f"「いいえ」には{nendo(year)}中の目標日が必要です。",
                f"A no needs a target date within fiscal year {year}.",
                field="target_on",
            )
        if not (first <= target_on <= limit) or target_on < checked_on:
            raise InvalidInput(
                f"目標日は確認日以降、{limit:%Y-%m-%d}（{nendo(fiscal_year_of(limit))}末）"
                "までの日付にしてください。",
                f"The target date must fall between the date checked and {limit}.",
                field="target_on",
            )
    elif target_on is not None:
        target_on = None  # only a いいえ has a target
    proposal = (
        evidence.propose(session, actor, settings, item.auto)
        if year == fiscal_year_of(today())
        else None
    )
    existing = _answers(session, actor.clinic_id, year, form).get(item_id)
    row = existing or ChecklistAnswer(
        fiscal_year=year, form=form, item_id=item_id, status=RecordStatus.ACTIVE.value
    )
    row.edition, row.item_set_sha256 = items.edition, items.sha256
    row.answer, row.checked_on, row.target_on = value, checked_on, target_on
    row.checked_by_id = actor.user_id
    row.proposed = (proposal.answer or "") if proposal else ""
    row.evidence = proposal.ja if proposal else ""
    row.note = note.strip()[:1000]
    write_version(session, actor, row, ChangeKind.UPDATED if existing else ChangeKind.CREATED)
    return row


def changed_count(session: Session, actor: Actor, settings: Any) -> int:
    """This year's signed-off answers whose evidence now says otherwise (the director's flag)."""
    if not actor.can(Permission.PROGRAMME_READ):
        return 0
    year = fiscal_year_of(today())
    answers = _answers(session, actor.clinic_id, year, "clinic")
    if not answers:
        return 0
    items, _ = item_set_for(year, "clinic")
    count = 0
    for item in items.items:
        a = answers.get(item.id)
        if a is None or a.answer not in ("yes", "no") or not item.auto:
            continue
        p = evidence.propose(session, actor, settings, item.auto)
        if p is not None and p.answer is not None and p.answer != a.answer:
            count += 1
    return count
