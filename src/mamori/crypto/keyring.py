"""Data keys, wrapped by the KEK, and the two things done with them: sealing and blind indexes.

Envelope encryption: patient data is encrypted with a 256-bit data key (AES-256-GCM); the data
keys are stored in ``data_key`` only *wrapped* by the KEK (see ``kek.py``). Rotating the KEK
rewraps a handful of rows; rotating a data key means re-encrypting the data (``rekey.py``).

A sealed value is ``b"M1" | data key id (2 bytes) | nonce (12) | ciphertext+tag``. The
associated data names the table, record, version and field it belongs to, so a ciphertext
moved to another row, version or field fails authentication instead of decrypting.

Blind indexes are HMAC-SHA-256 under a separate *index key*, truncated on purpose to a few bits
for low-entropy values so that each index value stands for many plaintexts (see the
architecture note for what they leak).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Integer, LargeBinary, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from mamori.crypto.kek import Kek, KeyUnavailable
from mamori.db import Base, UTCDateTime, utcnow
from mamori.errors import MamoriError

MAGIC = b"M1"
HEADER = struct.Struct(">2sH12s")  # magic, data key id, nonce
DATA = "data"
INDEX = "index"


class DataKey(Base):
    """One data key, only ever stored wrapped. ``retired_at`` set: no longer used, its wrapped
    bytes are erased (the key is destroyed for this database)."""

    __tablename__ = "data_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    purpose: Mapped[str] = mapped_column(String(8))  # data | index
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    kek_id: Mapped[str] = mapped_column(String(32))
    kek_source: Mapped[str] = mapped_column(String(16))
    kek_params: Mapped[str] = mapped_column(Text, default="{}")  # salt etc., never a secret
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SealBroken(MamoriError):
    """A ciphertext failed authentication: altered, truncated, or moved from elsewhere."""

    status = 500
    code = "ciphertext_invalid"

    def __init__(self, where: str) -> None:
        super().__init__(
            f"暗号化されたデータが改変・破損しているか、別の場所から移されています（{where}）。",
            f"Encrypted data is altered, damaged or was moved from elsewhere ({where}).",
        )
        self.where = where


class UnknownKey(SealBroken):
    """Sealed under a data key this process has not loaded (yet): a newer key made by
    ``mamori keys rotate --reencrypt`` in another process, or a retired one."""


def wrap_aad(key_id: int, purpose: str) -> bytes:
    return f"mamori data key v1|{key_id}|{purpose}".encode()


@dataclass(frozen=True)
class BlindIndex:
    """A keyed, truncated look-up value. ``bits`` bounds what equal values reveal."""

    name: str
    bits: int

    def of(self, index_key: bytes, clinic: object, value: str) -> int:
        mac = hmac.new(index_key, f"{self.name}|{clinic}|{value}".encode(), hashlib.sha256).digest()
        return int.from_bytes(mac[:8], "big") >> (64 - self.bits)


class Keyring:
    """The unwrapped data keys of one database, held in memory only."""

    def __init__(
        self,
        keys: dict[int, bytes],
        active: int,
        index_key: bytes,
        kek: Kek | None = None,
        row_ids: frozenset[tuple[int, str]] = frozenset(),
    ) -> None:
        self._aead = {kid: AESGCM(k) for kid, k in keys.items()}
        self.active = active
        self._index_key = index_key
        self.key_ids = frozenset(keys)
        self.kek = kek  # kept to open data keys added later (rotation in another process)
        self.row_ids = row_ids  # (id, kek_id) of the data_key rows this keyring was made from

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return HEADER.pack(MAGIC, self.active, nonce) + self._aead[self.active].encrypt(
            nonce, plaintext, aad
        )

    def open(self, blob: bytes, aad: bytes, where: str) -> bytes:
        if len(blob) < HEADER.size + 16:
            raise SealBroken(where)
        magic, kid, nonce = HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise SealBroken(where)
        aead = self._aead.get(kid)
        if aead is None:
            raise UnknownKey(where)
        try:
            return aead.decrypt(nonce, blob[HEADER.size :], aad)
        except InvalidTag:
            raise SealBroken(where) from None

    @staticmethod
    def key_id_of(blob: bytes) -> int:
        return int(HEADER.unpack_from(blob)[1]) if len(blob) >= HEADER.size else -1

    def blind(self, index: BlindIndex, clinic: object, value: str) -> int:
        return index.of(self._index_key, clinic, value)

    def file_name(self, digest: str) -> str:
        """Name of a stored document: keyed, so a known file's hash reveals nothing."""
        return hmac.new(self._index_key, f"document|{digest}".encode(), hashlib.sha256).hexdigest()


def kek_params(kek: Kek) -> str:
    return json.dumps(dict(kek.params), sort_keys=True)


def create_keys(session: Session, kek: Kek) -> None:
    """First data key and the index key of a new database."""
    if session.scalar(select(DataKey.id).limit(1)) is not None:
        raise KeyUnavailable(
            "このデータベースには既に鍵があります。", "This database already has keys."
        )
    for kid, purpose in ((1, DATA), (2, INDEX)):
        add_key(session, kek, kid, purpose)


def add_key(session: Session, kek: Kek, kid: int, purpose: str) -> None:
    session.add(
        DataKey(
            id=kid,
            purpose=purpose,
            wrapped=kek.wrap(secrets.token_bytes(32), wrap_aad(kid, purpose)),
            kek_id=kek.kek_id,
            kek_source=kek.source,
            kek_params=kek_params(kek),
        )
    )
    session.flush()


def stored_kek(session: Session) -> tuple[str, str, dict[str, Any]] | None:
    """(kek_id, source, params) the data keys are wrapped with, or None for a keyless DB."""
    row = session.scalars(select(DataKey).where(DataKey.retired_at.is_(None)).limit(1)).first()
    if row is None:
        return None
    return row.kek_id, row.kek_source, json.loads(row.kek_params)


def no_keys() -> KeyUnavailable:
    return KeyUnavailable(
        "データベースに暗号鍵の記録がありません（mamori init で作られたものではないか、"
        "鍵の記録が消されています）。起動を中止します。",
        "The database holds no data keys (not made by `mamori init`, or the key records "
        "were removed). Refusing to start.",
    )


def open_keyring(session: Session, kek: Kek) -> Keyring:
    rows = session.scalars(select(DataKey).where(DataKey.retired_at.is_(None))).all()
    if not rows:
        raise no_keys()
    if any(r.kek_id != kek.kek_id for r in rows):
        raise KeyUnavailable(
            "鍵暗号化鍵 (KEK) がこのデータベースのものではありません。起動を中止します。",
            "This key-encryption key (KEK) does not belong to this database. Refusing to start.",
        )
    data: dict[int, bytes] = {}
    index_key = b""
    for r in rows:
        key = kek.unwrap(r.wrapped, wrap_aad(r.id, r.purpose))
        if r.purpose == INDEX:
            index_key = key
        else:
            data[r.id] = key
    if not data or not index_key:
        raise KeyUnavailable(
            "データ鍵または索引鍵が欠けています。起動を中止します。",
            "A data key or the index key is missing. Refusing to start.",
        )
    return Keyring(data, max(data), index_key, kek, frozenset((r.id, r.kek_id) for r in rows))


def live_key_ids(session: Session) -> frozenset[tuple[int, str]]:
    rows = session.execute(
        select(DataKey.id, DataKey.kek_id).where(DataKey.retired_at.is_(None))
    ).all()
    return frozenset((r.id, r.kek_id) for r in rows)
