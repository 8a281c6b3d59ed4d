"""The checklist on paper for the 立入検査: the official form's columns (項目・確認日・はい／
いいえ・目標日), with the answers' evidence in an annex."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import PageBreak, Spacer, TableStyle

from mamori.clinic.calendar import JST
from mamori.clinic.models import Clinic
from mamori.pdf import render, styled_table, styles
from mamori.pdf import text as paragraph
from mamori.programme.bcp import FALLBACK, PRIORITY, SCENARIOS, Document
from mamori.programme.checklist import ANSWERS, View, nendo
from mamori.programme.documents import InfoKind


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
    spans: list[int] = []
    for r in v.rows:
        if r.item.section != section:
            section = r.item.section
            spans.append(len(rows))  # a section heading across the whole row
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
    table = styled_table(rows, (13 * mm, 100 * mm, 22 * mm, 18 * mm, 27 * mm))
    table.setStyle(
        TableStyle(
            [("SPAN", (0, i), (-1, i)) for i in spans]
            + [("BACKGROUND", (0, i), (-1, i), colors.HexColor("#f3f5f8")) for i in spans]
        )
    )
    story.append(table)
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


def render_bcp(doc: Document, issued_by: str) -> bytes:
    """The cyber-BCP on paper, in the ひな形's order."""
    st = styles()
    a = doc.approval
    story: list[object] = [
        paragraph(f"サイバー攻撃を想定した事業継続計画（BCP）　{doc.clinic}", st.h1),
        paragraph(
            f"作成 {doc.made_on:%Y年%m月%d日}（mamori の設定と記録から）　出力者 {issued_by}　"
            + (
                f"第{a.version}版 承認 {a.approved_on:%Y年%m月%d日}"
                f"　次回見直し {a.review_on:%Y年%m月%d日}"
                if a
                else "未承認"
            ),
            st.small,
        ),
    ]
    if a and a.text_sha256 != doc.sha256:
        story.append(
            paragraph(
                "承認後に内容（連絡先・バックアップ等）が変わっています。院長の再承認が必要です。",
                st.warn,
            )
        )
    for m in doc.missing:
        story.append(paragraph(f"不足: {m}", st.warn))
    story.append(paragraph("1. 想定する事態", st.h2))
    story.append(
        styled_table(
            [[paragraph(h, st.base) for h in ("事態", "対応")]]
            + [[paragraph(x, st.base), paragraph(y, st.base)] for x, y in SCENARIOS],
            (40 * mm, 140 * mm),
        )
    )
    story.append(paragraph("2. 連絡体制", st.h2))
    rows = [[paragraph(h, st.base) for h in ("役割", "連絡先", "電話")]]
    for line in doc.contacts:
        if line.active:
            for r in line.active:
                rows.append(
                    [
                        paragraph(line.label_ja, st.base),
                        paragraph(f"{r.organisation} {r.name}", st.base),
                        paragraph(r.phone, st.base),
                    ]
                )
        else:
            shipped = line.shipped or {}
            rows.append(
                [
                    paragraph(line.label_ja, st.base),
                    paragraph(
                        f"{shipped.get('organisation', '')} {shipped.get('name', '')}".strip()
                        or "未登録",
                        st.base,
                    ),
                    paragraph(shipped.get("phone", ""), st.base),
                ]
            )
    story.append(styled_table(rows, (45 * mm, 95 * mm, 40 * mm)))
    story.append(paragraph("3. 検知と初動対応（ランサムウェアの場合）", st.h2))
    story.append(
        paragraph(
            "異常に気づいた職員は、画面右上の「インシデントかも？」で報告する（安全管理者と院長にすぐ届く）。その後、次の順に対応する。",
            st.base,
        )
    )
    steps = [[paragraph(h, st.base) for h in ("順", "手順", "担当")]]
    for n, s in enumerate(doc.playbook, 1):
        steps.append(
            [
                paragraph(str(n), st.base),
                paragraph(s["title"], st.base),
                paragraph(
                    {
                        "anyone": "発見者・全職員",
                        "security_officer": "安全管理者",
                        "director": "院長",
                        "reception": "受付",
                        "vendor": "保守ベンダー",
                    }.get(s["role"], s["role"]),
                    st.small,
                ),
            ]
        )
    story.append(styled_table(steps, (10 * mm, 140 * mm, 30 * mm)))
    story.append(paragraph("4. 業務の代替手段（紙運用）", st.h2))
    story.append(
        styled_table(
            [[paragraph(h, st.base) for h in ("業務", "代替", "どこにあるか")]]
            + [[paragraph(x, st.base) for x in row] for row in FALLBACK],
            (30 * mm, 90 * mm, 60 * mm),
        )
    )
    story.append(paragraph(doc.standby + "。" + doc.downtime, st.small))
    story.append(paragraph("5. バックアップ一覧", st.h2))
    b_rows = [[paragraph(h, st.base) for h in ("名前", "保存先", "頻度", "オフライン")]]
    b_rows += [[paragraph(x, st.small) for x in b] for b in doc.backups] or [
        [paragraph("未設定", st.warn), "", "", ""]
    ]
    story.append(styled_table(b_rows, (25 * mm, 85 * mm, 30 * mm, 40 * mm)))
    story.append(paragraph("6. 復旧の優先順位と手順", st.h2))
    story.append(paragraph("\n".join(f"{n}. {p}" for n, p in enumerate(PRIORITY, 1)), st.base))
    story.append(
        paragraph(
            "復旧は安全を確かめたバックアップから（mamori restore、整合性を検証してから）。"
            f"最後の復元訓練: {doc.last_drill}。",
            st.base,
        )
    )
    story.append(paragraph("7. 事後対応", st.h2))
    story.append(
        paragraph(
            "結果と情報漏えいの有無を院内に報告し、足りなかったことと再発防止策（担当・期日）を決める（インシデント台帳の「事後対応」）。個人データの漏えい等は個人情報保護委員会に報告する（速報3〜5日目、確報30日目・不正目的は60日目）。",
            st.base,
        )
    )
    story.append(paragraph("8. 承認と周知", st.h2))
    story.append(
        paragraph(
            (
                f"第{a.version}版を院長が {a.approved_on:%Y年%m月%d日} に承認。"
                f"職員の既読 {doc.acknowledged} 人。"
                if a
                else "未承認。"
            )
            + f"内容の SHA-256: {doc.sha256[:16]}…",
            st.base,
        )
    )
    return render(
        story, title="サイバー攻撃を想定した事業継続計画", running_head=f"{doc.clinic} BCP"
    )


