"""create_app(): settings → database → document store → routers → middleware → startup checks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mamori import __version__, copies, isolation
from mamori.audit import pages as audit_pages
from mamori.audit.api import router as audit_router
from mamori.audit.checkpointer import CheckpointRefused, make_checkpoint
from mamori.audit.syslog import Forwarder
from mamori.auth import admin_pages as auth_admin_pages
from mamori.auth import pages as auth_pages
from mamori.auth.api import admin_router
from mamori.auth.api import patients_router as auth_patients_router
from mamori.auth.api import router as auth_router
from mamori.auth.models import SecurityAlert
from mamori.auth.passwords import warm_up
from mamori.authz.permissions import P
from mamori.backup import alarm
from mamori.backup.service import configured, prepare_readable, scheduled_run
from mamori.chart import pages as chart_pages
from mamori.chart.api import router as chart_router
from mamori.clinic.calendar import JST
from mamori.clinic.models import Clinic
from mamori.clinical.api import router as clinical_router
from mamori.continuity import pages as continuity_pages
from mamori.continuity.schedule import next_run
from mamori.continuity.service import run_scheduled
from mamori.crypto.startup import open_keys
from mamori.db import Database
from mamori.detection import pages as detection_pages
from mamori.detection.api import router as detection_router
from mamori.detection.service import run_due as detection_run_due
from mamori.documents.store import DocumentStore
from mamori.fhir.api import router as fhir_router
from mamori.incidents import pages as incident_pages
from mamori.incidents.api import router as incident_router
from mamori.incidents.service import remind_due as incident_remind_due
from mamori.migrate import require_current
from mamori.models import open_database
from mamori.patients import pages as patients_pages
from mamori.patients.api import router as patients_router
from mamori.patients.indexes import backfill as backfill_search_indexes
from mamori.programme import pages as programme_pages
from mamori.programme.accounts import disable_unused_due
from mamori.records.api import router as records_router
from mamori.settings import Settings
from mamori.ui import static as ui_static
from mamori.web import errors
from mamori.web.contract import declare_responses
from mamori.web.limits import BodyLimit
from mamori.web.routing import Ctx, TransactionalRoute, check_route_guards, public, requires

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"strict-transport-security", b"max-age=31536000"),
]


class Isolation:
    """The isolation switch, checked on every request (one ``stat``): while ``ISOLATED`` is in
    the instance, only the server's own console is answered and nothing is written
    (``mamori.isolation``)."""

    def __init__(self, app: ASGIApp, database: Database, home: Path) -> None:
        self.app, self.database, self.home = app, database, home

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.database.isolated = isolation.marker(self.home) is not None
        client = scope.get("client")
        if self.database.isolated and not isolation.is_local(client[0] if client else None):
            refusal = isolation.Isolated()
            path = str(scope.get("path", ""))
            if not (path.startswith(("/api/", "/fhir/")) or path == "/healthz"):  # a person
                page = (
                    '<!doctype html><html lang="ja"><meta charset="utf-8">'
                    "<title>隔離中 / Isolated</title>"
                    f'<h1>隔離中です</h1><p>{refusal.ja}</p><p lang="en">{refusal.en}</p>'
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", b"text/html; charset=utf-8"),
                            (b"retry-after", b"3600"),
                            *SECURITY_HEADERS,
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": page})
                return
            body = json.dumps(
                {
                    "error": {
                        "code": refusal.code,
                        "field": None,
                        "message_ja": refusal.ja,
                        "message_en": refusal.en,
                    }
                },
                ensure_ascii=False,
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json; charset=utf-8"),
                        (b"retry-after", b"3600"),
                        *SECURITY_HEADERS,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Headers on every response; patient data must never sit in a shared browser cache."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in SECURITY_HEADERS if h[0] not in present
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


log = logging.getLogger("mamori.audit")


def _checkpoint(database: Database, settings: Settings) -> None:
    """Sign a checkpoint; a refusal means the log disagrees with what was signed — say so
    as loudly as a server can, and keep serving (the clinic still has to work)."""

    try:
        result = make_checkpoint(database, settings)
        for problem in result.copy_errors:
            log.error("audit checkpoint copy failed: %s", problem)
    except CheckpointRefused as exc:
        log.critical("AUDIT CHECKPOINT REFUSED: %s / %s", exc.en, exc.ja)
    except Exception:
        log.exception("audit checkpoint failed")


def _no_backup_alert(database: Database) -> None:
    """One alert per clinic on the administrator's review list: running without backups."""
    try:
        with database.session(write=True) as session:
            for clinic_id in session.scalars(select(Clinic.id)):
                session.add(
                    SecurityAlert(
                        clinic_id=clinic_id,
                        kind="backup-missing",
                        summary="バックアップが設定されていません（--without-backups で稼働中）",
                    )
                )
            session.commit()
    except Exception:
        log.exception("could not record the missing-backup alert")


