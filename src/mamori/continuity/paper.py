"""The downtime bundle's paper: the day sheet (受付一覧) and the blank forms staff fill in by
hand while mamori is down, laid out on mamori's own fields so they can be typed back in.

Every blank form carries a pre-printed **downtime number** (DT-000123) from the range the
bundle reserved, so a paper form and its later entry are matched one to one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import PageBreak, Paragraph, Spacer, Table, TableStyle

from mamori.clinic.calendar import JST, age_on, wareki
from mamori.pdf import render, styled_table, styles
from mamori.pdf import text as paragraph

WIDTH = 180 * mm  # A4 less the house margins


def downtime_number(n: int) -> str:
    return f"DT-{n:06d}"


@dataclass(frozen=True)
class SheetRow:
    time: str  # 予約 or 受付 time, HH:MM
    patient_number: int
    name: str
    kana: str
    birth_date: dt.date
    sex: str
    physician: str
    purpose: str
    state: str  # 予約 / 受付 / 診察中 …
    note: str  # 閲覧制限: no summary in the bundle


# (form, title, copies) — what a bundle carries for one day
FORMS = (
    ("reception", "受付票", 10),
    ("soap", "経過記録（SOAP）", 10),
    ("prescription", "処方控え", 10),
    ("vitals", "バイタル・検査記録", 5),
    ("registration", "新患登録票", 5),
)


def numbers_needed() -> int:
    return sum(copies for _, _, copies in FORMS)


def day_sheet_pdf(
    clinic: str, day: dt.date, rows: Sequence[SheetRow], made_at: dt.datetime
) -> bytes:
    st = styles()

    def p(v: str, style: ParagraphStyle = st.base) -> Paragraph:
        return paragraph(v, style)

    head = [p(h) for h in ("時刻", "番号", "氏名（カナ）", "年齢", "医師", "目的", "状態", "備考")]
    body = [
        [
            p(r.time),
            p(str(r.patient_number)),
            p(f"{r.name}\n{r.kana}"),
            p(f"{age_on(r.birth_date, day)}歳 {r.sex}"),
            p(r.physician),
            p(r.purpose),
            p(r.state),
            p(r.note),
        ]
        for r in rows
    ]
    widths = [15 * mm, 12 * mm, 38 * mm, 17 * mm, 21 * mm, 28 * mm, 15 * mm, 34 * mm]
    story: list[object] = [
        p(f"受付一覧（ダウンタイム用）　{clinic}", st.h1),
        p(
            f"{wareki(day)}（{day:%Y/%m/%d}）　作成 {made_at.astimezone(JST):%Y/%m/%d %H:%M}",
            st.small,
        ),
        p(
            "システム停止中はこの一覧と同梱のカルテ要約で診療を続け、記録は同梱の用紙に書いてください。"
            "復旧後、用紙のダウンタイム番号で事後入力します。",
            st.small,
        ),
        Spacer(1, 3 * mm),
        styled_table(
            [head, *body]
            if body
            else [head, [p("この日の予約・受付はありません。")] + [p("")] * 7],
            widths,
        ),
    ]
    return render(
        story,
        title=f"受付一覧 {day:%Y-%m-%d}",
        running_head=f"受付一覧（ダウンタイム用）　{day:%Y/%m/%d}　{clinic}",
    )


def _boxes(rows: Sequence[tuple[str, float]], label_w: float = 32 * mm) -> Table:
    """A form's writing area: a label column and a blank box of the given height per row."""
    st = styles()
    t = Table(
        [[paragraph(label, st.base), ""] for label, _ in rows],
        colWidths=[label_w, WIDTH - label_w],
        rowHeights=[h for _, h in rows],
        hAlign="LEFT",
    )
    t.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.6, colors.HexColor("#55606b")),
                ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef2f6")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return t


def _grid(
    head: Sequence[str],
    rows: int,
    widths: Sequence[float],
    height: float,
    first: Sequence[str] = (),
) -> Table:
    st = styles()
    cells = [[paragraph(h, st.base) for h in head]]
    for i in range(rows):
        label = first[i] if i < len(first) else ""
        cells.append([paragraph(label, st.base)] + [""] * (len(head) - 1))
    t = Table(cells, colWidths=list(widths), rowHeights=[7 * mm] + [height] * rows, hAlign="LEFT")
    t.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.6, colors.HexColor("#55606b")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f6")),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ]
        )
    )
    return t


