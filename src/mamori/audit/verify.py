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

A long log is checked by worker processes over ranges of it (by default one per core, up to
two; each range from the stored chain hash before it); the leaf hashes come back in order and
this process builds the Merkle frontier and checks 3 and 5. Programs that call this must
guard their entry point with ``if __name__ == "__main__"`` (workers are spawned, not forked).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from mamori.audit import merkle
from mamori.audit.checkpoint import Checkpoint
from mamori.audit.models import (
    GENESIS_CHAIN,
    AuditHead,
)
from mamori.db import driver_cursor
from mamori.records.versioning import RecordVersion

BATCH = 5000  # events per read
SEGMENT = 1 << 17  # events per worker task
PARALLEL_MIN = 500_000  # below this, starting worker processes costs about what they save
_VERSIONS_SQL = (
    "SELECT record_id, version, content_hash FROM record_version "
    "WHERE record_type = ? AND record_id IN ("
)
VERSION_LOOKUP_IDS = 500  # record IDs per look-up statement (well under any bound-variable limit)


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
    # By type, then record IDs: both databases search the unique (record_type, record_id,
    # version) index with these; a row-value IN over all three made SQLite scan the whole
    # table for every chunk of events (every version ever written). A record's other
    # versions come along and are ignored. On the driver's cursor: through SQLAlchemy, the
    # statement and its rows were a third of a look-up's cost.
    wanted: dict[str, set[uuid.UUID]] = {}
    for record_type, record_id, _version in keys:
        wanted.setdefault(record_type, set()).add(record_id)
    stored: dict[tuple[str, uuid.UUID, int], str] = {}
    with driver_cursor(session) as cursor:
        id_type = RecordVersion.__table__.c.record_id.type
        to_db, from_db = cursor.bind(id_type), cursor.result(id_type)
        for record_type, ids in wanted.items():
            ordered = sorted(ids)
            for at in range(0, len(ordered), VERSION_LOOKUP_IDS):
                part = ordered[at : at + VERSION_LOOKUP_IDS]
                marks = ", ".join("?" * len(part))
                cursor.execute(f"{_VERSIONS_SQL}{marks})", [record_type, *map(to_db, part)])
                for record_id, version, digest in cursor.fetchall():
                    stored[(record_type, from_db(record_id), version)] = digest
    for (seq, ref), key in zip(refs, keys, strict=True):
        have = stored.get(key)
        if have is None:
            report.problems.append((seq, f"record version {key[0]} {key[1]} v{key[2]} is missing"))
        elif have != ref["hash"]:
            report.problems.append(
                (seq, f"record version {key[0]} {key[1]} v{key[2]} differs from what was logged")
            )


def _indexed_ids(body: bytes) -> tuple[list[str], str | None]:
    """Patient IDs and acting user named by a canonical body, read from its bytes. Keys are
    sorted, so the top-level ``"patients":[`` is the last one (``detail`` comes before it and
    only ``records``, ``seq``, ``tag`` and ``v`` follow); ``actor`` is the first key and flat,
    so its ``"user":"`` is the first. A quote inside a string value is escaped and cannot fake
    either marker."""
    start = body.rfind(b'"patients":[')
    patients: list[str] = []
    if start >= 0:
        inner = body[start + 12 : body.find(b"]", start)].decode("ascii", "replace")
        patients = [p[1:-1] for p in inner.split(",")] if inner else []
    at = body.find(b'"user":"')
    user = body[at + 8 : at + 44].decode("ascii", "replace") if at >= 0 else None
    return patients, user


_Read = tuple[list[tuple[Any, ...]], list[tuple[int, str]], list[tuple[int, str]]]


