"""Database plumbing: declarative base, engine set-up for SQLite and PostgreSQL, sessions.

SQLite is opened in WAL mode with ``synchronous=FULL``: a write acknowledged to a clinic user
must survive a power cut, not only a killed process, and FULL is what makes the WAL durable at
commit. Write transactions start with ``BEGIN IMMEDIATE`` so two writers queue instead of
failing with "database is locked" when a read lock is upgraded — in this process on a Python
lock (the *write turn*, see ``_configure_sqlite``), across processes on SQLite's busy timeout.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import DateTime, Engine, MetaData, Uuid, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.orm.util import identity_key
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


@functools.lru_cache(maxsize=1 << 16)
def _uuid_from_text(value: str) -> uuid.UUID:
    return uuid.UUID(value)


class CachedUuid(Uuid[uuid.UUID]):
    """``Uuid`` that reuses parsed values on databases storing UUIDs as text (SQLite).

    A chart holds the same clinic, patient, staff and encounter IDs on every row; parsing each
    occurrence with ``uuid.UUID`` was a quarter of a chart open. UUIDs are immutable, so
    sharing parsed instances is safe. Same column type in the schema as plain ``Uuid``.
    """

    cache_ok = True

    def result_processor(self, dialect: Any, coltype: object) -> Any:
        if dialect.name == "sqlite" or not self.native_uuid:

            def process(value: Any) -> uuid.UUID | None:
                if value is None or isinstance(value, uuid.UUID):
                    return value
                return _uuid_from_text(value if isinstance(value, str) else str(value))

            return process
        return super().result_processor(dialect, coltype)  # type: ignore[no-untyped-call]


class PatientData:
    """Marker for tables whose rows are about one patient (every versioned record). Loading
    one obliges the unit of work to record an audit event: the audit trail's safety net
    checks for it without knowing any domain."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {uuid.UUID: CachedUuid()}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC on the way in and out, on both databases.

    SQLite has no time zones and would hand back naive values; content hashes include
    timestamps, so the same row must read back identically everywhere.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Any, coltype: object) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        # SQLite hands back text; SQLAlchemy would parse it with a regular expression.
        # ``fromisoformat`` (C) reads the same "YYYY-MM-DD HH:MM:SS.ffffff" several times faster.
        def process(value: Any) -> dt.datetime | None:
            if value is None:
                return None
            parsed = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
            return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed

        return process

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


SQLITE_BUSY_SECONDS = 30  # how long a writer waits for another before "database is locked"
SQLITE_ANALYSIS_LIMIT = 1000  # rows sampled per index by ANALYZE (SQLite's advice: 100–1000)


def _private_sqlite_file(url: str) -> None:
    """Create the database file 0600 before SQLite does (it gives -wal/-shm the same mode)."""
    path = make_url(url).database
    if path and path != ":memory:" and not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so "begin" below decides.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        cur.execute("PRAGMA cache_size=-32768")  # 32 MiB per connection (default is 2 MiB)
        cur.close()

    # One write transaction at a time in this process, queued on a Python lock. SQLite's own
    # busy handler polls with sleeps of up to 100 ms, so writers that met its lock waited far
    # longer than it was held (the unlucky ones for tenths of a second). Queued here, each
    # waits for the writers ahead of it only (tail latencies in bench/README.md). Writers in
    # other processes still meet SQLite's lock.
    turn = threading.Lock()
    holder: list[int] = []  # id() of the driver connection holding the turn, if any
    queued = [False]  # a writer found the turn taken since it was last handed on

    def release(dbapi_connection: Any) -> None:
        if holder and holder[0] == id(dbapi_connection):
            holder.clear()
            turn.release()
            if queued[0]:
                # Yield the GIL: the writer woken by the release holds the turn but cannot
                # run until this thread blocks, which it would do only at its next write
                # (several writer threads lost a good share of their writes per second
                # without this). A lone writer skips it (a racy flag costs one yield at most,
                # one way or the other).
                queued[0] = False
                time.sleep(0)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if not conn.get_execution_options().get("mamori_write"):
            conn.exec_driver_sql("BEGIN")
            return
        if not turn.acquire(blocking=False):
            queued[0] = True
            if not turn.acquire(timeout=SQLITE_BUSY_SECONDS):
                raise OperationalError(
                    "BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")
                )
        raw = conn.connection.dbapi_connection
        holder.append(id(raw))
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            release(raw)
            raise

    # the turn ends with the transaction: commit, rollback (also the pool's reset of a
    # connection handed back), or the close of a connection that was invalidated
    dialect = engine.dialect
    commit, rollback, close = dialect.do_commit, dialect.do_rollback, dialect.do_close

    def do_commit(proxy: Any) -> None:
        try:
            commit(proxy)
        finally:
            release(proxy.dbapi_connection)

    def do_rollback(proxy: Any) -> None:
        try:
            rollback(proxy)
        finally:
            release(proxy.dbapi_connection)

    def do_close(dbapi_connection: Any) -> None:
        try:
            close(dbapi_connection)
        finally:
            release(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]
    dialect.do_close = do_close  # type: ignore[method-assign]


