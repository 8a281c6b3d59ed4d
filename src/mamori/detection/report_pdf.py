"""「不審アクセス確認一覧」— the review queue on paper, for the director's weekly look and the
inspector's file (each case's sentence, rules and tier)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from reportlab.lib.units import mm
from reportlab.platypus import Spacer

from mamori.clinic.calendar import JST
from mamori.detection.service import CaseView
from mamori.pdf import render, styled_table, styles
from mamori.pdf import text as paragraph

TIER_JA = {"immediate": "即時", "daily": "日次", "weekly": "週次"}


def render_queue(cases: Sequence[CaseView], clinic_name: str, issued_by: str) -> bytes:
    st = styles()
    now = dt.datetime.now(JST)
    story: list[object] = [
        paragraph(f"不審アクセス確認一覧　{clinic_name}", st.h1),
        paragraph(
            f"作成日時 {now:%Y年%m月%d日 %H:%M}　作成者 {issued_by}　未判定 {len(cases)} 件",
            st.small,
        ),
        Spacer(1, 4 * mm),
    ]
    rows = [[paragraph(h, st.base) for h in ("区分", "最終", "内容", "該当する規則", "判定")]]
    for v in cases:
        rows.append(
            [
                paragraph(TIER_JA.get(v.case.tier, v.case.tier), st.base),
                paragraph(f"{v.case.last_at.astimezone(JST):%m/%d %H:%M}", st.base),
                paragraph(v.sentence, st.base),
                paragraph("、".join(v.rules_ja), st.small),
                paragraph("□問題なし　□要対応", st.small),
            ]
        )
    if len(rows) == 1:
        rows.append([paragraph(x, st.base) for x in ("—", "", "未判定の事例はありません", "", "")])
    story.append(styled_table(rows, (14 * mm, 20 * mm, 80 * mm, 38 * mm, 28 * mm)))
    return render(story, title="不審アクセス確認一覧", running_head=clinic_name)
