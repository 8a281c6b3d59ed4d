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
        p(f"作成日時 {now:%Y年%m月%d日 %H:%M}　作成者 {issued_by}　記録 {len(rows)} 件", small),
        Spacer(1, 4 * mm),
    ]
    # one line per person, day and action (a chart reloaded ten times is one line, ×10), as a
    # patient asks: who looked, when, at what
    table_rows = [[p("日付"), p("時刻"), p("職員"), p("職種"), p("操作"), p("回数")]]
    for (day, name, role, tag), times in _grouped(rows):
        first, last = min(times), max(times)
        span = f"{first:%H:%M}" if first == last else f"{first:%H:%M}〜{last:%H:%M}"
        table_rows.append(
            [
                p(f"{day:%Y/%m/%d}"),
                p(span),
                p(name),
                p(role),
                p(tag_ja(tag)),
                p(f"{len(times)}回"),
            ]
        )
    if len(table_rows) == 1:
        table_rows.append([p("—"), p(""), p("閲覧の記録はありません"), p(""), p(""), p("")])
    t = styled_table(table_rows, [24 * mm, 26 * mm, 38 * mm, 32 * mm, 42 * mm, 16 * mm])
    story += [
        t,
        Spacer(1, 5 * mm),
        p(
            "この一覧は、改ざんを検知できる監査証跡（Merkle 木・電子署名付きチェックポイント）から"
            f"作成しました。証跡の長さ {log_size} 件、ルート {log_root_hex[:16]}…",
            small,
        ),
    ]
    return render(
        story,
        title=f"閲覧履歴 {patient.patient_number}",
        running_head=(
            f"診療記録の閲覧履歴　患者番号 {patient.patient_number}　{patient.full_name} 様"
        ),
    )


def _grouped(
    rows: Sequence[Access],
) -> list[tuple[tuple[dt.date, str, str, str], list[dt.datetime]]]:
    """Accesses by (day, person, role, action), newest day first, in first-seen order."""
    groups: dict[tuple[dt.date, str, str, str], list[dt.datetime]] = {}
    for r in rows:
        at = r.at.astimezone(JST)
        groups.setdefault((at.date(), r.user_name, r.role, r.tag), []).append(at)
    return sorted(groups.items(), key=lambda kv: (kv[0][0], max(kv[1])), reverse=True)
