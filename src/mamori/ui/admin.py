"""院長・管理者 pages: staff accounts and roles, each account's 2FA status, sessions with revoke,
unlock, access reviews (break-the-glass and other alerts, vendor windows, who opened a
patient, what a user opened, recorded reviews as checklist evidence) and the settings and
backup status. Sensitive changes need a fresh re-authentication (``/reauth``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.audit import review
from mamori.auth import admin, passwords
from mamori.auth import service as auth
from mamori.auth.api import StaffIn, WindowIn
from mamori.authz.permissions import P
from mamori.backup import service as backups
from mamori.clinic.calendar import JST
from mamori.clinic.models import ROLE_LABELS_JA, Role
from mamori.clinic.service import staff_names
from mamori.errors import Conflict, InvalidInput, ReauthRequired
from mamori.ui.errors import UiError, form_error
from mamori.ui.forms import Form, form_fields, parse
from mamori.ui.render import go, html
from mamori.web.routing import Ctx, TransactionalRoute, requires, start_over

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

ROLES = [(r.value, ROLE_LABELS_JA[r]) for r in Role]
ALERT_KINDS = {
    "break-glass": ("緊急時アクセス（ブレークグラス）", "Break-the-glass"),
    "restricted-opened": ("閲覧制限患者の閲覧", "Restricted patient opened"),
    "lockout": ("アカウントロック", "Account locked"),
    "new-device": ("新しい端末からのログイン", "Sign-in from a new device"),
}
WINDOW_LABELS = {
    "vendor_user_id": "業者 / vendor",
    "ticket": "作業票番号 / ticket",
    "reason": "理由 / reason",
    "minutes": "時間（分） / minutes",
}


def _staff_page(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    staff = admin.list_staff(ctx.session, ctx.actor)
    coverage = admin.two_factor_coverage(ctx.session, ctx.actor)
    extra.setdefault("error", None)
    extra.setdefault("form", {})
    extra.setdefault("created", None)
    return html(
        request, "admin_staff.html", status, staff=staff, coverage=coverage, roles=ROLES, **extra
    )


@router.get("/admin/staff")
def staff(request: Request, ctx: Ctx = Depends(requires(P.STAFF_READ))) -> Response:
    return _staff_page(request, ctx)


def _fail(
    request: Request, ctx: Ctx, exc: InvalidInput | Conflict | ReauthRequired, form: Form
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


# --- reviews -------------------------------------------------------------------------------------


def _reviews_page(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    windows_admin = ctx.actor.can(P.VENDOR_WINDOW_ADMIN)
    extra.setdefault("error", None)
    extra.setdefault("form", {})
    return html(
        request,
        "admin_reviews.html",
        status,
        state=review.review_status(ctx.session, ctx.actor),
        alerts=admin.list_alerts(ctx.session, ctx.actor, open_only=True),
        windows=admin.list_vendor_windows(ctx.session, ctx.actor) if windows_admin else [],
        vendors=[
            v
            for v in admin.list_staff(ctx.session, ctx.actor)
            if v.role == Role.VENDOR.value and v.active
        ]
        if windows_admin
        else [],
        reviews=review.list_reviews(ctx.session, ctx.actor, limit=20),
        names=staff_names(ctx.session, ctx.actor),
        kinds=ALERT_KINDS,
        now=dt.datetime.now(dt.UTC),
        max_window_minutes=admin.MAX_WINDOW_HOURS * 60,
        **extra,
    )


@router.get("/admin/reviews")
def reviews(request: Request, ctx: Ctx = Depends(requires(P.AUDIT_READ))) -> Response:
    return _reviews_page(request, ctx)


@router.post("/admin/alerts/{alert_id}/review")
def review_alert(
    request: Request,
    alert_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.AUDIT_REVIEW)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        admin.review_alert(
            ctx.session,
            ctx.actor,
            alert_id,
            outcome=form.get("outcome", ""),
            finding=form.get("finding", "")[:1000],
        )
    except (InvalidInput, Conflict) as exc:
        return _reviews_page(request, ctx, 422, error=form_error(exc))
    return go(request, "/admin/reviews")


@router.post("/admin/reviews")
def record_review(
    request: Request,
    ctx: Ctx = Depends(requires(P.AUDIT_REVIEW)),
    form: Form = Depends(form_fields),
) -> Response:
    """The periodic log review, done: the MHLW checklist's evidence of log review."""
    try:
        review.record_review(
            ctx.session,
            ctx.actor,
            scope="period",
            subject_id=None,
            outcome=form.get("outcome", ""),
            finding=form.get("finding", "")[:1000],
        )
    except InvalidInput as exc:
        return _reviews_page(request, ctx, 422, error=form_error(exc))
    return go(request, "/admin/reviews")


