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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, cast, select, tuple_
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


def _chunks(session: Session, size: int) -> Iterator[list[Any]]:
    """The log in ``seq`` order, ``size`` rows at a time by key range (plain client-side Core
    queries: on PostgreSQL, a server-side cursor per table costs more than the hashing)."""
    conn = session.connection()
    last = 0
    while True:
        rows = conn.execute(
            select(AuditEvent.seq, AuditEvent.body, AuditEvent.leaf_hash, AuditEvent.chain_hash)
            .where(AuditEvent.seq > last)
            .order_by(AuditEvent.seq)
            .limit(size)
        ).all()
        if not rows:
            return
        yield list(rows)
        last = rows[-1][0]


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _index_rows(
    session: Session, seq_col: Any, id_col: Any, lo: int, hi: int | None
) -> dict[int, set[str]]:
    """seq → the IDs an index table holds for it, as text the database produces itself
    (PostgreSQL: canonical UUID text; elsewhere the 32 stored hex digits), so no UUID object is
    built per row — on a long log that conversion was most of the cost."""
    stmt = select(seq_col, cast(id_col, String)).where(seq_col >= lo)
    if hi is not None:
        stmt = stmt.where(seq_col <= hi)
    out: dict[int, set[str]] = {}
    for seq, value in session.connection().execute(stmt).all():
        out.setdefault(seq, set()).add(value)
    return out


def verify_log(session: Session, checkpoints: Sequence[Checkpoint] = ()) -> LogReport:
    """Recompute the log; with signed ``checkpoints``, also check that the log still has every
    checkpointed size with the same root (a rollback to an old copy, a truncated tail or a
    consistently rewritten history all fail here)."""
    v = _Verifier(session, checkpoints)
    # The review indexes must say exactly what the bodies say (a deleted index row would hide
    # an access from "who opened this patient"): each chunk's index rows are read with it.
    lo = 1
    for chunk in _chunks(session, BATCH):
        hi = chunk[-1][0]
        patients = _index_rows(session, AuditEventPatient.seq, AuditEventPatient.patient_id, lo, hi)
        users = _index_rows(session, AuditEventUser.seq, AuditEventUser.user_id, lo, hi)
        for seq, body, leaf, chain in chunk:
            v.event(seq, bytes(body), bytes(leaf), bytes(chain))
            v.indexes(seq, bytes(body), patients.pop(seq, set()), users.pop(seq, set()))
        v.orphans(set(patients) | set(users))
        lo = hi + 1
    v.orphans(
        set(_index_rows(session, AuditEventPatient.seq, AuditEventPatient.patient_id, lo, None))
        | set(_index_rows(session, AuditEventUser.seq, AuditEventUser.user_id, lo, None))
    )
    return v.finish()


class _Verifier:
    """The running state of one pass over the log."""

    def __init__(self, session: Session, checkpoints: Sequence[Checkpoint]) -> None:
        self.session = session
        self.report = LogReport()
        self.signed: dict[int, set[bytes]] = {}
        for cp in checkpoints:
            self.signed.setdefault(cp.size, set()).add(cp.root)
        self.frontier = merkle.Frontier()
        self.chain = GENESIS_CHAIN
        self.expected = 1
        self.refs: list[tuple[int, dict[str, object]]] = []
        self.hex_ids = not _postgres(session)  # how _index_rows spells an ID

    def problem(self, seq: int, what: str) -> None:
        self.report.problems.append((seq, what))

    def event(self, seq: int, body: bytes, stored_leaf: bytes, stored_chain: bytes) -> None:
        if seq != self.expected:
            self.problem(self.expected, f"sequence broken: expected {self.expected}, found {seq}")
            self.expected = seq
        if _body_seq(body) != seq:
            self.problem(seq, "body does not carry its own sequence number")
        leaf = merkle.leaf_hash(body)
        if leaf != stored_leaf:
            self.problem(seq, "leaf hash does not match the stored body")
        self.chain = chain_next(self.chain, body)
        if self.chain != stored_chain:
            self.problem(seq, "hash chain broken")
            self.chain = stored_chain  # resynchronise so one edit is reported once
        self.frontier.append(leaf)
        size = self.frontier.size
        if size in self.signed:
            root_now = self.frontier.root()
            for cp_root in self.signed[size]:
                if cp_root != root_now:
                    self.problem(
                        size,
                        f"root at size {size} differs from a signed checkpoint "
                        "(history rewritten or forked)",
                    )
        if b'"records":' in body:
            self._record_refs(seq, body)
        self.expected += 1

    def _record_refs(self, seq: int, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
            self.problem(seq, "body is not valid JSON")
        # "records" may also be a key inside a system event's detail; only the top-level list
        # names record versions
        logged = body.get("records", []) if isinstance(body, dict) else []
        self.refs.extend((seq, ref) for ref in (logged if isinstance(logged, list) else []))
        if len(self.refs) >= BATCH:
            _check_versions(self.session, self.refs, self.report)
            self.refs = []

    def indexes(self, seq: int, body: bytes, patients: set[str], users: set[str]) -> None:
        named, user = _indexed_ids(body)
        if self.hex_ids:
            named = {p.replace("-", "") for p in named}
            user = user.replace("-", "") if user else None
        if patients != named or users != ({user} if user else set()):
            self.problem(seq, "review index differs from the event body")

    def orphans(self, seqs: set[int]) -> None:
        for seq in sorted(seqs):
            self.problem(seq, "review index names an event the log lacks")

    def finish(self) -> LogReport:
        if self.refs:
            _check_versions(self.session, self.refs, self.report)
        report, size = self.report, self.frontier.size
        report.size, report.root = size, self.frontier.root()
        for later in sorted(s for s in self.signed if s > size):
            self.problem(
                size + 1,
                f"log has {size} events but a signed checkpoint covers {later} "
                "(restored from an old copy, or truncated)",
            )
        head = self.session.get(AuditHead, 1)
        if head is None:
            self.problem(0, "audit head is missing")
        elif head.size != size:
            self.problem(
                min(head.size, size) + 1,
                f"log has {size} events but the head says {head.size} (truncated or extended "
                "behind the appender's back)",
            )
        else:
            if head.chain_hash != self.chain:
                self.problem(size, "head chain hash differs from the log")
            head_root = (
                head.merkle_frontier().root()
                if len(head.frontier) == bin(head.size).count("1")
                else None
            )
            if head_root != report.root:
                self.problem(size, "head Merkle root differs from the log")
        report.problems.sort(key=lambda p: p[0])
        return report