# the immediate tier (bulk export, account misuse): ≤ 15 minutes; benchmarks may run it far
# more often (MAMORI_DETECTION_SECONDS) to show what it costs a chart open
DETECTION_SECONDS = int(os.environ.get("MAMORI_DETECTION_SECONDS", "300"))
NIGHTLY_HOUR = 2  # the full pass, once a day after 02:00 JST
STATISTICS_SECONDS = 6 * 3600  # the planner's statistics are refreshed this often
READABLE_CHECK_SECONDS = 30 * 60  # is a readable copy due? (one a day; backup.service)


def _prepare_readable(settings: Settings, database: Database) -> None:
    try:
        prepare_readable(settings, database)
    except Exception:  # recorded by the service where it can be; serving goes on
        logging.getLogger("mamori").exception("readable copy failed")


def _detect(database: Database, last_nightly: list[dt.date]) -> None:
    """The immediate tier every few minutes; the nightly pass once a day after 02:00."""
    try:
        detection_run_due(database, tier="immediate")
        now = dt.datetime.now(JST)
        if now.hour >= NIGHTLY_HOUR and (not last_nightly or last_nightly[0] != now.date()):
            detection_run_due(database, tier="nightly")
            last_nightly[:] = [now.date()]
    except Exception:  # recorded where it can be; serving goes on
        logging.getLogger("mamori").exception("detection pass failed")
    try:  # the APPI deadlines: an alert a day from two days before, until marked sent
        incident_remind_due(database)
    except Exception:
        logging.getLogger("mamori").exception("incident reminders failed")


def _disable_unused(database: Database, days: int) -> None:
    """``[auth] disable_unused_days`` (off by default): accounts unused that long disabled."""
    try:
        disable_unused_due(database, days)
    except Exception:
        logging.getLogger("mamori").exception("disabling unused accounts failed")


def _refresh_statistics(database: Database) -> None:
    try:
        database.refresh_statistics()
    except Exception:  # a busy or read-only database: plans stay as they were, serving goes on
        logging.getLogger("mamori").exception("planner statistics refresh failed")


def _lifespan(database: Database, settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()

        async def every_interval() -> None:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=settings.checkpoint_interval)
                except TimeoutError:
                    await run_in_threadpool(_checkpoint, database, settings)

        tasks = [asyncio.create_task(every_interval())]
        if database.dialect == "sqlite":  # PostgreSQL's autovacuum analyses on its own

            async def statistics() -> None:  # at start, then every STATISTICS_SECONDS
                while True:
                    await run_in_threadpool(_refresh_statistics, database)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=STATISTICS_SECONDS)
                    if stop.is_set():
                        return

            tasks.append(asyncio.create_task(statistics()))
        forwarder = None
        # a read-only copy sends nothing on: its events reach the main log by merge-log
        if settings.syslog is not None and not database.read_only:
            forwarder = Forwarder(
                database, settings.syslog, settings.checkpoint_dir / "syslog.cursor"
            )
            interval = settings.syslog.interval_seconds

            async def stream() -> None:
                assert forwarder is not None
                while not stop.is_set():
                    if isolation.marker(settings.home) is None:  # paused while isolated
                        await run_in_threadpool(forwarder.run_once)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=interval)

            tasks.append(asyncio.create_task(stream()))

        if database.read_only:
            pass  # a copy backs nothing up until promoted (backup.service refuses it too)
        elif settings.backup.schedule and configured(settings):

            async def backups() -> None:
                # page deltas every interval (the RPO); a full when the base is full_hours old
                while not stop.is_set():
                    try:
                        await asyncio.wait_for(
                            stop.wait(), timeout=settings.backup.interval_minutes * 60
                        )
                    except TimeoutError:
                        await run_in_threadpool(scheduled_run, settings, database)

            tasks.append(asyncio.create_task(backups()))

            async def readable_copies() -> None:
                # the day's readable copy, made beside the runs that will carry it; the first
                # look comes a while after start, not while people start working
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=READABLE_CHECK_SECONDS)
                    if not stop.is_set():
                        await run_in_threadpool(_prepare_readable, settings, database)

            if settings.backup.readable:
                tasks.append(asyncio.create_task(readable_copies()))
        elif not configured(settings):
            log.warning(
                "バックアップが未設定です (mamori backup keygen と [[backup.targets]]) / "
                "backups are not configured"
            )

            async def unprotected() -> None:
                # started --without-backups: an alert for the administrators every day
                while not stop.is_set():
                    await run_in_threadpool(_no_backup_alert, database)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=24 * 3600)

            tasks.append(asyncio.create_task(unprotected()))
        if not database.read_only:  # a copy's reads are judged after its log is merged

            async def detection() -> None:
                last_nightly: list[dt.date] = []
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=DETECTION_SECONDS)
                    # paused while isolated: the record takes no writes then; the pass after
                    # the isolation is lifted reads what came in meanwhile
                    if not stop.is_set() and isolation.marker(settings.home) is None:
                        await run_in_threadpool(_detect, database, last_nightly)
                        if settings.auth.disable_unused_days:
                            await run_in_threadpool(
                                _disable_unused, database, settings.auth.disable_unused_days
                            )

            tasks.append(asyncio.create_task(detection()))
        if settings.downtime.enabled and not database.read_only:

            async def downtime_bundles() -> None:
                # mornings and noons for the day, evenings for the next working day
                while not stop.is_set():
                    at, day = next_run(dt.datetime.now(JST), settings.downtime)
                    wait = (at - dt.datetime.now(JST)).total_seconds()
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=max(1.0, wait))
                    except TimeoutError:
                        await run_in_threadpool(run_scheduled, database, settings, day)

            tasks.append(asyncio.create_task(downtime_bundles()))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                await task
            await run_in_threadpool(_checkpoint, database, settings)  # and one at shutdown
            if forwarder is not None:
                await run_in_threadpool(forwarder.run_once)

    return lifespan


