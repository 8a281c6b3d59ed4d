"""The backup format ("mamori-backup-v1"): streams, page deltas and signed manifests.

Every object is a standard file a clinic can open without mamori:

- ``db.full.sqlite.zst.age`` — the SQLite database: ``age -d -i KEY | zstd -d > mamori.db``;
- ``db.delta.pages.zst.age`` — pages changed since a full (format below);
- ``instance.tar.zst.age`` — settings, secrets, audit checkpoints, TLS files and the KEK;
- ``documents.json.zst`` — which document object holds which stored document (no patient data:
  names are keyed hashes), readable without the private key so that ``verify`` can check it;
- ``documents/<sha256>.age`` — each stored document file, encrypted once per medium;
- ``manifest.json`` + ``manifest.sig`` — canonical JSON and its Ed25519 signature (base64).

Page delta (after age and zstd)::

    b"mamori-pages-v1\\n"
    one JSON line: {"page_size": 4096, "page_count": N, "base_sha256": "…", "sha256": "…"}
    then per changed page: 4-byte big-endian page index (from 0), the page's bytes

Applying it: copy the base database, truncate to ``page_count * page_size``, write each page at
``index * page_size``; the result's SHA-256 is ``sha256`` (``docs/apply_pages.py`` does it with
Python's standard library; ``PatchedWriter`` does it while the full is being decrypted).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import queue
import struct
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyrage
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mamori.canonical import canonical_json
from mamori.errors import MamoriError

FORMAT = "mamori-backup-v1"
PAGES_MAGIC = b"mamori-pages-v1\n"
PAGE_DIGEST = 16  # bytes of BLAKE2b per page in the local page map
CHUNK = 1 << 20
# The database is mostly AES-GCM ciphertext (patient fields) around compressible structure:
# on the M clinic zstd -1 keeps 58.9 % of the bytes and -3 keeps 59.1 %, at 1.6× the CPU.
ZSTD_LEVEL = 1
MAX_MANIFEST_BYTES = 16 << 20
MAX_RECIPIENTS = 8


class BackupError(MamoriError):
    status = 500
    code = "backup_failed"


class BackupInvalid(BackupError):
    """A backup that fails verification: never restored from."""

    code = "backup_invalid"


# ---------------------------------------------------------------- streams


class HashingWriter:
    """Write-through file wrapper that counts bytes and hashes them (SHA-256)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


class BackgroundWriter:
    """Writes to ``fh`` from a second thread, so that compression and encryption (in this
    thread and zstd's) overlap with the disk: file writes release the GIL. Small writes are
    gathered into ``CHUNK``-sized blocks; ``close()`` waits and re-raises a write error."""

    def __init__(self, fh: Any, depth: int = 8) -> None:

        self.fh = fh
        self._q: queue.Queue[bytes | None] = queue.Queue(depth)
        self._buf = bytearray()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="backup-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._q.get()) is not None:
            if self._error is None:
                try:
                    self.fh.write(block)
                except BaseException as exc:  # reported to the producer by write()/close()
                    self._error = exc

    def write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        self._buf += data
        if len(self._buf) >= CHUNK:
            self._q.put(bytes(self._buf))
            self._buf.clear()
        return len(data)

    def flush(self) -> None:
        pass  # close() is the point where everything has been written

    def close(self) -> None:
        if self._buf:
            self._q.put(bytes(self._buf))
            self._buf.clear()
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


@dataclass(frozen=True)
class Sealed:
    path: Path
    sha256: str
    size: int


def recipients_of(lines: Iterable[str]) -> list[pyrage.x25519.Recipient]:
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(pyrage.x25519.Recipient.from_str(line))
        except pyrage.RecipientError as exc:
            raise BackupError(
                f"バックアップの受取人（公開鍵）が正しくありません: {line[:20]}…",
                f"Invalid backup recipient (public key): {line[:20]}…",
            ) from exc
    if not out or len(out) > MAX_RECIPIENTS:
        raise BackupError(
            "バックアップの公開鍵がありません。`mamori backup keygen` で作成してください。",
            "No backup public keys: create them with `mamori backup keygen`.",
        )
    return out


