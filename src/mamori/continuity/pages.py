"""The director's continuity page: the standby keys and when the last downtime bundle reached
each destination (the bundles themselves are written by ``mamori downtime bundle``)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori import isolation
from mamori.authz.permissions import P
from mamori.clinic.calendar import JST
from mamori.clinic.service import staff_names
from mamori.continuity import drills, entries, service
from mamori.errors import InvalidInput, ReauthRequired
from mamori.ui.errors import form_error
from mamori.ui.forms import Form, form_fields, parse
from mamori.ui.render import go, html
from mamori.web.routing import Ctx, TransactionalRoute, requires, start_over

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)


@router.get("/admin/continuity")
def continuity_page(request: Request, ctx: Ctx = Depends(requires(P.CONTINUITY_ADMIN))) -> Response:
    return _page(request, ctx)


def _page(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    keys = service.live_keys(ctx.session, ctx.actor)
    written = service.bundles(ctx.session, ctx.actor)
    last: dict[str, object] = {}
    for b in written:  # newest first: the first seen per destination is its latest
        for place in json.loads(b.destinations):
            last.setdefault(place, b)
    extra.setdefault("drill_error", None)
    extra.setdefault("isolate_error", None)
    extra.setdefault("drill_form", {})
    return html(
        request,
        "admin_continuity.html",
        status,
        keys=keys,
        bundles=written[:10],
        last=sorted(last.items()),
        names=staff_names(ctx.session, ctx.actor),
        reconciled=_reconciled(entries.reconciliation(ctx.session, ctx.actor)),
        drills=drills.drills(ctx.session, ctx.actor),
        scenarios=drills.SCENARIOS,
        isolated_since=_isolated(ctx),
        reauth_minutes=ctx.settings.auth.reauth_minutes,
        **extra,
    )


def _reconciled(rows: list[entries.Reconciliation]) -> list[entries.Reconciliation]:
    """Bundles with numbers still to account for first (all of them), then the last few."""
    pending = [r for r in rows if r.pending]
    return pending + [r for r in rows if not r.pending][: max(0, 10 - len(pending))]


def _isolated(ctx: Ctx) -> dict[str, Any] | None:
    """The marker as people read it: the time in clinic time (2026/12/08 09:12)."""
    found = isolation.marker(ctx.settings.home)
    if found is None:
        return None
    try:
        since = dt.datetime.fromisoformat(str(found.get("since", "")))
        found["since"] = since.astimezone(JST).strftime("%Y/%m/%d %H:%M")
    except ValueError:
        pass
    return found


@router.post("/admin/continuity/drills")
def record_drill(
    request: Request,
    ctx: Ctx = Depends(requires(P.CONTINUITY_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        data = parse(drills.DrillIn, form, reached=form.get("reached") == "yes")
        drills.record_drill(ctx.session, ctx.actor, data)
    except InvalidInput as exc:
        start_over(request, ctx.session)
        return _page(request, ctx, 422, drill_error=form_error(exc), drill_form=form)
    return go(request, "/admin/continuity#drills")


@router.post("/admin/continuity/bundles/{bundle_id}/close")
def close_bundle(
    request: Request, bundle_id: uuid.UUID, ctx: Ctx = Depends(requires(P.CONTINUITY_ADMIN))
) -> Response:
    """After downtime: the numbers of this bundle no paper came back for are closed as unused."""
    entries.close_unused(ctx.session, ctx.actor, bundle_id)
    return go(request, "/admin/continuity#reconciliation")


@router.post("/admin/continuity/isolation")
def switch_isolation(
    request: Request,
    ctx: Ctx = Depends(requires(P.CONTINUITY_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    """The isolation button (BCP 3-2), with a fresh re-authentication. From another computer
    the next request is refused: isolation leaves only the server's own console."""
    minutes = ctx.settings.auth.reauth_minutes
    lift = form.get("action") == "lift"
    try:
        if lift:
            service.lift_isolation(
                ctx.session, ctx.actor, ctx.settings.home, form.get("reason", ""), minutes
            )
        else:
            service.isolate(
                ctx.session, ctx.actor, ctx.settings.home, form.get("reason", ""), minutes
            )
    except (InvalidInput, ReauthRequired) as exc:
        start_over(request, ctx.session)
        return _page(request, ctx, 422, isolate_error=form_error(exc))
    return go(request, "/admin/continuity#isolation")
