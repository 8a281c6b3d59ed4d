"""SQLite writers in one process queue on the write turn, never on SQLite's own lock (whose
busy handler sleeps up to 100 ms a try), and the turn always ends with its transaction."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from mamori import migrate
from mamori.db import Database
from mamori.models import open_database


@pytest.fixture
def impatient(tmp_path: Path) -> Any:
    """A migrated SQLite database whose connections give up at once on SQLite's lock
    (busy_timeout 0): any in-process writer that met that lock fails instead of waiting."""
    db = open_database(f"sqlite:///{tmp_path / 'w.db'}")
    migrate.upgrade(db.engine)
    db.engine.dispose()  # new connections get the listener below (it runs after mamori's)

    @event.listens_for(db.engine, "connect")
    def _no_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    yield db
    db.dispose()


def _write(db: Database, n: int) -> None:
    with db.session(write=True) as s:
        s.execute(text("UPDATE clinic SET name = name WHERE 0"))  # takes the write lock
        s.execute(text(f"SELECT {n}"))
        s.commit()


def test_concurrent_writers_queue_on_the_turn(impatient: Database) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(40):
                _write(impatient, k * 100 + i)
        except BaseException as exc:  # "database is locked": a writer met SQLite's lock
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


@pytest.mark.parametrize("how", ["rollback", "exception", "close", "invalidate"])
def test_the_turn_ends_with_the_transaction(impatient: Database, how: str) -> None:
    """However a write transaction ends, the next writer (another thread) gets its turn."""
    s = impatient.session(write=True)
    s.execute(text("UPDATE clinic SET name = name WHERE 0"))
    if how == "rollback":
        s.rollback()
    elif how == "exception":
        with pytest.raises(OperationalError):
            s.execute(text("SELECT * FROM no_such_table"))
        s.close()
    elif how == "close":
        s.close()  # without commit or rollback: the pool resets the connection
    else:
        s.connection().invalidate()  # the driver connection is closed and discarded
        s.close()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (_write(impatient, 1), done.set()))
    worker.start()
    worker.join(timeout=60)  # the turn waits up to 30 s before "database is locked"
    assert done.is_set()
