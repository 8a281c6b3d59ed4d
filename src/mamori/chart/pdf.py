"""The printable chart summary (カルテ要約) as a Japanese PDF.

Japanese text needs a Japanese font *embedded* in the PDF, or the page shows boxes on a PC
without it. We embed IPAex Gothic (Debian ``fonts-ipaexfont-gothic``; the path can be set with
``MAMORI_PDF_FONT``). Without any TrueType font we fall back to the standard Adobe-Japan1 CID
font, which renders in viewers that have Japanese fonts but is not embedded.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from mamori.chart.service import Chart
from mamori.clinic.calendar import JST
from mamori.clinical.models import OUTCOME_JA, ConditionOutcome

FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
)
_FONT: str | None = None

SEX_JA = {"male": "男", "female": "女", "other": "その他", "unknown": "不明"}


def japanese_font() -> str:
    """Register once and return the font name to use."""
    global _FONT
    if _FONT is not None:
        return _FONT
    paths = [os.environ.get("MAMORI_PDF_FONT", ""), *FONT_CANDIDATES]
    for path in paths:
        if path and Path(path).is_file():
            pdfmetrics.registerFont(TTFont("MamoriJP", path))
            _FONT = "MamoriJP"
            return _FONT
    pdfmetrics.registerFont(UnicodeCIDFont("HeiseiKakuGo-W5"))
    _FONT = "HeiseiKakuGo-W5"
    return _FONT


_ERAS = (
    (dt.date(2019, 5, 1), "令和"),
    (dt.date(1989, 1, 8), "平成"),
    (dt.date(1926, 12, 25), "昭和"),
    (dt.date(1912, 7, 30), "大正"),
    (dt.date(1868, 1, 25), "明治"),
)


def wareki(d: dt.date) -> str:
    """和暦 for birth dates, as clinics print them: 昭和25年1月2日."""
    for start, name in _ERAS:
        if d >= start:
            year = d.year - start.year + 1
            return f"{name}{'元' if year == 1 else year}年{d.month}月{d.day}日"
    return f"{d.year}年{d.month}月{d.day}日"


def age_on(birth: dt.date, today: dt.date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def styled_table(cells: list[list[Any]], widths: list[float]) -> Table:
    """The house table: a header row, light grid, top-aligned cells, left on the page."""
    t = Table(cells, colWidths=widths, repeatRows=1, hAlign="LEFT")
    t.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#9aa5b1")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return t


def render_chart_pdf(chart: Chart, clinic_name: str, printed_by: str) -> bytes:
    font = japanese_font()
    base = ParagraphStyle("base", fontName=font, fontSize=9.5, leading=13)
    h1 = ParagraphStyle("h1", parent=base, fontSize=15, leading=20, spaceAfter=4)
    h2 = ParagraphStyle(
        "h2",
        parent=base,
        fontSize=11.5,
        leading=16,
        spaceBefore=8,
        spaceAfter=3,
        textColor=colors.HexColor("#1f3b63"),
    )
    small = ParagraphStyle("small", parent=base, fontSize=8, leading=10, textColor=colors.grey)
    warn = ParagraphStyle("warn", parent=base, textColor=colors.HexColor("#b00020"))

    def p(text: str, style: ParagraphStyle = base) -> Paragraph:
        return Paragraph(escape(text).replace("\n", "<br/>"), style)

    def table(rows: list[list[str]], widths: list[float]) -> Table:
        return styled_table([[p(c) for c in r] for r in rows], widths)

    pt = chart.patient
    now = dt.datetime.now(JST)
    story: list[object] = [
        p(f"カルテ要約　{clinic_name}", h1),
        p(f"印刷日時 {now:%Y年%m月%d日 %H:%M}　印刷者 {printed_by}", small),
        Spacer(1, 3 * mm),
        table(
            [
                ["患者番号", "氏名", "カナ", "生年月日", "性別"],
                [
                    str(pt.patient_number),
                    pt.full_name,
                    pt.full_kana,
                    f"{wareki(pt.birth_date)}（{age_on(pt.birth_date, now.date())}歳）",
                    SEX_JA.get(pt.sex, pt.sex),
                ],
            ],
            [20 * mm, 35 * mm, 45 * mm, 55 * mm, 15 * mm],
        ),
        p(f"住所 〒{pt.postal_code} {pt.prefecture}{pt.city}{pt.address_line}　電話 {pt.phone}"),
    ]
    story.append(p("アレルギー・薬剤禁忌", h2))
    if chart.allergies:
        for a in chart.allergies:
            label = "【薬剤禁忌】" if a.is_contraindication else ""
            story.append(p(f"{label}{a.substance}　{a.reaction}", warn if label else base))
    else:
        story.append(p("登録なし"))
    story.append(p("傷病名", h2))
    if chart.conditions:
        rows = [["傷病名", "区分", "開始日", "転帰"]]
        for c in chart.conditions:
            flags = [
                f
                for f, on in (
                    ("主病", c.is_primary),
                    ("疑い", c.is_suspected),
                    ("未告知", c.is_undisclosed),
                )
                if on
            ]
            outcome = OUTCOME_JA.get(ConditionOutcome(c.outcome), c.outcome)
            rows.append([c.display_name, "・".join(flags), str(c.onset_date or ""), outcome])
        story.append(table(rows, [80 * mm, 35 * mm, 30 * mm, 25 * mm]))
    else:
        story.append(p("登録なし"))
    story.append(p("現在の処方", h2))
    if chart.medications:
        rows = [["処方日", "RP", "薬剤", "用量", "用法", "日数"]]
        for m in chart.medications:
            for g in m.rp_groups:
                for item in g["items"]:
                    rows.append(
                        [
                            str(m.issued_on),
                            str(g["rp"]),
                            item["drug_name"],
                            f"{item['dose']}{item['unit']}",
                            g["usage"],
                            f"{g['days']}日",
                        ]
                    )
        story.append(table(rows, [25 * mm, 10 * mm, 57 * mm, 22 * mm, 40 * mm, 16 * mm]))
    else:
        story.append(p("なし"))
    story.append(p("最近の検査結果", h2))
    if chart.labs:
        rows = [["日付", "項目", "結果", "基準範囲", "判定"]]
        for o in chart.labs[:30]:
            rows.append(
                [
                    f"{o.effective_at.astimezone(JST):%Y-%m-%d}",
                    o.name,
                    f"{o.value or o.value_text} {o.unit}",
                    f"{o.ref_low}–{o.ref_high}",
                    o.abnormal_flag,
                ]
            )
        story.append(table(rows, [25 * mm, 50 * mm, 35 * mm, 40 * mm, 20 * mm]))
    else:
        story.append(p("なし"))
    story.append(p("最近の経過記録", h2))
    status_ja = {"draft": "下書き", "final": "確定", "amended": "修正済"}
    for n in chart.notes[:10]:
        story.append(
            p(
                f"{n.created_at.astimezone(JST):%Y-%m-%d %H:%M}　"
                f"{status_ja.get(n.status, n.status)}"
                f"{'　代行入力' if n.is_proxy_entry else ''}",
                small,
            )
        )
        for label, text in (
            ("S", n.subjective),
            ("O", n.objective),
            ("A", n.assessment),
            ("P", n.plan),
        ):
            if text:
                story.append(p(f"{label}: {text}"))
        story.append(Spacer(1, 2 * mm))
    if not chart.notes:
        story.append(p("なし"))
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title=f"カルテ要約 {pt.patient_number}",
        author="mamori",
    )
    doc.build(story)
    return buf.getvalue()
