"""Signing audit checkpoints into a directory outside the database.

Every interval (default 60 s) and at shutdown, ``mamori serve`` signs a C2SP checkpoint of the
audit log — origin ``mamori/<instance id>/audit``, tree size, root — with the instance's Ed25519
key (``secrets/audit_signing_key``, never in the database) and writes it to ``checkpoints/``.

The checkpointer does not take the database's word for the root: it keeps its own state next
to the checkpoints (size, Merkle frontier, chain hash), extends it with the new events' bodies
and refuses to sign if the database's head disagrees — or if the log has become shorter than
what it already signed (a restored old copy, or a truncated tail). Restoring an old database
copy later is caught by ``verify_log`` against these files. The directory travels with backups;
``[audit] checkpoint_copies`` names directories outside the instance (a NAS share, a WORM
mount) that receive every note too, so that rolling back the whole instance directory —
database and checkpoints together — still disagrees with a copy the intruder did not reach. A
copy that was unreachable catches up on the next checkpoint; a copy is never created where its
directory is missing (an unmounted share would otherwise fill the local mount point).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from mamori.audit import merkle
from mamori.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteSigner,
    NoteVerifier,
    open_note,
    sign,
)
from mamori.audit.models import GENESIS_CHAIN, AuditEvent, AuditHead, chain_next
from mamori.db import Database
from mamori.errors import MamoriError
from mamori.settings import Settings

STATE_FILE = "state.json"
VKEY_FILE = "audit.vkey"
NOTE_SUFFIX = ".note"


class CheckpointRefused(MamoriError):
    """The database's audit log disagrees with what was already signed: tampering or rollback."""

    status = 500
    code = "checkpoint_refused"


def origin(settings: Settings) -> str:
    return f"mamori/{settings.instance_id}/audit"


def signer(settings: Settings) -> NoteSigner:
    key = Ed25519PrivateKey.from_private_bytes(settings.audit_signing_key)
    return NoteSigner(origin(settings), key)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class _State:
    size: int = 0
    frontier: list[bytes] | None = None
    chain: bytes = GENESIS_CHAIN

    @classmethod
    def load(cls, directory: Path) -> _State:
        path = directory / STATE_FILE
        if not path.exists():
            return cls(frontier=[])
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            size=int(raw["size"]),
            frontier=[bytes.fromhex(h) for h in raw["frontier"]],
            chain=bytes.fromhex(raw["chain"]),
        )

    def save(self, directory: Path) -> None:
        _write_atomically(
            directory / STATE_FILE,
            json.dumps(
                {
                    "size": self.size,
                    "frontier": [h.hex() for h in self.frontier or []],
                    "chain": self.chain.hex(),
                }
            ),
        )


@dataclass
class CheckpointResult:
    size: int
    root: bytes
    path: Path | None  # None when the log had not grown since the last checkpoint
    copy_errors: list[str] = field(default_factory=list)


def copy_out(settings: Settings) -> list[str]:
    """Every note and the verifier key into each outside copy that lacks them; a problem per
    copy that could not be written (missing directory, unmounted share, no space)."""
    notes = sorted(settings.checkpoint_dir.glob(f"*{NOTE_SUFFIX}"))
    errors = []
    for copy in settings.checkpoint_copies:
        if not copy.is_dir():
            errors.append(f"{copy}: directory missing (not mounted?)")
            continue
        try:
            for path in [settings.checkpoint_dir / VKEY_FILE, *notes]:
                there = copy / path.name
                if path.exists() and not there.exists():
                    _write_atomically(there, path.read_text(encoding="utf-8"))
        except OSError as exc:
            errors.append(f"{copy}: {exc}")
    return errors


