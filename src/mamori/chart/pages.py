"""The chart (医師・看護師): allergy banner, problem list, medications, notes, labs with flags and
trends, vitals, documents; SOAP and nursing notes, finalise (確定), amend with reason and the
history side by side, diagnoses, prescriptions in RP groups, allergies, vitals entry, uploads,
and the break-the-glass dialog for a restricted patient.

Every read and write goes through ``chart.service`` / ``clinical.service`` (permission, audit,
decryption); what a role may not read is simply absent from the page.
"""

from __future__ import annotations

import decimal
import json
import uuid
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response

from mamori.auth.pages import reauthenticate
from mamori.auth.schemas import BreakGlassIn
from mamori.authz.permissions import P
from mamori.authz.roles import Role
from mamori.chart.referral import ReferralIn, referral_draft, write_referral
from mamori.chart.service import open_chart, open_chart_patient
from mamori.clinic.calendar import JST
from mamori.clinic.service import confirming_physicians, staff_names
from mamori.clinical import notes as clinical_notes
from mamori.clinical import service as clinical
from mamori.clinical.models import OUTCOME_JA, NoteKind
from mamori.clinical.schemas import (
    DOC_TYPES,
    AllergyIn,
    ConditionIn,
    DocumentMeta,
    MedicationRequestIn,
    NoteAmend,
    NoteEdit,
    NoteIn,
)
from mamori.clinical.vitals import VITAL_SIGNS, vital_name_en, vital_observations
from mamori.errors import (
    Conflict,
    InvalidInput,
    NotAllowed,
    NotFound,
    TooManyAttempts,
    Unauthenticated,
)
from mamori.patients.pages import LABELS
from mamori.records.service import record_history
from mamori.restrictions import service as restrictions
from mamori.ui.errors import form_error
from mamori.ui.forms import Form, expected_version, form_fields, parse
from mamori.ui.render import go, html, local_path, trend_chart
from mamori.web.routing import Ctx, TransactionalRoute, requires, start_over

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

RP_GROUPS = 3  # blank RP groups on the form (more: save, then prescribe again)
RP_DRUGS = 3
MAX_RP_GROUPS, MAX_RP_DRUGS = 30, 20  # as the input model allows


def repeat_form(groups: list[dict[str, Any]], dispensing: str) -> dict[str, str]:
    """Do処方: an earlier prescription's RP groups as the prescription form's fields, to be
    checked and edited before it is saved as a new one."""
    form = {"dispensing": dispensing}
    for i, g in enumerate(groups, start=1):
        form[f"rp{i}_usage"] = str(g.get("usage", ""))
        form[f"rp{i}_days"] = str(g.get("days", ""))
        for j, d in enumerate(g.get("items", []), start=1):
            pre = f"rp{i}_drug{j}_"
            form[pre + "name"] = str(d.get("drug_name", ""))
            form[pre + "dose"] = str(d.get("dose", ""))
            form[pre + "unit"] = str(d.get("unit", ""))
            form[pre + "per"] = str(d.get("per", "day"))
            if d.get("generic"):
                form[pre + "generic"] = "on"
            if d.get("no_substitution"):
                form[pre + "locked"] = "on"
    return form


DOC_TYPES_JA = {
    "referral": ("紹介状", "Referral"),
    "reply": ("返書", "Reply"),
    "certificate": ("診断書", "Certificate"),
    "report": ("検査報告", "Report"),
    "consent": ("同意書", "Consent"),
    "photo": ("写真", "Photo"),
    "scan": ("スキャン", "Scan"),
    "other": ("その他", "Other"),
}
NOTE_STATUS = {
    "draft": ("下書き", "Draft"),
    "final": ("確定", "Final"),
    "amended": ("修正済", "Amended"),
    "entered-in-error": ("取消", "Voided"),
}
CHANGE_LABELS = {  # a version's change, as the history shows it
    "created": ("作成", "created"),
    "updated": ("更新", "updated"),
    "finalised": ("確定", "finalised"),
    "confirmed": ("代行入力を承認", "confirmed"),
    "amended": ("確定後の修正", "amended"),
    "entered-in-error": ("取消（誤入力）", "entered in error"),
    "merged": ("患者統合", "merged"),
    "status-changed": ("状態を変更", "status changed"),
}

