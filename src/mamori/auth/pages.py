"""Sign-in pages: password, then TOTP / passkey / recovery code, or first-login enrolment;
sign-out, "sign out everywhere", re-authentication, the idle-logoff ping and the language switch.

The steps call the same ``auth.service`` functions as ``/api/v1/auth``; passkey ceremonies run
in the browser (``static/app.js``) against those JSON endpoints directly.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.auth import admin
from mamori.auth import enrolment as auth_enrolment
from mamori.auth import service as auth
from mamori.auth import sessions as auth_sessions
from mamori.authz.permissions import P
from mamori.authz.roles import Role
from mamori.db import utcnow
from mamori.errors import InvalidInput, TooManyAttempts, Unauthenticated
from mamori.ui.errors import UiError, form_error
from mamori.ui.forms import Form, form_fields
from mamori.ui.render import LANG_COOKIE, LANGS, go, html, local_path
from mamori.web.routing import (
    CsrfFailed,
    Ctx,
    SignInCtx,
    TransactionalRoute,
    clear_session_cookie,
    client_of,
    half_session_token,
    public,
    requires,
    set_session_cookies,
    signing_in,
)

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

REASONS = {
    "expired": (
        "一定時間操作がなかったか有効期限が切れたため、ログアウトしました。",
        "You were signed out (idle or session expired).",
    ),
    "idle": (
        "操作がなかったため、自動的にログアウトしました。",
        "You were signed out automatically after a period of inactivity.",
    ),
    "signout": ("ログアウトしました。", "You have signed out."),
    "window": (
        "保守作業の時間枠が終了したため、ログアウトしました。",
        "The maintenance window has ended; you were signed out.",
    ),
    "signin": ("ログインしてください。", "Please sign in."),
}

LANDING = {
    Role.RECEPTION: "/today",
    Role.NURSE: "/today",
    Role.PHYSICIAN: "/today",
    Role.DIRECTOR: "/today",
    Role.SCRIBE: "/patients",
    Role.SECURITY_OFFICER: "/admin/reviews",
    Role.AUDITOR: "/admin/reviews",
    Role.VENDOR: "/admin/settings",
}


@router.get("/login")
def login_page(
    request: Request, reason: str = "", next: str = "/", _: None = Depends(public)
) -> Response:
    msg = REASONS.get(reason)
    notice = UiError(*msg) if msg else None
    return html(request, "login.html", notice=notice, next=local_path(next), form={}, error=None)


@router.post("/login")
def login(
    request: Request,
    ctx: SignInCtx = Depends(signing_in),
    form: Form = Depends(form_fields),
) -> Response:
    nxt = local_path(form.get("next"))
    try:
        code = form.get("clinic_code", "").strip() or None
        if code is not None and not (len(code) == 10 and code.isdigit()):
            raise InvalidInput(
                "医療機関コードは10桁の数字です。",
                "The clinic code has 10 digits.",
                field="clinic_code",
            )
        issued = auth.sign_in(
            ctx.session,
            ctx.settings.token_pepper,
            ctx.settings.auth,
            clinic_code=code,
            login_id=form.get("login_id", "")[:64],
            password=form.get("password", "")[:1024],
            client=ctx.client,
            shared_terminal=form.get("shared_terminal") == "on",
        )
    except (Unauthenticated, TooManyAttempts, InvalidInput) as exc:
        status = 429 if isinstance(exc, TooManyAttempts) else 401
        form.pop("password", None)
        return html(
            request, "login.html", status, form=form, error=form_error(exc), next=nxt, notice=None
        )
    out = go(request, f"/login/second?next={nxt}")
    set_session_cookies(out, ctx.settings, issued.token, issued.device_token)
    return out


@router.get("/login/second")
def second_step(
    request: Request, next: str = "/", ctx: SignInCtx = Depends(signing_in)
) -> Response:
    if not ctx.token:
        return go(request, "/login")
    state = auth.sign_in_status(ctx.session, ctx.settings.token_pepper, ctx.token)
    if state["stage"] == auth.Stage.FULL:
        return go(request, local_path(next))
    if state["stage"] == auth.Stage.NEW_PASSWORD:
        return html(request, "first_password.html", next=local_path(next), error=None)
    template = "enrol.html" if state["stage"] == auth.Stage.ENROL else "factor.html"
    return html(request, template, factors=state["factors"], next=local_path(next), error=None)


@router.post("/login/password")
def first_password(
    request: Request, ctx: SignInCtx = Depends(signing_in), form: Form = Depends(form_fields)
) -> Response:
    """The first sign-in with an initial password: the person's own, then the second factor."""
    nxt = local_path(form.get("next"))
    token = half_session_token(ctx, request)
    try:
        new = form.get("new", "")[:1024]
        if new != form.get("confirm", ""):
            raise InvalidInput(
                "確認のパスワードが一致しません。", "The passwords differ.", field="confirm"
            )
        token, _stage = auth.choose_password(
            ctx.session, ctx.settings.token_pepper, token, new, ctx.client
        )
    except InvalidInput as exc:
        return html(request, "first_password.html", 422, next=nxt, error=form_error(exc))
    except Unauthenticated:
        return go(request, "/login?reason=signin")
    out = go(request, f"/login/second?next={nxt}")
    set_session_cookies(out, ctx.settings, token, None)
    return out


