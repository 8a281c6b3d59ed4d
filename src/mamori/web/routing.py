"""The HTTP edge's guards and transaction handling.

* Every route depends on exactly one guard: :func:`reader`/:func:`writer` (signed-in staff; a
  read or write transaction) or :func:`public`. ``check_route_guards`` refuses to start the app
  if a route has none. The access-control issue turns the signed-in guards into permission
  guards without touching routes.
* :class:`TransactionalRoute` commits the request's session *after* the endpoint has built its
  response and *before* anything is sent, so a client never receives an acknowledgement for a
  write that is not durable, and reads are answered only once whatever they recorded is stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mamori.audit.trail import defer_release, release
from mamori.authz.gate import Actor
from mamori.clinic.service import authenticate_token
from mamori.documents.store import DocumentStore
from mamori.errors import Unauthenticated
from mamori.settings import Settings

GUARD_ATTR = "mamori_guard"


@dataclass
class Ctx:
    """What an endpoint gets: the request's session, the signed-in actor, and the stores."""

    session: Session
    actor: Actor
    settings: Settings
    store: DocumentStore


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated()
    return token.strip()


def _open(request: Request, *, write: bool) -> Ctx:
    state = request.app.state
    session: Session = state.db.session(write=write)
    defer_release(session)
    request.state.db_session = session
    channel = "fhir" if request.url.path.startswith("/fhir/") else "api"
    actor = dataclasses.replace(
        authenticate_token(session, state.settings.token_pepper, _bearer(request), channel),
        source_ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    return Ctx(session=session, actor=actor, settings=state.settings, store=state.store)


def reader(request: Request) -> Ctx:
    return _open(request, write=False)


def writer(request: Request) -> Ctx:
    return _open(request, write=True)


def public() -> None:
    """Marks a route as deliberately open (health check, capability statement)."""


setattr(reader, GUARD_ATTR, "signed-in:read")
setattr(writer, GUARD_ATTR, "signed-in:write")
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


def _finish(request: Request, commit: bool) -> None:
    session: Session | None = getattr(request.state, "db_session", None)
    if session is None:
        return
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()
        request.state.db_session = None
    if commit:
        release(session)  # read events: durable before the response is sent


class TransactionalRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except BaseException:
                await run_in_threadpool(_finish, request, False)
                raise
            await run_in_threadpool(_finish, request, response.status_code < 400)
            return response

        return handler