def make_checkpoint(db: Database, settings: Settings) -> CheckpointResult:
    """Extend the signed state with the new events and sign a checkpoint of the result."""
    directory = settings.checkpoint_dir
    directory.mkdir(mode=0o700, exist_ok=True)
    key = signer(settings)
    vkey = directory / VKEY_FILE
    if not vkey.exists():
        _write_atomically(vkey, key.verifier().vkey() + "\n")
    state = _State.load(directory)
    if not (directory / STATE_FILE).exists() and any(directory.glob(f"*{NOTE_SUFFIX}")):
        # signed notes without the state that produced them: the state was deleted or
        # damaged. Signing afresh would vouch for whatever the log now holds.
        raise CheckpointRefused(
            "署名済みのチェックポイントがあるのに署名の状態（state.json）がありません。"
            "改ざんの可能性があるため署名を中止しました。mamori audit verify で確認してください。",
            "Signed checkpoints exist but the signing state (state.json) is gone; not signing "
            "(possible tampering). Run mamori audit verify.",
        )
    frontier = merkle.Frontier(state.size, state.frontier or [])
    chain = state.chain
    with db.session(write=False) as session:
        head = session.get(AuditHead, 1)
        if head is None:
            raise CheckpointRefused(
                "監査ログの先頭情報がありません。", "The audit head is missing."
            )
        if head.size < state.size:
            raise CheckpointRefused(
                f"監査ログが署名済みの長さ（{state.size}）より短くなっています（巻き戻しまたは削除）。",
                f"The audit log has {head.size} events but {state.size} were already signed: "
                "restored from an old copy, or truncated.",
            )
        unchanged = head.size == state.size
        stmt = (
            select(AuditEvent.seq, AuditEvent.body)
            .where(AuditEvent.seq > state.size)
            .order_by(AuditEvent.seq)
            .execution_options(yield_per=5000)
        )
        for seq, body in session.execute(stmt):
            if seq != frontier.size + 1:
                raise CheckpointRefused(
                    "監査ログの連番が途切れています。",
                    f"Audit log sequence broken at {frontier.size + 1}.",
                )
            frontier.append(merkle.leaf_hash(body))
            chain = chain_next(chain, body)
        head_root = head.merkle_frontier().root()
        if frontier.size != head.size or frontier.root() != head_root or chain != head.chain_hash:
            raise CheckpointRefused(
                "監査ログの内容が署名済みの状態と一致しません（改ざんの可能性）。署名を中止しました。",
                "The audit log does not extend what was signed (possible tampering); not signing.",
            )
    if unchanged:
        return CheckpointResult(state.size, frontier.root(), None, _copy_out(db, settings))
    cp = Checkpoint(origin(settings), frontier.size, frontier.root())
    path = directory / f"{cp.size:012d}{NOTE_SUFFIX}"
    _write_atomically(path, sign(cp, [key]))
    _State(size=frontier.size, frontier=list(frontier.nodes), chain=chain).save(directory)
    return CheckpointResult(cp.size, cp.root, path, _copy_out(db, settings))


def _copy_out(db: Database, settings: Settings) -> list[str]:
    # A restored copy not yet promoted is a fork of the log from its backup on: its notes stay
    # in its own checkpoints/ and never mix with the clinic's outside copies.
    return [] if db.read_only else copy_out(settings)


def all_checkpoints(
    settings: Settings, trusted: list[NoteVerifier]
) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints of ``checkpoints/`` and of every outside copy, for ``verify_log``: the
    same size with two roots (a fork), or a copy ahead of the instance (a rollback of the
    whole directory), is then reported by the verifier."""
    found, problems = load_checkpoints(settings.checkpoint_dir, trusted, origin(settings))
    for copy in settings.checkpoint_copies:
        if not copy.is_dir():
            problems.append(f"checkpoint copy {copy}: directory missing (not mounted?)")
            continue
        more, bad = load_checkpoints(copy, trusted, origin(settings))
        found += more
        problems += [f"{copy}: {b}" for b in bad]
    return found, problems


def load_checkpoints(
    directory: Path, trusted: list[NoteVerifier], expected_origin: str
) -> tuple[list[Checkpoint], list[str]]:
    """Every checkpoint file that verifies under a trusted key, and a problem per file that
    does not (unsigned, signed by another key, edited, or for another log)."""
    good: list[Checkpoint] = []
    problems: list[str] = []
    for path in sorted(directory.glob(f"*{NOTE_SUFFIX}")):
        try:
            cp = open_note(path.read_text(encoding="utf-8"), trusted)
        except (CheckpointError, UnicodeDecodeError) as exc:
            problems.append(f"checkpoint {path.name}: {exc}")
            continue
        if cp.origin != expected_origin:
            problems.append(f"checkpoint {path.name}: belongs to another log ({cp.origin})")
            continue
        good.append(cp)
    return good, problems
