"""院外処方箋: a confirmed outside prescription printed in the layout of 様式第二号 (the
standard 処方箋), A5 on A4 with a cut line, for the patient to take to any 保険薬局.

The sheet carries what a pharmacy checks: the 保険者番号 and 記号・番号, 公費 numbers, the
patient's name, birth date (和暦), sex and 区分, the clinic's address, name, phone and
都道府県番号・点数表番号・医療機関コード, the prescribing physician, 交付年月日 and the
使用期間, the RP groups with 変更不可 (後発品への変更不可) marks and 一般名処方 as 【般】, and
リフィル. Printing is an audit event of its own (``patient:prescription:printed``) naming the
prescription and its version; a draft or in-clinic (院内) prescription has no sheet.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from sqlalchemy.orm import Session

from mamori.audit import trail
from mamori.authz.actor import Actor, Intent
from mamori.authz.permissions import Permission
from mamori.clinic.calendar import JST, wareki
from mamori.clinic.models import Clinic
from mamori.clinic.service import clinic_of, staff_names
from mamori.clinical.models import MedicationRequest, MedicationRequestStatus
from mamori.clinical.units import dose_ja, rp_count_ja
from mamori.errors import Conflict
from mamori.patients.access import patient_for
from mamori.patients.models import SEX_JA, Coverage, CoverageKind, Patient
from mamori.patients.service import list_coverages
from mamori.pdf import japanese_font
from mamori.records.versioning import record_checked

VALID_DAYS = 4  # 使用期間: 交付の日を含めて4日以内 (療担規則第20条)
A5_W, A5_H = 148 * mm, 210 * mm


@dataclass(frozen=True)
class PrescriptionSheet:
    request: MedicationRequest
    patient: Patient
    insurance: Coverage | None  # the 医療保険 in force on the day of issue
    public: Sequence[Coverage]  # 公費, first and second
    clinic: Clinic
    prescriber: str
    printed_by: str
    printed_at: dt.datetime


def _in_force(c: Coverage, day: dt.date) -> bool:
    return (
        c.status == "active"
        and (c.valid_from is None or c.valid_from <= day)
        and (c.valid_to is None or c.valid_to >= day)
    )


def prescription_sheet(session: Session, actor: Actor, request_id: uuid.UUID) -> PrescriptionSheet:
    """The sheet's contents for an issued outside prescription, and the print recorded."""
    actor.require(Permission.CHART_PRINT)
    req = record_checked(session, actor, MedicationRequest, request_id, Intent.READ)
    if req.status != MedicationRequestStatus.ACTIVE:
        raise Conflict(
            "医師が確認・発行した処方だけが処方箋になります（下書き・中止・取消は印刷できません）。",
            "Only a prescription a physician has issued prints as a 処方箋 (not a draft, "
            "cancelled or voided one).",
            code="prescription_not_issued",
        )
    if req.dispensing != "outside":
        raise Conflict(
            "院内処方です。院外処方箋は発行しません。",
            "This is dispensed in the clinic; it has no outside prescription sheet.",
            code="not_outside_prescription",
        )
    patient = patient_for(session, actor, req.patient_id, Intent.READ, "Patient")
    coverages = (
        [c for c in list_coverages(session, actor, patient.id) if _in_force(c, req.issued_on)]
        if actor.can(Permission.INSURANCE_READ)
        else []
    )
    insurance = next((c for c in coverages if c.kind != CoverageKind.KOUHI), None)
    public = [c for c in coverages if c.kind == CoverageKind.KOUHI][:2]
    trail.record(
        session,
        actor,
        trail.AuditTag.PRESCRIPTION_PRINTED,
        patients=[patient.id],
        detail={"what": "MedicationRequest", "id": str(req.id), "version": req.version},
    )
    names = staff_names(session, actor)
    return PrescriptionSheet(
        request=req,
        patient=patient,
        insurance=insurance,
        public=public,
        clinic=clinic_of(session, actor),
        prescriber=names.get(req.prescriber_id, ""),
        printed_by=actor.display_name,
        printed_at=dt.datetime.now(JST),
    )


