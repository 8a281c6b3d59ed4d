"""The checklist screen: this fiscal year's items with mamori's proposals and evidence, the
sign-off of each, earlier years, and the printout for the 立入検査."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import Response

from mamori.auth import admin
from mamori.authz.permissions import P
from mamori.authz.roles import Role
from mamori.clinic.service import clinic_of, staff_names
from mamori.errors import Conflict, InvalidInput, NotAllowed, NotFound, ReauthRequired
from mamori.incidents.service import ROLES as INCIDENT_ROLES
from mamori.programme import accounts, bcp, checklist, documents, duties, ledgers
from mamori.programme.report_pdf import render_bcp, render_checklist, render_rules
from mamori.ui.errors import form_error
from mamori.ui.forms import Form, form_date, form_fields
from mamori.ui.render import go, html, pdf
from mamori.web.routing import Ctx, TransactionalRoute, requires, start_over

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

LABELS = {
    "duty": ("業務", "duty"),
    "file": ("CSV", "CSV"),
    "name": ("名称", "name"),
    "accounts": ("保守アカウント", "vendor accounts"),
    "stocktaken_on": ("棚卸日", "stocktaking date"),
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
            checked_on=form_date(form.get("checked_on", ""), "checked_on") or checklist.today(),
            target_on=form_date(form.get("target_on", ""), "target_on"),
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
    return pdf(body, f"checklist-{v.year}-{v.form}.pdf")


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
            form_date(form.get("done_on", ""), "done_on") or checklist.today(),
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
            held_on=form_date(form.get("held_on", ""), "held_on") or checklist.today(),
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
    return pdf(render_bcp(doc, ctx.actor.display_name), "bcp.pdf")


# --- ledgers ------------------------------------------------------------------------------------


def _ledgers(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    extra.setdefault("error", None)
    extra.setdefault("notice", None)
    return html(
        request,
        "ledgers.html",
        status,
        assets=ledgers.assets(ctx.session, ctx.actor),
        seen=ledgers.seen_devices(ctx.session, ctx.actor),
        vendors=ledgers.vendors(ctx.session, ctx.actor),
        kinds=ledgers.ASSET_KINDS,
        vendor_accounts=[
            s for s in admin.list_staff(ctx.session, ctx.actor) if s.role == Role.VENDOR.value
        ],
        account_names={str(k): v for k, v in staff_names(ctx.session, ctx.actor).items()},
        can_edit=ctx.actor.can(P.PROGRAMME_MANAGE),
        **extra,
    )


@router.get("/admin/ledgers")
def ledgers_page(request: Request, ctx: Ctx = Depends(requires(P.PROGRAMME_READ))) -> Response:
    return _ledgers(request, ctx)


def _ledger_id(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw) if raw else None
    except ValueError:
        raise InvalidInput("選択が正しくありません。", "Invalid choice.", field="name") from None


@router.post("/admin/ledgers/assets")
def save_asset(
    request: Request,
    ctx: Ctx = Depends(requires(P.PROGRAMME_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        if form.get("seen_device"):
            ledgers.add_seen(ctx.session, ctx.actor, form["seen_device"][:64])
        elif form.get("stocktake") == "on":
            ledgers.stocktake(ctx.session, ctx.actor)
        else:
            values: dict[str, Any] = {
                k: form.get(k, "") for k, _ in ledgers.ASSET_COLUMNS if k != "stocktaken_on"
            }
            values["remote_maintenance"] = "yes" if form.get("remote_maintenance") else ""
            if form.get("retire") == "on":
                values["active"] = False
            ledgers.save_asset(ctx.session, ctx.actor, _ledger_id(form.get("asset_id", "")), values)
    except InvalidInput as exc:
        return _ledgers(request, ctx, 422, error=form_error(exc, LABELS))
    return go(request, "/admin/ledgers")


@router.post("/admin/ledgers/vendors")
def save_vendor(
    request: Request,
    ctx: Ctx = Depends(requires(P.PROGRAMME_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        values: dict[str, Any] = {k: form.get(k, "") for k, _ in ledgers.VENDOR_COLUMNS}
        values["accounts"] = [k.removeprefix("account-") for k in form if k.startswith("account-")]
        ledgers.save_vendor(ctx.session, ctx.actor, _ledger_id(form.get("vendor_id", "")), values)
    except (InvalidInput, ValueError) as exc:
        if not isinstance(exc, InvalidInput):
            exc = InvalidInput("選択が正しくありません。", "Invalid choice.", field="accounts")
        return _ledgers(request, ctx, 422, error=form_error(exc, LABELS))
    return go(request, "/admin/ledgers")


@router.get("/admin/ledgers/{which}.csv")
def ledger_csv(which: str, ctx: Ctx = Depends(requires(P.PROGRAMME_READ))) -> Response:
    if which not in ("assets", "vendors"):
        raise NotFound("ledger")
    text = (
        ledgers.export_assets(ctx.session, ctx.actor)
        if which == "assets"
        else ledgers.export_vendors(ctx.session, ctx.actor)
    )
    return Response(
        "\ufeff" + text,  # Excel opens UTF-8 with a BOM as Japanese
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{which}.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/admin/ledgers/{which}/import")
def ledger_import(
    request: Request,
    which: str,
    ctx: Ctx = Depends(requires(P.PROGRAMME_MANAGE)),
    file: UploadFile = File(...),
) -> Response:
    if which not in ("assets", "vendors"):
        raise NotFound("ledger")
    raw = file.file.read(512 * 1024 + 1)
    try:
        if len(raw) > 512 * 1024:
            raise InvalidInput("CSV が大きすぎます（512KB まで）。", "CSV too large.", field="file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp932", errors="strict")  # Excel's Japanese CSV
        count = (
            ledgers.import_assets(ctx.session, ctx.actor, text)
            if which == "assets"
            else ledgers.import_vendors(ctx.session, ctx.actor, text)
        )
    except (InvalidInput, UnicodeDecodeError) as exc:
        if not isinstance(exc, InvalidInput):
            exc = InvalidInput(
                "文字コードが読めません（UTF-8 または Shift_JIS の CSV）。",
                "Unreadable encoding (UTF-8 or Shift_JIS CSV).",
                field="file",
            )
        return _ledgers(request, ctx, 422, error=form_error(exc, LABELS))
    return _ledgers(request, ctx, notice=f"{count} 行を取り込みました。 / {count} rows imported.")


# --- generated documents ------------------------------------------------------------------------


@router.get("/admin/rules")
def rules_page(request: Request, ctx: Ctx = Depends(requires(P.PROGRAMME_READ))) -> Response:
    return html(
        request,
        "rules.html",
        text=documents.rules_text(ctx.session, ctx.actor, ctx.settings),
        inventory=documents.inventory(ctx.session, ctx.actor),
        can_edit=ctx.actor.can(P.PROGRAMME_MANAGE),
        error=None,
    )


@router.get("/admin/rules.md")
def rules_markdown(ctx: Ctx = Depends(requires(P.PROGRAMME_READ))) -> Response:
    text = documents.rules_text(ctx.session, ctx.actor, ctx.settings)
    text += "\n\n" + documents.inventory_text(documents.inventory(ctx.session, ctx.actor))
    return Response(
        text,
        media_type="text/markdown; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="unyou-kanri-kitei.md"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/admin/rules.pdf")
def rules_pdf(ctx: Ctx = Depends(requires(P.PROGRAMME_READ))) -> Response:
    body = render_rules(
        documents.rules_text(ctx.session, ctx.actor, ctx.settings),
        documents.inventory(ctx.session, ctx.actor),
    )
    return pdf(body, "rules.pdf")


@router.post("/admin/rules/inventory")
def edit_inventory(
    request: Request,
    ctx: Ctx = Depends(requires(P.PROGRAMME_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        documents.edit_inventory(
            ctx.session,
            ctx.actor,
            name=form.get("name", ""),
            classification=form.get("classification", ""),
            location=form.get("location", ""),
            protection=form.get("protection", ""),
            keep=form.get("keep", ""),
            hidden=form.get("hidden") == "on",
        )
    except InvalidInput as exc:
        start_over(request, ctx.session)
        return html(
            request,
            "rules.html",
            422,
            text=documents.rules_text(ctx.session, ctx.actor, ctx.settings),
            inventory=documents.inventory(ctx.session, ctx.actor),
            can_edit=True,
            error=form_error(exc, LABELS),
        )
    return go(request, "/admin/rules#inventory")