@router.post("/admin/vendor-windows")
def open_window(
    request: Request,
    ctx: Ctx = Depends(requires(P.VENDOR_WINDOW_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    """A maintenance window for a vendor account: the only time it can sign in (and then it
    reads, never writes). Opening one needs a fresh re-authentication."""
    try:
        body = parse(WindowIn, form)
        admin.open_vendor_window(
            ctx.session,
            ctx.actor,
            vendor_user_id=body.vendor_user_id,
            ticket=body.ticket,
            reason=body.reason,
            starts_at=None,
            minutes=body.minutes,
            reauth_minutes=ctx.settings.auth.reauth_minutes,
        )
    except (InvalidInput, ReauthRequired) as exc:
        return _reviews_page(request, ctx, 422, error=form_error(exc, WINDOW_LABELS), form=form)
    return go(request, "/admin/reviews#windows")


@router.post("/admin/vendor-windows/{window_id}/close")
def close_window(
    request: Request, window_id: uuid.UUID, ctx: Ctx = Depends(requires(P.VENDOR_WINDOW_ADMIN))
) -> Response:
    admin.close_vendor_window(ctx.session, ctx.actor, window_id)
    return go(request, "/admin/reviews#windows")


@router.get("/admin/vendor-windows/{window_id}")
def window_report(
    request: Request, window_id: uuid.UUID, ctx: Ctx = Depends(requires(P.VENDOR_WINDOW_ADMIN))
) -> Response:
    """What the vendor's account did inside the window, from the audit trail: the report the
    director acknowledges afterwards."""
    report = admin.vendor_window_report(ctx.session, ctx.actor, window_id)
    return html(
        request,
        "admin_window.html",
        report=report,
        tag_ja=review.tag_ja,
        names=staff_names(ctx.session, ctx.actor),
        now=dt.datetime.now(dt.UTC),
    )


@router.post("/admin/vendor-windows/{window_id}/acknowledge")
def acknowledge_window(
    request: Request,
    window_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.STAFF_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        admin.acknowledge_vendor_window(ctx.session, ctx.actor, window_id, form.get("note", ""))
    except Conflict as exc:
        return _reviews_page(request, ctx, 422, error=form_error(exc))
    return go(request, "/admin/reviews")


def _when(raw: str) -> dt.datetime | None:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(raw), dt.time(), JST) if raw else None
    except ValueError:
        raise InvalidInput("日付が正しくありません。", "Invalid date.", field="since") from None


@router.get("/admin/reviews/patients/{patient_id}")
def who_opened(
    request: Request,
    patient_id: uuid.UUID,
    since: str = "",
    until: str = "",
    user: str = "",
    action: str = "",
    ctx: Ctx = Depends(requires(P.AUDIT_READ)),
) -> Response:
    """この患者を誰が見たか: filter by period, staff member and action."""
    end = _when(until)
    rows = review.who_opened(
        ctx.session,
        ctx.actor,
        patient_id,
        since=_when(since),
        until=end + dt.timedelta(days=1) if end else None,
    )
    people = sorted({(r.user_id or "", r.user_name) for r in rows}, key=lambda x: x[1])
    actions = sorted({r.tag for r in rows})
    shown = [r for r in rows if (not user or r.user_id == user) and (not action or r.tag == action)]
    return html(
        request,
        "admin_accesses.html",
        rows=shown,
        scope="patient",
        subject=patient_id,
        filters={"since": since, "until": until, "user": user, "action": action},
        people=people,
        actions=actions,
        tag_ja=review.tag_ja,
    )


@router.get("/admin/reviews/users/{user_id}")
def what_user_opened(
    request: Request,
    user_id: uuid.UUID,
    since: str = "",
    until: str = "",
    ctx: Ctx = Depends(requires(P.AUDIT_READ)),
) -> Response:
    end = _when(until)
    rows = review.what_user_opened(
        ctx.session,
        ctx.actor,
        user_id,
        since=_when(since),
        until=end + dt.timedelta(days=1) if end else None,
    )
    return html(
        request,
        "admin_accesses.html",
        rows=rows,
        scope="user",
        subject=user_id,
        filters={"since": since, "until": until, "user": "", "action": ""},
        people=[],
        actions=[],
        tag_ja=review.tag_ja,
    )


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