# the HTML pages, each beside its domain (``ui`` keeps the shared layout and static files)
ui_routers = (
    ui_static.router,
    auth_pages.router,
    patients_pages.router,
    chart_pages.router,
    auth_admin_pages.router,
    audit_pages.router,
    continuity_pages.router,
    detection_pages.router,
    incident_pages.router,
    programme_pages.router,
)


def create_app(
    settings: Settings, db: Database | None = None, *, without_backups: bool = False
) -> FastAPI:
    """Build the app; raises before serving anything if the instance is unsafe or out of date."""
    database = db or open_database(settings.database_url)
    database.read_only = copies.marker(settings.home) is not None
    require_current(database.engine)
    if database.keyring is None:
        open_keys(database, settings)  # no key, no server
    backfill_search_indexes(database)  # rows from before an index existed (once)

    warm_up()  # the first sign-in for an unknown ID costs what every later one does
    app = FastAPI(
        lifespan=_lifespan(database, settings),
        title="mamori",
        version=__version__,
        description="守り — 電子カルテ API (JSON) と読み取り専用 FHIR R4 API",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.router.route_class = TransactionalRoute
    app.state.settings = settings
    app.state.db = database
    # shown to administrators on every page while it is true (ui/templates/base.html)
    app.state.backups_missing = without_backups and not configured(settings)
    app.state.store = DocumentStore(settings.documents_dir, database)

    @app.get("/healthz", dependencies=[Depends(public)])
    def healthz() -> Response:
        standing = alarm.raised(settings)
        if standing is not None:  # the database was found unreadable: not healthy, say why
            body = {
                "status": "alarm",
                "since": standing.get("since"),
                "what_to_do": alarm.WHAT_TO_DO_EN,
            }
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/api/v1/me")
    def me(ctx: Ctx = Depends(requires(P.SELF))) -> dict[str, Any]:
        a = ctx.actor
        return {
            "user_id": str(a.user_id),
            "clinic_id": str(a.clinic_id),
            "role": a.role.value,
            "role_ja": a.role.label_ja,
            "display_name": a.display_name,
            "auth": a.auth_method,
            "permissions": sorted(p.value for p in a.granted),
        }

    for router in (
        auth_router,
        auth_patients_router,
        admin_router,
        patients_router,
        clinical_router,
        records_router,
        chart_router,
        audit_router,
        detection_router,
        incident_router,
        fhir_router,
        *ui_routers,
    ):
        app.include_router(router)
    errors.install(app)
    declare_responses(app)  # every refusal in the OpenAPI document (web/contract.py)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Isolation, database=database, home=settings.home)
    app.add_middleware(
        BodyLimit, json_limit=settings.max_json_bytes, upload_limit=settings.max_upload_bytes
    )
    app.state.route_guards = check_route_guards(app)
    return app
