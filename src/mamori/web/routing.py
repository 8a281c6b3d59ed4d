"""The HTTP edge's guards and transaction handling.

* Every route depends on exactly one guard: :func:`requires` (a signed-in person holding one
  :class:`~mamori.authz.permissions.Permission`), :func:`signing_in` (the sign-in steps, which
  work on a half-finished session) or :func:`public`. ``check_route_guards`` refuses to start
  the app if a route has none, and the route → permission table is pinned by a test.
* Sign-in is a server-side session cookie (HttpOnly, Secure, SameSite=Strict) reached only with
  both factors, or an API token for integrations. Cookie requests that change state must carry
  the session's CSRF token in ``X-CSRF-Token``; any request with a foreign ``Origin`` is refused.
* :class:`TransactionalRoute` commits the request's session *after* the endpoint has built its
  response and *before* anything is sent, so a client never receives an acknowledgement for a
  write that is not durable, and reads are answered only once whatever they recorded is stored.
  Denials (a missing permission, break-the-glass needed, another clinic's ID) roll the request
  back and are then recorded in the audit trail in a transaction of their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import hmac
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mamori.audit.models import AuditEvent, AuditEventUser
from mamori.audit.trail import AuditTag, defer_release, record, release
from mamori.auth import service as auth
from mamori.auth import sessions as auth_sessions
from mamori.auth.models import SecurityAlert
from mamori.auth.tokens import authenticate_token
from mamori.authz.actor import Actor
from mamori.authz.gate import CROSS_CLINIC
from mamori.authz.permissions import Permission
from mamori.db import utcnow
from mamori.documents.store import DocumentStore
from mamori.errors import (
    BreakGlassRequired,
    Forbidden,
    Isolated,
    MamoriError,
    ReadOnlyCopy,
    RecordIntegrityFailed,
    Unauthenticated,
)
from mamori.settings import Settings

GUARD_ATTR = "mamori_guard"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def session_cookie(settings: Settings) -> str:
    # the __Host- prefix pins the cookie to this host, path / and HTTPS
    return "__Host-mamori_session" if settings.auth.secure_cookies else "mamori_session"


def device_cookie(settings: Settings) -> str:
    return "__Host-mamori_device" if settings.auth.secure_cookies else "mamori_device"


@dataclass
class Ctx:
    """What an endpoint gets: the request's session, the signed-in actor, and the stores."""

    session: Session
    actor: Actor
    settings: Settings
    store: DocumentStore


def client_of(request: Request, settings: Settings) -> auth.Client:
    return auth.Client(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent", "")[:300],
        device_token=request.cookies.get(device_cookie(settings)),
    )


class CsrfFailed(MamoriError):
    status = 403
    code = "csrf_failed"

    def __init__(self) -> None:
        super().__init__(
            "不正なリクエストです（CSRF 検証に失敗しました）。画面を読み込み直してください。",
            "Request refused: the CSRF check failed. Reload the page.",
        )


def channel_of(path: str) -> str:
    """The edge a request came through, recorded in its audit events."""
    if path.startswith("/fhir/"):
        return "fhir"
    return "api" if path.startswith("/api/") else "web"


def check_origin(request: Request, settings: Settings) -> None:
    """A state-changing request from a page of another origin is refused outright."""
    origin = request.headers.get("origin")
    if request.method not in UNSAFE or origin is None:
        return
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin != own and origin not in settings.auth.origins:
        raise CsrfFailed()


def _authenticate(request: Request, channel: str, session: Session, write: bool) -> Actor:
    """The actor of the request's API token or session cookie, looked up in the request's own
    transaction (no second one per request). Bookkeeping that must outlive a failed request —
    ending an idle session — and the occasional idle-timer update of a read request are left
    to :func:`_finish`, which does them once the request's transaction is closed."""
    settings: Settings = request.app.state.settings
    client = client_of(request, settings)
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(session_cookie(settings))
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated()
        if request.app.state.db.isolated:
            raise Isolated()  # integrations are external links: cut while isolated
        actor = authenticate_token(session, settings.token_pepper, token.strip(), channel)
        return dataclasses.replace(actor, source_ip=client.ip, user_agent=client.user_agent or None)
    if not cookie:
        raise Unauthenticated()
    found = auth_sessions.authenticate(session, settings.token_pepper, cookie, client, channel)
    if found.expired:
        request.state.auth_followup = found
        if found.expired == "outside-window":
            raise auth.outside_window()
        raise Unauthenticated(
            "一定時間操作がなかったか有効期限が切れたため、ログアウトしました。",
            "You were signed out (idle or session expired).",
            code="session_expired",
        )
    request.state.idle_seconds = found.row.idle_seconds  # the page's idle-logoff warning
    if found.touch:
        if write:
            auth_sessions.touch(session, found.session_id)  # commits with the request
        else:
            request.state.auth_followup = found
    if request.method in UNSAFE:
        sent = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent, auth.csrf_token(settings.token_pepper, cookie)):
            raise CsrfFailed()
    return found.actor


