"""院長・管理者 pages for accounts: staff and roles, each account's 2FA status, sessions with
revoke, unlock, factor reset; and the settings in force with the backup status. Sensitive
changes need a fresh re-authentication (``/reauth``)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.auth import admin, integrations, passwords
from mamori.auth import service as auth
from mamori.auth.schemas import IntegrationIn, StaffIn, TokenIn
from mamori.authz.permissions import P
from mamori.authz.roles import ROLE_LABELS_JA, Role
from mamori.backup import service as backups
from mamori.errors import Conflict, InvalidInput, NotAllowed, NotFound, ReauthRequired
from mamori.ui.errors import UiError, form_error
from mamori.ui.forms import Form, form_fields, parse
from mamori.ui.render import go, html
from mamori.web.routing import Ctx, TransactionalRoute, requires, start_over

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

ROLES = [(r.value, ROLE_LABELS_JA[r]) for r in Role]


def _staff_page(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    staff = admin.list_staff(ctx.session, ctx.actor)
    coverage = admin.two_factor_coverage(ctx.session, ctx.actor)
    extra.setdefault("error", None)
    extra.setdefault("form", {})
    extra.setdefault("created", None)
    extra.setdefault("issued", None)
    return html(
        request,
        "admin_staff.html",
        status,
        staff=staff,
        coverage=coverage,
        roles=ROLES,
        tokens=integrations.list_tokens(ctx.session, ctx.actor),
        # who may hold a token: integration accounts, and people with a second factor
        token_holders=[s for s in staff if s.active and (s.kind == "integration" or s.factors)],
        token_permissions=[p for p in P if p not in integrations.NEVER_BY_TOKEN],
        integration_roles=[(r.value, r.label_ja) for r in integrations.INTEGRATION_ROLES],
        **extra,
    )


@router.get("/admin/staff")
def staff(request: Request, ctx: Ctx = Depends(requires(P.STAFF_READ))) -> Response:
    return _staff_page(request, ctx)


def _fail(
    request: Request,
    ctx: Ctx,
    exc: InvalidInput | Conflict | NotAllowed | NotFound | ReauthRequired,
    form: Form,
) -> Response:
    return _staff_page(request, ctx, 422, error=form_error(exc), form=form)


@router.post("/admin/staff")
def create_staff(
    request: Request, ctx: Ctx = Depends(requires(P.STAFF_ADMIN)), form: Form = Depends(form_fields)
) -> Response:
    initial = passwords.generate()
    try:
        body = parse(StaffIn, form, password=initial)
        user = admin.create_staff(
            ctx.session,
            ctx.actor,
            login_id=body.login_id,
            display_name=body.display_name,
            display_kana=body.display_kana,
            role=body.role,
            password=initial,
            expires_at=None,
            birth_date=None,
            reauth_minutes=ctx.settings.auth.reauth_minutes,
        )
    except (InvalidInput, Conflict, ReauthRequired) as exc:
        return _fail(request, ctx, exc, form)
    ctx.session.flush()
    # shown once, to be handed over in person; the account must enrol 2FA at first sign-in
    return _staff_page(request, ctx, created={"login_id": user.login_id, "password": initial})


@router.post("/admin/integrations")
def create_integration(
    request: Request, ctx: Ctx = Depends(requires(P.STAFF_ADMIN)), form: Form = Depends(form_fields)
) -> Response:
    try:
        body = parse(IntegrationIn, form)
        integrations.create_integration(
            ctx.session,
            ctx.actor,
            login_id=body.login_id,
            display_name=body.display_name,
            role=body.role,
            reauth_minutes=ctx.settings.auth.reauth_minutes,
        )
    except (InvalidInput, Conflict, ReauthRequired) as exc:
        return _fail(request, ctx, exc, form)
    return go(request, "/admin/staff#tokens")


@router.post("/admin/tokens")
def issue_token(
    request: Request, ctx: Ctx = Depends(requires(P.STAFF_ADMIN)), form: Form = Depends(form_fields)
) -> Response:
    """Each permission is its own checkbox (``scope:<permission>``); the token is shown once."""
    scope = [k.removeprefix("scope:") for k, v in form.items() if k.startswith("scope:") and v]
    try:
        body = parse(TokenIn, form, scope=scope)
        view, token = integrations.issue(
            ctx.session,
            ctx.actor,
            ctx.settings.token_pepper,
            body.user_id,
            scope=body.scope,
            days=body.days,
            label=body.label,
            reauth_minutes=ctx.settings.auth.reauth_minutes,
        )
    except (InvalidInput, NotAllowed, NotFound, ReauthRequired) as exc:
        return _fail(request, ctx, exc, form)
    ctx.session.flush()
    return _staff_page(request, ctx, issued={"token": token, "view": view})


@router.post("/admin/tokens/{token_id}/revoke")
def revoke_token(
    request: Request, token_id: uuid.UUID, ctx: Ctx = Depends(requires(P.STAFF_ADMIN))
) -> Response:
    integrations.revoke(ctx.session, ctx.actor, token_id)
    return go(request, "/admin/staff#tokens")


@router.post("/admin/staff/{user_id}")
def update_staff(
    request: Request,
    user_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.STAFF_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        role = Role(form["role"]) if form.get("role") else None
        active = {"on": True, "off": False}.get(form.get("active", ""))
        admin.update_staff(
            ctx.session,
            ctx.actor,
            user_id,
            role=role,
            active=active,
            reauth_minutes=ctx.settings.auth.reauth_minutes,
        )
    except ValueError:
        return _fail(request, ctx, InvalidInput("役割を選んでください。", "Choose a role."), form)
    except (InvalidInput, Conflict, ReauthRequired) as exc:
        return _fail(request, ctx, exc, form)
    return go(request, "/admin/staff")


@router.post("/admin/staff/{user_id}/unlock")
def unlock(
    request: Request, user_id: uuid.UUID, ctx: Ctx = Depends(requires(P.SESSION_ADMIN))
) -> Response:
    admin.unlock(ctx.session, ctx.actor, user_id)
    return go(request, "/admin/staff")


@router.post("/admin/staff/{user_id}/reset-factors")
def reset_factors(
    request: Request, user_id: uuid.UUID, ctx: Ctx = Depends(requires(P.STAFF_ADMIN))
) -> Response:
    try:
        admin.reset_factors(
            ctx.session, ctx.actor, user_id, reauth_minutes=ctx.settings.auth.reauth_minutes
        )
    except (Conflict, ReauthRequired) as exc:
        return _fail(request, ctx, exc, {})
    return go(request, "/admin/staff")


@router.get("/admin/staff/{user_id}/sessions")
def staff_sessions(
    request: Request, user_id: uuid.UUID, ctx: Ctx = Depends(requires(P.SESSION_ADMIN))
) -> Response:
    rows = admin.sessions_of(ctx.session, ctx.actor, user_id)
    live = [r for r in rows if r.stage == auth.Stage.FULL and r.revoked_at is None]
    view = (
        admin.staff_view(ctx.session, ctx.actor, user_id) if ctx.actor.can(P.STAFF_READ) else None
    )
    return html(request, "admin_sessions.html", sessions=live, user_id=user_id, person=view)


@router.post("/admin/staff/{user_id}/sessions/revoke")
def revoke_sessions(
    request: Request,
    user_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.SESSION_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        sid = uuid.UUID(form["session_id"]) if form.get("session_id") else None
    except ValueError:
        raise InvalidInput("不正な指定です。", "Invalid session.", field="session_id") from None
    admin.revoke(ctx.session, ctx.actor, user_id, session_id=sid, device_id=None)
    return go(request, f"/admin/staff/{user_id}/sessions")


# --- settings ----------------------------------------------------------------------------------


@router.get("/admin/settings")
def settings_page(request: Request, ctx: Ctx = Depends(requires(P.SYSTEM_HEALTH))) -> Response:
    """Settings in force (read-only here: they live in mamori.toml) and backup status."""
    s = ctx.settings
    return html(
        request,
        "admin_settings.html",
        policy=dataclasses.asdict(s.auth),
        backup=backups.status(s),
        checkpoint_interval=s.checkpoint_interval,
        syslog=s.syslog is not None,
        error=None
        if backups.configured(s)
        else UiError(
            "バックアップが設定されていません（mamori backup keygen と [[backup.targets]]）。",
            "Backups are not configured (mamori backup keygen and [[backup.targets]]).",
        ),
    )