class _Rows:
    """Plain DB-API reads in the session's transaction. Through SQLAlchemy's result objects
    the fetch was half of the verifier's time; here each row is the driver's own tuple. IDs
    come back as the text the body spells (``8-4-4-4-12``), made by the database itself: on
    SQLite, where they are stored as 32 hex digits, by ``substr``; no UUID object per row."""

    def __init__(self, session: Session, batch: int, end: int | None = None) -> None:
        self.batch, self.end = batch, (2**62 if end is None else end)
        postgres = _postgres(session)
        raw = session.connection().connection
        # PostgreSQL: the binary protocol sends bodies and hashes as bytes, not hex text that
        # the server encodes and the client decodes again
        self.cursor = raw.cursor(binary=True) if postgres else raw.cursor()
        # Fixed statements built from constants only (the driver's own parameter marks).
        mark = "%s" if postgres else "?"
        self.events_sql = (
            "SELECT seq, body, leaf_hash, chain_hash FROM audit_event "  # noqa: S608
            f"WHERE seq > {mark} AND seq <= {mark} ORDER BY seq LIMIT {mark}"
        )
        self.index_sql: dict[str, str] = {}
        for name, column in (("patient", "patient_id"), ("user", "user_id")):
            spelled = (
                f"CAST({column} AS TEXT)"
                if postgres
                else " || '-' || ".join(
                    f"substr({column}, {a}, {n})"
                    for a, n in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
                )
            )
            table = f"audit_event_{name}"
            self.index_sql[name] = f"SELECT seq, {spelled} FROM {table} WHERE seq >= {mark}"  # noqa: S608
        self.mark = mark

    def read(self, lo: int) -> _Read:
        """The next chunk of events from ``lo`` on (up to ``end``), with the index rows in its
        range (or, past the last event, every index row left up to ``end``: they name events
        the log lacks). From seq 1 the index range is open below, so a row numbered under 1
        is seen too."""
        self.cursor.execute(self.events_sql, (lo - 1, self.end, self.batch))
        events = list(self.cursor.fetchall())
        hi = events[-1][0] if events else self.end
        return events, self._index("patient", lo, hi), self._index("user", lo, hi)

    def _index(self, table: str, lo: int, hi: int) -> list[tuple[int, str]]:
        self.cursor.execute(
            self.index_sql[table] + f" AND seq <= {self.mark}", (-(2**62) if lo == 1 else lo, hi)
        )
        return list(self.cursor.fetchall())


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def verify_log(
    session: Session, checkpoints: Sequence[Checkpoint] = (), *, workers: int | None = None
) -> LogReport:
    """Recompute the log; with signed ``checkpoints``, also check that the log still has every
    checkpointed size with the same root (a rollback to an old copy, a truncated tail or a
    consistently rewritten history all fail here).

    ``workers``: processes that check ranges of the log side by side (default: one per core,
    up to two, for a log of at least ``PARALLEL_MIN`` events in a database file or server)."""
    v = _Verifier(session, checkpoints)
    last = session.execute(text("SELECT max(seq) FROM audit_event")).scalar() or 0
    url = session.get_bind().engine.url
    shareable = url.get_backend_name() == "postgresql" or url.database not in (None, "", ":memory:")
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if last >= PARALLEL_MIN else 1
    if workers > 1 and shareable:
        _parallel(v, url.render_as_string(hide_password=False), int(last), workers)
        return v.finish()
    _walk(v, _Rows(session, BATCH), 1)
    v.fold()
    return v.finish()


def _parallel(v: _Verifier, url: str, last: int, workers: int) -> None:
    """Ranges of ``SEGMENT`` events checked by worker processes (each on its own connection:
    rows up to ``last`` are insert-only, so every snapshot holds the same ones); their leaf
    hashes come back here, in order, for the Merkle frontier and the checkpoint roots. The
    chain needs no hand-over: each range starts from the stored chain hash before it, and the
    range before checks that stored hash."""
    starts = list(range(1, last + 1, SEGMENT))
    ends = [min(lo + SEGMENT - 1, last) for lo in starts]
    context = multiprocessing.get_context("spawn")  # never fork a process holding connections
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for problems, leaves, chain in pool.map(
            _verify_range, [url] * len(starts), starts, ends, [BATCH] * len(starts)
        ):
            v.report.problems += problems
            v.leaves = [leaves[i : i + 32] for i in range(0, len(leaves), 32)]
            v.fold()
            v.chain = chain
    # index rows numbered past the last event (those under 1 are the first range's)
    _events, patients, users = _Rows(v.session, BATCH).read(last + 1)
    v.orphans({seq for seq, _ in patients} | {seq for seq, _ in users})