CHART_LABELS = {
    "change": CHANGE_LABELS,
    **LABELS,
    "outcome": {k.value: v for k, v in OUTCOME_JA.items()},
    "doc_types": DOC_TYPES_JA,
    "note_status": NOTE_STATUS,
}


def _number(text: str) -> float | None:
    try:
        return float(decimal.Decimal(text)) if text else None
    except decimal.InvalidOperation:
        return None


def _lab_trends(labs: Any) -> list[dict[str, Any]]:
    """Recent labs grouped by test: latest value and flag, and the values oldest first."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for o in labs:
        groups[o.code].append(o)
    out = []
    for rows in groups.values():
        rows.sort(key=lambda o: o.effective_at)
        latest = rows[-1]
        values = [v for v in (_number(o.value) for o in rows) if v is not None]
        out.append({"latest": latest, "history": rows, "values": values})
    out.sort(key=lambda g: g["latest"].effective_at, reverse=True)
    return out


LAB_HISTORY = 2000  # results on the timeline (years of a chronic patient's monthly panels)


def _lab_timeline(labs: Any) -> dict[str, Any]:
    """検査結果の時系列: one row per test, one column per day with results (newest first), each
    cell the day's value with its flag."""
    days = sorted({o.effective_at.astimezone(JST).date() for o in labs}, reverse=True)
    rows: dict[str, dict[str, Any]] = {}
    for o in sorted(labs, key=lambda o: o.effective_at):
        row = rows.setdefault(
            o.code,
            {"code": o.code, "name": o.name, "unit": o.unit, "ref": (o.ref_low, o.ref_high)},
        )
        row.setdefault("cells", {})
        row["cells"][o.effective_at.astimezone(JST).date()] = o  # the day's last result
    ordered = sorted(rows.values(), key=lambda r: r["name"])
    return {"days": days, "rows": ordered}


def _trend(labs: Any, code: str) -> dict[str, Any] | None:
    series = sorted((o for o in labs if o.code == code), key=lambda o: o.effective_at)
    numeric = [(o, _number(o.value)) for o in series]
    points = [(o, v) for o, v in numeric if v is not None]
    if not series:
        return None
    latest = series[-1]
    return {
        "name": latest.name,
        "unit": latest.unit,
        "ref": (latest.ref_low, latest.ref_high),
        "series": list(reversed(series)),
        "chart": trend_chart(
            [v for _, v in points],
            [f"{o.effective_at.astimezone(JST):%y/%m/%d}" for o, _ in points],
            _number(latest.ref_low),
            _number(latest.ref_high),
        ),
    }


@router.get("/patients/{patient_id}/labs")
def lab_timeline(
    request: Request,
    patient_id: uuid.UUID,
    code: str | None = Query(default=None, max_length=40),
    ctx: Ctx = Depends(requires(P.OBSERVATION_READ)),
) -> Response:
    """検査結果の時系列, and the trend of one test (``code``) drawn with its scale and values."""
    patient = open_chart_patient(ctx.session, ctx.actor, patient_id)
    labs = clinical.list_observations(
        ctx.session, ctx.actor, patient.id, category="laboratory", limit=LAB_HISTORY
    )
    return html(
        request,
        "labs.html",
        p=patient,
        timeline=_lab_timeline(labs),
        trend=_trend(labs, code) if code else None,
        code=code,
        L=CHART_LABELS,
    )


