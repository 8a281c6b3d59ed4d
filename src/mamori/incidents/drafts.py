"""The drafts an incident needs, in Japanese, printable and copyable: the PPC report's nine
fields (規則第8条第1項), the notice to each affected patient (items 1, 2, 4, 5 and 9, 規則第10
条), a public notice with the enquiry desk, the report to MHLW and the 保健所, the
post-incident review (事後対応) and the contact chart (連絡体制図) on one A4 page.

Each draft is made from the incident and its affected-patient list; what mamori cannot know
is marked 【要記入】 for the person who finishes it. The same text is shown on screen to copy
into the PPC's web form (``fields``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reportlab.lib.units import mm
from reportlab.platypus import PageBreak, Spacer

from mamori.clinic.calendar import JST, wareki
from mamori.clinic.models import Clinic
from mamori.incidents import rules
from mamori.incidents.affected import ITEMS
from mamori.incidents.service import (
    Affected,
    AffectedRow,
    ContactLine,
    View,
    kind_label,
)
from mamori.pdf import render, styled_table, styles
from mamori.pdf import text as paragraph

FILL = "【要記入】"
CAUSES = {
    "ransomware": "ランサムウェア（身代金要求型の不正プログラム）への感染。侵入経路は" + FILL,
    "unauthorised": "第三者による不正アクセス。侵入経路は" + FILL,
    "device": "業務用端末・記録媒体の紛失または盗難。",
    "insider": "当院職員が業務上の必要なく診療記録を閲覧したこと。",
    "misdirected": "FAX・郵便・電子メールの送付先の誤り。",
    "phishing": "不審な電子メール（フィッシング）による認証情報の窃取。",
    "fault": "システム障害。",
    "other": FILL,
}


def _d(day: dt.date | None) -> str:
    return f"{day:%Y年%m月%d日}（{wareki(day)}）" if day else "—"


def items_text(counts: dict[str, int] | Sequence[str]) -> str:
    keys = list(counts)
    return "、".join(ITEMS[k][0] for k in ITEMS if k in keys) or FILL


@dataclass(frozen=True)
class Field:
    no: int
    title: str
    body: str


def fields(v: View, found: Affected | None, names: Mapping[Any, str]) -> list[Field]:
    """The nine fields of the PPC report, pre-filled."""
    i = v.incident
    done = [s for s in v.steps if s.outcome == "done"]
    count = len(found.rows) if found else v.affected_count
    items = found.item_counts if found else v.saved.items
    events = found.events if found else v.saved.events
    overview = (
        f"{_d(i.knew_on)}、{kind_label(i.kind)}を把握した（{i.title}）。"
        + (f"発生日は{_d(i.occurred_on)}。" if i.occurred_on else "発生日は調査中。")
        + (f"\n把握の経緯: {i.seen}" if i.seen else "")
        + (f"\n場所: {i.place}" if i.place else "")
        + (f"\n端末: {i.device}" if i.device else "")
    )
    if v.scope is not None:
        scope = f"（監査証跡による特定: 対象事象 {events} 件）"
        number = f"{count}人{scope}"
    else:
        number = f"調査中{FILL}"
    notified = f"{v.notices}人に通知済み（{count}人中）。" if count else ""
    measures = "\n".join(
        f"・{m.text}（担当: {names.get(m.owner_id, '')}、期日: {m.due_on:%Y-%m-%d}）"
        for m in v.measures
        if m.due_on
    )
    conditions = "、".join(f"第{n}号" for n in v.proposal.conditions) or "—"
    other = (
        f"報告対象事態（規則第7条）: {conditions}。"
        + (
            f"\n院長の判断: {'報告対象' if i.reportable == 'yes' else '報告対象外'}"
            f"（{i.decision_reason}）"
            if i.reportable
            else ""
        )
        + "\n実施した対応: "
        + ("、".join(s.title.split("（")[0] for s in done) if done else "—")
    )
    return [
        Field(1, "概要", overview),
        Field(
            2,
            "漏えい等が発生し、又は発生したおそれがある個人データの項目",
            items_text(items) if v.scope is not None else FILL,
        ),
        Field(3, "漏えい等が発生し、又は発生したおそれがある個人データに係る本人の数", number),
        Field(4, "原因", CAUSES.get(i.kind, FILL)),
        Field(
            5,
            "二次被害又はそのおそれの有無及びその内容",
            f"現時点で二次被害は確認されていない。{FILL}",
        ),
        Field(
            6, "本人への対応の実施状況", notified + ("" if count and v.notices >= count else FILL)
        ),
        Field(
            7,
            "公表の実施状況",
            f"{_d(i.published_on)}に公表。" if i.published_on else f"未公表。{FILL}",
        ),
        Field(8, "再発防止のための措置", measures or FILL),
        Field(9, "その他参考となる事項", other),
    ]


def _clinic_line(clinic: Clinic) -> str:
    parts = [
        f"〒{clinic.postal_code}" if clinic.postal_code else "",
        clinic.address,
        f"電話 {clinic.phone}" if clinic.phone else "",
    ]
    return "　".join(p for p in parts if p) or f"所在地・電話 {FILL}"


def _head(title: str, clinic: Clinic, issued_by: str, note: str = "") -> list[object]:
    st = styles()
    now = dt.datetime.now(JST)
    out: list[object] = [
        paragraph(title, st.h1),
        paragraph(
            f"{clinic.name}（医療機関コード {clinic.institution_code}）"
            f"　作成 {now:%Y年%m月%d日 %H:%M}"
            f"　作成者 {issued_by}　下書き：{FILL} の箇所を確認・記入してから提出してください",
            st.small,
        ),
    ]
    if note:
        out.append(paragraph(note, st.small))
    out.append(Spacer(1, 4 * mm))
    return out


def ppc_report(
    v: View, found: Affected | None, clinic: Clinic, issued_by: str, names: Mapping[Any, str]
) -> bytes:
    st = styles()
    i = v.incident
    story = _head(
        f"個人データの漏えい等報告（下書き） No.{i.number}",
        clinic,
        issued_by,
        "個人情報保護委員会の報告フォーム（https://www.ppc.go.jp/personalinfo/legal/leakAction/）に"
        "各欄を写して提出します。規則第8条第1項の9項目の順です。",
    )
    first, last = rules.prompt_window(i.knew_on)
    final = rules.final_due(i.knew_on, i.malicious)
    story.append(
        paragraph(
            f"知った日 {_d(i.knew_on)}　速報の目安 {first:%m月%d日}〜{last:%m月%d日}"
            f"　確報の期限 {final:%Y年%m月%d日}（知った日を1日目として"
            f"{rules.FINAL_DAYS_MALICIOUS if i.malicious else rules.FINAL_DAYS}日目）",
            st.base,
        )
    )
    story.append(Spacer(1, 3 * mm))
    rows = [[paragraph("項目", st.base), paragraph("内容", st.base)]]
    for f in fields(v, found, names):
        rows.append([paragraph(f"{f.no}. {f.title}", st.base), paragraph(f.body, st.base)])
    story.append(styled_table(rows, (55 * mm, 125 * mm)))
    return render(
        story,
        title=f"漏えい等報告 No.{i.number}",
        running_head=f"{clinic.name} 漏えい等報告 No.{i.number}",
    )


def letters(v: View, rows: Sequence[AffectedRow], clinic: Clinic, issued_by: str) -> bytes:
    """One notice per patient (規則第10条: items 1, 2, 4, 5 and 9), addressed from the record."""
    st = styles()
    i = v.incident
    today = dt.datetime.now(JST).date()
    story: list[object] = []
    for n, row in enumerate(rows):
        if n:
            story.append(PageBreak())
        story += [
            paragraph(row.address or f"住所未登録{FILL}", st.base),
            paragraph(f"{row.name} 様", st.h2),
            Spacer(1, 6 * mm),
            paragraph(f"{today:%Y年%m月%d日}", st.base),
            paragraph(f"{clinic.name}　院長", st.base),
            paragraph(_clinic_line(clinic), st.small),
            Spacer(1, 6 * mm),
            paragraph("個人情報の漏えい等に関するお知らせとお詫び", st.h1),
            paragraph(
                "平素より当院をご利用いただき、誠にありがとうございます。このたび、当院が"
                "お預かりしている個人情報について、下記の事態が発生いたしました。多大なご心配と"
                "ご迷惑をおかけしますことを、深くお詫び申し上げます。",
                st.base,
            ),
            Spacer(1, 3 * mm),
            paragraph("1. 概要", st.h2),
            paragraph(
                f"{_d(i.knew_on)}、{kind_label(i.kind)}が判明しました。"
                + (f"発生日は{_d(i.occurred_on)}です。" if i.occurred_on else "")
                + f"{FILL}",
                st.base,
            ),
            paragraph("2. 対象となった可能性のあるあなたの情報", st.h2),
            paragraph(items_text(row.items), st.base),
            paragraph("3. 原因", st.h2),
            paragraph(CAUSES.get(i.kind, FILL), st.base),
            paragraph("4. 二次被害又はそのおそれ", st.h2),
            paragraph(
                f"現時点で、この情報が悪用された事実は確認されていません。{FILL}"
                "不審な電話や郵便物があった場合は、下記の窓口までご連絡ください。",
                st.base,
            ),
            paragraph("5. その他（お問い合わせ窓口）", st.h2),
            paragraph(
                f"{clinic.name}　個人情報に関するお問い合わせ窓口　電話 {clinic.phone or FILL}"
                f"（受付時間 {FILL}）",
                st.base,
            ),
            Spacer(1, 4 * mm),
            paragraph(f"管理番号 インシデント No.{i.number} / 患者番号 {row.number}", st.small),
        ]
    if not rows:
        story.append(paragraph("通知の対象となる患者がいません。", st.base))
    return render(story, title=f"本人への通知 No.{i.number}")


def public_notice(v: View, found: Affected | None, clinic: Clinic, issued_by: str) -> bytes:
    st = styles()
    i = v.incident
    count = f"{len(found.rows)}名" if found else FILL
    story = _head(f"公表文・お問い合わせ窓口（下書き） No.{i.number}", clinic, issued_by)
    story += [
        paragraph("個人情報の漏えい等に関するお知らせとお詫び", st.h2),
        paragraph(
            f"このたび、当院において{kind_label(i.kind)}が発生し、患者様{count}の個人情報が"
            f"漏えいした（又はそのおそれがある）ことが判明いたしました。対象となる可能性のある情報は、"
            f"{items_text(found.item_counts) if found else FILL}です。患者様をはじめ関係者の皆様に"
            "多大なご心配とご迷惑をおかけしますことを、深くお詫び申し上げます。",
            st.base,
        ),
        paragraph("経緯と対応", st.h2),
        paragraph(
            f"{_d(i.knew_on)}に事態を把握し、直ちに被害拡大の防止と調査を行いました。"
            f"個人情報保護委員会への報告{'を行い' if i.prompt_sent_on else FILL}、"
            f"対象の患者様には個別にご連絡しています。{FILL}",
            st.base,
        ),
        paragraph("再発防止策", st.h2),
        paragraph("\n".join(f"・{m.text}" for m in v.measures) or FILL, st.base),
        paragraph("お問い合わせ窓口", st.h2),
        paragraph(
            f"{clinic.name}　個人情報お問い合わせ窓口\n"
            f"電話 {clinic.phone or FILL}　受付時間 {FILL}",
            st.base,
        ),
        paragraph("窓口・電話での応対の要点（職員用）", st.h2),
        paragraph(
            "・お名前と生年月日をうかがい、通知の対象かを院長・安全管理者に確認してから答える\n"
            "・推測で答えない（調査中の事項は「調査中です。分かり次第ご連絡します」）\n"
            "・連絡先をうかがい、問い合わせの記録を残す",
            st.base,
        ),
    ]
    return render(story, title=f"公表文 No.{i.number}")


def mhlw_report(v: View, found: Affected | None, clinic: Clinic, issued_by: str) -> bytes:
    st = styles()
    i = v.incident
    story = _head(
        f"医療機関におけるサイバー攻撃等の報告（厚生労働省・保健所あて 下書き） No.{i.number}",
        clinic,
        issued_by,
        "厚生労働省 医政局 特定医薬品開発支援・医療情報担当参事官室（03-6812-7837）および"
        "所管の保健所への報告用。電話で伝える要点としても使えます。",
    )
    done = [s for s in v.steps if s.outcome == "done"]
    rows = [
        ["医療機関名", f"{clinic.name}（医療機関コード {clinic.institution_code}）"],
        ["所在地・電話", _clinic_line(clinic)],
        ["事案の種類", kind_label(i.kind)],
        ["発生日・把握日", f"発生 {_d(i.occurred_on)}　把握 {_d(i.knew_on)}"],
        ["概要", f"{i.title}\n{i.seen}"],
        [
            "診療への影響",
            f"重大度: {rules.SEVERITIES[i.severity][0]}。"
            f"{FILL}（外来・検査・会計の停止、紙運用の有無）",
        ],
        [
            "個人情報への影響",
            f"{len(found.rows)}人（{items_text(found.item_counts)}）" if found else f"調査中{FILL}",
        ],
        ["実施した対応", "\n".join(f"・{s.title}" for s in done) or "—"],
        [
            "警察・委員会への連絡",
            f"速報 {_d(i.prompt_sent_on)}　確報 {_d(i.final_sent_on)}　警察 {FILL}",
        ],
        ["担当者・連絡先", f"{issued_by}　{clinic.phone}"],
    ]
    cells = [[paragraph("項目", st.base), paragraph("内容", st.base)]] + [
        [paragraph(a, st.base), paragraph(b, st.base)] for a, b in rows
    ]
    story.append(styled_table(cells, (40 * mm, 140 * mm)))
    return render(story, title=f"厚生労働省・保健所への報告 No.{i.number}")


def review_report(v: View, clinic: Clinic, issued_by: str, names: Mapping[Any, str]) -> bytes:
    st = styles()
    i = v.incident
    story = _head(f"事後対応の報告（職員共有用） No.{i.number}", clinic, issued_by)
    story += [
        paragraph(f"{kind_label(i.kind)}：{i.title}（把握 {_d(i.knew_on)}）", st.base),
        paragraph("1. 結果", st.h2),
        paragraph(i.review_result or FILL, st.base),
        paragraph("2. 情報漏えいの有無", st.h2),
        paragraph(i.review_leak or FILL, st.base),
        paragraph("3. 足りなかったこと（事前の対策・連絡先・連絡内容）", st.h2),
        paragraph(i.review_missing or FILL, st.base),
        paragraph("4. 再発防止策（担当と期日）", st.h2),
    ]
    rows = [[paragraph(h, st.base) for h in ("再発防止策", "担当", "期日")]]
    for m in v.measures:
        rows.append(
            [
                paragraph(m.text, st.base),
                paragraph(names.get(m.owner_id, ""), st.base),
                paragraph(f"{m.due_on:%Y-%m-%d}" if m.due_on else "", st.base),
            ]
        )
    if len(rows) == 1:
        rows.append([paragraph(FILL, st.base), paragraph("", st.base), paragraph("", st.base)])
    story.append(styled_table(rows, (110 * mm, 40 * mm, 30 * mm)))
    story.append(paragraph("5. 経過", st.h2))
    steps = [[paragraph(h, st.base) for h in ("No.", "手順", "結果")]]
    for s in v.steps:
        result = {"done": "実施", "skipped": f"該当なし（{s.note}）"}.get(s.outcome, "未実施")
        when = f" {s.at.astimezone(JST):%m/%d %H:%M} {names.get(s.by, '')}" if s.at else ""
        steps.append(
            [
                paragraph(str(s.no), st.base),
                paragraph(s.title, st.base),
                paragraph(result + when, st.small),
            ]
        )
    story.append(styled_table(steps, (10 * mm, 120 * mm, 50 * mm)))
    story.append(Spacer(1, 4 * mm))
    story.append(paragraph("職員確認欄（読んだら署名）", st.h2))
    story.append(
        styled_table(
            [[paragraph("氏名", st.base), paragraph("日付", st.base)]]
            + [["", ""] for _ in range(8)],
            (120 * mm, 60 * mm),
        )
    )
    return render(story, title=f"事後対応 No.{i.number}")


def contact_chart(lines: Sequence[ContactLine], clinic: Clinic, issued_by: str) -> bytes:
    """The contact chart on one A4 page (BCP 1-2a, CL-3-1)."""
    st = styles()
    now = dt.datetime.now(JST)
    story: list[object] = [
        paragraph(f"連絡体制図（インシデント発生時）　{clinic.name}", st.h1),
        paragraph(
            f"作成 {now:%Y年%m月%d日}　作成者 {issued_by}。"
            "異常に気づいたら、まず院内の上から順に連絡する。"
            "感染が疑われる端末は LAN ケーブルを抜く（電源は切らない）。",
            st.small,
        ),
        Spacer(1, 3 * mm),
    ]
    rows = [[paragraph(h, st.base) for h in ("役割", "組織・氏名", "代理", "電話", "連絡するとき")]]
    gaps = []
    for line in lines:
        entries = line.active
        if entries:
            for r in entries:
                rows.append(
                    [
                        paragraph(line.label_ja, st.base),
                        paragraph(" ".join(x for x in (r.organisation, r.name) if x), st.base),
                        paragraph(r.deputy, st.base),
                        paragraph(r.phone, st.base),
                        paragraph(r.when_to_call, st.small),
                    ]
                )
        elif line.shipped:
            rows.append(
                [
                    paragraph(line.label_ja, st.base),
                    paragraph(
                        f"{line.shipped.get('organisation', '')} {line.shipped.get('name', '')}",
                        st.base,
                    ),
                    paragraph("", st.base),
                    paragraph(line.shipped.get("phone", ""), st.base),
                    paragraph(line.shipped.get("when_to_call", ""), st.small),
                ]
            )
        else:
            rows.append(
                [paragraph(line.label_ja, st.base), paragraph("未登録", st.warn), "", "", ""]
            )
            if line.missing:
                gaps.append(line.label_ja)
        if line.no_phone:
            gaps.append(f"{line.label_ja}（電話番号）")
    story.append(styled_table(rows, (32 * mm, 45 * mm, 25 * mm, 28 * mm, 50 * mm)))
    if gaps:
        story.append(Spacer(1, 3 * mm))
        story.append(paragraph("連絡先が登録されていない役割: " + "、".join(gaps), st.warn))
    return render(story, title="連絡体制図")
