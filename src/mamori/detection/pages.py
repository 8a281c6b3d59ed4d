"""The detection screens: the director's review queue (cases, decide, quiet a pair, restrict
the patient), its PDF, the roster week, a staff member's household facts, and the two-click
電話対応 log on the patient's page."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.auth import admin
from mamori.authz.permissions import P
from mamori.authz.roles import Role
from mamori.clinic.calendar import clinic_today
from mamori.clinic.service import clinic_of, staff_names
from mamori.detection import engine, report_pdf, service
from mamori.errors import Conflict, InvalidInput, NotFound
from mamori.ui.errors import form_error
from mamori.ui.forms import Form, form_fields
from mamori.ui.render import go, html, lang_of
from mamori.web.routing import Ctx, TransactionalRoute, requires, start_over

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
LABELS = {
    "patient_number": ("患者番号", "patient number"),
    "outcome": ("判定", "outcome"),
    "reason": ("理由", "reason"),
    "suppress_days": ("抑止する日数", "days to quiet"),
    "kind": ("勤務の種類", "kind"),
    "start": ("開始", "start"),
    "end": ("終了", "end"),
    "notice": ("本人への通知", "notice"),
    "relation": ("続柄", "relation"),
    "channel": ("手段", "channel"),
    "topic": ("用件", "topic"),
}


def _queue(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    lang = lang_of(request)
    open_cases = service.list_cases(ctx.session, ctx.actor, status="open", lang=lang)
    decided = [
        v
        for v in service.list_cases(ctx.session, ctx.actor, status=None, limit=60, lang=lang)
        if v.case.status != "open"
    ][:20]
    extra.setdefault("error", None)
    return html(
        request,
        "detection_queue.html",
        status,
        cases=open_cases,
        decided=decided,
        runs=service.last_runs(ctx.session, ctx.actor),
        names=staff_names(ctx.session, ctx.actor),
        rule_ja=engine.RULE_JA,
        **extra,
    )


@router.get("/admin/detection")
def queue(request: Request, ctx: Ctx = Depends(requires(P.DETECTION_REVIEW))) -> Response:
    return _queue(request, ctx)


@router.get("/admin/detection/cases/{case_id}")
def case_page(
    request: Request, case_id: uuid.UUID, ctx: Ctx = Depends(requires(P.DETECTION_REVIEW))
) -> Response:
    return _case(request, ctx, case_id)


def _case(
    request: Request, ctx: Ctx, case_id: uuid.UUID, status: int = 200, **extra: Any
) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    view = service.get_case(ctx.session, ctx.actor, case_id, lang_of(request))
    extra.setdefault("error", None)
    extra.setdefault("form", {})
    return html(
        request,
        "detection_case.html",
        status,
        v=view,
        names=staff_names(ctx.session, ctx.actor),
        rule_ja=engine.RULE_JA,
        can_restrict=ctx.actor.can(P.RESTRICTION_ADMIN),
        can_audit=ctx.actor.can(P.AUDIT_READ),
        **extra,
    )


@router.post("/admin/detection/cases/{case_id}/review")
def review_case(
    request: Request,
    case_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.DETECTION_REVIEW)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        days = int(form.get("suppress_days", "0") or "0")
    except ValueError:
        days = -1
    try:
        service.decide(
            ctx.session,
            ctx.actor,
            case_id,
            outcome=form.get("outcome", ""),
            reason=form.get("reason", "")[:500],
            suppress_days=days,
        )
    except (InvalidInput, Conflict) as exc:
        return _case(request, ctx, case_id, 422, error=form_error(exc, LABELS), form=form)
    return go(request, "/admin/detection")


@router.post("/admin/detection/cases/{case_id}/restrict")
def restrict_case_patient(
    request: Request, case_id: uuid.UUID, ctx: Ctx = Depends(requires(P.RESTRICTION_ADMIN))
) -> Response:
    service.restrict_patient(ctx.session, ctx.actor, case_id)
    return go(request, f"/admin/detection/cases/{case_id}")


@router.post("/admin/detection/run")
def run_now(request: Request, ctx: Ctx = Depends(requires(P.DETECTION_REVIEW))) -> Response:
    """The nightly pass, now (what arrived since the last one)."""
    service.run(ctx.session, ctx.actor.clinic_id, tier="on-demand", channel="web")
    return go(request, "/admin/detection")


@router.get("/admin/detection/report.pdf")
def queue_pdf(request: Request, ctx: Ctx = Depends(requires(P.DETECTION_REVIEW))) -> Response:
    cases = service.list_cases(ctx.session, ctx.actor, status="open")
    pdf = report_pdf.render_queue(
        cases, clinic_of(ctx.session, ctx.actor).name, ctx.actor.display_name
    )
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": 'inline; filename="detection-queue.pdf"',
            "Cache-Control": "no-store",
        },
    )


# --- roster ---------------------------------------------------------------------------------


def _roster(
    request: Request, ctx: Ctx, monday: dt.date, status: int = 200, **extra: Any
) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    week = service.roster_week(ctx.session, ctx.actor, monday)
    monday = monday - dt.timedelta(days=monday.weekday())
    staff = {s.id: s for s in admin.list_staff(ctx.session, ctx.actor)}
    extra.setdefault("error", None)
    return html(
        request,
        "detection_roster.html",
        status,
        week=week,
        staff=staff,
        roles={r.value: r.label_ja for r in Role},
        monday=monday,
        days=[monday + dt.timedelta(days=i) for i in range(7)],
        prev_week=monday - dt.timedelta(days=7),
        next_week=monday + dt.timedelta(days=7),
        kinds=service.KIND_JA,
        **extra,
    )


def _monday(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw) if raw else clinic_today()
    except ValueError:
        raise InvalidInput("日付が正しくありません。", "Invalid date.", field="week") from None


@router.get("/admin/roster")
def roster(
    request: Request, week: str = "", ctx: Ctx = Depends(requires(P.STAFF_ADMIN))
) -> Response:
    return _roster(request, ctx, _monday(week))


@router.post("/admin/roster")
def roster_day(
    request: Request, ctx: Ctx = Depends(requires(P.STAFF_ADMIN)), form: Form = Depends(form_fields)
) -> Response:
    day = _monday(form.get("day", ""))
    try:
        user_id = uuid.UUID(form.get("user_id", ""))
    except ValueError:
        raise NotFound("staff") from None
    try:
        service.set_roster_day(
            ctx.session,
            ctx.actor,
            user_id,
            day,
            form.get("kind", ""),
            form.get("start", ""),
            form.get("end", ""),
        )
    except InvalidInput as exc:
        return _roster(request, ctx, day, 422, error=form_error(exc, LABELS))
    return go(request, f"/admin/roster?week={day - dt.timedelta(days=day.weekday())}")


@router.post("/admin/roster/copy")
def roster_copy(
    request: Request, ctx: Ctx = Depends(requires(P.STAFF_ADMIN)), form: Form = Depends(form_fields)
) -> Response:
    """This week as last week was entered (one click for a clinic whose weeks repeat)."""
    monday = _monday(form.get("week", ""))
    service.copy_previous_week(ctx.session, ctx.actor, monday)
    return go(request, f"/admin/roster?week={monday - dt.timedelta(days=monday.weekday())}")


# --- household facts ------------------------------------------------------------------------


def _facts(
    request: Request, ctx: Ctx, user_id: uuid.UUID, status: int = 200, **extra: Any
) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    staff = {s.id: s for s in admin.list_staff(ctx.session, ctx.actor)}
    if user_id not in staff:
        raise NotFound("staff")
    links = service.labelled_links(ctx.session, ctx.actor, user_id)
    extra.setdefault("error", None)
    extra.setdefault("form", {})
    return html(
        request,
        "detection_facts.html",
        status,
        person=staff[user_id],
        profile=service.profile_of(ctx.session, ctx.actor, user_id),
        links=links,
        **extra,
    )


@router.get("/admin/staff/{user_id}/facts")
def facts(
    request: Request, user_id: uuid.UUID, ctx: Ctx = Depends(requires(P.STAFF_ADMIN))
) -> Response:
    return _facts(request, ctx, user_id)


@router.post("/admin/staff/{user_id}/facts")
def save_facts(
    request: Request,
    user_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.STAFF_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        left = form.get("left_on", "")
        service.set_profile(
            ctx.session,
            ctx.actor,
            user_id,
            family_kana=form.get("family_kana", ""),
            postal_code=form.get("postal_code", ""),
            address=form.get("address", ""),
            phone=form.get("phone", ""),
            notice_given=form.get("notice", "") == "yes",
            left_on=_monday(left) if left else None,
        )
    except InvalidInput as exc:
        return _facts(request, ctx, user_id, 422, error=form_error(exc, LABELS), form=form)
    return go(request, f"/admin/staff/{user_id}/facts")


@router.post("/admin/staff/{user_id}/links")
def add_link(
    request: Request,
    user_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.STAFF_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        number = int(form.get("patient_number", "").strip().translate(_DIGITS))
    except ValueError:
        exc = InvalidInput(
            "患者番号を数字で入力してください。",
            "Enter the patient number.",
            field="patient_number",
        )
        return _facts(request, ctx, user_id, 422, error=form_error(exc, LABELS))
    try:
        pid = service.patient_by_number(ctx.session, ctx.actor, number)
        service.link_patient(ctx.session, ctx.actor, user_id, pid, form.get("relation", ""))
    except (InvalidInput, Conflict) as exc:
        return _facts(request, ctx, user_id, 422, error=form_error(exc, LABELS))
    return go(request, f"/admin/staff/{user_id}/facts")


# --- 電話対応 -------------------------------------------------------------------------------


@router.post("/patients/{patient_id}/contacts")
def log_contact(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.ENCOUNTER_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    """Two clicks on the patient's page: how (phone, desk, message) and what about."""
    service.log_contact(
        ctx.session,
        ctx.actor,
        patient_id,
        channel=form.get("channel", "phone"),
        topic=form.get("topic", ""),
        note=form.get("note", "")[:200],
    )
    return go(request, f"/patients/{patient_id}?contact=logged")
