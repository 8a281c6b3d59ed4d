"""Content-addressed document store outside the database.

Each content is written once at ``sha256/ab/cd/<hash>``: to a temporary file, fsynced, renamed,
and the directory fsynced, so a crash leaves either the whole file or nothing. Reading checks
the hash, so a damaged or swapped file is refused rather than shown as the patient's letter.
The encryption issue wraps ``put``/``get``; callers never touch paths.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from mamori.errors import MamoriError


class DocumentCorrupt(MamoriError):
    status = 500
    code = "document_corrupt"


class DocumentStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("not a sha256 hex digest")
        return self.root / "sha256" / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if target.exists():
            return digest
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
        return digest

    def get(self, digest: str) -> bytes:
        path = self.path_for(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DocumentCorrupt(
                "文書の本体が見つかりません。", "Document content is missing."
            ) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise DocumentCorrupt(
                "文書の本体が改変または破損しています。",
                "Document content does not match its hash.",
            )
        return data
