"""The checklist screen: this fiscal year's items with mamori's proposals and evidence, the
sign-off of each, earlier years, and the printout for the 立入検査."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.auth import admin
from mamori.authz.permissions import P
from mamori.authz.roles import Role
from mamori.clinic.service import clinic_of, staff_names
from mamori.errors import Conflict, InvalidInput, NotAllowed, NotFound, ReauthRequired
from mamori.incidents.service import ROLES as INCIDENT_ROLES
from mamori.programme import accounts, bcp, checklist, duties
from mamori.programme.report_pdf import render_bcp, render_checklist
from mamori.ui.errors import form_error
from mamori.ui.forms import Form, form_fields
from mamori.ui.render import go, html
from mamori.web.routing import Ctx, TransactionalRoute, requires, start_over

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

LABELS = {
    "duty": ("業務", "duty"),
    "done_on": ("実施日", "date done"),
    "held_on": ("実施日", "date held"),
    "kind": ("種類", "kind"),
    "topic": ("内容", "topic"),
    "attendees": ("参加者", "attendees"),
    "sent": ("送信数", "sent"),
    "clicked": ("開封数", "clicked"),
    "reported": ("報告数", "reported"),
    "decision": ("判断", "decision"),
    "reason": ("理由", "reason"),
    "value": ("回答", "answer"),
    "checked_on": ("確認日", "date checked"),
    "target_on": ("目標日", "target date"),
    "form": ("様式", "form"),
}


def _year(raw: str) -> int:
    if not raw:
        return checklist.fiscal_year_of(checklist.today())
    try:
        year = int(raw)
    except ValueError:
        raise InvalidInput(
            "年度が正しくありません。", "Invalid fiscal year.", field="year"
        ) from None
    if not 2023 <= year <= 2100:
        raise InvalidInput("年度が正しくありません。", "Invalid fiscal year.", field="year")
    return year


def _page(
    request: Request, ctx: Ctx, year: int, form: str, status: int = 200, **extra: Any
) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    v = checklist.view(ctx.session, ctx.actor, ctx.settings, year, form)
    current = checklist.fiscal_year_of(checklist.today())
    extra.setdefault("error", None)
    extra.setdefault("form_values", {})
    return html(
        request,
        "checklist.html",
        status,
        v=v,
        names=staff_names(ctx.session, ctx.actor),
        answers=checklist.ANSWERS,
        forms=checklist.FORMS,
        nendo=checklist.nendo,
        years=list(range(current, 2024, -1)),
        current=current,
        today=checklist.today(),
        fiscal_end=checklist.fiscal_range(year)[1],
        can_answer=ctx.actor.can(P.PROGRAMME_MANAGE),
        **extra,
    )


@router.get("/admin/checklist")
def checklist_page(
    request: Request,
    year: str = "",
    form: str = "clinic",
    ctx: Ctx = Depends(requires(P.PROGRAMME_READ)),
) -> Response:
    return _page(request, ctx, _year(year), form if form in checklist.FORMS else "clinic")


def _date(raw: str, field: str) -> dt.date | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput("日付が正しくありません。", "Invalid date.", field=field) from None


@router.post("/admin/checklist")
def answer(
    request: Request,
    ctx: Ctx = Depends(requires(P.PROGRAMME_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    year = _year(form.get("year", ""))
    which = form.get("form", "clinic")
    try:
        checklist.answer(
            ctx.session,
            ctx.actor,
            ctx.settings,
            year=year,
            form=which,
            item_id=form.get("item_id", ""),
            value=form.get("value", ""),
            checked_on=_date(form.get("checked_on", ""), "checked_on") or checklist.today(),
            target_on=_date(form.get("target_on", ""), "target_on"),
            note=form.get("note", "")[:1000],
        )
    except (InvalidInput, NotFound) as exc:
        return _page(
            request,
            ctx,
            year,
            which if which in checklist.FORMS else "clinic",
            422,
            error=form_error(exc, LABELS),
            form_values=form,
        )
    return go(request, f"/admin/checklist?year={year}&form={which}")


@router.get("/admin/checklist/report.pdf")
def report(
    year: str = "", form: str = "clinic", ctx: Ctx = Depends(requires(P.PROGRAMME_READ))
) -> Response:
    v = checklist.view(ctx.session, ctx.actor, ctx.settings, _year(year), form)
    body = render_checklist(
        v,
        clinic_of(ctx.session, ctx.actor),
        ctx.actor.display_name,
        staff_names(ctx.session, ctx.actor),
    )
    return Response(
        body,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="checklist-{v.year}-{v.form}.pdf"',
            "Cache-Control": "no-store",
        },
    )


# --- the account review -------------------------------------------------------------------------


def _accounts(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    extra.setdefault("error", None)
    extra.setdefault("form_values", {})
    return html(
        request,
        "account_review.html",
        status,
        rows=accounts.review_list(ctx.session, ctx.actor),
        flags=accounts.FLAGS,
        last=accounts.last_review(ctx.session, ctx.actor),
        names=staff_names(ctx.session, ctx.actor),
        can_record=ctx.actor.can(P.PROGRAMME_MANAGE),
        can_disable=ctx.actor.can(P.STAFF_ADMIN),
        reauth_minutes=ctx.settings.auth.reauth_minutes,
        **extra,
    )


@router.get("/admin/accounts/review")
def account_review(request: Request, ctx: Ctx = Depends(requires(P.PROGRAMME_READ))) -> Response:
    return _accounts(request, ctx)


@router.post("/admin/accounts/review")
def record_account_review(
    request: Request,
    ctx: Ctx = Depends(requires(P.PROGRAMME_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    decisions: dict[uuid.UUID, tuple[str, str]] = {}
    for key, value in form.items():
        if not key.startswith("decision-"):
            continue
        try:
            uid = uuid.UUID(key.removeprefix("decision-"))
        except ValueError:
            continue
        decisions[uid] = (value, form.get(f"reason-{uid}", "")[:300])
    try:
        accounts.record_review(
            ctx.session,
            ctx.actor,
            decisions=decisions,
            finding=form.get("finding", "")[:1000],
            reauth_minutes=ctx.settings.auth.reauth_minutes,
        )
    except (InvalidInput, ReauthRequired) as exc:
        return _accounts(request, ctx, 422, error=form_error(exc, LABELS), form_values=form)
    return go(request, "/admin/accounts/review")


# --- the duties calendar and training ----------------------------------------------------------


def _duties(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    extra.setdefault("error", None)
    return html(
        request,
        "duties.html",
        status,
        views=duties.calendar(ctx.session, ctx.actor),
        roles=duties.ROLES,
        today=checklist.today(),
        can_record=ctx.actor.can(P.PROGRAMME_MANAGE),
        **extra,
    )


@router.get("/admin/duties")
def duty_calendar(request: Request, ctx: Ctx = Depends(requires(P.PROGRAMME_READ))) -> Response:
    return _duties(request, ctx)


@router.post("/admin/duties")
def duty_done(
    request: Request,
    ctx: Ctx = Depends(requires(P.PROGRAMME_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        duties.mark_done(
            ctx.session,
            ctx.actor,
            form.get("duty", ""),
            _date(form.get("done_on", ""), "done_on") or checklist.today(),
            form.get("note", "")[:500],
        )
    except InvalidInput as exc:
        return _duties(request, ctx, 422, error=form_error(exc, LABELS))
    return go(request, "/admin/duties")


def _training(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    extra.setdefault("error", None)
    extra.setdefault("form_values", {})
    return html(
        request,
        "training.html",
        status,
        t_view=duties.training(ctx.session, ctx.actor),
        staff=[s for s in admin.list_staff(ctx.session, ctx.actor) if s.active],
        names=staff_names(ctx.session, ctx.actor),
        today=checklist.today(),
        can_record=ctx.actor.can(P.PROGRAMME_MANAGE),
        **extra,
    )


@router.get("/admin/training")
def training_page(request: Request, ctx: Ctx = Depends(requires(P.PROGRAMME_READ))) -> Response:
    return _training(request, ctx)


def _count(raw: str, field: str) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput("数を入力してください。", "Enter a number.", field=field) from None


@router.post("/admin/training")
def record_training(
    request: Request,
    ctx: Ctx = Depends(requires(P.PROGRAMME_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        attendees = []
        for key in form:
            if key.startswith("attended-"):
                try:
                    attendees.append(uuid.UUID(key.removeprefix("attended-")))
                except ValueError:
                    raise InvalidInput(
                        "参加者が正しくありません。", "Unknown attendee.", field="attendees"
                    ) from None
        duties.record_training(
            ctx.session,
            ctx.actor,
            held_on=_date(form.get("held_on", ""), "held_on") or checklist.today(),
            kind=form.get("kind", ""),
            topic=form.get("topic", "")[:200],
            material=form.get("material", "")[:300],
            attendees=attendees,
            sent=_count(form.get("sent", ""), "sent"),
            clicked=_count(form.get("clicked", ""), "clicked"),
            reported=_count(form.get("reported", ""), "reported"),
        )
    except InvalidInput as exc:
        return _training(request, ctx, 422, error=form_error(exc, LABELS), form_values=form)
    return go(request, "/admin/training")


# --- the BCP ------------------------------------------------------------------------------------


def _bcp(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    doc = bcp.document(ctx.session, ctx.actor, ctx.settings)
    extra.setdefault("error", None)
    overseer = ctx.actor.can(P.PROGRAMME_READ)
    return html(
        request,
        "bcp.html",
        status,
        doc=doc,
        scenarios=bcp.SCENARIOS,
        fallback=bcp.FALLBACK,
        priority=bcp.PRIORITY,
        roles=INCIDENT_ROLES,
        read=bcp.has_read(ctx.session, ctx.actor),
        unread=bcp.unread(ctx.session, ctx.actor) if overseer else [],
        overseer=overseer,
        can_approve=ctx.actor.can(P.PROGRAMME_MANAGE) and ctx.actor.role is Role.DIRECTOR,
        **extra,
    )


@router.get("/bcp")
def bcp_page(request: Request, ctx: Ctx = Depends(requires(P.INCIDENT_REPORT))) -> Response:
    return _bcp(request, ctx)


@router.post("/bcp/acknowledge")
def bcp_acknowledge(request: Request, ctx: Ctx = Depends(requires(P.INCIDENT_REPORT))) -> Response:
    try:
        bcp.acknowledge(ctx.session, ctx.actor)
    except InvalidInput as exc:
        return _bcp(request, ctx, 422, error=form_error(exc, LABELS))
    return go(request, "/bcp")


@router.post("/bcp/approve")
def bcp_approve(
    request: Request,
    ctx: Ctx = Depends(requires(P.PROGRAMME_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        bcp.approve(ctx.session, ctx.actor, ctx.settings, form.get("note", "")[:500])
    except (Conflict, NotAllowed) as exc:
        return _bcp(request, ctx, 422, error=form_error(exc, LABELS))
    return go(request, "/bcp")


@router.get("/bcp.pdf")
def bcp_pdf(ctx: Ctx = Depends(requires(P.INCIDENT_REPORT))) -> Response:
    doc = bcp.document(ctx.session, ctx.actor, ctx.settings)
    return Response(
        render_bcp(doc, ctx.actor.display_name),
        media_type="application/pdf",
        headers={"Content-Disposition": 'inline; filename="bcp.pdf"', "Cache-Control": "no-store"},
    )