def _factor(request: Request, ctx: SignInCtx, form: Form, kind: str) -> Response:
    nxt = local_path(form.get("next"))
    try:
        token = half_session_token(ctx, request)
        code = form.get("code", "").strip()[:32]
        verify = auth.verify_totp if kind == "totp" else auth.verify_recovery
        new = verify(ctx.session, ctx.settings.token_pepper, token, code, ctx.client)
    except CsrfFailed:
        raise
    except (Unauthenticated, TooManyAttempts) as exc:
        if exc.code == "unauthenticated":  # no half-finished session: start again
            return go(request, "/login?reason=signin")
        status = 429 if isinstance(exc, TooManyAttempts) else 401
        return html(
            request, "_factor_form.html", status, kind=kind, error=form_error(exc), next=nxt
        )
    out = go(request, nxt)
    set_session_cookies(out, ctx.settings, new, None)
    return out


@router.post("/login/totp")
def login_totp(
    request: Request, ctx: SignInCtx = Depends(signing_in), form: Form = Depends(form_fields)
) -> Response:
    return _factor(request, ctx, form, "totp")


@router.post("/login/recovery")
def login_recovery(
    request: Request, ctx: SignInCtx = Depends(signing_in), form: Form = Depends(form_fields)
) -> Response:
    return _factor(request, ctx, form, "recovery")


@router.post("/login/enrol/totp")
def enrol_totp(request: Request, ctx: SignInCtx = Depends(signing_in)) -> Response:
    started = auth_enrolment.enrol_totp_start(
        ctx.session,
        ctx.settings.token_pepper,
        half_session_token(ctx, request),
        reauth_minutes=ctx.settings.auth.reauth_minutes,
    )
    return html(request, "_enrol_totp.html", started=started, error=None)


@router.post("/login/enrol/totp/confirm")
def enrol_totp_confirm(
    request: Request, ctx: SignInCtx = Depends(signing_in), form: Form = Depends(form_fields)
) -> Response:
    token = half_session_token(ctx, request)
    try:
        new, codes = auth_enrolment.enrol_totp_confirm(
            ctx.session,
            ctx.settings.token_pepper,
            token,
            form.get("code", "")[:32],
            ctx.client,
            reauth_minutes=ctx.settings.auth.reauth_minutes,
        )
    except (Unauthenticated, TooManyAttempts) as exc:
        # the pending seed is kept: show the confirmation form again
        return html(request, "_enrol_confirm.html", 401, error=form_error(exc))
    out = html(request, "_recovery_codes.html", codes=codes, next=local_path(form.get("next")))
    if new:
        set_session_cookies(out, ctx.settings, new, None)
    return out


@router.post("/logout")
def logout(ctx: Ctx = Depends(requires(P.SELF))) -> Response:
    auth_sessions.logout(ctx.session, ctx.actor)
    out = Response(status_code=204, headers={"HX-Redirect": "/login?reason=signout"})
    clear_session_cookie(out, ctx.settings)
    return out


@router.get("/logout/idle")
def idle_logout(request: Request, _: None = Depends(public)) -> Response:
    """Where the page's idle timer sends the browser: the server ends the session itself when
    it sees the next request (``end_expired``); this only forgets the cookie and says why."""
    settings = request.app.state.settings
    out = go(request, "/login?reason=idle")
    clear_session_cookie(out, settings)
    return out