class Database:
    """An engine and two session factories: one for reads, one for writes.

    Build it with ``mamori.models.open_database``, which installs the audit trail, sealing and
    the version writer's listeners first: a database without them refuses patient data (no
    keyring, no audit hook), it never serves it unprotected.

    Sessions never commit inside services; the request or CLI command that opened the session
    commits once, so a change and everything recorded with it land together.
    """

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        self.on_dispose: list[Callable[[], None]] = []  # background helpers to stop first
        # a restored or drilled copy: reads and their audit events, but no record written
        # until a person promotes it (``mamori.copies``)
        self.read_only = False
        self.isolated = False  # the isolation switch (mamori.isolation), refreshed per request
        self.audit_appender: Any = None  # set by the audit trail on first use
        # The unwrapped data keys (``mamori.crypto``); until they are loaded no patient data
        # can be read or written through any session of this database.
        self.keyring: Any = None
        # set with the keys: picks up data keys added or retired by another process (checked
        # at most every few seconds, and at once when a ciphertext names an unknown key)
        self.key_refresher: Callable[..., None] | None = None
        write_engine = self.engine.execution_options(mamori_write=True)
        info = {"mamori_db": self}
        self.read_session = sessionmaker(self.engine, expire_on_commit=False, info=info)
        self.write_session = sessionmaker(write_engine, expire_on_commit=False, info=info)

    def session(self, *, write: bool) -> Session:
        if self.key_refresher is not None:
            self.key_refresher()
        session = self.write_session() if write else self.read_session()
        session.info["mamori_db"] = self
        session.info["mamori_write"] = write
        return session

    def refresh_statistics(self) -> None:
        """Give the query planner current table statistics (``ANALYZE``).

        Without them SQLite cannot tell a selective index from a useless one: asked for one
        patient's coverages *of this clinic*, it walked ``ix_coverage_clinic_id`` — every coverage
        of the clinic — instead of ``ix_coverage_patient_id`` (a cost on every chart open that grows
        with the clinic; a FHIR search did the same over every observation). On SQLite
        ``analysis_limit`` samples each index, so a full pass over a 4 GB database takes tens of
        milliseconds: the server runs it at start and every few hours, and bulk loads run it when
        they finish. PostgreSQL's autovacuum keeps its own statistics; calling this there (after a
        bulk load) runs a sampled ``ANALYZE`` too."""
        with self.engine.execution_options(mamori_write=True).connect() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql(f"PRAGMA analysis_limit={SQLITE_ANALYSIS_LIMIT}")
            conn.exec_driver_sql("ANALYZE")
            conn.commit()

    def dispose(self) -> None:
        for hook in self.on_dispose:
            hook()
        self.on_dispose.clear()
        self.engine.dispose()


