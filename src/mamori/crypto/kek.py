"""The key-encryption key (KEK): where it lives, and wrapping data keys with it.

The KEK never sits in the database or the instance directory. Three sources:

* ``file`` (default): 32 random bytes in a text file outside the instance directory, mode
  0600, made by ``mamori init``. The server refuses a file inside the instance directory, next
  to the SQLite database, or readable by anyone else.
* ``passphrase``: Argon2id over a passphrase typed at start (or ``MAMORI_KEK_PASSPHRASE``); the
  salt and cost parameters are stored with the wrapped data keys, the passphrase nowhere.
* ``pkcs11``: an AES-256 key generated inside a PKCS#11 token (an HSM, or SoftHSM2 in tests),
  never extractable; wrapping and unwrapping happen in the token.

Every KEK has an identifier (``kek_id``) stored beside each wrapped data key, so a wrong key is
told apart from damaged data and refused with a clear message before anything is served.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mamori.errors import InstanceError

KEY_BYTES = 32
FILE_MAGIC = "mamori-kek-v1"
# Argon2id for a typed passphrase: RFC 9106's second recommended profile (64 MiB, t=3, p=4).
PASSPHRASE_PARAMS = {"t": 3, "m": 65536, "p": 4}
MIN_PASSPHRASE_CHARS = 16


class KeyUnavailable(InstanceError):
    code = "key_unavailable"


class Kek(Protocol):
    """What the keyring needs from a KEK, wherever it lives."""

    @property
    def kek_id(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...

    def wrap(self, key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes: ...


def _kek_id(raw: bytes) -> str:
    return hmac.new(raw, b"mamori kek id v1", hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class LocalKek:
    """A KEK held in this process's memory (file or passphrase source)."""

    raw: bytes = field(repr=False)
    source: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kek_id(self) -> str:
        return _kek_id(self.raw)

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(self.raw).encrypt(nonce, key, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return AESGCM(self.raw).decrypt(blob[:12], blob[12:], aad)
        except InvalidTag:
            raise _wrong_key() from None


def _wrong_key() -> KeyUnavailable:
    return KeyUnavailable(
        "データ鍵を鍵暗号化鍵 (KEK) で開けません。鍵が違うか、鍵の記録が改変されています。"
        "起動を中止します。",
        "The data keys cannot be opened with this key-encryption key (KEK): wrong key, or the "
        "key records were altered. Refusing to start.",
    )


# --- file ------------------------------------------------------------------------------------


def new_key_file(path: Path) -> LocalKek:
    """Write a fresh KEK to ``path`` (0600, parent 0700); refuses to overwrite."""
    raw = secrets.token_bytes(KEY_BYTES)
    write_key_file(path, raw, exclusive=True)
    return LocalKek(raw, "file")


def write_key_file(path: Path, raw: bytes, *, exclusive: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key_file_text(raw))
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)


def key_file_text(raw: bytes) -> str:
    return f"{FILE_MAGIC} {base64.b64encode(raw).decode()}\n"


def next_key_path(path: Path) -> Path:
    """Where a rotation writes the new KEK before it is renamed over the old one."""
    return path.with_name(path.name + ".next")


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def check_outside(path: Path, forbidden: list[Path]) -> None:
    """The KEK file must not sit with the data it protects."""
    for directory in forbidden:
        if _inside(path, directory):
            raise KeyUnavailable(
                f"鍵ファイル {path} がデータと同じ場所（{directory}）にあります。鍵はデータの外"
                "（別のディスクや USB、/etc/mamori など）に置いてください。起動を中止します。",
                f"Key file {path} is inside {directory}, beside the data it protects; keep it "
                "elsewhere (another disk, a USB key, /etc/mamori). Refusing to start.",
            )


