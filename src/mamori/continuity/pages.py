"""The director's continuity page: the standby keys and when the last downtime bundle reached
each destination (the bundles themselves are written by ``mamori downtime bundle``)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.authz.permissions import P
from mamori.clinic.service import staff_names
from mamori.continuity import service
from mamori.continuity.entries import reconciliation
from mamori.ui.render import html
from mamori.web.routing import Ctx, TransactionalRoute, requires

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)


@router.get("/admin/continuity")
def continuity_page(request: Request, ctx: Ctx = Depends(requires(P.CONTINUITY_ADMIN))) -> Response:
    keys = service.live_keys(ctx.session, ctx.actor)
    written = service.bundles(ctx.session, ctx.actor)
    last: dict[str, object] = {}
    for b in written:  # newest first: the first seen per destination is its latest
        for place in json.loads(b.destinations):
            last.setdefault(place, b)
    return html(
        request,
        "admin_continuity.html",
        keys=keys,
        bundles=written[:10],
        last=sorted(last.items()),
        names=staff_names(ctx.session, ctx.actor),
        reconciled=reconciliation(ctx.session, ctx.actor)[:10],
    )