PATIENT_ROWS = (("患者番号", 9 * mm), ("氏名", 9 * mm), ("カナ", 9 * mm), ("生年月日", 9 * mm))
VITALS = (
    "体温（℃）",
    "血圧（mmHg）",
    "脈拍（回/分）",
    "SpO2（%）",
    "呼吸数（回/分）",
    "身長（cm）",
    "体重（kg）",
)


def _form(kind: str) -> list[object]:
    if kind == "reception":
        return [
            _boxes(
                [
                    ("日付・時刻", 9 * mm),
                    *PATIENT_ROWS,
                    ("受付区分", 9 * mm),
                    ("保険証・資格確認", 9 * mm),
                    ("担当医", 9 * mm),
                    ("受付者", 9 * mm),
                    ("備考", 30 * mm),
                ]
            ),
            paragraph(
                "受付区分: □初診 □再診 □電話再診 □往診　　保険証・資格確認: □済 □未", styles().small
            ),
        ]
    if kind == "soap":
        return [
            _boxes([("日付・時刻", 9 * mm), *PATIENT_ROWS[:3], ("記載者", 9 * mm)]),
            Spacer(1, 2 * mm),
            _boxes(
                [
                    ("S（主観）", 42 * mm),
                    ("O（客観）", 42 * mm),
                    ("A（評価）", 32 * mm),
                    ("P（計画）", 42 * mm),
                ],
                label_w=22 * mm,
            ),
        ]
    if kind == "prescription":
        return [
            _boxes(
                [("処方日", 9 * mm), *PATIENT_ROWS[:3], ("処方医", 9 * mm), ("院外／院内", 9 * mm)]
            ),
            Spacer(1, 2 * mm),
            _grid(
                ["RP", "薬剤名", "用量", "単位", "1日/1回", "用法", "日数", "変更不可"],
                12,
                [10 * mm, 52 * mm, 14 * mm, 14 * mm, 17 * mm, 37 * mm, 16 * mm, 20 * mm],
                9 * mm,
            ),
        ]
    if kind == "vitals":
        return [
            _boxes([("日付・時刻", 9 * mm), *PATIENT_ROWS[:3], ("記録者", 9 * mm)]),
            Spacer(1, 2 * mm),
            _grid(
                ["項目", "値", "測定時刻", "備考"],
                len(VITALS) + 8,
                [40 * mm, 40 * mm, 30 * mm, 70 * mm],
                9 * mm,
                first=VITALS,
            ),
        ]
    # registration: the fields of mamori's own registration form
    return [
        _boxes(
            [
                ("登録日", 9 * mm),
                ("姓・名（漢字）", 11 * mm),
                ("セイ・メイ（カナ）", 11 * mm),
                ("生年月日（和暦）", 9 * mm),
                ("性別", 9 * mm),
                ("郵便番号", 9 * mm),
                ("住所", 16 * mm),
                ("電話番号", 9 * mm),
                ("保険者番号", 9 * mm),
                ("記号・番号・枝番", 9 * mm),
                ("公費負担者番号", 9 * mm),
                ("公費の受給者番号", 9 * mm),
                ("記入者", 9 * mm),
            ],
            label_w=44 * mm,
        ),
        paragraph(
            "復旧後、同じ方が登録済みでないか（カナ・生年月日・電話）確認してから登録します。",
            styles().small,
        ),
    ]


def forms_pdf(clinic: str, day: dt.date, first_number: int) -> bytes:
    """Every blank form of the bundle, one per page, numbered from ``first_number``."""
    st = styles()
    number_style = ParagraphStyle("dtno", parent=st.h1, alignment=TA_RIGHT, fontSize=16)
    story: list[object] = []
    n = first_number
    for kind, title, copies in FORMS:
        for _ in range(copies):
            if story:
                story.append(PageBreak())
            story += [
                paragraph(f"ダウンタイム番号 {downtime_number(n)}", number_style),
                paragraph(f"{title}（システム停止中の記録用紙）", st.h1),
                paragraph(
                    f"{clinic}　{day:%Y/%m/%d} 用　— 復旧後、この番号で事後入力します"
                    "（番号は一枚に一つ）。",
                    st.small,
                ),
                Spacer(1, 3 * mm),
                *_form(kind),
            ]
            n += 1
    return render(
        story, title=f"ダウンタイム用紙 {day:%Y-%m-%d}", running_head=f"ダウンタイム用紙　{clinic}"
    )
