"""「診療記録の閲覧履歴」— the printable answer to a patient's "who has looked at my record"."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, Spacer

from mamori.audit.review import Access, tag_ja
from mamori.clinic.calendar import JST, wareki
from mamori.patients.models import Patient
from mamori.pdf import render, styled_table, styles
from mamori.pdf import text as paragraph


def render_access_report(
    patient: Patient,
    rows: Sequence[Access],
    clinic_name: str,
    issued_by: str,
    log_size: int,
    log_root_hex: str,
) -> bytes:
    st = styles()
    base, h1, small = st.base, st.h1, st.small

    def p(value: str, style: ParagraphStyle = base) -> Paragraph:
        return paragraph(value, style)

    now = dt.datetime.now(JST)
    story: list[object] = [
        p(f"診療記録の閲覧履歴　{clinic_name}", h1),
        p(
            f"患者番号 {patient.patient_number}　{patient.full_name}（{patient.full_kana}）　"
            f"生年月日 {wareki(patient.birth_date)}"
        ),
        p(f"作成日時 {now:%Y年%m月%d日 %H:%M}　作成者 {issued_by}　件数 {len(rows)}", small),
        Spacer(1, 4 * mm),
    ]
    table_rows = [[p("日時"), p("職員"), p("職種"), p("操作")]]
    for r in rows:
        table_rows.append(
            [
                p(f"{r.at.astimezone(JST):%Y-%m-%d %H:%M}"),
                p(r.user_name),
                p(r.role),
                p(tag_ja(r.tag)),
            ]
        )
    if len(table_rows) == 1:
        table_rows.append([p("—"), p("閲覧の記録はありません"), p(""), p("")])
    t = styled_table(table_rows, [38 * mm, 45 * mm, 40 * mm, 55 * mm])
    story += [
        t,
        Spacer(1, 5 * mm),
        p(
            "この一覧は、改ざんを検知できる監査証跡（Merkle 木・電子署名付きチェックポイント）から"
            f"作成しました。証跡の長さ {log_size} 件、ルート {log_root_hex[:16]}…",
            small,
        ),
    ]
    return render(story, title=f"閲覧履歴 {patient.patient_number}")
