"""Sign-in, sessions and administration over HTTP (JSON). The web pages (``auth/pages.py``,
``auth/admin_pages.py``) call the same services; nothing here reads a table."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from mamori.auth import admin, integrations
from mamori.auth import enrolment as auth_enrolment
from mamori.auth import service as auth
from mamori.auth import sessions as auth_sessions
from mamori.auth.schemas import (
    AckIn,
    AlertOut,
    AlertReviewIn,
    BreakGlassIn,
    BreakGlassOut,
    CodeIn,
    CoverageOut,
    CredentialIn,
    InitialPasswordIn,
    IntegrationIn,
    LoginIn,
    PasswordIn,
    ReauthIn,
    RestrictionIn,
    RestrictionOut,
    RevokedOut,
    RevokeIn,
    SessionOut,
    SignInOut,
    StaffIn,
    StaffUpdate,
    TokenIn,
    TokenIssuedOut,
    UnlockOut,
    WindowIn,
    WindowOut,
)
from mamori.authz.permissions import P
from mamori.errors import InvalidInput, Unauthenticated
from mamori.restrictions import service as restrictions
from mamori.web.routing import (
    Ctx,
    SignInCtx,
    TransactionalRoute,
    clear_session_cookie,
    client_of,
    half_session_token,
    requires,
    session_cookie,
    set_session_cookies,
    signing_in,
)

router = APIRouter(prefix="/api/v1/auth", route_class=TransactionalRoute, tags=["auth"])
admin_router = APIRouter(prefix="/api/v1/admin", route_class=TransactionalRoute, tags=["admin"])


def _out(ctx: SignInCtx, token: str, stage: str, codes: list[str] | None = None) -> SignInOut:
    row_factors = auth.sign_in_status(ctx.session, ctx.settings.token_pepper, token)["factors"]
    return SignInOut(
        stage=stage,
        factors=row_factors,
        csrf_token=auth.csrf_token(ctx.settings.token_pepper, token),
        recovery_codes=codes or [],
    )


@router.post("/login", response_model=SignInOut)
def login(body: LoginIn, response: Response, ctx: SignInCtx = Depends(signing_in)) -> SignInOut:
    issued = auth.sign_in(
        ctx.session,
        ctx.settings.token_pepper,
        ctx.settings.auth,
        clinic_code=body.clinic_code,
        login_id=body.login_id,
        password=body.password,
        client=ctx.client,
        shared_terminal=body.shared_terminal,
    )
    set_session_cookies(response, ctx.settings, issued.token, issued.device_token)
    return _out(ctx, issued.token, issued.row.stage)


@router.post("/password/initial", response_model=SignInOut)
def initial_password(
    body: InitialPasswordIn,
    request: Request,
    response: Response,
    ctx: SignInCtx = Depends(signing_in),
) -> SignInOut:
    """After signing in with an initial password: the person's own (the policy applied),
    then enrolment or the second factor."""
    pending = half_session_token(ctx, request)
    token, stage = auth.choose_password(
        ctx.session, ctx.settings.token_pepper, pending, body.password, ctx.client
    )
    set_session_cookies(response, ctx.settings, token, None)
    return _out(ctx, token, stage)


@router.get("/status", response_model=SignInOut)
def status(ctx: SignInCtx = Depends(signing_in)) -> SignInOut:
    if not ctx.token:
        raise Unauthenticated()
    state = auth.sign_in_status(ctx.session, ctx.settings.token_pepper, ctx.token)
    return _out(ctx, ctx.token, state["stage"])


@router.post("/totp", response_model=SignInOut)
def totp(
    body: CodeIn, request: Request, response: Response, ctx: SignInCtx = Depends(signing_in)
) -> SignInOut:
    pending = half_session_token(ctx, request)
    token = auth.verify_totp(ctx.session, ctx.settings.token_pepper, pending, body.code, ctx.client)
    set_session_cookies(response, ctx.settings, token, None)
    return _out(ctx, token, auth.Stage.FULL)


@router.post("/recovery", response_model=SignInOut)
def recovery(
    body: CodeIn, request: Request, response: Response, ctx: SignInCtx = Depends(signing_in)
) -> SignInOut:
    pending = half_session_token(ctx, request)
    token = auth.verify_recovery(
        ctx.session, ctx.settings.token_pepper, pending, body.code, ctx.client
    )
    set_session_cookies(response, ctx.settings, token, None)
    return _out(ctx, token, auth.Stage.FULL)


@router.post("/webauthn/options")
def webauthn_options(request: Request, ctx: SignInCtx = Depends(signing_in)) -> dict[str, Any]:
    return auth.webauthn_options(
        ctx.session, ctx.settings.token_pepper, ctx.settings.auth, half_session_token(ctx, request)
    )


@router.post("/webauthn", response_model=SignInOut)
def webauthn(
    body: CredentialIn, request: Request, response: Response, ctx: SignInCtx = Depends(signing_in)
) -> SignInOut:
    token = auth.verify_webauthn(
        ctx.session,
        ctx.settings.token_pepper,
        ctx.settings.auth,
        half_session_token(ctx, request),
        body.credential,
        ctx.client,
    )
    set_session_cookies(response, ctx.settings, token, None)
    return _out(ctx, token, auth.Stage.FULL)


@router.post("/enrol/totp")
def enrol_totp(request: Request, ctx: SignInCtx = Depends(signing_in)) -> dict[str, str]:
    pending = half_session_token(ctx, request)
    return auth_enrolment.enrol_totp_start(
        ctx.session,
        ctx.settings.token_pepper,
        pending,
        reauth_minutes=ctx.settings.auth.reauth_minutes,
    )


@router.post("/enrol/totp/confirm", response_model=SignInOut)
def enrol_totp_confirm(
    body: CodeIn, request: Request, response: Response, ctx: SignInCtx = Depends(signing_in)
) -> SignInOut:
    token = half_session_token(ctx, request)
    new, codes = auth_enrolment.enrol_totp_confirm(
        ctx.session,
        ctx.settings.token_pepper,
        token,
        body.code,
        ctx.client,
        reauth_minutes=ctx.settings.auth.reauth_minutes,
    )
    if new:
        set_session_cookies(response, ctx.settings, new, None)
    return _out(ctx, new or token, auth.Stage.FULL, codes)


@router.post("/enrol/webauthn/options")
def enrol_webauthn_options(
    request: Request, ctx: SignInCtx = Depends(signing_in)
) -> dict[str, Any]:
    return auth_enrolment.enrol_webauthn_options(
        ctx.session,
        ctx.settings.token_pepper,
        ctx.settings.auth,
        half_session_token(ctx, request),
        reauth_minutes=ctx.settings.auth.reauth_minutes,
    )


@router.post("/enrol/webauthn", response_model=SignInOut)
def enrol_webauthn(
    body: CredentialIn, request: Request, response: Response, ctx: SignInCtx = Depends(signing_in)
) -> SignInOut:
    token = half_session_token(ctx, request)
    new, codes = auth_enrolment.enrol_webauthn_verify(
        ctx.session,
        ctx.settings.token_pepper,
        ctx.settings.auth,
        token,
        body.credential,
        body.label,
        ctx.client,
        reauth_minutes=ctx.settings.auth.reauth_minutes,
    )
    if new:
        set_session_cookies(response, ctx.settings, new, None)
    return _out(ctx, new or token, auth.Stage.FULL, codes)


# --- signed in ---------------------------------------------------------------------------------


def _client(request: Request, ctx: Ctx) -> auth.Client:
    return client_of(request, ctx.settings)


@router.post("/logout", status_code=204)
def logout(response: Response, ctx: Ctx = Depends(requires(P.SELF))) -> Response:
    auth_sessions.logout(ctx.session, ctx.actor)
    out = Response(status_code=204)
    clear_session_cookie(out, ctx.settings)
    return out


@router.post("/reauth/webauthn/options")
def reauth_options(request: Request, ctx: Ctx = Depends(requires(P.SELF))) -> dict[str, Any]:
    token = request.cookies.get(session_cookie(ctx.settings), "")
    return auth.webauthn_options(ctx.session, ctx.settings.token_pepper, ctx.settings.auth, token)


@router.post("/reauth", status_code=204)
def reauth(body: ReauthIn, request: Request, ctx: Ctx = Depends(requires(P.SELF))) -> Response:
    auth_sessions.reauthenticate(
        ctx.session,
        ctx.settings.token_pepper,
        ctx.settings.auth,
        ctx.actor,
        password=body.password,
        code=body.code,
        credential=body.credential,
        client=_client(request, ctx),
    )
    return Response(status_code=204)


@router.post("/password", status_code=204)
def change_password(
    body: PasswordIn, request: Request, ctx: Ctx = Depends(requires(P.SELF))
) -> Response:
    auth.change_password(
        ctx.session, ctx.actor, current=body.current, new=body.new, client=_client(request, ctx)
    )
    return Response(status_code=204)


def _sessions_out(rows: Any, current: uuid.UUID | None) -> list[SessionOut]:
    return [
        SessionOut(
            id=r.id,
            device_id=r.device_id,
            created_at=r.created_at,
            last_seen_at=r.last_seen_at,
            expires_at=r.expires_at,
            second_factor=r.second_factor,
            shared_terminal=r.shared_terminal,
            source_ip=r.source_ip,
            user_agent=r.user_agent,
            current=r.id == current,
        )
        for r in rows
        if r.stage == auth.Stage.FULL
    ]


@router.get("/sessions", response_model=list[SessionOut])
def my_sessions(ctx: Ctx = Depends(requires(P.SELF))) -> list[SessionOut]:
    rows = admin.sessions_of(ctx.session, ctx.actor, ctx.actor.user_id)
    return _sessions_out(rows, ctx.actor.session_id)


@router.post("/sessions/revoke", response_model=RevokedOut)
def revoke_mine(body: RevokeIn, ctx: Ctx = Depends(requires(P.SELF))) -> RevokedOut:
    """One session, every session on one device ("I lost the tablet"), or everything."""
    if not body.everything and body.session_id is None and body.device_id is None:
        raise InvalidInput(
            "取り消すセッションを指定してください。",
            "Say which sessions to revoke.",
            field="session_id",
        )
    n = admin.revoke(
        ctx.session,
        ctx.actor,
        ctx.actor.user_id,
        session_id=body.session_id,
        device_id=body.device_id,
    )
    return RevokedOut(revoked=n)


# --- break-the-glass (on the patient) ----------------------------------------------------------


patients_router = APIRouter(prefix="/api/v1", route_class=TransactionalRoute, tags=["patients"])


@patients_router.post("/patients/{patient_id}/break-glass", response_model=BreakGlassOut)
def break_glass(
    patient_id: uuid.UUID, body: BreakGlassIn, ctx: Ctx = Depends(requires(P.BREAK_GLASS))
) -> BreakGlassOut:
    grant = restrictions.break_glass(
        ctx.session,
        ctx.actor,
        patient_id,
        reason_code=body.reason_code,
        reason_text=body.reason_text,
        minutes=ctx.settings.auth.break_glass_minutes,
        reauth_minutes=ctx.settings.auth.reauth_minutes,
    )
    return BreakGlassOut(grant_id=grant.id, expires_at=grant.expires_at)


@patients_router.put("/patients/{patient_id}/restriction", response_model=RestrictionOut)
def set_restriction(
    patient_id: uuid.UUID, body: RestrictionIn, ctx: Ctx = Depends(requires(P.RESTRICTION_ADMIN))
) -> RestrictionOut:
    row = restrictions.set_flags(
        ctx.session, ctx.actor, patient_id, vip=body.vip, sensitive=body.sensitive
    )
    return RestrictionOut(staff=row.staff, vip=row.vip, sensitive=row.sensitive)


# --- administration ----------------------------------------------------------------------------


@admin_router.get("/staff", response_model=list[admin.StaffView])
def list_staff(ctx: Ctx = Depends(requires(P.STAFF_READ))) -> object:
    return admin.list_staff(ctx.session, ctx.actor)


@admin_router.post("/staff", status_code=201, response_model=admin.StaffView)
def create_staff(body: StaffIn, ctx: Ctx = Depends(requires(P.STAFF_ADMIN))) -> object:
    user = admin.create_staff(
        ctx.session,
        ctx.actor,
        login_id=body.login_id,
        display_name=body.display_name,
        display_kana=body.display_kana,
        role=body.role,
        password=body.password,
        expires_at=body.expires_at,
        birth_date=body.birth_date,
        reauth_minutes=ctx.settings.auth.reauth_minutes,
    )
    return admin.staff_view(ctx.session, ctx.actor, user.id)


@admin_router.post("/integrations", status_code=201, response_model=admin.StaffView)
def create_integration(body: IntegrationIn, ctx: Ctx = Depends(requires(P.STAFF_ADMIN))) -> object:
    user = integrations.create_integration(
        ctx.session,
        ctx.actor,
        login_id=body.login_id,
        display_name=body.display_name,
        role=body.role,
        reauth_minutes=ctx.settings.auth.reauth_minutes,
    )
    return admin.staff_view(ctx.session, ctx.actor, user.id)


@admin_router.get("/tokens", response_model=list[integrations.TokenView])
def list_tokens(ctx: Ctx = Depends(requires(P.STAFF_READ))) -> object:
    return integrations.list_tokens(ctx.session, ctx.actor)


@admin_router.post("/tokens", status_code=201, response_model=TokenIssuedOut)
def issue_token(body: TokenIn, ctx: Ctx = Depends(requires(P.STAFF_ADMIN))) -> object:
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
    return TokenIssuedOut(token=token, details=view)


@admin_router.post("/tokens/{token_id}/revoke", response_model=integrations.TokenView)
def revoke_token(token_id: uuid.UUID, ctx: Ctx = Depends(requires(P.STAFF_ADMIN))) -> object:
    return integrations.revoke(ctx.session, ctx.actor, token_id)


@admin_router.put("/staff/{user_id}", response_model=admin.StaffView)
def update_staff(
    user_id: uuid.UUID, body: StaffUpdate, ctx: Ctx = Depends(requires(P.STAFF_ADMIN))
) -> object:
    admin.update_staff(
        ctx.session,
        ctx.actor,
        user_id,
        role=body.role,
        active=body.active,
        expires_at=body.expires_at,
        clear_expiry=body.clear_expiry,
        display_kana=body.display_kana,
        birth_date=body.birth_date,
        reauth_minutes=ctx.settings.auth.reauth_minutes,
    )
    return admin.staff_view(ctx.session, ctx.actor, user_id)


@admin_router.post("/staff/{user_id}/unlock", response_model=UnlockOut)
def unlock(user_id: uuid.UUID, ctx: Ctx = Depends(requires(P.SESSION_ADMIN))) -> UnlockOut:
    return UnlockOut(unlocked=admin.unlock(ctx.session, ctx.actor, user_id))


@admin_router.post("/staff/{user_id}/reset-factors", response_model=RevokedOut)
def reset_factors(user_id: uuid.UUID, ctx: Ctx = Depends(requires(P.STAFF_ADMIN))) -> RevokedOut:
    n = admin.reset_factors(
        ctx.session, ctx.actor, user_id, reauth_minutes=ctx.settings.auth.reauth_minutes
    )
    return RevokedOut(revoked=n)


@admin_router.get("/staff/{user_id}/sessions", response_model=list[SessionOut])
def staff_sessions(
    user_id: uuid.UUID, ctx: Ctx = Depends(requires(P.SESSION_ADMIN))
) -> list[SessionOut]:
    return _sessions_out(admin.sessions_of(ctx.session, ctx.actor, user_id), None)


@admin_router.post("/staff/{user_id}/sessions/revoke", response_model=RevokedOut)
def revoke_staff_sessions(
    user_id: uuid.UUID, body: RevokeIn, ctx: Ctx = Depends(requires(P.SESSION_ADMIN))
) -> RevokedOut:
    n = admin.revoke(
        ctx.session, ctx.actor, user_id, session_id=body.session_id, device_id=body.device_id
    )
    return RevokedOut(revoked=n)


@admin_router.post("/vendor-windows", status_code=201, response_model=WindowOut)
def open_window(body: WindowIn, ctx: Ctx = Depends(requires(P.VENDOR_WINDOW_ADMIN))) -> object:
    return admin.open_vendor_window(
        ctx.session,
        ctx.actor,
        vendor_user_id=body.vendor_user_id,
        ticket=body.ticket,
        reason=body.reason,
        starts_at=body.starts_at,
        minutes=body.minutes,
        reauth_minutes=ctx.settings.auth.reauth_minutes,
    )


@admin_router.get("/vendor-windows", response_model=list[WindowOut])
def list_windows(ctx: Ctx = Depends(requires(P.VENDOR_WINDOW_ADMIN))) -> object:
    return admin.list_vendor_windows(ctx.session, ctx.actor)


@admin_router.post("/vendor-windows/{window_id}/close", response_model=WindowOut)
def close_window(
    window_id: uuid.UUID, ctx: Ctx = Depends(requires(P.VENDOR_WINDOW_ADMIN))
) -> object:
    return admin.close_vendor_window(ctx.session, ctx.actor, window_id)


@admin_router.get("/vendor-windows/{window_id}/report")
def window_report(
    window_id: uuid.UUID, ctx: Ctx = Depends(requires(P.VENDOR_WINDOW_ADMIN))
) -> dict[str, Any]:
    report = admin.vendor_window_report(ctx.session, ctx.actor, window_id)
    report["window"] = WindowOut.model_validate(report["window"]).model_dump(mode="json")
    return report


@admin_router.post("/vendor-windows/{window_id}/acknowledge", response_model=WindowOut)
def acknowledge_window(
    window_id: uuid.UUID, body: AckIn, ctx: Ctx = Depends(requires(P.STAFF_ADMIN))
) -> object:
    return admin.acknowledge_vendor_window(ctx.session, ctx.actor, window_id, body.note)


@admin_router.get("/alerts", response_model=list[AlertOut])
def list_alerts(open_only: bool = True, ctx: Ctx = Depends(requires(P.AUDIT_READ))) -> object:
    return admin.list_alerts(ctx.session, ctx.actor, open_only=open_only)


@admin_router.post("/alerts/{alert_id}/review", response_model=AlertOut)
def review_alert(
    alert_id: uuid.UUID, body: AlertReviewIn, ctx: Ctx = Depends(requires(P.AUDIT_REVIEW))
) -> object:
    return admin.review_alert(
        ctx.session, ctx.actor, alert_id, outcome=body.outcome, finding=body.finding
    )


@admin_router.get("/two-factor", response_model=CoverageOut)
def two_factor(ctx: Ctx = Depends(requires(P.STAFF_READ))) -> CoverageOut:
    """CL-2-10 evidence: active accounts with a second factor."""
    return CoverageOut(**admin.two_factor_coverage(ctx.session, ctx.actor))