class HashingReader(io.RawIOBase):
    """Read-through wrapper that hashes (SHA-256) what is read: an object is checked against
    its manifest while it is decrypted, instead of being read twice."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def drain(self) -> str:
        """Hash the rest (after a failed decryption) and return the whole object's digest."""
        while self.read(CHUNK):
            pass
        return self.sha.hexdigest()


def seal_to(
    src: BinaryIO, out: BinaryIO, recipients: Sequence[pyrage.x25519.Recipient], *, compress: bool
) -> tuple[str, int]:
    """Stream ``src`` through zstd (optional) and age into ``out``; the ciphertext's SHA-256
    and size, hashed on the way out."""
    reader: Any = src
    if compress:
        reader = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=2).stream_reader(
            src, read_size=CHUNK
        )
    sink = BackgroundWriter(out)
    hashed = HashingWriter(sink)  # type: ignore[arg-type]
    try:
        pyrage.encrypt_io(reader, hashed, list(recipients))
    finally:
        sink.close()
    return hashed.sha.hexdigest(), hashed.size


def seal_file(
    src: BinaryIO, dest: Path, recipients: Sequence[pyrage.x25519.Recipient], *, compress: bool
) -> Sealed:
    """``seal_to`` a new private staging file (scratch: not synced; the copy on the target is)."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        digest, size = seal_to(src, fh, recipients, compress=compress)
    return Sealed(dest, digest, size)


def open_file(
    src: BinaryIO, dest: BinaryIO, identities: Sequence[Any], *, compressed: bool
) -> None:
    """age-decrypt (and zstd-decompress) ``src`` into ``dest``."""
    if not compressed:
        pyrage.decrypt_io(src, dest, list(identities))
        return
    writer = zstandard.ZstdDecompressor().stream_writer(dest, write_size=CHUNK, closefd=False)
    pyrage.decrypt_io(src, writer, list(identities))
    writer.flush()  # type: ignore[no-untyped-call]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- SQLite pages


@dataclass(frozen=True)
class PageMap:
    """Per-page BLAKE2b digests of a database snapshot, plus its whole-file SHA-256."""

    page_size: int
    digests: bytes  # PAGE_DIGEST bytes per page
    sha256: str
    size: int

    @property
    def page_count(self) -> int:
        return len(self.digests) // PAGE_DIGEST

    def digest(self, index: int) -> bytes:
        return self.digests[index * PAGE_DIGEST : (index + 1) * PAGE_DIGEST]

    def changed_since(self, old: PageMap) -> list[int]:
        """Indexes of pages that differ from ``old`` (or are beyond its end)."""
        if old.page_size != self.page_size:
            return list(range(self.page_count))
        a, b, n = self.digests, old.digests, PAGE_DIGEST
        common = min(len(a), len(b)) // n
        if a[: common * n] == b[: common * n]:
            return list(range(common, self.page_count))
        changed = [i for i in range(common) if a[i * n : (i + 1) * n] != b[i * n : (i + 1) * n]]
        return changed + list(range(common, self.page_count))

    def save(self, path: Path) -> None:
        header = json.dumps(
            {"page_size": self.page_size, "sha256": self.sha256, "size": self.size}
        ).encode()
        write_private(path, struct.pack(">I", len(header)) + header + self.digests)

    @classmethod
    def load(cls, path: Path) -> PageMap:
        raw = path.read_bytes()
        (n,) = struct.unpack(">I", raw[:4])
        head = json.loads(raw[4 : 4 + n])
        return cls(int(head["page_size"]), raw[4 + n :], str(head["sha256"]), int(head["size"]))


def sqlite_page_size(path: Path) -> int:
    with path.open("rb") as fh:
        header = fh.read(100)
    if not header.startswith(b"SQLite format 3\x00"):
        raise BackupError("スナップショットが SQLite ではありません。", "Snapshot is not SQLite.")
    (size,) = struct.unpack(">H", header[16:18])
    return 65536 if size == 1 else size


def map_pages(path: Path) -> PageMap:
    """One read of the file: the whole-file SHA-256 in a second thread (``hashlib`` releases
    the GIL on large buffers) while this one digests page by page."""
    page_size = sqlite_page_size(path)
    whole = hashlib.sha256()
    digests = bytearray()
    size = 0
    blake2b = hashlib.blake2b
    with path.open("rb") as fh, ThreadPoolExecutor(1) as hasher:
        pending = None
        while chunk := fh.read(CHUNK - CHUNK % page_size):
            if pending is not None:
                pending.result()  # in order, and at most two chunks in memory
            pending = hasher.submit(whole.update, chunk)
            size += len(chunk)
            view = memoryview(chunk)
            for off in range(0, len(chunk), page_size):
                digests += blake2b(view[off : off + page_size], digest_size=16).digest()
        if pending is not None:
            pending.result()
    return PageMap(page_size, bytes(digests), whole.hexdigest(), size)


class DeltaReader(io.RawIOBase):
    """The page-delta stream of ``pages`` from ``snapshot``, read lazily (for zstd)."""

    def __init__(self, snapshot: Path, new: PageMap, base: PageMap, pages: Sequence[int]) -> None:
        self._fh = snapshot.open("rb")
        self._pages = iter(pages)
        self._size = new.page_size
        head = {
            "page_size": new.page_size,
            "page_count": new.page_count,
            "base_sha256": base.sha256,
            "sha256": new.sha256,
        }
        self._buf = PAGES_MAGIC + json.dumps(head, separators=(",", ":")).encode() + b"\n"

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = n if n and n > 0 else CHUNK
        while len(self._buf) < want:
            page = next(self._pages, None)
            if page is None:
                break
            self._fh.seek(page * self._size)
            self._buf += struct.pack(">I", page) + self._fh.read(self._size)
        out, self._buf = self._buf[:want], self._buf[want:]
        return out

    def close(self) -> None:
        self._fh.close()
        super().close()


class PageDelta:
    """A decrypted page delta on disk, opened for ``PatchedWriter``: its header, and where in
    the file each changed page's bytes lie (the pages themselves are read when they are due)."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("rb")
        try:
            if self._fh.read(len(PAGES_MAGIC)) != PAGES_MAGIC:
                raise BackupInvalid("差分の形式が正しくありません。", "Not a mamori page delta.")
            head = json.loads(self._fh.readline(4096))
            self.page_size, self.page_count = int(head["page_size"]), int(head["page_count"])
            self.base_sha256, self.sha256 = str(head["base_sha256"]), str(head["sha256"])
            if self.page_size < 512 or self.page_size & (self.page_size - 1):
                raise ValueError(self.page_size)
            self.offsets: dict[int, int] = {}
            at, end = self._fh.tell(), os.fstat(self._fh.fileno()).st_size
            while at < end:
                self._fh.seek(at)
                (page,) = struct.unpack(">I", self._fh.read(4))
                if page >= self.page_count or at + 4 + self.page_size > end:
                    raise BackupInvalid("差分が途中で切れています。", "Truncated page delta.")
                self.offsets[page] = at + 4  # a page written twice: the later bytes win
                at += 4 + self.page_size
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            self._fh.close()
            raise BackupInvalid(
                "差分の形式が正しくありません。", f"Not a mamori page delta: {exc}"
            ) from exc
        except BaseException:
            self._fh.close()
            raise

    def expect(self, db: dict[str, Any]) -> None:
        """Refuse a delta whose header disagrees with the signed manifest's ``db`` entry before
        anything is written (a header naming billions of pages would otherwise fill the disk
        with zeros before the result's hash could disagree)."""
        want = (db.get("page_size"), db.get("page_count"), db.get("sha256"))
        if (self.page_size, self.page_count, self.sha256) != want:
            raise BackupInvalid(
                "差分が目録と一致しません。", "The page delta does not match its manifest."
            )

    def page(self, index: int) -> bytes:
        self._fh.seek(self.offsets[index])
        return self._fh.read(self.page_size)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PageDelta:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class PatchedWriter:
    """The full backup's plaintext stream, patched with a page delta on its way to ``out``:
    restoring a delta generation is one pass over the database, not three (write the full,
    read it to check the delta's base, read it again to check the result).

    What is written is exactly what applying the delta to the full gives (``docs/
    apply_pages.py``): the full cut (or grown) to ``page_count`` pages, changed pages replaced
    and pages past the full's end that the delta does not carry left as zeros. ``close()``
    checks that the stream was the delta's base; the caller checks the result's SHA-256 (the
    writer below this one hashes it) against the manifest."""

    def __init__(self, out: Any, delta: PageDelta) -> None:
        self.out = out
        self.delta = delta
        self.base = hashlib.sha256()
        self._size = delta.page_size
        self._pending = bytearray()
        self._page = 0  # index of the next page to write
        self._due = sorted(delta.offsets)
        self._next = 0  # position in _due

    def write(self, data: bytes) -> int:
        self.base.update(data)
        if not self._pending and len(data) % self._size == 0:  # zstd's whole 1 MiB blocks
            self._emit(bytes(data))  # no copy when it is bytes already
            return len(data)
        self._pending += data
        whole = len(self._pending) - len(self._pending) % self._size
        if whole:
            self._emit(bytes(self._pending[:whole]))
            del self._pending[:whole]
        return len(data)

    def _emit(self, block: bytes) -> None:
        first, count = self._page, len(block) // self._size
        last = min(first + count, self.delta.page_count)  # pages past the new end are cut
        self._page += count
        if last <= first:
            return
        block = block[: (last - first) * self._size] if last < first + count else block
        due, i = self._due, self._next
        if i < len(due) and due[i] < last:
            patched = bytearray(block)
            while i < len(due) and due[i] < last:
                off = (due[i] - first) * self._size
                patched[off : off + self._size] = self.delta.page(due[i])
                i += 1
            self._next = i
            block = bytes(patched)
        self.out.write(block)

    def flush(self) -> None:
        pass  # close() finishes the stream

    def close(self) -> None:
        if self._pending:  # a full that is not whole pages is not a SQLite database
            raise BackupInvalid(
                "完全バックアップの大きさがページの倍数ではありません。",
                "The full backup is not a whole number of pages.",
            )
        if self.base.hexdigest() != self.delta.base_sha256:
            raise BackupInvalid(
                "差分の元になる完全バックアップが一致しません。",
                "The full backup this delta applies to does not match.",
            )
        zeros = bytes(self._size)
        while self._page < self.delta.page_count:  # the database grew after the full
            page = self._page
            self.out.write(self.delta.page(page) if page in self.delta.offsets else zeros)
            self._page += 1