def check_key_location(path: Path, forbidden: list[Path]) -> None:
    """Outside the data, present, and readable by its owner only."""
    check_outside(path, forbidden)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyUnavailable(
            f"鍵ファイル {path} がありません。鍵がなければ患者データは読めません。"
            "鍵の控え（mamori keys export）から mamori keys recover で戻してください。"
            "起動を中止します。",
            f"Key file {path} is missing; without it no patient data can be read. Restore it "
            "from its recovery export (`mamori keys recover`). Refusing to start.",
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyUnavailable(
            f"鍵ファイル {path} が他のユーザーから読めます（chmod 600 が必要）。起動を中止します。",
            f"Key file {path} is readable by other users (needs chmod 600). Refusing to start.",
        )
    if st.st_nlink > 1:
        # A hard link is the same file under a second name, which may sit beside the data
        # (a copy of the data directory would then carry the key); the path check above
        # cannot see it. mamori writes key files by rename, always with one name.
        raise KeyUnavailable(
            f"鍵ファイル {path} に別名（ハードリンク {st.st_nlink} 個）があります。データの中に"
            "置かれている可能性があるため起動を中止します。余分なリンクを削除してください。",
            f"Key file {path} has {st.st_nlink} names (hard links); one may sit beside the data. "
            "Remove the extra links. Refusing to start.",
        )


def read_key_file(path: Path, forbidden: list[Path]) -> LocalKek:
    check_key_location(path, forbidden)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    magic, _, body = text.partition(" ")
    try:
        raw = base64.b64decode(body, validate=True)
    except ValueError:
        raw = b""
    if magic != FILE_MAGIC or len(raw) != KEY_BYTES:
        raise KeyUnavailable(
            f"鍵ファイル {path} の形式が正しくありません。起動を中止します。",
            f"Key file {path} is malformed. Refusing to start.",
        )
    return LocalKek(raw, "file")


# --- passphrase ------------------------------------------------------------------------------


def passphrase_kek(passphrase: str, params: Mapping[str, Any] | None = None) -> LocalKek:
    """Argon2id-derived KEK. ``params`` (salt and costs) come from the key records; a new
    passphrase gets a new random salt."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise KeyUnavailable(
            f"パスフレーズは {MIN_PASSPHRASE_CHARS} 文字以上にしてください。",
            f"The passphrase must have at least {MIN_PASSPHRASE_CHARS} characters.",
        )
    p: dict[str, Any] = (
        dict(params) if params else {**PASSPHRASE_PARAMS, "salt": secrets.token_hex(16)}
    )
    raw = hash_secret_raw(
        passphrase.encode("utf-8"),
        bytes.fromhex(str(p["salt"])),
        time_cost=int(p["t"]),
        memory_cost=int(p["m"]),
        parallelism=int(p["p"]),
        hash_len=KEY_BYTES,
        type=Type.ID,
    )
    return LocalKek(raw, "passphrase", p)


# --- PKCS#11 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pkcs11Config:
    module: Path
    token_label: str
    pin: str = field(repr=False)


class Pkcs11Kek:
    """An AES-256 key inside a PKCS#11 token, found by its CKA_ID (= ``kek_id``)."""

    source = "pkcs11"

    def __init__(self, config: Pkcs11Config, kek_id: str) -> None:
        self.config = config
        self._kek_id = kek_id
        self.params: Mapping[str, Any] = {"token": config.token_label}

    @property
    def kek_id(self) -> str:
        return self._kek_id

    def _session(self) -> Any:
        import pkcs11  # optional dependency: only sites with an HSM need it

        try:
            lib = pkcs11.lib(str(self.config.module))
            token = lib.get_token(token_label=self.config.token_label)
            return token.open(user_pin=self.config.pin, rw=True)
        except Exception as exc:  # the library raises many unrelated types
            raise KeyUnavailable(
                f"PKCS#11 トークン {self.config.token_label} を開けません: {exc!r}。"
                "起動を中止します。",
                f"Cannot open PKCS#11 token {self.config.token_label}: {exc!r}. Refusing to start.",
            ) from exc

    def _key(self, session: Any) -> Any:
        from pkcs11 import ObjectClass  # optional dependency: only sites with an HSM need it
        from pkcs11.exceptions import (
            MultipleObjectsReturned,
            NoSuchKey,
        )  # optional dependency: only sites with an HSM need it

        try:
            return session.get_key(
                object_class=ObjectClass.SECRET_KEY, id=bytes.fromhex(self._kek_id)
            )
        except (NoSuchKey, MultipleObjectsReturned):
            raise KeyUnavailable(
                f"PKCS#11 トークンに鍵 {self._kek_id} がありません。起動を中止します。",
                f"The PKCS#11 token has no key {self._kek_id}. Refusing to start.",
            ) from None

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        from pkcs11 import Mechanism  # optional dependency: only sites with an HSM need it
        from pkcs11.mechanisms import (
            GCMParams,
        )  # optional dependency: only sites with an HSM need it

        nonce = secrets.token_bytes(12)
        with self._session() as session:
            ct = self._key(session).encrypt(
                key, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )
        return nonce + bytes(ct)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        from pkcs11 import Mechanism  # optional dependency: only sites with an HSM need it
        from pkcs11.exceptions import (
            PKCS11Error,
        )  # optional dependency: only sites with an HSM need it
        from pkcs11.mechanisms import (
            GCMParams,
        )  # optional dependency: only sites with an HSM need it

        with self._session() as session:
            key = self._key(session)
            try:
                return bytes(
                    key.decrypt(
                        blob[12:],
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=GCMParams(blob[:12], aad),
                    )
                )
            except PKCS11Error:
                raise _wrong_key() from None

    @classmethod
    def generate(cls, config: Pkcs11Config) -> Pkcs11Kek:
        """A new non-extractable AES-256 key in the token, labelled and identified."""
        from pkcs11 import Attribute, KeyType  # optional dependency: only sites with an HSM need it

        kek_id = secrets.token_hex(16)
        kek = cls(config, kek_id)
        with kek._session() as session:
            session.generate_key(
                KeyType.AES,
                256,
                id=bytes.fromhex(kek_id),
                label=f"mamori-kek-{kek_id[:8]}",
                store=True,
                template={
                    Attribute.EXTRACTABLE: False,
                    Attribute.SENSITIVE: True,
                    Attribute.TOKEN: True,
                },
            )
        return kek

    def destroy(self) -> None:
        with self._session() as session:
            self._key(session).destroy()