def rx_lines(groups: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The 処方 box's lines, each with its 変更不可 mark: per RP the drugs, then 用法 and
    日数 (回分 for a 頓用), as a pharmacist reads them."""
    lines: list[tuple[str, bool]] = []
    for g in groups:
        for i, item in enumerate(g["items"]):
            head = f"Rp{g['rp']})" if i == 0 else ""
            name = ("【般】" if item.get("generic") else "") + str(item["drug_name"])
            lines.append((f"{head:<6}{name}　{dose_ja(item)}", bool(item.get("no_substitution"))))
        lines.append((f"{'':<6}　{g['usage']}　{rp_count_ja(g)}", False))
    return lines


class _Sheet:
    """Drawing in millimetres from the A5 sheet's top-left corner."""

    def __init__(self, c: Canvas, x0: float, y0: float) -> None:
        self.c, self.x0, self.y0 = c, x0, y0
        self.font = japanese_font()

    def box(self, x: float, y: float, w: float, h: float) -> None:
        self.c.rect(self.x0 + x * mm, self.y0 - (y + h) * mm, w * mm, h * mm)

    def text(self, x: float, y: float, s: str, size: float = 7.0, right: bool = False) -> None:
        self.c.setFont(self.font, size)
        px, py = self.x0 + x * mm, self.y0 - y * mm - size * 0.35
        if right:
            self.c.drawRightString(px, py, s)
        else:
            self.c.drawString(px, py, s)

    def fit(self, x: float, y: float, s: str, width: float, size: float = 7.0) -> None:
        """Text shrunk to fit ``width`` mm (an address, a long clinic name)."""
        while size > 4.5 and self.c.stringWidth(s, self.font, size) > width * mm:
            size -= 0.25
        self.text(x, y, s, size)

    def label(self, x: float, y: float, w: float, h: float, s: str, size: float = 6.0) -> None:
        self.c.setFillColor(colors.HexColor("#f2f2f2"))
        self.c.rect(self.x0 + x * mm, self.y0 - (y + h) * mm, w * mm, h * mm, fill=1, stroke=1)
        self.c.setFillColor(colors.black)
        lines = s.split("\n")
        top = y + (h - len(lines) * size * 0.42) / 2
        for i, line in enumerate(lines):
            self.text(x + 1, top + i * size * 0.42, line, size)


RX_LINES_PER_SHEET = 19


def render_prescription_pdf(sheet: PrescriptionSheet) -> bytes:
    """One A5 sheet per page of A4 (a long prescription continues on a second sheet that
    repeats the header, marked 続き)."""
    buf = io.BytesIO()
    req = sheet.request
    c = Canvas(buf, pagesize=A4)
    c.setTitle(f"処方箋 {sheet.patient.patient_number}")
    c.setAuthor("mamori")
    lines = rx_lines(req.rp_groups)
    pages = [
        lines[i : i + RX_LINES_PER_SHEET] for i in range(0, len(lines), RX_LINES_PER_SHEET)
    ] or [[]]
    for n, chunk in enumerate(pages, start=1):
        _draw(c, sheet, chunk, n, len(pages))
        c.showPage()
    c.save()
    return buf.getvalue()


def _draw(
    c: Canvas, sheet: PrescriptionSheet, lines: list[tuple[str, bool]], page: int, pages: int
) -> None:
    x0 = (A4[0] - A5_W) / 2
    y0 = A4[1] - 12 * mm
    # the cut line around the A5 sheet
    c.saveState()
    c.setDash(2, 2)
    c.setStrokeColor(colors.grey)
    c.rect(x0 - 3 * mm, y0 - A5_H - 3 * mm, A5_W + 6 * mm, A5_H + 6 * mm)
    c.restoreState()
    c.setLineWidth(0.5)
    s = _Sheet(c, x0 + 4 * mm, y0 - 4 * mm)
    req, pt, clinic = sheet.request, sheet.patient, sheet.clinic
    ins, public = sheet.insurance, list(sheet.public)
    width = 140.0  # the sheet's drawing width in mm
    half = width / 2
    s.text(half - 14, 0, "処　方　箋", 13)
    s.text(half - 26, 6.5, "（この処方箋は、どの保険薬局でも有効です。）", 6.5)
    if pages > 1:
        s.text(width, 0, f"{page}/{pages} 枚", 7, right=True)
    y = 10.0
    # 公費 / 保険者番号
    first = public[0] if public else None
    s.label(0, y, 22, 7, "公費負担者番号")
    s.box(22, y, half - 22, 7)
    s.text(24, y + 2, first.public_payer_number if first else "", 8)
    s.label(half, y, 22, 7, "保険者番号")
    s.box(half + 22, y, half - 22, 7)
    s.text(half + 24, y + 2, ins.insurer_number if ins else "", 8)
    y += 7
    s.label(0, y, 22, 9, "公費負担医療の\n受給者番号")
    s.box(22, y, half - 22, 9)
    s.text(24, y + 3, first.recipient_number if first else "", 8)
    s.label(half, y, 22, 9, "被保険者証・被保険\n者手帳の記号・番号")
    s.box(half + 22, y, half - 22, 9)
    if ins:
        number = f"{ins.symbol}・{ins.number}" if ins.symbol else ins.number
        s.fit(half + 24, y + 3, number + (f"（枝番）{ins.branch}" if ins.branch else ""), 44, 8)
    y += 9
    # 患者 | 保険医療機関
    s.label(0, y, 8, 30, "患\n\n者")
    s.box(8, y, half - 8, 30)
    s.label(10, y + 1, 10, 5, "氏名")
    s.fit(21, y + 2, f"{pt.family_name} {pt.given_name}", half - 24, 10)
    s.text(21, y + 7.5, f"{pt.family_kana} {pt.given_kana}", 5.5)
    s.label(10, y + 11, 10, 5, "生年月日")
    s.text(21, y + 12, wareki(pt.birth_date), 8)
    s.text(half - 12, y + 12, SEX_JA.get(pt.sex, ""), 8)
    s.label(10, y + 18, 10, 5, "区分")
    kubun = ""
    if ins:
        kubun = "被保険者" if ins.relationship == "self" else "被扶養者"
    s.text(21, y + 19, kubun, 8)
    if ins and ins.copay_percent is not None:
        s.text(40, y + 19, f"負担割合 {int(ins.copay_percent) // 10}割", 7)
    s.label(10, y + 24.5, 10, 5, "患者番号")
    s.text(21, y + 25.5, str(pt.patient_number), 7)
    s.label(half, y, 22, 30, "保険医療機関の\n所在地及び名称\n\n電話番号\n\n保険医氏名")
    s.box(half + 22, y, half - 22, 30)
    addr = (f"〒{clinic.postal_code} " if clinic.postal_code else "") + clinic.address
    s.fit(half + 23, y + 2, addr, half - 24, 7)
    s.fit(half + 23, y + 7, clinic.name, half - 24, 8.5)
    s.text(half + 23, y + 14, clinic.phone, 7.5)
    s.fit(half + 23, y + 22, sheet.prescriber, half - 32, 9)
    s.text(width - 4, y + 22, "印", 7)
    y += 30
    code = clinic.institution_code
    s.label(0, y, 18, 6, "都道府県番号")
    s.box(18, y, 10, 6)
    s.text(20, y + 1.8, code[:2], 8)
    s.label(28, y, 16, 6, "点数表番号")
    s.box(44, y, 8, 6)
    s.text(46, y + 1.8, code[2:3], 8)
    s.label(half, y, 22, 6, "医療機関コード")
    s.box(half + 22, y, half - 22, 6)
    s.text(half + 24, y + 1.8, code[3:], 8)
    y += 6
    # 交付年月日 | 使用期間
    s.label(0, y, 18, 9, "交付年月日")
    s.box(18, y, half - 18, 9)
    s.text(20, y + 3, wareki(req.issued_on), 8)
    s.label(half, y, 22, 9, "処方箋の\n使用期間")
    s.box(half + 22, y, half - 22, 9)
    until = req.issued_on + dt.timedelta(days=VALID_DAYS - 1)
    s.text(half + 24, y + 1.2, wareki(until), 7.5)
    s.text(half + 24, y + 5, "特に記載のある場合を除き、交付の日を含めて", 4.8)
    s.text(half + 24, y + 7, "4日以内に保険薬局に提出すること。", 4.8)
    y += 9
    # 処方
    box_h = 86.0
    s.label(0, y, 8, box_h, "処\n\n\n方")
    s.box(8, y, width - 8, box_h)
    s.text(
        10,
        y + 1,
        "個々の処方薬について、後発医薬品（ジェネリック医薬品）への変更に差し支えがあると"
        "判断した場合には、",
        4.6,
    )
    s.text(
        10,
        y + 3,
        "「変更不可」欄に「✓」又は「×」を記載し、「保険医署名」欄に署名又は記名・押印すること。",
        4.6,
    )
    s.label(8, y + 5, 11, 5, "変更不可", 5)
    s.label(19, y + 5, 11, 5, "患者希望", 5)
    c.line(s.x0 + 19 * mm, s.y0 - (y + 10) * mm, s.x0 + 19 * mm, s.y0 - (y + box_h) * mm)
    c.line(s.x0 + 30 * mm, s.y0 - (y + 10) * mm, s.x0 + 30 * mm, s.y0 - (y + box_h) * mm)
    ly = y + 11.5
    for text, locked in lines:
        if locked:
            s.text(12, ly, "✓", 8)
        s.fit(31, ly, text, width - 33, 7.5)
        ly += 3.9
    if page == pages:
        s.text(31, ly, "以下余白", 7)
    else:
        s.text(31, ly, "（次の用紙に続く）", 7)
    y += box_h
    # 備考
    s.label(0, y, 8, 16, "備\n\n考")
    s.box(8, y, width - 8, 16)
    marks = any(locked for _, locked in lines)
    s.text(10, y + 1.5, "保険医署名　" + (sheet.prescriber if marks else ""), 6.5)
    s.text(
        10,
        y + 4.5,
        "（「変更不可」欄に「✓」又は「×」を記載した場合は、署名又は記名・押印すること。）",
        4.6,
    )
    refill = req.refill_count or 0
    s.text(
        10,
        y + 7.5,
        "リフィル可　" + (f"✓（{refill}回）" if refill else "□（　回）"),
        6.5,
    )
    s.text(
        10,
        y + 12,
        f"mamori 処方 {str(req.id)[:8]} 版{req.version}　"
        f"印刷 {sheet.printed_at:%Y/%m/%d %H:%M} {sheet.printed_by}",
        5,
    )
    y += 16
    # 調剤済年月日 | 保険薬局
    s.label(0, y, 18, 12, "調剤済年月日")
    s.box(18, y, half - 18, 12)
    s.label(half, y, 22, 12, "保険薬局の所在\n地及び名称\n保険薬剤師氏名")
    s.box(half + 22, y, half - 22, 12)
    s.text(width - 4, y + 8, "印", 7)
    y += 12
    second = public[1] if len(public) > 1 else None
    s.label(0, y, 22, 7, "公費負担者番号")
    s.box(22, y, half - 22, 7)
    s.text(24, y + 2, second.public_payer_number if second else "", 8)
    s.label(half, y, 22, 7, "公費負担医療の\n受給者番号")
    s.box(half + 22, y, half - 22, 7)
    s.text(half + 24, y + 2, second.recipient_number if second else "", 8)
