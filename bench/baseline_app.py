"""The plain baseline for the chart-open benchmark: the same queries as mamori's open_chart,
straight to SQLite with the standard library, behind a bare Starlette route. No service layer,
no authentication, no versioning, no validation — what "a plain unsecured implementation of
the same query" means in MISSION.md.

    python bench/baseline_app.py --db PATH --port PORT [--framework]

``--framework`` serves the same queries through FastAPI and pydantic (mamori's web stack)
instead of a bare Starlette route: the floor of any implementation built on that stack.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import threading
import uuid
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_local = threading.local()
DB_PATH = ""
JST = dt.timezone(dt.timedelta(hours=9))


def _conn() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(DB_PATH, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        _local.conn = conn
    return conn


def _rows(sql: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in _conn().execute(sql, args)]


def chart(pid: str) -> dict[str, Any] | None:
    patient = _rows("SELECT * FROM patient WHERE id = ?", pid)
    if not patient:
        return None
    today = dt.datetime.now(JST).date()
    meds = _rows(
        "SELECT * FROM medication_request WHERE patient_id = ? AND status = 'active' "
        "AND issued_on >= ? ORDER BY issued_on DESC",
        pid,
        (today - dt.timedelta(days=365)).isoformat(),
    )
    current = []
    for m in meds:
        m["rp_groups"] = json.loads(m["rp_groups"])
        days = max((g["days"] for g in m["rp_groups"]), default=0)
        if dt.date.fromisoformat(m["issued_on"]) + dt.timedelta(days=days) >= today:
            current.append(m)
    return {
        "patient": patient[0],
        "coverages": _rows(
            "SELECT * FROM coverage WHERE patient_id = ? ORDER BY priority, created_at", pid
        ),
        "allergies": _rows(
            "SELECT * FROM allergy_intolerance WHERE patient_id = ? AND "
            "status = 'active' AND verification != 'refuted' "
            "ORDER BY is_contraindication DESC, created_at",
            pid,
        ),
        "conditions": _rows(
            "SELECT * FROM condition WHERE patient_id = ? AND status = 'active' "
            "AND outcome = 'continuing' "
            "ORDER BY is_primary DESC, onset_date DESC",
            pid,
        ),
        "medications": current,
        "notes": _rows(
            "SELECT * FROM progress_note WHERE patient_id = ? AND "
            "status != 'entered-in-error' ORDER BY created_at DESC LIMIT 20",
            pid,
        ),
        "labs": _rows(
            "SELECT * FROM observation WHERE patient_id = ? AND status != "
            "'entered-in-error' AND category = 'laboratory' "
            "ORDER BY effective_at DESC LIMIT 50",
            pid,
        ),
        "vitals": _rows(
            "SELECT * FROM observation WHERE patient_id = ? AND status != "
            "'entered-in-error' AND category = 'vital-signs' "
            "ORDER BY effective_at DESC LIMIT 10",
            pid,
        ),
    }


def chart_route(request: Request) -> Response:
    body = chart(request.path_params["pid"].replace("-", ""))
    if body is None:
        return Response(status_code=404)
    return Response(
        json.dumps(body, ensure_ascii=False, default=str), media_type="application/json"
    )


app = Starlette(routes=[Route("/chart/{pid}", chart_route)])


def framework_app() -> Any:
    """The same queries through the framework mamori is built on, still without security: a
    FastAPI route with a synchronous dependency and endpoint (each run on the thread pool, as
    mamori's guards and services are) and the response validated and serialised by pydantic
    through mamori's own ``ChartOut``. mamori's cost above this is the security stack's."""
    from fastapi import Depends, FastAPI, HTTPException

    from mamori.chart.api import ChartOut

    fast = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def connection() -> sqlite3.Connection:
        return _conn()

    @fast.get("/chart/{pid}", response_model=ChartOut)
    def fast_chart(pid: uuid.UUID, conn: sqlite3.Connection = Depends(connection)) -> Any:
        body = chart(pid.hex)
        if body is None:
            raise HTTPException(404)
        conn.commit()
        return body

    return fast


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--framework", action="store_true", help="FastAPI + pydantic, no security")
    args = parser.parse_args()
    DB_PATH = args.db
    uvicorn.run(
        framework_app() if args.framework else app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )
