"""The house style of every printed page: A4 with 15 mm margins, an embedded Japanese font,
the paragraph styles and the table every report uses (the chart summary, the access report,
and the downtime and inspection prints to come).

Japanese text needs a Japanese font *embedded* in the PDF, or the page shows boxes on a PC
without it. We embed IPAex Gothic (Debian ``fonts-ipaexfont-gothic``; the path can be set with
``MAMORI_PDF_FONT``). Without any TrueType font we fall back to the standard Adobe-Japan1 CID
font, which renders in viewers that have Japanese fonts but is not embedded.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
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
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Table, TableStyle

FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
)
MARGIN = 15 * mm
_FONT: str | None = None


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


@dataclass(frozen=True)
class Styles:
    base: ParagraphStyle  # body text
    h1: ParagraphStyle  # the page's title
    h2: ParagraphStyle  # a section
    small: ParagraphStyle  # printed-at lines, footnotes
    warn: ParagraphStyle  # 薬剤禁忌 and the like, in red


def styles() -> Styles:
    # CJK wrapping with 禁則: no line begins with 。、）」 and no line ends with （「
    base = ParagraphStyle(
        "base", fontName=japanese_font(), fontSize=9.5, leading=13, wordWrap="CJK"
    )
    return Styles(
        base=base,
        h1=ParagraphStyle("h1", parent=base, fontSize=15, leading=20, spaceAfter=4),
        h2=ParagraphStyle(
            "h2",
            parent=base,
            fontSize=11.5,
            leading=16,
            spaceBefore=8,
            spaceAfter=3,
            textColor=colors.HexColor("#1f3b63"),
        ),
        small=ParagraphStyle("small", parent=base, fontSize=8, leading=10, textColor=colors.grey),
        warn=ParagraphStyle("warn", parent=base, textColor=colors.HexColor("#b00020")),
    )


def text(value: str, style: ParagraphStyle) -> Paragraph:
    """A paragraph of plain text (escaped; line breaks kept)."""
    return Paragraph(escape(value).replace("\n", "<br/>"), style)


def styled_table(cells: list[list[Any]], widths: Sequence[float]) -> Table:
    """The house table: a header row, light grid, top-aligned cells, left on the page."""
    t = Table(cells, colWidths=list(widths), repeatRows=1, hAlign="LEFT")
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


def render(story: Sequence[Flowable], *, title: str, running_head: str = "") -> bytes:
    """The pages of ``story`` on A4 with the house margins, as PDF bytes. Every page carries
    its number at the foot; every page after the first carries ``running_head`` (whose record
    this is: a loose second page must still say so) at the top."""
    buf = io.BytesIO()
    font = japanese_font()

    def foot(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(font, 8)
        canvas.setFillColor(colors.grey)
        canvas.drawCentredString(A4[0] / 2, MARGIN / 2, f"{doc.page} ページ")
        canvas.restoreState()

    def head_and_foot(canvas: Any, doc: Any) -> None:
        foot(canvas, doc)
        if running_head:
            canvas.saveState()
            canvas.setFont(font, 8)
            canvas.setFillColor(colors.grey)
            canvas.drawString(MARGIN, A4[1] - MARGIN / 2 - 2, running_head)
            canvas.restoreState()

    SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN,
        title=title,
        author="mamori",
    ).build(list(story), onFirstPage=foot, onLaterPages=head_and_foot)
    return buf.getvalue()