class DriverCursor:
    """The driver's own cursor inside a session's transaction, for the few hot statements
    whose SQLAlchemy execution cost more than their work (the audit append in every audited
    transaction; the next 患者番号; the chart's read views, ``records/reader.py``). Statements
    are fixed text with ``?`` marks (made the driver's own here); values are converted by the
    column types' own bind processors (:meth:`bind`), so rows read back through the ORM exactly
    as if it had written them; driver errors leave as SQLAlchemy's (``DBAPIError`` and its
    subclasses), like any other statement's. Use :func:`driver_cursor`."""

    def __init__(self, cursor: Any, dialect: Any) -> None:
        self._cursor = cursor
        self._dialect = dialect
        self.postgres = dialect.name == "postgresql"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(_marks(sql, self.postgres), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(_marks(sql, self.postgres), rows)

    def insert(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """``sql`` once per row: a single row as a plain execute (cheaper than executemany's
        set-up), none at all for no rows."""
        if len(rows) == 1:
            self.execute(sql, rows[0])
        elif rows:
            self.executemany(sql, rows)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """PostgreSQL: the statements inside go to the server together and are answered
        together (psycopg's pipeline mode), one network round trip instead of one each; their
        errors are raised at the end of the block. SQLite (in-process): as they are."""
        if self.postgres:
            with self._cursor.connection.pipeline():
                yield
        else:
            yield

    def bind(self, type_: Any) -> Callable[[Any], Any]:
        """The function SQLAlchemy applies to a value of this column type on this database."""
        return bind_processor(type_, self._dialect)

    def result(self, type_: Any) -> Callable[[Any], Any]:
        """The function SQLAlchemy applies to a value of this column type read back."""
        return result_processor(type_, self._dialect)


@functools.lru_cache(maxsize=64)
def _marks(sql: str, postgres: bool) -> str:
    return sql.replace("?", "%s") if postgres else sql


_PROCESSORS: dict[tuple[str, str, str, type], Callable[[Any], Any]] = {}


def _processor(kind: str, type_: Any, dialect: Any) -> Callable[[Any], Any]:
    key = (kind, dialect.name, dialect.driver, type(type_))
    found = _PROCESSORS.get(key)
    if found is None:
        impl = type_.dialect_impl(dialect)
        process = (
            impl.bind_processor(dialect) if kind == "bind" else impl.result_processor(dialect, None)
        )
        found = _PROCESSORS[key] = process or (lambda value: value)
    return found


def bind_processor(type_: Any, dialect: Any) -> Callable[[Any], Any]:
    """What SQLAlchemy applies to a value of this column type before the driver sees it."""
    return _processor("bind", type_, dialect)


def result_processor(type_: Any, dialect: Any) -> Callable[[Any], Any]:
    """What SQLAlchemy applies to a value of this column type read from the driver."""
    return _processor("result", type_, dialect)


def expire_loaded(
    session: Session, model: type[Any], key: Any, attributes: Sequence[str] | None = None
) -> None:
    """After a driver-cursor write: an ORM copy of that row already loaded in the session
    holds old values; expire it (or just ``attributes``) so its next read fetches the new."""
    loaded = session.identity_map.get(identity_key(model, key))
    if loaded is not None:
        session.expire(loaded, attributes)


@contextmanager
def driver_cursor(session: Session, *, flush: bool = True) -> Iterator[DriverCursor]:
    """``flush=False`` only inside a flush's own events, where the ORM's changes are already
    being written."""
    dialect = session.get_bind().dialect
    assert dialect.dbapi is not None  # a connected engine's dialect always has its driver
    dbapi_error = dialect.dbapi.Error
    if flush:
        session.flush()  # pending ORM changes first, as before any ORM statement
    raw = session.connection().connection.cursor()
    try:
        yield DriverCursor(raw, dialect)
    except dbapi_error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi_error) from exc
    finally:
        raw.close()