def render_rules(text: str, inventory: Sequence[InfoKind]) -> bytes:
    """The draft 運用管理規程 (Markdown headings and tables read plainly) and the information
    inventory as its annex."""
    st = styles()
    story: list[object] = []
    table: list[list[object]] = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            table.append([paragraph(c, st.small) for c in cells])
            continue
        if table:
            story.append(styled_table(table, (35 * mm, 145 * mm)))
            table = []
        if line.startswith("# "):
            story.append(paragraph(line[2:], st.h1))
        elif line.startswith("## "):
            story.append(paragraph(line[3:], st.h2))
        elif line.startswith("| ---"):
            continue
        elif line.strip():
            story.append(paragraph(line, st.base))
    if table:
        story.append(styled_table(table, (35 * mm, 145 * mm)))
    story.append(PageBreak())
    story.append(paragraph("別表　取り扱う情報の一覧（情報資産の把握）", st.h1))
    rows = [[paragraph(h, st.base) for h in ("情報", "分類", "保存場所", "保護", "保存")]]
    for k in inventory:
        rows.append(
            [
                paragraph(x, st.small)
                for x in (k.name, k.classification, k.where, k.protection, k.keep)
            ]
        )
    story.append(styled_table(rows, (34 * mm, 30 * mm, 40 * mm, 50 * mm, 26 * mm)))
    return render(story, title="医療情報システム運用管理規程（案）")
