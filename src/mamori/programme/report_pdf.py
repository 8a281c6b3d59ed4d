"""The checklist on paper for the 立入検査: the official form's columns (項目・確認日・はい／
いいえ・目標日), with the answers' evidence in an annex."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from reportlab.lib.units import mm
from reportlab.platypus import PageBreak, Spacer

from mamori.clinic.calendar import JST
from mamori.clinic.models import Clinic
from mamori.pdf import render, styled_table, styles
from mamori.pdf import text as paragraph
from mamori.programme.checklist import ANSWERS, View, nendo


def render_checklist(v: View, clinic: Clinic, issued_by: str, names: Mapping[Any, str]) -> bytes:
    st = styles()
    now = dt.datetime.now(JST)
    story: list[object] = [
        paragraph(f"{v.items.title}（{nendo(v.year)}）", st.h1),
        paragraph(
            f"医療機関名 {clinic.name}（医療機関コード {clinic.institution_code}）　"
            f"出力 {now:%Y年%m月%d日 %H:%M}　出力者 {issued_by}　"
            f"項目: {v.items.edition}（{v.items.published} 公表、SHA-256 {v.items.sha256[:12]}…）",
            st.small,
        ),
    ]
    if v.carried:
        story.append(
            paragraph(
                f"{nendo(v.year)}版の項目は未収録のため、{v.items.edition}の項目で確認しています。",
                st.warn,
            )
        )
    story.append(Spacer(1, 3 * mm))
    head = ("番号", "確認項目", "確認日", "回答", "目標日（いいえの場合）")
    rows = [[paragraph(h, st.base) for h in head]]
    section = ""
    for r in v.rows:
        if r.item.section != section:
            section = r.item.section
            rows.append([paragraph(section, st.h2), "", "", "", ""])
        a = r.answer
        text = r.item.text + (f"（{r.item.scope}）" if r.item.scope else "")
        rows.append(
            [
                paragraph(r.item.no, st.base),
                paragraph(text, st.base),
                paragraph(f"{a.checked_on:%Y/%m/%d}" if a else "", st.base),
                paragraph(ANSWERS[a.answer][0] if a else "未回答", st.base if a else st.warn),
                paragraph(f"{a.target_on:%Y/%m/%d}" if a and a.target_on else "", st.base),
            ]
        )
    story.append(styled_table(rows, (13 * mm, 100 * mm, 22 * mm, 18 * mm, 27 * mm)))
    story.append(PageBreak())
    story.append(paragraph("別紙　確認の根拠（mamori の記録から）", st.h1))
    story.append(
        paragraph(
            "自動で確かめられる項目は、回答した時点の根拠（日時入り）と、出力時点の状態を示します。"
            "回答と現在の状態が異なる項目には「要再確認」と記します。",
            st.small,
        )
    )
    ev = [[paragraph(h, st.base) for h in ("番号", "回答時の根拠（確認者）", "出力時点の状態")]]
    for r in v.rows:
        a, p = r.answer, r.proposal
        then = (
            f"{a.evidence or '（手動確認）'}\n確認者 {names.get(a.checked_by_id, '')}"
            + (f"\nメモ: {a.note}" if a and a.note else "")
            if a
            else "未回答"
        )
        current = p.ja if p else "（自動では確かめられません）"
        if r.changed:
            current = "【要再確認】" + current
        ev.append(
            [paragraph(r.item.no, st.base), paragraph(then, st.small), paragraph(current, st.small)]
        )
    story.append(styled_table(ev, (13 * mm, 85 * mm, 82 * mm)))
    return render(
        story,
        title=f"サイバーセキュリティ対策チェックリスト {nendo(v.year)}",
        running_head=f"{clinic.name} チェックリスト {nendo(v.year)}",
    )
