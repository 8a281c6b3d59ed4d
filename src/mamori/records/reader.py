"""Read views: a patient's records read on the driver's cursor, for the hot list reads.

Opening a chart reads about fifty rows in seven statements. Through the ORM each statement is
built and its cache key computed on every call, and each row goes through the identity map,
the type processing and two load events before its ciphertext is opened: 30–90 µs of Python
per row on top of the decryption, most of the chart's time (see ``bench/README.md``). Here a
statement is fixed text made once per model and shape, values are converted by the column
types' own processors (as SQLAlchemy would convert them), and each row becomes a **read
view**: an instance of the model class itself — same attributes, properties and sealed
fields, so schemas, templates and PDFs take it unchanged — that is *not in the session*.
Nothing set on a view is ever written; adding one to a session fails on its primary key.

Security stays where it was: callers have passed the gate (permission, clinic, restricted
patient, the access event) before they read; every row's ciphertext is opened by the same
function as the ORM's load event (``SealBroken`` on an altered or moved one, the keyring
refreshed for a key another process made); every head is checked against its latest version
(``versioning.check_heads``: a flipped status, a moved or rolled-back row is refused); and the
unit of work is marked as having read patient data, so the audit safety net sees these reads
as it sees ORM loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import manager_of_class

from mamori.audit.trail import note_phi_loaded
from mamori.crypto.sealed import open_loaded
from mamori.db import PatientData, bind_processor, driver_cursor
from mamori.records.versioning import Versioned, check_heads

T = TypeVar("T")

OPERATORS = frozenset({"=", "!=", "<", "<=", ">", ">="})

# (column, operator, value): one condition of a read; a read's conditions are joined by AND
Where = tuple[str, str, Any]
# (column, descending)
Order = tuple[str, bool]


@dataclass(frozen=True)
class _Plan:
    sql: str
    keys: tuple[str, ...]  # attribute names, in the SELECT's column order
    results: tuple[Callable[[Any], Any] | None, ...]
    binds: tuple[Callable[[Any], Any], ...]  # one per condition
    new: Callable[[], Any]


_PLANS: dict[tuple[Any, ...], _Plan] = {}


def _plan(
    dialect: Any,
    model: type[Any],
    where: tuple[tuple[str, str], ...],
    order_by: tuple[Order, ...],
    limited: bool,
) -> _Plan:
    key = (dialect.name, dialect.driver, model, where, order_by, limited)
    found = _PLANS.get(key)
    if found is not None:
        return found
    mapper = sa_inspect(model)
    table = mapper.local_table
    quote = dialect.identifier_preparer

    def column(name: str) -> Any:
        if name not in table.c:
            raise ValueError(f"{table.name} has no column {name!r}")
        return table.c[name]

    attrs = [(prop.key, prop.columns[0]) for prop in mapper.column_attrs]
    # identifiers come from the mapped table (quoted by the dialect), operators from a fixed
    # set; no value is ever written into the text
    sql = "SELECT {} FROM {}".format(  # noqa: S608
        ", ".join(quote.format_column(col) for _, col in attrs), quote.format_table(table)
    )
    for op in (op for _, op in where):
        if op not in OPERATORS:
            raise ValueError(f"operator {op!r}")
    if where:
        sql += " WHERE " + " AND ".join(
            f"{quote.format_column(column(name))} {op} ?" for name, op in where
        )
    if order_by:
        sql += " ORDER BY " + ", ".join(
            quote.format_column(column(name)) + (" DESC" if desc else "") for name, desc in order_by
        )
    if limited:
        sql += " LIMIT ?"

    plan = _Plan(
        sql=sql,
        keys=tuple(k for k, _ in attrs),
        results=tuple(
            col.type.dialect_impl(dialect).result_processor(dialect, None) for _, col in attrs
        ),
        binds=tuple(bind_processor(column(name).type, dialect) for name, _ in where),
        new=manager_of_class(model).new_instance,
    )
    _PLANS[key] = plan
    return plan


def read_views(
    session: Session,
    model: type[T],
    where: Sequence[Where],
    *,
    order_by: Sequence[Order] = (),
    limit: int | None = None,
) -> list[T]:
    """Rows of ``model`` matching every condition, as read views (see the module's note).

    Column names and operators are checked against the table and a fixed set; values are
    always bound parameters. Only for callers that have passed the access gate.
    """
    dialect = session.get_bind().dialect
    plan = _plan(
        dialect, model, tuple((c, op) for c, op, _ in where), tuple(order_by), limit is not None
    )
    params = [bind(value) for bind, (_, _, value) in zip(plan.binds, where, strict=True)]
    if limit is not None:
        params.append(limit)
    with driver_cursor(session) as cursor:
        cursor.execute(plan.sql, params)
        rows = cursor.fetchall()
    views: list[T] = []
    for row in rows:
        view = plan.new()
        values = view.__dict__
        for key, process, value in zip(plan.keys, plan.results, row, strict=True):
            values[key] = value if process is None else process(value)
        open_loaded(view, session)
        views.append(view)
    if views and _patient_data(model):
        note_phi_loaded(session)
    if views and issubclass(model, Versioned):
        check_heads(session, views)  # type: ignore[arg-type]  # each head must be its latest version
    return views


def _patient_data(model: type[Any]) -> bool:
    return issubclass(model, PatientData)