def _followup(request: Request) -> None:
    found: auth_sessions.Authenticated | None = getattr(request.state, "auth_followup", None)
    if found is None:
        return
    request.state.auth_followup = None
    with request.app.state.db.session(write=True) as w:
        if found.expired:
            auth_sessions.end_expired(w, found)
        else:
            auth_sessions.touch(w, found.session_id)
        w.commit()


def _record_denial(request: Request, actor: Actor, exc: MamoriError) -> None:
    """After the request's rollback: the denial itself, in its own transaction."""
    detail: dict[str, Any] = {"route": f"{request.method} {request.url.path}"[:200]}
    if isinstance(exc, RecordIntegrityFailed):
        _integrity_incident(request, actor, exc, detail)
        return
    if isinstance(exc, Forbidden):
        tag, detail["permission"] = AuditTag.ACCESS_DENIED, exc.permission
        patients: list[Any] = []
    elif isinstance(exc, BreakGlassRequired):
        tag, detail["reason"] = AuditTag.ACCESS_DENIED, "break-glass-required"
        patients = [exc.patient_id]
    else:  # another clinic's ID, answered as "not found"
        tag = AuditTag.CROSS_CLINIC
        patients = []
    with request.app.state.db.session(write=True) as w:
        record(w, actor, tag, patients=patients, detail=detail, outcome="failure")
        _denial_burst(w, actor, str(detail["route"]))
        w.commit()


DENIAL_BURST = 5  # refusals of one account within DENIAL_WINDOW raise an alert
DENIAL_WINDOW = dt.timedelta(minutes=1)
_REFUSED = (AuditTag.ACCESS_DENIED.value, AuditTag.CROSS_CLINIC.value)


def _denial_burst(w: Session, actor: Actor, route: str) -> None:
    """Someone trying door after door (a clerk probing notes, a stolen session walking IDs of
    another clinic): five refusals within a minute raise one alert for the director, not one
    per refusal. Counted in the refusal's own transaction (this refusal, queued, is appended
    at its commit: one more than the log holds). The detection issue scores the rest."""
    now = utcnow()
    earlier = w.scalar(
        select(func.count())
        .select_from(AuditEventUser)
        .join(AuditEvent, AuditEvent.seq == AuditEventUser.seq)
        .where(
            AuditEventUser.user_id == actor.user_id,
            AuditEvent.recorded_at >= now - DENIAL_WINDOW,
            AuditEvent.tag.in_(_REFUSED),
        )
    )
    refused = (earlier or 0) + 1
    if refused < DENIAL_BURST:
        return
    raised = w.scalar(
        select(func.count())
        .select_from(SecurityAlert)
        .where(
            SecurityAlert.user_id == actor.user_id,
            SecurityAlert.kind == "denied-burst",
            SecurityAlert.created_at >= now - 10 * DENIAL_WINDOW,
        )
    )
    if raised:
        return  # one alert per burst
    w.add(
        SecurityAlert(
            clinic_id=actor.clinic_id,
            kind="denied-burst",
            created_at=now,
            user_id=actor.user_id,
            summary=(
                f"{actor.display_name} さんの操作が1分間に{refused}回拒否されました"
                f"（権限のない画面・他院の記録など。最後: {route}）"
            )[:300],
        )
    )


