"""Encryption at rest: the KEK from its source, the data keys from the database, attached to
the ``Database`` before anything is served. Missing or wrong key → refuse to start."""

from __future__ import annotations

import getpass
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from mamori.crypto.kek import (
    Kek,
    KeyUnavailable,
    Pkcs11Config,
    Pkcs11Kek,
    next_key_path,
    passphrase_kek,
    read_key_file,
)
from mamori.crypto.keyring import (
    Keyring,
    create_keys,
    live_key_ids,
    no_keys,
    open_keyring,
    stored_kek,
)
from mamori.db import Database
from mamori.settings import Settings

PASSPHRASE_ENV = "MAMORI_KEK_PASSPHRASE"  # noqa: S105 - a variable name
PIN_ENV = "MAMORI_PKCS11_PIN"


def forbidden_dirs(settings: Settings) -> list[Path]:
    """Directories a KEK file must not be in: the instance and the SQLite database's."""
    dirs = [settings.home]
    if settings.database_url.startswith("sqlite:///"):
        dirs.append(Path(settings.database_url.removeprefix("sqlite:///")).parent)
    return dirs


def _passphrase() -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if sys.stdin.isatty():
        return getpass.getpass("鍵のパスフレーズ / key passphrase: ")
    raise KeyUnavailable(
        f"鍵のパスフレーズがありません（端末で入力するか {PASSPHRASE_ENV} を設定）。"
        "起動を中止します。",
        f"No key passphrase (type it at a terminal or set {PASSPHRASE_ENV}). Refusing to start.",
    )


def pkcs11_config(settings: Settings) -> Pkcs11Config:
    keys = settings.keys
    pin = os.environ.get(PIN_ENV, "")
    if not pin and keys.pkcs11_pin_file is not None:
        st = keys.pkcs11_pin_file.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyUnavailable(
                f"PIN ファイル {keys.pkcs11_pin_file} が他のユーザーから読めます。",
                f"PIN file {keys.pkcs11_pin_file} is readable by other users.",
            )
        pin = keys.pkcs11_pin_file.read_text(encoding="utf-8").strip()
    if not pin:
        raise KeyUnavailable(
            f"PKCS#11 の PIN がありません（{PIN_ENV} または pkcs11_pin_file）。起動を中止します。",
            f"No PKCS#11 PIN ({PIN_ENV} or pkcs11_pin_file). Refusing to start.",
        )
    assert keys.pkcs11_module is not None
    return Pkcs11Config(keys.pkcs11_module, keys.pkcs11_token, pin)


def load_kek(settings: Settings, stored: tuple[str, str, dict[str, Any]] | None) -> Kek:
    """The configured KEK: for an existing database, the one its keys are wrapped with; for a
    new one (``stored`` None), a new passphrase salt or a new key in the token."""
    source = settings.keys.source
    if stored is not None and stored[1] != source:
        raise KeyUnavailable(
            f"データ鍵は {stored[1]} の鍵で保護されていますが、設定は {source} です。"
            "起動を中止します。",
            f"The data keys are protected by a {stored[1]} key but [keys] says {source}. "
            "Refusing to start.",
        )
    if source == "file":
        path = settings.keys.file
        assert path is not None
        kek = read_key_file(path, forbidden_dirs(settings))
        pending = next_key_path(path)
        if stored is not None and stored[0] != kek.kek_id and pending.exists():
            # a rotation committed its new wrapping and stopped before renaming the new key
            # file into place: finish it
            fresh = read_key_file(pending, forbidden_dirs(settings))
            if fresh.kek_id == stored[0]:
                os.replace(pending, path)
                return fresh
        return kek
    if source == "passphrase":
        return passphrase_kek(_passphrase(), stored[2] if stored else None)
    config = pkcs11_config(settings)
    if stored is None:
        return Pkcs11Kek.generate(config)
    return Pkcs11Kek(config, stored[0])


def open_keys(db: Database, settings: Settings, *, create: bool = False) -> Keyring:
    """Load (or, for a new database, make) the data keys and attach them to ``db``."""
    with db.session(write=True) as session:
        stored = stored_kek(session)
        if stored is None and not create:
            raise no_keys()
        kek = load_kek(settings, stored)
        if stored is None:
            create_keys(session, kek)
        keyring = open_keyring(session, kek)
        session.commit()
    db.keyring = keyring
    db.key_refresher = _refresher(db, settings)
    return keyring


REFRESH_SECONDS = 5.0
log = logging.getLogger("mamori.keys")


def _refresher(db: Database, settings: Settings) -> Callable[..., None]:
    """Notice data keys added or retired by another process (``mamori keys rotate``)."""
    last = [time.monotonic()]
    lock = threading.Lock()

    def refresh(force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - last[0] < REFRESH_SECONDS:
            return
        with lock:
            last[0] = now
            current: Keyring = db.keyring
            with Session(db.engine) as session:
                if live_key_ids(session) == current.row_ids:
                    return
                stored = stored_kek(session)
                try:
                    kek = current.kek
                    if kek is None or (stored is not None and stored[0] != kek.kek_id):
                        kek = load_kek(settings, stored)  # the KEK was rotated: read it again
                    session.info["mamori_db"] = db
                    db.keyring = open_keyring(session, kek)
                except KeyUnavailable as exc:
                    # keep serving with the keys already open; new keys need a restart
                    log.warning("new data keys cannot be opened: %s", exc.en)

    return refresh
