"""SQLite query plans of what a piece of code actually ran, ORM and driver cursor alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session


def select_plans(session: Session, run: Callable[[], Any]) -> dict[str, list[str]]:
    """Each SELECT that ``run`` executes on ``session``'s connection (SQLite's trace callback
    gives every statement as run, values filled in) → its ``EXPLAIN QUERY PLAN`` lines."""
    conn = session.connection().connection.dbapi_connection
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        conn.set_trace_callback(None)
    return {
        sql: [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
        for sql in statements
        if sql.lstrip().upper().startswith("SELECT")
    }
