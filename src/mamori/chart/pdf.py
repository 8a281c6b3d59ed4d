"""The printable chart summary (カルテ要約) as a Japanese PDF (house style: ``mamori.pdf``)."""

from __future__ import annotations

import datetime as dt
import uuid

from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, Spacer, Table

from mamori.chart.service import Chart
from mamori.clinic.calendar import JST, age_on, wareki
from mamori.clinical.models import OUTCOME_JA, ConditionOutcome
from mamori.clinical.units import dose_ja, rp_count_ja, unit_ja
from mamori.patients.models import SEX_JA
from mamori.pdf import render, styled_table, styles
from mamori.pdf import text as paragraph


def render_chart_pdf(
    chart: Chart, clinic_name: str, printed_by: str, names: dict[uuid.UUID, str] | None = None
) -> bytes:
    """``names``: staff display names, for each note's 記載者 (and a proxy entry's typist)."""
    names = names or {}
    st = styles()
    base, h1, h2, small, warn = st.base, st.h1, st.h2, st.small, st.warn

    def p(value: str, style: ParagraphStyle = base) -> Paragraph:
        return paragraph(value, style)

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
        p(
            "住所 "
            + (f"〒{pt.postal_code} " if pt.postal_code else "")
            + f"{pt.prefecture}{pt.city}{pt.address_line}　電話 {pt.phone}"
        ),
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
                    ("代行入力・未承認", c.status == "unconfirmed"),
                )
                if on
            ]
            outcome = OUTCOME_JA.get(ConditionOutcome(c.outcome), c.outcome)
            rows.append(
                [
                    c.display_name,
                    "・".join(flags),
                    c.onset_date.strftime("%Y/%m/%d") if c.onset_date else "",
                    outcome,
                ]
            )
        story.append(table(rows, [80 * mm, 35 * mm, 30 * mm, 25 * mm]))
    else:
        story.append(p("登録なし"))
    story.append(p("現在の処方", h2))
    if chart.medications:
        rows = [["処方日", "RP", "薬剤", "用量", "用法", "日数・回数"]]
        for m in chart.medications:
            for g in m.rp_groups:
                for item in g["items"]:
                    rows.append(
                        [
                            m.issued_on.strftime("%Y/%m/%d"),  # as the screens write it
                            str(g["rp"]),
                            item["drug_name"],
                            dose_ja(item),
                            g["usage"],
                            rp_count_ja(g),
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
                    f"{o.effective_at.astimezone(JST):%Y/%m/%d}",
                    o.name,
                    f"{o.value or o.value_text} {unit_ja(o.unit)}",
                    f"{o.ref_low}–{o.ref_high}",
                    o.abnormal_flag,
                ]
            )
        story.append(table(rows, [25 * mm, 50 * mm, 35 * mm, 40 * mm, 20 * mm]))
    else:
        story.append(p("なし"))
    story.append(p("最近のバイタル", h2))
    if chart.vitals:
        rows = [["日時", "項目", "値", "判定"]]
        for o in chart.vitals[:20]:
            rows.append(
                [
                    f"{o.effective_at.astimezone(JST):%Y/%m/%d %H:%M}",
                    o.name,
                    f"{o.value} {unit_ja(o.unit)}",
                    o.abnormal_flag,
                ]
            )
        story.append(table(rows, [35 * mm, 50 * mm, 40 * mm, 20 * mm]))
    else:
        story.append(p("なし"))
    story.append(p("最近の経過記録", h2))
    status_ja = {"draft": "下書き", "final": "確定", "amended": "修正済"}
    for n in chart.notes[:10]:
        author = names.get(n.author_id, "")
        typist = names.get(n.entered_by_id, "") if n.is_proxy_entry else ""
        story.append(
            p(
                f"{n.created_at.astimezone(JST):%Y/%m/%d %H:%M}　"
                f"{status_ja.get(n.status, n.status)}　記載者 {author}"
                + (f"（代行入力: {typist}）" if n.is_proxy_entry else ""),
                small,
            )
        )
        if n.status == "draft":  # never printed as if it were the record
            story.append(p("【下書き・未確定】この記録はまだ確定されていません。", warn))
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
    return render(
        story,
        title=f"カルテ要約 {pt.patient_number}",
        running_head=f"カルテ要約　患者番号 {pt.patient_number}　{pt.full_name} 様　{clinic_name}",
    )
