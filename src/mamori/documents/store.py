"""Encrypted, content-addressed document store outside the database.

A document's bytes are encrypted once (AES-256-GCM under the active data key) and written at
``v1/ab/cd/<name>``, where ``name`` is a keyed hash (HMAC under the index key) of the
plaintext's SHA-256: identical uploads are stored once, yet a known letter's hash does not
reveal whether the clinic holds it. The name is the ciphertext's associated data, so a file
swapped for another fails authentication. Writes go to a temporary file, fsynced, renamed, and
the directory fsynced: a crash leaves the whole file or nothing. Reading checks the plaintext
hash as well. Callers pass the plaintext SHA-256 (kept sealed in the document record) and never
touch paths.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mamori.crypto.keyring import Keyring, SealBroken, UnknownKey
from mamori.errors import MamoriError

LAYOUT = "v1"


class DocumentCorrupt(MamoriError):
    status = 500
    code = "document_corrupt"


def _aad(name: str) -> bytes:
    return f"mamori/v1|document|{name}".encode()


class DocumentStore:
    """``keys`` is the ``Database`` (or anything with a ``keyring``): read at each call, so a
    rotated data key is used as soon as it is active."""

    def __init__(self, root: Path, keys: Any) -> None:
        self.root = root
        self._keys = keys

    @property
    def keyring(self) -> Keyring:
        keyring = getattr(self._keys, "keyring", None)
        if keyring is None:
            raise DocumentCorrupt(
                "暗号鍵がないため文書を扱えません。", "No keys loaded: documents unavailable."
            )
        return keyring  # type: ignore[no-any-return]

    def path_for(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("not a sha256 hex digest")
        name = self.keyring.file_name(digest)
        return self.root / LAYOUT / name[:2] / name[2:4] / name

    def put(self, data: bytes) -> str:
        """Store ``data`` (once); returns its plaintext SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if not target.exists():
            _write_atomically(target, self.keyring.seal(data, _aad(target.name)))
        return digest

    def get(self, digest: str) -> bytes:
        path = self.path_for(digest)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise DocumentCorrupt(
                "文書の本体が見つかりません。", "Document content is missing."
            ) from None
        where = f"document {path.name[:12]}"
        try:
            try:
                data = self.keyring.open(blob, _aad(path.name), where)
            except UnknownKey:
                refresh = getattr(self._keys, "key_refresher", None)
                if refresh is not None:
                    refresh(force=True)
                data = self.keyring.open(blob, _aad(path.name), where)
        except SealBroken:
            raise DocumentCorrupt(
                "文書の本体が改変または破損しています。",
                "Document content failed authentication (altered or damaged).",
            ) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise DocumentCorrupt(
                "文書の本体が改変または破損しています。",
                "Document content does not match its hash.",
            )
        return data

    def files(self) -> Iterator[Path]:
        yield from sorted((self.root / LAYOUT).glob("*/*/*"))

    def reseal(self, path: Path) -> bool:
        """Re-encrypt one stored file under the active data key; False if it already is."""
        blob = path.read_bytes()
        keyring = self.keyring
        if keyring.key_id_of(blob) == keyring.active:
            return False
        data = keyring.open(blob, _aad(path.name), f"document {path.name[:12]}")
        _write_atomically(path, keyring.seal(data, _aad(path.name)))
        return True


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