def _chart(
    request: Request, ctx: Ctx, patient_id: uuid.UUID, status: int = 200, **extra: Any
) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    c = open_chart(ctx.session, ctx.actor, patient_id)
    can = ctx.actor.can
    docs = (
        clinical.list_documents(ctx.session, ctx.actor, c.patient.id)
        if can(P.DOCUMENT_READ)
        else []
    )
    for key in ("note_form", "cond_form", "rx_form", "allergy_form", "vitals_form", "doc_form"):
        extra.setdefault(key, {})
    for key in (
        "note_error",
        "cond_error",
        "cond_edit_error",
        "rx_error",
        "allergy_error",
        "vitals_error",
        "doc_error",
    ):
        extra.setdefault(key, None)
    extra.setdefault("rx_warnings", [])
    extra.setdefault("rx_repeated", None)
    extra.setdefault("letter", None)
    # 前回Do: the newest prescription, offered above the form to whoever may prescribe
    latest = (
        clinical.latest_prescription(ctx.session, ctx.actor, c.patient.id)
        if can(P.PRESCRIPTION_WRITE)
        else None
    )
    groups_shown = sum(1 for k in extra["rx_form"] if k.endswith("_usage"))
    drugs_shown = max(
        [int(k.split("_drug")[1].split("_")[0]) for k in extra["rx_form"] if "_drug" in k] or [0]
    )
    return html(
        request,
        "chart.html",
        status,
        c=c,
        p=c.patient,
        docs=docs,
        labs=_lab_trends(c.labs),
        names=staff_names(ctx.session, ctx.actor),
        # the 確定 button where the records' own rule lets this person finalise (a nurse her
        # own nursing note; a physician their own SOAP or a proxy entry naming them)
        may_sign={
            n.id for n in c.notes if n.status == "draft" and clinical_notes.may_sign(ctx.actor, n)
        },
        vitals_def=VITAL_SIGNS,
        vital_name_en=vital_name_en,
        latest_rx=latest,
        rp_groups=max(RP_GROUPS, groups_shown),
        rp_drugs=max(RP_DRUGS, drugs_shown),
        doc_types=DOC_TYPES,
        L=CHART_LABELS,
        contraindications=[a for a in c.allergies if a.is_contraindication],
        nurse=ctx.actor.role is Role.NURSE,
        scribe=ctx.actor.role is Role.SCRIBE,
        physicians=confirming_physicians(ctx.session, ctx.actor)
        if ctx.actor.role is Role.SCRIBE
        else [],
        **extra,
    )


@router.get("/patients/{patient_id}/chart")
def chart(
    request: Request,
    patient_id: uuid.UUID,
    repeat: uuid.UUID | None = None,
    letter: uuid.UUID | None = None,
    ctx: Ctx = Depends(requires(P.CHART_READ)),
) -> Response:
    """``repeat``: Do処方 — the form opened with that earlier prescription's RP groups.
    ``letter``: a referral letter just saved, offered for printing."""
    if repeat is None or not ctx.actor.can(P.PRESCRIPTION_WRITE):
        return _chart(request, ctx, patient_id, letter=letter)
    earlier = clinical.get_prescription(ctx.session, ctx.actor, repeat)
    if earlier.patient_id != patient_id:
        raise NotFound("MedicationRequest")
    return _chart(
        request,
        ctx,
        patient_id,
        rx_form=repeat_form(earlier.rp_groups, earlier.dispensing),
        rx_repeated=earlier,
    )


# --- notes ---------------------------------------------------------------------------------------