def _integrity_incident(
    request: Request, actor: Actor, exc: RecordIntegrityFailed, detail: dict[str, Any]
) -> None:
    """A head that is not its latest version: an integrity incident — the event, and an alert
    on the administrator's review list (the write itself was refused and rolled back)."""
    detail |= {"record_type": exc.record_type, "record_id": str(exc.record_id), "why": exc.why}
    patients = [exc.patient_id] if isinstance(exc.patient_id, uuid.UUID) else []
    with request.app.state.db.session(write=True) as w:
        record(
            w, actor, AuditTag.INTEGRITY_FAILED, patients=patients, detail=detail, outcome="failure"
        )
        w.add(
            SecurityAlert(
                clinic_id=actor.clinic_id,
                kind="integrity",
                created_at=utcnow(),
                user_id=actor.user_id,
                patient_id=patients[0] if patients else None,
                summary=f"{exc.record_type} の記録が最新の版と一致しません（{exc.why}）"[:300],
            )
        )
        w.commit()


def _open(request: Request, permission: Permission) -> Ctx:
    state = request.app.state
    settings: Settings = state.settings
    check_origin(request, settings)
    channel = channel_of(request.url.path)
    write = permission.writes
    session: Session = state.db.session(write=write)
    defer_release(session)
    request.state.db_session = session
    actor = _authenticate(request, channel, session, write)
    request.state.actor = actor
    if not actor.can(permission):
        raise Forbidden(permission.value)  # recorded by _finish, after the rollback
    return Ctx(session=session, actor=actor, settings=settings, store=state.store)


@functools.cache
def requires(permission: Permission) -> Callable[[Request], Ctx]:
    """The guard of a route that needs ``permission`` (one function object per permission)."""

    def guard(request: Request) -> Ctx:
        return _open(request, permission)

    guard.__name__ = f"requires_{permission.name.lower()}"
    setattr(guard, GUARD_ATTR, permission.value)
    return guard


@dataclass
class SignInCtx:
    session: Session
    settings: Settings
    client: auth.Client
    token: str | None  # the (half-finished) session cookie, if any


def signing_in(request: Request) -> SignInCtx:
    """Sign-in steps: no finished session needed (and none trusted); a write transaction."""
    state = request.app.state
    settings: Settings = state.settings
    check_origin(request, settings)
    session: Session = state.db.session(write=True)
    defer_release(session)
    request.state.db_session = session
    return SignInCtx(
        session=session,
        settings=settings,
        client=client_of(request, settings),
        token=request.cookies.get(session_cookie(settings)),
    )


def set_session_cookies(
    response: Response, settings: Settings, token: str, device: str | None
) -> None:
    secure = settings.auth.secure_cookies
    response.set_cookie(
        session_cookie(settings),
        token,
        httponly=True,
        secure=secure,
        samesite="strict",
        path="/",
        max_age=settings.auth.absolute_hours * 3600,
    )
    if device is not None:
        response.set_cookie(
            device_cookie(settings),
            device,
            httponly=True,
            secure=secure,
            samesite="strict",
            path="/",
            max_age=400 * 24 * 3600,
        )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        session_cookie(settings),
        path="/",
        secure=settings.auth.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def half_session_token(ctx: SignInCtx, request: Request) -> str:
    """The half-signed-in session's token, with its CSRF token checked."""
    if not ctx.token:
        raise Unauthenticated()
    sent = request.headers.get("x-csrf-token", "")
    if not hmac.compare_digest(sent, auth.csrf_token(ctx.settings.token_pepper, ctx.token)):
        raise CsrfFailed()
    return ctx.token


def public() -> None:
    """Marks a route as deliberately open (health check, capability statement)."""


setattr(signing_in, GUARD_ATTR, "public:sign-in")
setattr(public, GUARD_ATTR, "public")


def route_guard(route: APIRoute) -> str | None:
    guards = {getattr(dep.call, GUARD_ATTR, None) for dep in route.dependant.dependencies}
    guards.discard(None)
    if len(guards) != 1:
        return None
    return guards.pop()


