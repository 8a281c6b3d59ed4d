"""診療情報提供書 (紹介状): written from the chart, signed by the physician who writes it,
printed, and kept as a document of the patient's record.

The form opens pre-filled from what the chart holds — the problem list (主病, 疑い and 未告知
marked, for the receiving physician), diagnoses that have ended (as 既往歴), the running
prescriptions by RP, allergies and 薬剤禁忌, the latest result of each recent lab test and the
last vital signs, and the last finalised note's assessment and plan — and the physician edits
every field before saving. Saving renders the letter as a PDF in the usual layout and files it
through the document service (sealed, versioned, audited as any document); the letter read
back later is exactly the one that was given to the patient.
"""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field
from reportlab.lib.enums import TA_CENTER, TA_RIGHT
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, Spacer, Table
from sqlalchemy.orm import Session

from mamori.authz.actor import Actor
from mamori.authz.permissions import P
from mamori.chart.service import Chart, open_chart
from mamori.clinic.calendar import JST, age_on, clinic_today, wareki
from mamori.clinic.models import Clinic
from mamori.clinic.service import clinic_of
from mamori.clinical import service as clinical
from mamori.clinical.models import ConditionOutcome, Document
from mamori.clinical.schemas import DocumentMeta
from mamori.clinical.units import dose_ja, rp_count_ja, unit_ja
from mamori.documents.store import DocumentStore
from mamori.errors import NotAllowed
from mamori.inputs import InputModel, LongText, ShortText, Text100
from mamori.patients.models import SEX_JA
from mamori.pdf import render, styled_table, styles
from mamori.pdf import text as paragraph

RECENT_LAB_TESTS = 12

# (field, label) in the order of the letter
SECTIONS = (
    ("diagnoses", "傷病名"),
    ("purpose", "紹介目的"),
    ("history", "既往歴及び家族歴"),
    ("course", "症状経過及び検査結果"),
    ("treatment", "治療経過"),
    ("medications", "現在の処方"),
    ("allergies", "アレルギー・薬剤禁忌"),
    ("remarks", "備考"),
)


class ReferralIn(InputModel):
    to_institution: ShortText = Field(min_length=1)  # 紹介先医療機関
    to_department: Text100 = ""  # 診療科
    to_physician: Text100 = ""  # 担当医 (blank: ご担当医)
    purpose: LongText = Field(min_length=1)  # 紹介目的
    diagnoses: LongText = ""
    history: LongText = ""
    course: LongText = ""
    treatment: LongText = ""
    medications: LongText = ""
    allergies: LongText = ""
    remarks: LongText = ""


def _may_write(actor: Actor) -> None:
    actor.require(P.NOTE_SIGN)
    actor.require(P.DOCUMENT_WRITE)
    if not actor.role.signs_clinical_records:
        raise NotAllowed(
            "診療情報提供書を書けるのは医師だけです。",
            "Only a physician writes a referral letter.",
        )


def _draft_from(chart: Chart, ended: list[str]) -> dict[str, str]:
    diagnoses = []
    for c in chart.conditions:
        marks = [
            m
            for m, on in (
                ("主病", c.is_primary),
                ("疑い", c.is_suspected),
                ("本人未告知", c.is_undisclosed),
            )
            if on
        ]
        onset = f" {c.onset_date:%Y/%m/%d}〜" if c.onset_date else ""
        diagnoses.append(c.display_name + (f"（{'・'.join(marks)}）" if marks else "") + onset)
    meds = []
    for m in chart.medications:
        if m.status != "active":
            continue  # a draft order is not yet a prescription
        for g in m.rp_groups:
            drugs = "、".join(f"{d['drug_name']} {dose_ja(d)}" for d in g["items"])
            meds.append(f"Rp{g['rp']} {drugs}　{g['usage']}　{rp_count_ja(g)}")
    allergies = [
        a.substance
        + ("（薬剤禁忌）" if a.is_contraindication else "")
        + (f": {a.reaction}" if a.reaction else "")
        for a in chart.allergies
    ]
    latest: dict[str, str] = {}
    for o in chart.labs:  # newest first: the first of each test is its latest
        if o.code not in latest and len(latest) < RECENT_LAB_TESTS:
            flag = f"（{o.abnormal_flag}）" if o.abnormal_flag else ""
            latest[o.code] = (
                f"{o.effective_at.astimezone(JST):%Y/%m/%d} {o.name} "
                f"{o.value or o.value_text} {unit_ja(o.unit)}{flag}"
            )
    vitals = [
        f"{o.effective_at.astimezone(JST):%Y/%m/%d} {o.name} {o.value} {unit_ja(o.unit)}"
        for o in chart.vitals[:6]
    ]
    signed = next((n for n in chart.notes if n.status in ("final", "amended")), None)
    treatment = ""
    if signed is not None:
        treatment = "\n".join(
            f"{k}: {v}" for k, v in (("A", signed.assessment), ("P", signed.plan)) if v
        )
    return {
        "diagnoses": "\n".join(diagnoses),
        "history": "\n".join(ended),
        "course": "\n".join([*latest.values(), *vitals]),
        "treatment": treatment,
        "medications": "\n".join(meds),
        "allergies": "\n".join(allergies) or "なし",
    }


