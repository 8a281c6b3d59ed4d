"""Key rotation: a new KEK (seconds: only the data keys are rewrapped) and re-encryption of all
data under a new data key (minutes, in the background, with the server up, resumable).

KEK rotation, file source: the new KEK is written to ``<file>.next`` first, the data keys are
rewrapped in one transaction, then the file is renamed over the old one. A crash between the
commit and the rename is finished at the next start (``startup.load_kek``); a crash before the
commit leaves the old key in force. Passphrase source: a new passphrase, same steps without a
file. PKCS#11: a new key is generated in the token and the old one destroyed after the commit.

Re-encryption: ``add_data_key`` makes a new data key the active one; servers notice within
seconds (``startup._refresher``) and seal every new write with it. ``reencrypt`` then walks each
sealed table in primary-key order, in batches of one transaction each, and rewrites every
ciphertext still under an older key — compare-and-swap on the old bytes, so a row a clinician
changed meanwhile is never overwritten. Killed half-way, the next run skips what is done. When a
final pass finds nothing left under the old keys (documents included), they are retired: their
wrapped bytes are erased and the retirement is recorded in the audit trail. Plaintext and
therefore every record and audit hash stay exactly as they were.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record_system
from mamori.crypto.kek import (
    Kek,
    KeyUnavailable,
    LocalKek,
    Pkcs11Kek,
    next_key_path,
    passphrase_kek,
    write_key_file,
)
from mamori.crypto.keyring import (
    DATA,
    DataKey,
    Keyring,
    add_key,
    kek_params,
    open_keyring,
    wrap_aad,
)
from mamori.crypto.sealed import FIELD, aad_for
from mamori.crypto.startup import pkcs11_config
from mamori.db import Database, utcnow
from mamori.documents.store import DocumentStore
from mamori.models import sealed_models
from mamori.settings import Settings

GRACE_SECONDS = 12.0  # > 2 × the servers' key refresh interval (startup.REFRESH_SECONDS)


# --- KEK rotation ----------------------------------------------------------------------------


@dataclass
class Rotated:
    old_kek: str
    new_kek: str
    data_keys: int
    seconds: float


def rewrap(session: Session, old: Kek, new: Kek) -> int:
    """Every live data key unwrapped with ``old`` and wrapped with ``new``, in this session."""
    rows = session.scalars(select(DataKey).where(DataKey.retired_at.is_(None))).all()
    for row in rows:
        aad = wrap_aad(row.id, row.purpose)
        row.wrapped = new.wrap(old.unwrap(row.wrapped, aad), aad)
        row.kek_id = new.kek_id
        row.kek_source = new.source
        row.kek_params = kek_params(new)
    return len(rows)


def rotate_kek(db: Database, settings: Settings, new_passphrase: str | None = None) -> Rotated:
    """Replace the KEK of the instance; see the module docstring for the crash behaviour."""

    started = time.perf_counter()
    old = db.keyring.kek
    if old is None:
        raise KeyUnavailable("鍵が開かれていません。", "No keys are open.")
    source = settings.keys.source
    pending = None
    new: Kek
    key_file = settings.keys.file
    if source == "file":
        assert key_file is not None  # load_settings requires it for this source
        pending = next_key_path(key_file)
        raw = secrets.token_bytes(32)
        write_key_file(pending, raw, exclusive=False)
        new = LocalKek(raw, "file")
    elif source == "passphrase":
        if not new_passphrase:
            raise KeyUnavailable("新しいパスフレーズが必要です。", "A new passphrase is required.")
        new = passphrase_kek(new_passphrase)
    else:
        new = Pkcs11Kek.generate(pkcs11_config(settings))
    with db.session(write=True) as session:
        count = rewrap(session, old, new)
        record_system(
            session,
            AuditTag.KEK_ROTATED,
            {"old_kek": old.kek_id, "new_kek": new.kek_id, "source": source, "keys": count},
        )
        session.flush()
        keyring = open_keyring(session, new)
        session.commit()
    db.keyring = keyring
    if pending is not None and key_file is not None:
        os.replace(pending, key_file)
        _fsync_dir(key_file.parent)
    if isinstance(old, Pkcs11Kek):
        old.destroy()
    return Rotated(old.kek_id, new.kek_id, count, time.perf_counter() - started)


def _fsync_dir(path: os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- re-encryption ---------------------------------------------------------------------------


def add_data_key(db: Database) -> int:
    """A new data key, active from now on for every process (within seconds)."""
    kek = db.keyring.kek
    with db.session(write=True) as session:
        kid = int(session.scalar(select(func.max(DataKey.id))) or 0) + 1
        add_key(session, kek, kid, DATA)
        record_system(session, AuditTag.DATA_KEY_ADDED, {"data_key": kid})
        session.commit()
    assert db.key_refresher is not None
    db.key_refresher(force=True)
    if db.keyring.active != kid:
        raise KeyUnavailable(
            "新しいデータ鍵を読み込めませんでした。", "The new data key could not be loaded."
        )
    return kid


@dataclass
class Reencrypted:
    rows: int = 0
    documents: int = 0
    skipped_busy: int = 0
    retired: list[int] = field(default_factory=list)
    seconds: float = 0.0
    per_table: dict[str, int] = field(default_factory=dict)


def _aad_columns(table: Table) -> list[Any]:
    names = ("record_type", "record_id", "version") if table.name == "record_version" else ()
    return [table.c.id, table.c.version, *(table.c[n] for n in names if n != "version")]


def _batches(db: Database, table: Table, batch: int) -> Iterator[list[Any]]:
    """Keyset pages, each read in its own short transaction: a read held open across the walk
    would stop SQLite from checkpointing its WAL (which then grows by the whole database)."""
    last = None
    cols = [*_aad_columns(table), table.c[FIELD]]
    while True:
        stmt = select(*cols).order_by(table.c.id).limit(batch)
        if last is not None:
            stmt = stmt.where(table.c.id > last)
        with db.session(write=False) as session:
            rows = session.execute(stmt).all()
        if not rows:
            return
        yield list(rows)
        last = rows[-1].id


def count_stale(db: Database, progress: Callable[[int], None] | None = None) -> int:
    """Rows and documents still sealed under a data key other than the active one."""
    keyring: Keyring = db.keyring
    stale = 0
    for model in sealed_models():
        table: Table = model.__table__  # type: ignore[attr-defined]
        for rows in _batches(db, table, 2000):
            stale += sum(1 for r in rows if keyring.key_id_of(r.sealed) != keyring.active)
            if progress:
                progress(len(rows))
    return stale


def total_rows(db: Database) -> int:
    total = 0
    with db.session(write=False) as session:
        for model in sealed_models():
            table: Table = model.__table__  # type: ignore[attr-defined]
            total += int(session.scalar(select(func.count()).select_from(table)) or 0)
    return total


def reencrypt(
    db: Database,
    store: DocumentStore,
    *,
    batch: int = 500,
    grace: float = GRACE_SECONDS,
    progress: Callable[[int], None] | None = None,
) -> Reencrypted:
    """Re-encrypt everything under the active data key, then retire the older data keys."""
    out = Reencrypted()
    created = _active_created_at(db)
    wait = grace - (utcnow() - created).total_seconds()
    if wait > 0:
        time.sleep(wait)  # let running servers pick the new key up before the walk starts
    started = time.perf_counter()
    keyring: Keyring = db.keyring
    active = keyring.active
    for model in sealed_models():
        table: Table = model.__table__  # type: ignore[attr-defined]
        done = 0
        for rows in _batches(db, table, batch):
            todo = [r for r in rows if keyring.key_id_of(r.sealed) != active]
            if todo:
                with db.session(write=True) as session:
                    for r in todo:
                        aad = aad_for(model, r._mapping.get)
                        plain = keyring.open(r.sealed, aad, f"{table.name} {r.id}")
                        result = session.execute(
                            update(table)
                            .where(table.c.id == r.id, table.c[FIELD] == r.sealed)
                            .values({FIELD: keyring.seal(plain, aad)})
                        )
                        if result.rowcount == 1:  # type: ignore[attr-defined]
                            done += 1
                        else:
                            out.skipped_busy += 1  # changed meanwhile: the writer sealed it
                    session.commit()
            if progress:
                progress(len(rows))
        out.rows += done
        out.per_table[table.name] = done
    for path in store.files():
        if store.reseal(path):
            out.documents += 1
    out.retired = retire_old_keys(db, store)
    out.seconds = time.perf_counter() - started
    with db.session(write=True) as session:
        record_system(
            session,
            AuditTag.DATA_REENCRYPTED,
            {"data_key": active, "rows": out.rows, "documents": out.documents},
        )
        session.commit()
    return out


def _active_created_at(db: Database) -> dt.datetime:
    with db.session(write=False) as session:
        row = session.get(DataKey, db.keyring.active)
        assert row is not None
        return row.created_at


def retire_old_keys(db: Database, store: DocumentStore) -> list[int]:
    """Erase older data keys once nothing is sealed under them any more; refuses otherwise."""
    keyring: Keyring = db.keyring
    with db.session(write=False) as session:
        newest = session.scalar(
            select(func.max(DataKey.id)).where(
                DataKey.purpose == DATA, DataKey.retired_at.is_(None)
            )
        )
    if newest != keyring.active:
        raise KeyUnavailable(
            "このプロセスの鍵が最新ではありません。もう一度実行してください。",
            "This process does not hold the newest data key; run again.",
        )
    left = count_stale(db) + sum(
        1 for p in store.files() if keyring.key_id_of(p.read_bytes()) != keyring.active
    )
    if left:
        raise KeyUnavailable(
            f"まだ古い鍵で暗号化されたデータが {left} 件あります。再暗号化をもう一度実行して"
            "ください（サーバーが新しい鍵を読み込めない場合はサーバーを再起動）。",
            f"{left} items are still encrypted under an older key; run the re-encryption again "
            "(restart the server if it cannot load the new key).",
        )
    retired: list[int] = []
    with db.session(write=True) as session:
        for row in session.scalars(
            select(DataKey).where(
                DataKey.retired_at.is_(None), DataKey.purpose == DATA, DataKey.id != keyring.active
            )
        ):
            row.retired_at = utcnow()
            row.wrapped = b""  # the key is destroyed for this database
            retired.append(row.id)
        for kid in retired:
            record_system(session, AuditTag.DATA_KEY_RETIRED, {"data_key": kid})
        session.commit()
    assert db.key_refresher is not None
    db.key_refresher(force=True)
    return retired