@router.post("/patients/{patient_id}/notes")
def write_note(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.NOTE_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    # a physician's SOAP note, a scribe's SOAP proxy entry (for the physician chosen on the
    # form), a nurse's nursing note
    soap = ctx.actor.can(P.NOTE_SIGN) or ctx.actor.role is Role.SCRIBE
    kind = NoteKind.SOAP if soap else NoteKind.NURSING
    late = None
    if form.get("late_number", "").strip():  # 事後入力 from a paper form
        late = {
            "downtime_number": form.get("late_number", "").strip().upper().removeprefix("DT-"),
            "care_at": form.get("late_care_at", ""),
            "paper_ref": form.get("late_paper_ref", ""),
        }
    try:
        data = parse(NoteIn, form, kind=kind, late=late)
        note = clinical_notes.write_note(ctx.session, ctx.actor, patient_id, data)
        if form.get("finalise") == "on" and ctx.actor.can(P.NOTE_SIGN):
            ctx.session.flush()
            clinical_notes.finalise_note(ctx.session, ctx.actor, note.id, note.version)
    except (InvalidInput, Conflict) as exc:
        return _chart(request, ctx, patient_id, 422, note_form=form, note_error=form_error(exc))
    return go(request, f"/patients/{patient_id}/chart#notes")


@router.post("/notes/{note_id}/finalise")
def finalise(
    request: Request,
    note_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.NOTE_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    version = expected_version(form)
    note = clinical_notes.finalise_note(ctx.session, ctx.actor, note_id, version)
    return go(request, f"/patients/{note.patient_id}/chart#notes")


@router.get("/notes/{note_id}/amend")
def amend_page(
    request: Request, note_id: uuid.UUID, ctx: Ctx = Depends(requires(P.NOTE_WRITE))
) -> Response:
    note = clinical_notes.get_note(ctx.session, ctx.actor, note_id)
    form = {k: getattr(note, k) for k in ("subjective", "objective", "assessment", "plan")}
    form["expected_version"] = str(note.version)
    return html(request, "amend.html", note=note, form=form, error=None, draft=False)


@router.post("/notes/{note_id}/amend")
def amend(
    request: Request,
    note_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.NOTE_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        note = clinical_notes.amend_note(ctx.session, ctx.actor, note_id, parse(NoteAmend, form))
    except (InvalidInput, Conflict) as exc:
        start_over(request, ctx.session)
        current = clinical_notes.get_note(ctx.session, ctx.actor, note_id)
        return html(
            request, "amend.html", 422, note=current, form=form, error=form_error(exc), draft=False
        )
    return go(request, f"/notes/{note.id}/history")


@router.get("/notes/{note_id}/edit")
def edit_draft_page(
    request: Request, note_id: uuid.UUID, ctx: Ctx = Depends(requires(P.NOTE_WRITE))
) -> Response:
    """A draft is corrected as a draft (a typo needs no 確定 and amendment)."""
    note = clinical_notes.get_note(ctx.session, ctx.actor, note_id)
    form = {k: getattr(note, k) for k in ("subjective", "objective", "assessment", "plan")}
    form["expected_version"] = str(note.version)
    return html(request, "amend.html", note=note, form=form, error=None, draft=True)


@router.post("/notes/{note_id}/edit")
def edit_draft(
    request: Request,
    note_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.NOTE_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        note = clinical_notes.edit_draft(ctx.session, ctx.actor, note_id, parse(NoteEdit, form))
    except (InvalidInput, Conflict, NotAllowed) as exc:
        start_over(request, ctx.session)
        current = clinical_notes.get_note(ctx.session, ctx.actor, note_id)
        return html(
            request, "amend.html", 422, note=current, form=form, error=form_error(exc), draft=True
        )
    return go(request, f"/patients/{note.patient_id}/chart#notes")


@router.get("/notes/{note_id}/history")
def note_history(
    request: Request, note_id: uuid.UUID, ctx: Ctx = Depends(requires(P.NOTE_READ))
) -> Response:
    """Every version of a note side by side (電子保存の見読性): the original stays readable."""
    note = clinical_notes.get_note(ctx.session, ctx.actor, note_id)
    versions = record_history(ctx.session, ctx.actor, "ProgressNote", note.id)
    shown = [{"v": v, "content": json.loads(v.content)} for v in versions]
    return html(
        request,
        "history.html",
        note=note,
        versions=shown,
        names=staff_names(ctx.session, ctx.actor),
        L=CHART_LABELS,
    )


# --- diagnoses, allergies, prescriptions, vitals -----------------------------------------------


@router.post("/patients/{patient_id}/conditions")
def add_condition(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.CONDITION_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        clinical.add_condition(ctx.session, ctx.actor, patient_id, parse(ConditionIn, form))
    except (InvalidInput, Conflict) as exc:
        return _chart(request, ctx, patient_id, 422, cond_form=form, cond_error=form_error(exc))
    return go(request, f"/patients/{patient_id}/chart#problems")


@router.post("/conditions/{condition_id}/edit")
def edit_condition(
    request: Request,
    condition_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.CONDITION_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    """A diagnosis changed or ended (転帰: 治癒・中止・死亡・転医) from the problem list."""
    cond = clinical.get_condition(ctx.session, ctx.actor, condition_id)
    try:
        version = expected_version(form)
        data = parse(ConditionIn, form)
        clinical.update_condition(ctx.session, ctx.actor, condition_id, data, version)
    except (InvalidInput, Conflict) as exc:
        return _chart(request, ctx, cond.patient_id, 422, cond_edit_error=form_error(exc))
    return go(request, f"/patients/{cond.patient_id}/chart#problems")


@router.post("/conditions/{condition_id}/confirm")
def confirm_condition(
    request: Request,
    condition_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.CONDITION_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    """A physician confirms a scribe's diagnosis from the problem list."""
    cond = clinical.confirm_condition(ctx.session, ctx.actor, condition_id, expected_version(form))
    return go(request, f"/patients/{cond.patient_id}/chart#problems")


@router.post("/prescriptions/{request_id}/confirm")
def confirm_prescription(
    request: Request,
    request_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.PRESCRIPTION_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    """A physician confirms and issues a nurse's draft order from the chart."""
    req = clinical.confirm_prescription(ctx.session, ctx.actor, request_id, expected_version(form))
    return go(request, f"/patients/{req.patient_id}/chart#medications")


@router.post("/patients/{patient_id}/allergies")
def add_allergy(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.ALLERGY_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        clinical.add_allergy(ctx.session, ctx.actor, patient_id, parse(AllergyIn, form))
    except (InvalidInput, Conflict) as exc:
        return _chart(
            request, ctx, patient_id, 422, allergy_form=form, allergy_error=form_error(exc)
        )
    return go(request, f"/patients/{patient_id}/chart")


def rp_groups_of(form: Form) -> list[dict[str, Any]]:
    """``rp{i}_usage``, ``rp{i}_days``, ``rp{i}_drug{j}_name|dose|unit|per`` → RP groups; rows
    left wholly empty are not part of the prescription."""
    groups = []
    for i in range(1, MAX_RP_GROUPS + 1):  # a repeated prescription may have more than the blanks
        items = []
        for j in range(1, MAX_RP_DRUGS + 1):
            pre = f"rp{i}_drug{j}_"
            item = {k: form.get(pre + k, "").strip() for k in ("name", "dose", "unit", "per")}
            if item["name"] or item["dose"]:
                items.append(
                    {
                        "drug_name": item["name"],
                        "dose": item["dose"],
                        "unit": item["unit"],
                        "per": item["per"] or "day",
                        "generic": form.get(pre + "generic") == "on",
                        "no_substitution": form.get(pre + "locked") == "on",
                    }
                )
        usage = form.get(f"rp{i}_usage", "").strip()
        if items or usage:
            groups.append(
                {"usage": usage, "days": form.get(f"rp{i}_days", "").strip(), "items": items}
            )
    return groups


@router.post("/patients/{patient_id}/prescriptions")
def prescribe(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.PRESCRIPTION_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        data = parse(
            MedicationRequestIn,
            form,
            dispensing=form.get("dispensing") or "outside",
            rp_groups=rp_groups_of(form),
        )
        _, warnings = clinical.prescribe(ctx.session, ctx.actor, patient_id, data)
    except (InvalidInput, Conflict) as exc:
        return _chart(request, ctx, patient_id, 422, rx_form=form, rx_error=form_error(exc))
    if warnings:  # saved; the prescriber sees the allergy warnings before moving on
        return _chart(request, ctx, patient_id, rx_warnings=warnings)
    return go(request, f"/patients/{patient_id}/chart#medications")


@router.post("/patients/{patient_id}/vitals")
def record_vitals(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.OBSERVATION_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        for obs in vital_observations(form):
            clinical.record_observation(ctx.session, ctx.actor, patient_id, obs)
    except (InvalidInput, Conflict) as exc:
        return _chart(request, ctx, patient_id, 422, vitals_form=form, vitals_error=form_error(exc))
    return go(request, f"/patients/{patient_id}/chart#vitals")


@router.post("/patients/{patient_id}/documents")
def upload(
    request: Request,
    patient_id: uuid.UUID,
    file: UploadFile = File(...),
    ctx: Ctx = Depends(requires(P.DOCUMENT_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        meta = parse(DocumentMeta, form)
        content = file.file.read(ctx.settings.max_upload_bytes + 1)
        if len(content) > ctx.settings.max_upload_bytes:
            raise InvalidInput("ファイルが大きすぎます。", "The file is too large.", field="file")
        if not content:
            raise InvalidInput("ファイルが空です。", "The file is empty.", field="file")
        mime = (file.content_type or "application/octet-stream").split(";")[0].strip()
        clinical.file_document(ctx.session, ctx.actor, ctx.store, patient_id, meta, content, mime)
    except (InvalidInput, Conflict) as exc:
        if not ctx.actor.can(P.CHART_READ):  # reception files scans without seeing the chart
            return html(request, "_flash.html", 422, error=form_error(exc))
        return _chart(request, ctx, patient_id, 422, doc_form=form, doc_error=form_error(exc))
    dest = "chart#documents" if ctx.actor.can(P.CHART_READ) else ""
    return go(request, f"/patients/{patient_id}/{dest}".rstrip("/"))


# --- break-the-glass -------------------------------------------------------------------------


@router.get("/patients/{patient_id}/break-glass")
def break_glass_page(
    request: Request,
    patient_id: uuid.UUID,
    next: str = "",
    ctx: Ctx = Depends(requires(P.BREAK_GLASS)),
) -> Response:
    """The dialog shown instead of a restricted patient's chart. It shows nothing about the
    patient: the reason, the password and the code come first."""
    return html(
        request,
        "break_glass.html",
        patient_id=patient_id,
        next=local_path(next, f"/patients/{patient_id}/chart"),
        reasons=restrictions.REASONS,
        form={},
        error=None,
        minutes=ctx.settings.auth.break_glass_minutes,
    )


@router.post("/patients/{patient_id}/break-glass")
def break_glass(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.BREAK_GLASS)),
    form: Form = Depends(form_fields),
) -> Response:
    nxt = local_path(form.get("next"), f"/patients/{patient_id}/chart")
    try:
        body = parse(BreakGlassIn, form)
        ctx = reauthenticate(request, ctx, form)
        restrictions.break_glass(
            ctx.session,
            ctx.actor,
            patient_id,
            reason_code=body.reason_code,
            reason_text=body.reason_text,
            minutes=ctx.settings.auth.break_glass_minutes,
            reauth_minutes=ctx.settings.auth.reauth_minutes,
        )
    except (InvalidInput, Unauthenticated, TooManyAttempts) as exc:
        form.pop("password", None)
        form.pop("code", None)
        return html(
            request,
            "break_glass.html",
            401 if isinstance(exc, Unauthenticated) else 422,
            patient_id=patient_id,
            next=nxt,
            reasons=restrictions.REASONS,
            form=form,
            error=form_error(exc),
            minutes=ctx.settings.auth.break_glass_minutes,
        )
    return go(request, nxt)


# --- 診療情報提供書 ---------------------------------------------------------------------------

REFERRAL_SECTIONS = (  # (field, ja, en, rows on the form)
    ("purpose", "紹介目的", "Reason for referral", 3),
    ("diagnoses", "傷病名", "Diagnoses", 4),
    ("history", "既往歴及び家族歴", "Past and family history", 3),
    ("course", "症状経過及び検査結果", "Course and results", 8),
    ("treatment", "治療経過", "Treatment so far", 5),
    ("medications", "現在の処方", "Current prescriptions", 5),
    ("allergies", "アレルギー・薬剤禁忌", "Allergies and contraindications", 2),
    ("remarks", "備考", "Remarks", 2),
)


def _referral_page(
    request: Request, ctx: Ctx, patient_id: uuid.UUID, form: dict[str, str], **extra: Any
) -> Response:
    patient = open_chart(ctx.session, ctx.actor, patient_id).patient
    extra.setdefault("error", None)
    return html(request, "referral.html", p=patient, form=form, sections=REFERRAL_SECTIONS, **extra)


@router.get("/patients/{patient_id}/referrals/new")
def referral_form(
    request: Request, patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.NOTE_SIGN))
) -> Response:
    """The letter's form, pre-filled from the chart, edited before it is saved."""
    draft = referral_draft(ctx.session, ctx.actor, patient_id)
    return _referral_page(request, ctx, patient_id, draft)


@router.post("/patients/{patient_id}/referrals")
def referral_save(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.NOTE_SIGN)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        doc = write_referral(ctx.session, ctx.actor, ctx.store, patient_id, parse(ReferralIn, form))
    except InvalidInput as exc:
        start_over(request, ctx.session)
        return _referral_page(request, ctx, patient_id, form, status=422, error=form_error(exc))
    return go(request, f"/patients/{patient_id}/chart?letter={doc.id}#documents")