def referral_draft(session: Session, actor: Actor, patient_id: uuid.UUID) -> dict[str, str]:
    """The letter's fields pre-filled from the chart (one chart access, as on screen)."""
    _may_write(actor)
    chart = open_chart(session, actor, patient_id)
    every = clinical.list_conditions(session, actor, chart.patient.id)
    ended = [
        f"{c.display_name}（{c.onset_date:%Y/%m/%d}〜）" if c.onset_date else c.display_name
        for c in every
        if c.outcome != ConditionOutcome.CONTINUING.value
    ]
    return _draft_from(chart, ended)


def write_referral(
    session: Session,
    actor: Actor,
    store: DocumentStore,
    patient_id: uuid.UUID,
    data: ReferralIn,
) -> Document:
    """Render the letter and file it as an outgoing referral document of the record."""
    _may_write(actor)
    chart = open_chart(session, actor, patient_id)
    today = clinic_today()
    pdf = render_referral_pdf(data, chart, clinic_of(session, actor), actor.display_name, today)
    to = data.to_institution + (f" {data.to_department}" if data.to_department else "")
    meta = DocumentMeta(
        doc_type="referral",
        direction="out",
        title=f"診療情報提供書（{to}）"[:200],
        document_date=today,
    )
    return clinical.file_document(
        session, actor, store, chart.patient.id, meta, pdf, "application/pdf"
    )


def render_referral_pdf(
    data: ReferralIn, chart: Chart, clinic: Clinic, physician: str, day: dt.date
) -> bytes:
    st = styles()
    big = ParagraphStyle("to", parent=st.base, fontSize=11.5, leading=16)
    title = ParagraphStyle("title", parent=st.h1, fontSize=17, alignment=TA_CENTER)
    dated = ParagraphStyle("dated", parent=st.base, alignment=TA_RIGHT)

    def p(value: str, style: ParagraphStyle = st.base) -> Paragraph:
        return paragraph(value, style)

    pt = chart.patient
    to_lines = [data.to_institution + (f"　{data.to_department}" if data.to_department else "")]
    to_lines.append(
        f"{data.to_physician} 先生　御侍史" if data.to_physician else "ご担当医 先生　御侍史"
    )
    sender = "\n".join(
        line
        for line in (
            (f"〒{clinic.postal_code} " if clinic.postal_code else "") + clinic.address,
            clinic.name,
            f"電話 {clinic.phone}" if clinic.phone else "",
            f"医師 {physician}　印",
        )
        if line
    )
    story: list[object] = [
        p("診療情報提供書", title),
        p(wareki(day), dated),
        Spacer(1, 2 * mm),
        p("\n".join(to_lines), big),
        Spacer(1, 2 * mm),
        Table(
            [[p(""), p(sender)]],
            colWidths=[90 * mm, 90 * mm],
            hAlign="LEFT",
        ),
        Spacer(1, 3 * mm),
        p("下記の患者をご紹介いたします。ご高診のほど、よろしくお願い申し上げます。"),
        Spacer(1, 2 * mm),
        styled_table(
            [
                [p(h) for h in ("患者氏名", "性別", "生年月日", "住所・電話")],
                [
                    p(f"{pt.family_name} {pt.given_name}\n（{pt.family_kana} {pt.given_kana}）"),
                    p(SEX_JA.get(pt.sex, pt.sex)),
                    p(f"{wareki(pt.birth_date)}\n（{age_on(pt.birth_date, day)}歳）"),
                    p(
                        (f"〒{pt.postal_code} " if pt.postal_code else "")
                        + f"{pt.prefecture}{pt.city}{pt.address_line}\n{pt.phone}"
                    ),
                ],
            ],
            [40 * mm, 14 * mm, 36 * mm, 90 * mm],
        ),
    ]
    for field, label in SECTIONS:
        story.append(p(label, st.h2))
        story.append(p(getattr(data, field) or "特記事項なし"))
    return render(
        story,
        title=f"診療情報提供書 {pt.patient_number}",
        running_head=f"診療情報提供書　{pt.family_name} {pt.given_name} 様　{clinic.name}",
    )
