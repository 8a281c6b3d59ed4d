"""``mamori audit verify``: recompute the audit log and report the first bad position.

Checks, streaming in ``seq`` order (flat memory):

1. ``seq`` runs 1, 2, 3, … with no gap, duplicate or reordering, and each body names its seq;
2. every stored body re-hashes to its RFC 9162 leaf hash, and the chain links;
3. the Merkle root rebuilt from the leaves equals the head's, and the head's size and chain
   hash match the last event (a truncated tail or a rewritten head disagrees);
4. every record version named in an event still has that content hash in ``record_version``
   (editing a past note in the database breaks this link even if its own chain is rebuilt).

5. with the signed checkpoints from ``checkpoints/``: the root at every checkpointed size
   matches, and the log is not shorter than any checkpoint (rollback, truncation, a history
   rewritten consistently with its head, or a fork shown to someone else).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from mamori.audit import merkle
from mamori.audit.checkpoint import Checkpoint
from mamori.audit.models import (
    GENESIS_CHAIN,
    AuditEvent,
    AuditEventPatient,
    AuditEventUser,
    AuditHead,
    chain_next,
)
from mamori.records.versioning import RecordVersion

BATCH = 5000


@dataclass
class LogReport:
    size: int = 0
    root: bytes = merkle.EMPTY_ROOT
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> int | None:
        return self.problems[0][0] if self.problems else None


def _check_versions(
    session: Session, refs: list[tuple[int, dict[str, object]]], report: LogReport
) -> None:
    keys = [(str(r["type"]), uuid.UUID(str(r["id"])), int(str(r["version"]))) for _, r in refs]
    rows = session.execute(
        select(
            RecordVersion.record_type,
            RecordVersion.record_id,
            RecordVersion.version,
            RecordVersion.content_hash,
        ).where(
            tuple_(RecordVersion.record_type, RecordVersion.record_id, RecordVersion.version).in_(
                keys
            )
        )
    ).all()
    stored = {(t, i, v): h for t, i, v, h in rows}
    for (seq, ref), key in zip(refs, keys, strict=True):
        have = stored.get(key)
        if have is None:
            report.problems.append((seq, f"record version {key[0]} {key[1]} v{key[2]} is missing"))
        elif have != ref["hash"]:
            report.problems.append(
                (seq, f"record version {key[0]} {key[1]} v{key[2]} differs from what was logged")
            )


def _body_seq(body: bytes) -> int | None:
    """The top-level ``seq`` of a canonical body without parsing all of it: keys are sorted, so
    the top-level ``"seq":`` is the last one (only the tag string and ``v`` follow it)."""
    at = body.rfind(b'"seq":')
    if at < 0:
        return None
    end = body.find(b",", at)
    digits = body[at + 6 : end if end >= 0 else None]
    return int(digits) if digits.isdigit() else None


def _indexed_ids(body: bytes) -> tuple[set[str], str | None]:
    """Patient IDs and acting user named by a canonical body, read from its bytes."""
    start = body.find(b'"patients":[')
    patients: set[str] = set()
    if start >= 0:
        end = body.find(b"]", start)
        inner = body[start + 12 : end].decode("ascii", "replace")
        patients = {p.strip('"') for p in inner.split(",") if p}
    at = body.find(b'"user":"')
    user = body[at + 8 : at + 44].decode("ascii", "replace") if at >= 0 else None
    return patients, user


def _index_problems(session: Session, report: LogReport) -> None:
    """The review indexes must say exactly what the bodies say: a deleted index row would hide
    an access from "who opened this patient"."""
    expected: dict[int, tuple[set[str], str | None]] = {}
    stmt = select(AuditEvent.seq, AuditEvent.body).order_by(AuditEvent.seq)
    for seq, body in session.execute(stmt.execution_options(yield_per=BATCH)):
        expected[seq] = _indexed_ids(bytes(body))
    found_p: dict[int, set[str]] = {}
    for seq, pid in session.execute(select(AuditEventPatient.seq, AuditEventPatient.patient_id)):
        found_p.setdefault(seq, set()).add(str(pid))
    found_u = {
        seq: str(uid)
        for seq, uid in session.execute(select(AuditEventUser.seq, AuditEventUser.user_id))
    }
    for seq in sorted(set(expected) | set(found_p) | set(found_u)):
        patients, user = expected.get(seq, (set(), None))
        if found_p.get(seq, set()) != patients or found_u.get(seq) != user:
            report.problems.append((seq, "review index differs from the event body"))


def verify_log(session: Session, checkpoints: Sequence[Checkpoint] = ()) -> LogReport:
    """Recompute the log; with signed ``checkpoints``, also check that the log still has every
    checkpointed size with the same root (a rollback to an old copy, a truncated tail or a
    consistently rewritten history all fail here)."""
    report = LogReport()
    signed: dict[int, set[bytes]] = {}
    for cp in checkpoints:
        signed.setdefault(cp.size, set()).add(cp.root)
    frontier = merkle.Frontier()
    chain = GENESIS_CHAIN
    expected = 1
    refs: list[tuple[int, dict[str, object]]] = []
    # Plain rows of the four columns that matter (no ORM objects): verification is CPU-bound.
    stmt = (
        select(AuditEvent.seq, AuditEvent.body, AuditEvent.leaf_hash, AuditEvent.chain_hash)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=BATCH)
    )
    for seq, raw_body, stored_leaf, stored_chain in session.execute(stmt):
        body_bytes = bytes(raw_body)
        if seq != expected:
            report.problems.append((expected, f"sequence broken: expected {expected}, found {seq}"))
            expected = seq
        body_seq = _body_seq(body_bytes)
        if body_seq != seq:
            report.problems.append((seq, "body does not carry its own sequence number"))
        leaf = merkle.leaf_hash(body_bytes)
        if leaf != bytes(stored_leaf):
            report.problems.append((seq, "leaf hash does not match the stored body"))
        chain = chain_next(chain, body_bytes)
        if chain != bytes(stored_chain):
            report.problems.append((seq, "hash chain broken"))
            chain = bytes(stored_chain)  # resynchronise so one edit is reported once
        frontier.append(leaf)
        if frontier.size in signed:
            root_now = frontier.root()
            for cp_root in signed[frontier.size]:
                if cp_root != root_now:
                    report.problems.append(
                        (
                            frontier.size,
                            f"root at size {frontier.size} differs from a signed "
                            "checkpoint (history rewritten or forked)",
                        )
                    )
        if b'"records":' in body_bytes:
            try:
                body = json.loads(body_bytes)
            except ValueError:
                body = None
                report.problems.append((seq, "body is not valid JSON"))
            # "records" may also be a key inside a system event's detail; only the top-level
            # list names record versions
            logged = body.get("records", []) if isinstance(body, dict) else []
            if not isinstance(logged, list):
                logged = []
            refs.extend((seq, ref) for ref in logged)
            if len(refs) >= BATCH:
                _check_versions(session, refs, report)
                refs = []
        expected += 1
    if refs:
        _check_versions(session, refs, report)
    report.size = frontier.size
    report.root = frontier.root()
    for size in sorted(s for s in signed if s > frontier.size):
        report.problems.append(
            (
                frontier.size + 1,
                f"log has {frontier.size} events but a signed checkpoint covers "
                f"{size} (restored from an old copy, or truncated)",
            )
        )
    head = session.get(AuditHead, 1)
    if head is None:
        report.problems.append((0, "audit head is missing"))
    else:
        if head.size != frontier.size:
            report.problems.append(
                (
                    min(head.size, frontier.size) + 1,
                    f"log has {frontier.size} events but the head says {head.size} (truncated "
                    "or extended behind the appender's back)",
                )
            )
        elif head.chain_hash != chain:
            report.problems.append((frontier.size, "head chain hash differs from the log"))
        head_root = (
            head.merkle_frontier().root()
            if len(head.frontier) == bin(head.size).count("1")
            else None
        )
        if head.size == frontier.size and head_root != report.root:
            report.problems.append((frontier.size, "head Merkle root differs from the log"))
    _index_problems(session, report)
    report.problems.sort(key=lambda p: p[0])
    return report
