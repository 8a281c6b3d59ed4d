"""Restoring the document files of a generation: fetched, decrypted by a worker process beside
the database (on a mounted disk), each checked against its hash."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from mamori.backup import fmt
from mamori.backup.fetch import Say, decrypt_file, fetch_object, invalid, local_copy
from mamori.backup.fmt import BackupError
from mamori.backup.identity import Identity
from mamori.backup.verify import Generation


@dataclass(frozen=True)
class _Document:
    path: str  # the object's path on the target
    local: Path | None  # where it can be read in place (a mounted disk), if it can
    ct_sha: str  # of the ciphertext
    out: Path
    digest: str  # of the plaintext: the document's own name

    @property
    def name(self) -> str:
        return f"document {self.digest[:12]}"


DOCUMENTS_PER_TASK = 16  # documents per worker task: progress between tasks, little overhead


# below this much, starting a worker process (≈ 1 s to import) costs more than it saves
WORKER_MIN_BYTES = 64 << 20


def _documents(
    target: Any, gen: Generation, dest: Path, work: Path, missing: list[dict[str, str]] | None
) -> tuple[list[_Document], int]:
    """The generation's documents, from its index, each checked to stay inside
    ``documents/``; and their ciphertexts' total size. With ``missing`` (a partial restore),
    those verification found missing or damaged are left out and listed there."""
    index_path = fetch_object(target, gen, "documents.json.zst", work)
    index = json.loads(
        zstandard.ZstdDecompressor().decompress(index_path.read_bytes(), max_output_size=256 << 20)
    )
    files: dict[str, str] = index["files"]
    docs = []
    total = 0
    for rel, digest in sorted(files.items()):
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise invalid("文書の索引が不正です。", "Bad document index entry.")
        if missing is not None and digest in gen.document_problems:
            missing.append({"path": rel, "digest": digest, "why": gen.document_problems[digest]})
            continue
        path = f"documents/{digest[:2]}/{digest}.age"
        ct_sha, size = index["objects"][digest]
        total += int(size)
        local = target.local_file(path)
        docs.append(_Document(path, local, ct_sha, dest / "documents" / rel, digest))
    return docs, total


def _restore_document(doc: _Document, local: Path, identity: Any) -> None:
    """One document from its ciphertext file ``local`` into its place, 0600, its plaintext
    hash checked against its name."""
    doc.out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(doc.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        plain = fmt.HashingWriter(fh)
        decrypt_file(local, doc.path, doc.ct_sha, plain, identity, compressed=False, name=doc.name)
    if plain.sha.hexdigest() != doc.digest:
        raise invalid("文書が目録と一致しません。", f"Document {doc.digest[:12]} differs.")


def _restore_documents_task(identity: str, docs: list[_Document]) -> None:
    """In a worker process: ``docs``, read in place."""
    import pyrage  # only backup and restore encrypt or decrypt (start-up time)

    key = pyrage.x25519.Identity.from_str(identity)
    for doc in docs:
        assert doc.local is not None
        _restore_document(doc, doc.local, key)


def start_documents(
    target: Any,
    gen: Generation,
    dest: Path,
    work: Path,
    ident: Identity,
    say: Say,
    timings: dict[str, float],
    stack: ExitStack,
    missing: list[dict[str, str]] | None = None,
) -> Callable[[], int]:
    """Start restoring the documents; returns a wait for them (their count). The time from
    this start until the last is on disk goes to ``timings["documents"]``.

    From a mounted disk, with at least ``WORKER_MIN_BYTES`` of them, they are decrypted by a
    worker process while this one restores the database: age decryption holds the GIL
    (pyrage), so in a thread the two decryptions took turns; in a process they use both
    cores. The worker gets the identity over its pipe, never through a file. From SFTP or S3
    (each object downloaded first), or only a few, they are restored here, after the
    database.

    ``missing`` (a partial restore a person allowed): documents that cannot be restored — found
    missing or damaged by verification, or failing their check here — are listed in it and
    the rest restored, one by one in this thread; without it the first one stops the
    restore."""
    t = time.monotonic()
    docs, size = _documents(target, gen, dest, work, missing)

    def done() -> int:
        os.sync()  # every document on disk before the restore says it is done (one flush)
        say("documents", len(docs), len(docs))
        timings["documents"] = time.monotonic() - t
        return len(docs)

    def here() -> int:  # one by one in this thread, objects on SFTP or S3 downloaded first
        restored = 0
        for i, doc in enumerate(docs):
            say("documents", i, len(docs))
            try:
                _restore_document(doc, local_copy(target, doc.path, work), ident.identity)
                restored += 1
            except (BackupError, OSError) as exc:
                if missing is None:
                    raise
                doc.out.unlink(missing_ok=True)  # nothing unproven is left in its place
                rel = str(doc.out.relative_to(dest / "documents"))
                why = exc.en if isinstance(exc, BackupError) else f"unreadable: {exc}"
                missing.append({"path": rel, "digest": doc.digest, "why": why})
        done()
        return restored

    if missing is not None or size < WORKER_MIN_BYTES or any(doc.local is None for doc in docs):
        return here
    pool = stack.enter_context(document_worker())
    secret = str(ident.identity)
    tasks = [
        pool.submit(_restore_documents_task, secret, docs[i : i + DOCUMENTS_PER_TASK])
        for i in range(0, len(docs), DOCUMENTS_PER_TASK)
    ]

    def wait() -> int:
        for i, task in enumerate(tasks):
            say("documents", min(i * DOCUMENTS_PER_TASK, len(docs)), len(docs))
            task.result()
        return done()

    return wait


@contextmanager
def document_worker() -> Iterator[ProcessPoolExecutor]:
    """One worker process (spawned: this process may run threads); on the way out, tasks not
    yet started are cancelled and the running one is waited for, so a failed restore leaves
    nothing writing into the directory it removes."""
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