@router.get("/session/ping")
def ping(ctx: Ctx = Depends(requires(P.SELF))) -> Response:
    """The idle warning's "stay signed in": a request, so the idle timer starts again."""
    return Response(status_code=204)


@router.get("/lang/{lang}")
def set_lang(request: Request, lang: str, next: str = "/", _: None = Depends(public)) -> Response:
    out = Response(status_code=303, headers={"location": local_path(next)})
    if lang in LANGS:
        out.set_cookie(LANG_COOKIE, lang, max_age=400 * 24 * 3600, samesite="strict", path="/")
    return out


@router.get("/")
def home(request: Request, ctx: Ctx = Depends(requires(P.SELF))) -> Response:
    return go(request, LANDING.get(ctx.actor.role, "/account"))


# --- my account ---------------------------------------------------------------------------------


def _account(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    rows = admin.sessions_of(ctx.session, ctx.actor, ctx.actor.user_id)
    sessions = [r for r in rows if r.stage == auth.Stage.FULL and r.revoked_at is None]
    factors = auth.factor_kinds(ctx.session, ctx.actor.user_id)
    extra.setdefault("error", None)
    extra.setdefault("notice", None)
    return html(request, "account.html", status, sessions=sessions, factors=factors, **extra)


@router.get("/account")
def account(request: Request, ctx: Ctx = Depends(requires(P.SELF))) -> Response:
    return _account(request, ctx)


@router.post("/account/revoke")
def revoke(
    request: Request, ctx: Ctx = Depends(requires(P.SELF)), form: Form = Depends(form_fields)
) -> Response:
    """One session, or "sign out everywhere" (this browser included)."""
    everything = form.get("everything") == "on"
    try:
        sid = None if everything else uuid.UUID(form.get("session_id", ""))
    except ValueError:
        return _account(request, ctx, 422, error=UiError("不正な指定です。", "Invalid session."))
    admin.revoke(ctx.session, ctx.actor, ctx.actor.user_id, session_id=sid, device_id=None)
    if everything or sid == ctx.actor.session_id:
        out = go(request, "/login?reason=signout")
        clear_session_cookie(out, ctx.settings)
        return out
    return go(request, "/account")


@router.post("/account/password")
def change_password(
    request: Request, ctx: Ctx = Depends(requires(P.SELF)), form: Form = Depends(form_fields)
) -> Response:
    try:
        if form.get("new", "") != form.get("confirm", ""):
            raise InvalidInput(
                "新しいパスワードが確認欄と一致しません。",
                "The new password and its confirmation differ.",
                field="confirm",
            )
        auth.change_password(
            ctx.session,
            ctx.actor,
            current=form.get("current", "")[:1024],
            new=form.get("new", "")[:1024],
            client=client_of(request, ctx.settings),
        )
    except (InvalidInput, Unauthenticated, TooManyAttempts) as exc:
        return _account(request, ctx, 422, error=form_error(exc))
    return _account(request, ctx, notice=UiError("パスワードを変更しました。", "Password changed."))


@router.post("/reauth")
def reauth(
    request: Request, ctx: Ctx = Depends(requires(P.SELF)), form: Form = Depends(form_fields)
) -> Response:
    """Password and second factor again before a sensitive action (staff, roles, windows)."""
    try:
        reauthenticate(request, ctx, form)
    except (Unauthenticated, TooManyAttempts) as exc:
        return html(request, "_reauth.html", 401, error=form_error(exc))
    return html(request, "_reauth_done.html")


def reauthenticate(request: Request, ctx: Ctx, form: Form) -> Ctx:
    """Checks password + TOTP code from ``form``; the returned ctx's actor counts as recently
    re-authenticated for the rest of the request."""
    auth_sessions.reauthenticate(
        ctx.session,
        ctx.settings.token_pepper,
        ctx.settings.auth,
        ctx.actor,
        password=form.get("password", "")[:1024],
        code=form.get("code", "").strip()[:32] or None,
        credential=None,
        client=client_of(request, ctx.settings),
    )
    return dataclasses.replace(ctx, actor=dataclasses.replace(ctx.actor, reauth_at=utcnow()))