# ---------------------------------------------------------------- manifests


def signing_key(audit_seed: bytes) -> Ed25519PrivateKey:
    """The manifest signing key, derived (HKDF) from the instance's audit signing seed: a
    separate key for a separate purpose, without another secret file to lose."""
    seed = HKDF(SHA256(), 32, salt=None, info=b"mamori backup manifest signing v1").derive(
        audit_seed
    )
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return "ed25519:" + base64.b64encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def public_from_text(text: str) -> Ed25519PublicKey:
    try:
        if not text.startswith("ed25519:"):
            raise ValueError(text)
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text[8:], validate=True))
    except ValueError as exc:
        raise BackupError(
            "署名検証用の公開鍵の形式が正しくありません。", "Malformed manifest signer key."
        ) from exc


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return canonical_json(manifest).encode()


def sign(manifest: dict[str, Any], key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    body = manifest_bytes(manifest)
    return body, base64.b64encode(key.sign(body)) + b"\n"


def check_signature(body: bytes, sig: bytes, signer: Ed25519PublicKey) -> dict[str, Any]:
    """The manifest, once its signature verifies under ``signer``; ``BackupInvalid`` else."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise BackupInvalid("目録が大きすぎます。", "Manifest too large.")
    try:
        signer.verify(base64.b64decode(sig.strip(), validate=True), body)
        manifest = json.loads(body)
    except (InvalidSignature, ValueError):
        raise BackupInvalid(
            "目録の署名が正しくありません（改ざん、または別の医療機関のバックアップ）。",
            "Manifest signature invalid (altered, or another clinic's backup).",
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupInvalid("目録の形式が違います。", "Not a mamori backup manifest.")
    return manifest


def prune_mark(manifest_hash: str, key: Ed25519PrivateKey) -> bytes:
    """Signed statement that a generation's objects were removed by the retention policy."""
    return base64.b64encode(key.sign(f"mamori-pruned-v1|{manifest_hash}".encode())) + b"\n"


def prune_mark_valid(manifest_hash: str, mark: bytes, signer: Ed25519PublicKey) -> bool:
    try:
        signer.verify(
            base64.b64decode(mark.strip(), validate=True),
            f"mamori-pruned-v1|{manifest_hash}".encode(),
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def manifest_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