def all_routes(routes: list[Any]) -> list[APIRoute]:
    """Every API route, descending into included routers (FastAPI ≥0.16x keeps an included
    router as one ``_IncludedRouter`` entry holding the ``original_router``)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (inner := getattr(route, "original_router", None)) is not None:
            found.extend(all_routes(list(inner.routes)))
        elif (sub := getattr(route, "routes", None)) is not None:
            found.extend(all_routes(list(sub)))
    return found


def check_route_guards(app: FastAPI) -> dict[str, str]:
    """Route → guard for every API route; raises if any route declares none (or several)."""
    table: dict[str, str] = {}
    missing = []
    for route in all_routes(list(app.routes)):
        guard = route_guard(route)
        for method in sorted(route.methods or ()):
            key = f"{method} {route.path}"
            if guard is None:
                missing.append(key)
            else:
                table[key] = guard
    if missing:
        raise RuntimeError("routes without a declared guard: " + ", ".join(missing))
    return table


def _finish(request: Request, commit: bool, exc: BaseException | None = None) -> None:
    session: Session | None = getattr(request.state, "db_session", None)
    if session is None:
        return
    cross_clinic = bool(session.info.pop(CROSS_CLINIC, False))
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()
        request.state.db_session = None
    _followup(request)
    if commit:
        release(session)  # read events: durable before the response is sent
        return
    actor: Actor | None = getattr(request.state, "actor", None)
    if actor is not None and (
        isinstance(exc, Forbidden | BreakGlassRequired | RecordIntegrityFailed)
        or (cross_clinic and isinstance(exc, MamoriError))
    ):
        assert isinstance(exc, MamoriError)
        _record_denial(request, actor, exc)


def start_over(request: Request, session: Session) -> None:
    """A form failed part-way: undo everything the request wrote, and keep its transaction for
    the page shown again with the error. That page's reads are audited, so this transaction is
    committed although the response carries an error status (``TransactionalRoute``)."""
    session.rollback()
    request.state.commit_anyway = True


def _admission(request: Request) -> asyncio.Semaphore:
    """The places in the service layer: ``[limits] concurrent_requests`` per event loop."""
    state = request.app.state
    loop = asyncio.get_running_loop()
    found: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = getattr(
        state, "admission", None
    )
    if found is None or found[0] is not loop:
        settings: Settings = state.settings
        found = (loop, asyncio.Semaphore(settings.concurrent_requests))
        state.admission = found
    return found[1]


# The routes that change something and still answer on a read-only copy (a standby, a restored
# or drilled copy before promotion): signing in and out, re-authenticating, break-the-glass —
# each an access by a person, recorded in the copy's own log like a read — and the isolation
# switch, which cuts a suspect machine off and writes no record. Every other route that is not
# a GET is refused before its endpoint runs, and the ORM refuses the rest (``mamori.copies``).
ANSWERED_ON_COPY = frozenset(
    {
        "/logout",
        "/reauth",
        "/api/v1/auth/logout",
        "/api/v1/auth/reauth",
        "/api/v1/auth/reauth/webauthn/options",
        "/patients/{patient_id}/break-glass",
        "/api/v1/patients/{patient_id}/break-glass",
        "/admin/continuity/isolation",
    }
)


def writes_on_copy(route: APIRoute) -> bool:
    """Whether a read-only copy refuses this route (see ``ANSWERED_ON_COPY``)."""
    if not (route.methods or set()) - {"GET", "HEAD"}:
        return False
    return route_guard(route) != "public:sign-in" and route.path not in ANSWERED_ON_COPY


class TransactionalRoute(APIRoute):
    """Admission, then the request's transaction (see the module's note).

    A request enters the service layer only when one of ``[limits] concurrent_requests`` places is
    free; until then it waits on the event loop, holding no thread. Each request runs in up to three
    thread-pool calls (guard, endpoint, commit), and with one interpreter lock, sixteen requests at
    once do not finish sooner than two: they only take turns with it more often and each costs more
    CPU (the A/B is in ``bench/README.md``). The body is received before the wait, so a slow upload
    holds no place; a response's body (a document download) is sent after the place is given back.
    Waiting holds no thread and a place needs no other place, so no request can wait on one that
    waits on it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        refused_on_copy = writes_on_copy(self)

        async def handler(request: Request) -> Response:
            if refused_on_copy and request.app.state.db.read_only:
                raise ReadOnlyCopy()  # a standby, restored or drilled copy: nothing is written
            await request.body()  # kept by the request for the endpoint's own reading
            async with _admission(request):
                try:
                    response = await original(request)
                except BaseException as exc:
                    await run_in_threadpool(_finish, request, False, exc)
                    raise
                ok = response.status_code < 400 or getattr(request.state, "commit_anyway", False)
                await run_in_threadpool(_finish, request, ok)
                return response

        return handler