def _verify_range(url: str, lo: int, hi: int, batch: int) -> tuple[list[Any], bytes, bytes]:
    """In a worker process: events ``lo``..``hi`` — sequence, bodies, leaf and chain hashes,
    review indexes, record versions. Returns the problems, the leaf hashes and the last chain
    hash."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with Session(engine) as session:
            v = _Verifier(session, ())
            v.fold_here = False
            before = session.execute(
                text(
                    "SELECT chain_hash FROM audit_event WHERE seq < :lo ORDER BY seq DESC LIMIT 1"
                ),
                {"lo": lo},
            ).scalar()
            v.chain, v.expected = (bytes(before) if before is not None else GENESIS_CHAIN), lo
            _walk(v, _Rows(session, batch, hi), lo)
            if v.expected <= hi:
                v.problem(v.expected, f"sequence broken: expected {v.expected}, none up to {hi}")
            return v.report.problems, b"".join(v.leaves), v.chain
    finally:
        engine.dispose()


def _walk(v: _Verifier, rows: _Rows, lo: int) -> None:
    """The events from ``lo`` on, chunk by chunk, with their index rows.

    The review indexes must say exactly what the bodies say (a deleted index row would hide
    an access from "who opened this patient"): each chunk's index rows are read with it and
    compared as whole sets; only a chunk that differs is compared event by event.
    On PostgreSQL one reader thread fetches the next chunk while this one hashes the last:
    the server process works on the other core meanwhile (+7 % measured). On SQLite the
    fetch builds its Python objects under the GIL, and the thread cost more than it saved.
    The connection is used by one thread at a time: record versions are looked up only
    between reads."""
    thread = _postgres(v.session)
    with ThreadPoolExecutor(1, thread_name_prefix="mamori-verify-read") as reader:
        ahead = _ahead(reader, rows.read, lo, thread)
        while True:
            chunk, patients, users = ahead.result()
            v.check_versions()
            if not chunk:
                v.orphans({seq for seq, _ in patients} | {seq for seq, _ in users})
                return
            ahead = _ahead(reader, rows.read, chunk[-1][0] + 1, thread)
            named, acting = v.chunk(chunk)
            if set(patients) != named or set(users) != acting:
                v.compare_indexes(chunk, patients, users)
            if len(v.leaves) >= 4 * BATCH and v.fold_here:
                v.fold()


def _ahead(
    pool: ThreadPoolExecutor, read: Callable[[int], _Read], lo: int, thread: bool
) -> Future[_Read]:
    if thread:
        return pool.submit(read, lo)
    done: Future[_Read] = Future()
    done.set_result(read(lo))
    return done


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
        self.leaves: list[bytes] = []  # checked leaf hashes not yet folded into the frontier
        self.fold_here = True  # False in a worker, which hands its leaves to the parent

    def problem(self, seq: int, what: str) -> None:
        self.report.problems.append((seq, what))

    def chunk(
        self, rows: list[tuple[Any, ...]]
    ) -> tuple[set[tuple[int, str]], set[tuple[int, str]]]:
        """Check a run of events; returns the (seq, ID) pairs their bodies name for the two
        review indexes. The hashing is inlined here (the same operations as
        ``merkle.leaf_hash`` and ``chain_next``, which the tests hold to the RFC's vectors): a
        verifier call per event was a third of the time on a log of millions."""
        sha256 = hashlib.sha256
        leaves = self.leaves
        chain, expected = self.chain, self.expected
        named: list[tuple[int, str]] = []
        acting: list[tuple[int, str]] = []
        for seq, raw, stored_leaf, stored_chain in rows:
            body = raw if type(raw) is bytes else bytes(raw)
            if seq != expected:
                self.problem(expected, f"sequence broken: expected {expected}, found {seq}")
                expected = seq
            # the top-level "seq": keys are sorted, so it is the last one (only "tag" and "v"
            # follow it)
            at = body.rfind(b'"seq":')
            digits = body[at + 6 : body.find(b",", at)] if at >= 0 else b""
            if not digits.isdigit() or int(digits) != seq:
                self.problem(seq, "body does not carry its own sequence number")
            leaf = sha256(b"\x00" + body).digest()
            if leaf != stored_leaf:
                self.problem(seq, "leaf hash does not match the stored body")
            chain = sha256(chain + sha256(body).digest()).digest()
            if chain != stored_chain:
                self.problem(seq, "hash chain broken")
                chain = bytes(stored_chain)  # resynchronise so one edit is reported once
            leaves.append(leaf)
            if b'"records":' in body:
                self._record_refs(seq, body)
            at = body.rfind(b'"patients":[')  # as _indexed_ids, inlined
            if at >= 0:
                inner = body[at + 12 : body.find(b"]", at)].decode("ascii", "replace")
                if inner:
                    named += [(seq, p[1:-1]) for p in inner.split(",")]
            at = body.find(b'"user":"')
            if at >= 0:
                acting.append((seq, body[at + 8 : at + 44].decode("ascii", "replace")))
            expected += 1
        self.chain, self.expected = chain, expected
        return set(named), set(acting)

    def fold(self) -> None:
        """The checked leaves into the Merkle frontier (``Frontier.append``, inlined), with
        the root compared at every signed checkpoint's size on the way."""
        sha256 = hashlib.sha256
        frontier, signed = self.frontier, self.signed
        nodes, size = frontier.nodes, frontier.size
        for leaf in self.leaves:
            nodes.append(leaf)
            carry = size
            while carry & 1:
                right = nodes.pop()
                nodes.append(sha256(b"\x01" + nodes.pop() + right).digest())
                carry >>= 1
            size += 1
            if size in signed:
                frontier.size = size
                self._checkpointed(size)
        frontier.size = size
        self.leaves = []

    def _checkpointed(self, size: int) -> None:
        root_now = self.frontier.root()
        for cp_root in self.signed[size]:
            if cp_root != root_now:
                self.problem(
                    size,
                    f"root at size {size} differs from a signed checkpoint "
                    "(history rewritten or forked)",
                )

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

    def check_versions(self) -> None:
        """Look up the record versions the events so far named (between reads)."""
        if self.refs:
            _check_versions(self.session, self.refs, self.report)
            self.refs = []

    def compare_indexes(
        self,
        rows: list[tuple[Any, ...]],
        patient_rows: list[tuple[int, str]],
        user_rows: list[tuple[int, str]],
    ) -> None:
        """Event by event, for a chunk whose index rows differ from its bodies as a whole."""
        patients: dict[int, set[str]] = {}
        users: dict[int, set[str]] = {}
        for seq, value in patient_rows:
            patients.setdefault(seq, set()).add(value)
        for seq, value in user_rows:
            users.setdefault(seq, set()).add(value)
        for seq, raw, _, _ in rows:
            named, user = _indexed_ids(bytes(raw))
            if patients.pop(seq, set()) != set(named) or users.pop(seq, set()) != (
                {user} if user else set()
            ):
                self.problem(seq, "review index differs from the event body")
        self.orphans(set(patients) | set(users))

    def orphans(self, seqs: set[int]) -> None:
        for seq in sorted(seqs):
            self.problem(seq, "review index names an event the log lacks")

    def finish(self) -> LogReport:
        self.check_versions()
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
