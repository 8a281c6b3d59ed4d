"""A generation's objects fetched from its target and decrypted, each checked against the hash
its signed manifest lists; and what a restore answers."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from mamori.backup import fmt
from mamori.backup.fmt import BackupInvalid
from mamori.backup.identity import Identity
from mamori.backup.targets import missing_object
from mamori.backup.verify import Generation

Say = Callable[[str, int, int], None]


@dataclass
class Restored:
    home: Path
    generation: int
    kind: str
    manifest: str
    key_file: Path | None
    counts: dict[str, int]
    last_event_seq: int
    last_event_at: str | None
    audit_events: int
    documents: int
    timings: dict[str, float] = field(default_factory=dict)
    engine: str = "sqlite"
    app_role: str | None = None  # PostgreSQL: the login role given least privilege afterwards
    # documents left out (a partial restore a person allowed): path in documents/, digest, why
    missing_documents: list[dict[str, str]] = field(default_factory=list)
    # how the database's own check was proven: "checked" (PRAGMA integrity_check run on the
    # restored file), "attested" (bit-identical to a snapshot that passed it at backup time),
    # "pg_restore" (every index, key and constraint rebuilt)
    integrity: str = "checked"


def invalid(ja: str, en: str) -> BackupInvalid:
    return BackupInvalid(ja, en)


def fetch_object(target: Any, gen: Generation, name: str, work: Path) -> Path:
    """A small object, copied into the work directory and checked against its manifest."""
    obj = listed_object(gen, name)
    out = work / f"{gen.generation}-{name}"
    target.get_file(f"generations/{gen.generation:010d}/{name}", out)
    if fmt.sha256_file(out) != obj["sha256"]:
        raise altered(name)
    return out


def listed_object(gen: Generation, name: str) -> dict[str, Any]:
    obj: dict[str, Any] | None = next(
        (o for o in gen.manifest["objects"] if o["name"] == name), None
    )
    if obj is None:
        raise invalid(f"目録に {name} がありません。", f"The manifest lists no {name}.")
    return obj


def altered(name: str) -> BackupInvalid:
    return invalid(f"{name} が改ざんされています。", f"{name} was altered (SHA-256 differs).")


def local_copy(target: Any, path: str, work: Path) -> Path:
    """The object as a file here: in place on a mounted disk, else downloaded into ``work``."""
    local: Path | None = target.local_file(path)
    if local is None:
        local = work / "object.age"
        target.get_file(path, local)
    return local


def decrypt_file(
    local: Path,
    path: str,
    sha256: str,
    out: Any,
    identity: Any,  # pyrage.x25519.Identity
    *,
    compressed: bool,
    name: str,
) -> None:
    """age-decrypt (and zstd-decompress) the object ``path``, read from the file ``local``,
    into ``out``, checking the ciphertext's SHA-256 in the same pass. A mismatch is reported
    as an alteration (the output is thrown away by the caller)."""
    import pyrage  # only backup and restore encrypt or decrypt (start-up time)

    try:
        raw = local.open("rb")
    except FileNotFoundError:
        raise missing_object(path) from None
    with raw:
        hashed = fmt.HashingReader(raw)
        try:
            fmt.open_file(hashed, out, [identity], compressed=compressed)  # type: ignore[arg-type]
        except (pyrage.DecryptError, zstandard.ZstdError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the disk, not the object (pyrage's stream errors carry no errno)
            if hashed.drain() != sha256:
                raise altered(name) from None
            raise invalid(
                f"{name} を復号できません（鍵が違うか、壊れています）。",
                f"Cannot decrypt {name} (wrong identity, or damaged): {exc}",
            ) from exc
        if hashed.drain() != sha256:
            raise altered(name)


def decrypt_to(
    target: Any,
    gen: Generation,
    name: str,
    dest: Path,
    ident: Identity,
    work: Path,
    *,
    patch: fmt.PageDelta | None = None,
    durable: bool = False,
) -> str:
    """A compressed generation object decrypted to ``dest``; the SHA-256 of what was written.
    ``durable``: the restored database itself, fsynced (scratch files in the work directory
    are read once and removed). ``patch``: the object is a full database and the delta's
    pages replace its own on the way (``fmt.PatchedWriter``)."""
    obj = listed_object(gen, name)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        sink = fmt.BackgroundWriter(fh)  # the disk works while the next block is decrypted
        plain = fmt.HashingWriter(sink)  # type: ignore[arg-type]
        patched = None if patch is None else fmt.PatchedWriter(plain, patch)
        path = f"generations/{gen.generation:010d}/{name}"
        try:
            local = local_copy(target, path, work)
            out = patched or plain
            decrypt_file(
                local, path, obj["sha256"], out, ident.identity, compressed=True, name=name
            )
            if patched is not None:
                patched.close()
        finally:
            sink.close()
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    return plain.sha.hexdigest()
