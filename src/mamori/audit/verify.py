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

import datetime as dt
import hashlib
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
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

BATCH = 5000  # events per read
SEGMENT = 1 << 17  # events per worker task
PARALLEL_MIN = 500_000  # below this, starting worker processes costs about what they save
_VERSIONS_SQL = {  # by dialect (postgres?): SQLite's list of marks is completed per statement
    False: "SELECT record_id, version, content_hash FROM record_version "
    "WHERE record_type = ? AND record_id IN (",
    True: "SELECT CAST(record_id AS TEXT), version, content_hash FROM record_version "
    "WHERE record_type = ? AND record_id = ANY(CAST(? AS uuid[]))",
}
MAP_BYTES = 1 << 31  # SQLite's own ceiling for a memory map unless built otherwise
VERSION_LOOKUP_IDS = 500  # record IDs per look-up statement (well under any bound-variable limit)
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# one record reference as the canonical JSON spells it: hash, id, type, version (sorted keys)
_REF = re.compile(
    rb'\{"hash":"([0-9a-f]{64})","id":"(' + _UUID.pattern + rb')",'
    rb'"type":"([A-Za-z][A-Za-z0-9_]*)","version":([1-9][0-9]{0,17})\}'
)
_REF_LIST = re.compile(_REF.pattern + rb"(?:," + _REF.pattern + rb")*")
_Ref = tuple[int, str, str, int, str]  # seq, record type, record ID, version, content hash


IMPORTED = "system:data:imported"
_BATCH_SQL = (
    "SELECT content_hash FROM record_version WHERE import_batch = :batch"  # the partial index
)


@dataclass
class LogReport:
    size: int = 0
    root: bytes = merkle.EMPTY_ROOT
    problems: list[tuple[int, str]] = field(default_factory=list)
    # bulk imports checked against their rows, and those from before batches were stamped
    # (migration 0009), which name no rows to check
    imports_checked: int = 0
    imports_unchecked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> int | None:
        return self.problems[0][0] if self.problems else None


def _check_versions(session: Session, refs: list[_Ref], report: LogReport) -> None:
    """Look up the versions ``refs`` name, by type and record IDs in the spelling the database
    stores (32 hex digits on SQLite, ``8-4-4-4-12`` text from PostgreSQL's ``uuid``): both
    databases search the unique (record_type, record_id, version) index with these, and no
    UUID object is made per reference (they were a third of a look-up). A row-value IN over all
    three made SQLite scan the whole table for every chunk of events. A record's other
    versions come along and are ignored."""
    postgres = _postgres(session)
    spelled = [r[2] if postgres else r[2].replace("-", "") for r in refs]  # as stored
    wanted: dict[str, set[str]] = {}
    for ref, record_id in zip(refs, spelled, strict=True):
        wanted.setdefault(ref[1], set()).add(record_id)
    sql = _VERSIONS_SQL[postgres]
    stored: dict[tuple[str, str, int], str] = {}
    with driver_cursor(session) as cursor:
        for record_type, ids in wanted.items():
            ordered = sorted(ids)
            for at in range(0, len(ordered), VERSION_LOOKUP_IDS):
                part = ordered[at : at + VERSION_LOOKUP_IDS]
                if postgres:
                    cursor.execute(sql, [record_type, part])
                else:
                    cursor.execute(sql + ", ".join("?" * len(part)) + ")", [record_type, *part])
                for found_id, version, digest in cursor.fetchall():
                    stored[(record_type, found_id, version)] = digest
    for (seq, record_type, record_id, version, digest), key in zip(refs, spelled, strict=True):
        have = stored.get((record_type, key, version))
        if have is None:
            report.problems.append(
                (seq, f"record version {record_type} {record_id} v{version} is missing")
            )
        elif have != digest:
            report.problems.append(
                (
                    seq,
                    f"record version {record_type} {record_id} v{version} differs from what "
                    "was logged",
                )
            )


def _check_imports(session: Session, imports: list[tuple[int, bytes]], report: LogReport) -> None:
    """Each bulk import event against the versions that name its batch: their number and the
    Merkle root over their hashes must be what the event holds (a rewritten, added or removed
    imported version fails here, as an API-written one fails its own event's reference)."""
    postgres = _postgres(session)
    for seq, body in imports:
        try:
            detail = json.loads(body).get("detail") or {}
            batch, count, root = detail.get("batch"), detail["versions"], detail["versions_root"]
        except (ValueError, KeyError, AttributeError):
            report.problems.append((seq, "bulk import event is malformed"))
            continue
        if batch is None:  # imported before batches were stamped (0009)
            report.imports_unchecked += 1
            continue
        if not isinstance(batch, str) or not _UUID.fullmatch(batch.encode()):
            report.problems.append((seq, "bulk import event names no valid batch"))
            continue
        spelled = batch if postgres else batch.replace("-", "")
        hashes = list(session.execute(text(_BATCH_SQL), {"batch": spelled}).scalars())
        if len(hashes) != count:
            report.problems.append(
                (seq, f"bulk import logged {count} versions; {len(hashes)} name its batch")
            )
        elif merkle.batch_root(hashes).hex() != root:
            report.problems.append(
                (seq, "bulk imported versions differ from what was logged (batch root)")
            )
        report.imports_checked += 1


def _refs_in(seq: int, body: bytes) -> list[_Ref] | str:
    """The record versions a body's top-level ``records`` names, or what is wrong with them.
    The canonical spelling (sorted keys, no spaces) is read with one pattern; anything else
    is parsed as JSON and checked field by field. Either way a reference is a type, a
    lower-case ``8-4-4-4-12`` record ID, a positive version and a 64-digit hash."""
    at = body.rfind(b'"records":[')
    end = body.find(b'],"seq":', at)
    inner = body[at + 11 : end] if at >= 0 and end >= 0 else b""
    if _REF_LIST.fullmatch(inner):
        return [
            (seq, t.decode(), i.decode(), int(v), h.decode()) for h, i, t, v in _REF.findall(inner)
        ]
    try:
        parsed = json.loads(body)
    except ValueError:
        return "body is not valid JSON"
    # "records" may also be a key inside a system event's detail; only the top-level list
    # names record versions
    logged = parsed.get("records", []) if isinstance(parsed, dict) else []
    refs: list[_Ref] = []
    for ref in logged if isinstance(logged, list) else [logged]:
        if not isinstance(ref, dict):
            return "a record reference is not an object"
        kind, rid, version, digest = (ref.get(k) for k in ("type", "id", "version", "hash"))
        if not (
            isinstance(kind, str)
            and isinstance(rid, str)
            and _UUID.fullmatch(rid.encode())
            and type(version) is int
            and version > 0
            and isinstance(digest, str)
        ):
            return "a record reference is malformed"
        refs.append((seq, kind, rid, version, digest))
    return refs


def _indexed_ids(body: bytes, hex_ids: bool) -> tuple[list[str], str | None]:
    """Patient IDs and acting user named by a canonical body, read from its bytes, spelled as
    the review indexes store them (``hex_ids``: 32 hex digits, SQLite). Keys are sorted, so
    the top-level ``"patients":[`` is the last one (``detail`` comes before it and only
    ``records``, ``seq``, ``tag`` and ``v`` follow); ``actor`` is the first key and flat, so
    its ``"user":"`` is the first. A quote inside a string value is escaped and cannot fake
    either marker."""
    start = body.rfind(b'"patients":[')
    patients: list[str] = []
    if start >= 0:
        inner = body[start + 12 : body.find(b"]", start)]
        inner = inner.replace(b"-", b"") if hex_ids else inner
        patients = [p[1:-1] for p in inner.decode("ascii", "replace").split(",")] if inner else []
    at = body.find(b'"user":"')
    user = None
    if at >= 0:
        spelled = body[at + 8 : at + 44]
        user = (spelled.replace(b"-", b"") if hex_ids else spelled).decode("ascii", "replace")
    return patients, user


_Read = tuple[list[tuple[Any, ...]], list[tuple[int, str]], list[tuple[int, str]]]


class _Rows:
    """Plain DB-API reads in the session's transaction. Through SQLAlchemy's result objects
    the fetch was half of the verifier's time; here each row is the driver's own tuple. IDs
    come back as text, no UUID object per row: on SQLite as stored (32 hex digits; the bodies'
    IDs are compared without their dashes — spelling them with ``substr`` in SQL took three
    times as long as the read), on PostgreSQL as the body spells them (``8-4-4-4-12``)."""

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
            "SELECT seq, body, leaf_hash, chain_hash, recorded_at, tag FROM audit_event "  # noqa: S608
            f"WHERE seq > {mark} AND seq <= {mark} ORDER BY seq LIMIT {mark}"
        )
        self.index_sql: dict[str, str] = {}
        for name, column in (("patient", "patient_id"), ("user", "user_id")):
            spelled = f"CAST({column} AS TEXT)" if postgres else column
            table = f"audit_event_{name}"
            # ordered by the stored ID (PostgreSQL's uuid order is its bytes' order, as is that
            # of the hex text; the cast text would follow the server's collation)
            self.index_sql[name] = (
                f"SELECT seq, {spelled} FROM {table} "  # noqa: S608
                f"WHERE seq >= {mark} AND seq <= {mark} ORDER BY seq, {column}"
            )

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
        self.cursor.execute(self.index_sql[table], (-(2**62) if lo == 1 else lo, hi))
        return list(self.cursor.fetchall())


def _spelled_time(value: Any) -> bytes:
    """A stored ``recorded_at`` as the event's canonical JSON spells it
    (``YYYY-MM-DDTHH:MM:SS.ffffffZ``): SQLite keeps ``YYYY-MM-DD HH:MM:SS[.ffffff]`` text, the
    PostgreSQL driver gives a datetime."""
    if isinstance(value, str):
        text = value if len(value) > 19 else value + ".000000"
        return (text.replace(" ", "T", 1) + "Z").encode("ascii", "replace")
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    return b""


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
    with _mapped(session):
        _walk(v, _Rows(session, BATCH), 1)
    v.fold()
    return v.finish()


@contextmanager
def _mapped(session: Session) -> Iterator[None]:
    """SQLite: this connection reads the file through a memory map for the pass (as much of it
    as SQLite maps, 2 GB by default), then as before. The record-version look-ups seek all
    over the file: through ``read()`` per page they took a quarter longer on the M clinic."""
    if _postgres(session):
        yield
        return
    connection = session.connection()
    connection.exec_driver_sql(f"PRAGMA mmap_size = {MAP_BYTES}")
    try:
        yield
    finally:
        connection.exec_driver_sql("PRAGMA mmap_size = 0")


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
        for problems, leaves, chain, (checked, unchecked) in pool.map(
            _verify_range, [url] * len(starts), starts, ends, [BATCH] * len(starts)
        ):
            v.report.problems += problems
            v.report.imports_checked += checked
            v.report.imports_unchecked += unchecked
            v.leaves = [leaves[i : i + 32] for i in range(0, len(leaves), 32)]
            v.fold()
            v.chain = chain
    # index rows numbered past the last event (those under 1 are the first range's)
    _events, patients, users = _Rows(v.session, BATCH).read(last + 1)
    v.orphans({seq for seq, _ in patients} | {seq for seq, _ in users})


def _verify_range(
    url: str, lo: int, hi: int, batch: int
) -> tuple[list[Any], bytes, bytes, tuple[int, int]]:
    """In a worker process: events ``lo``..``hi`` — sequence, bodies, leaf and chain hashes,
    review indexes, record versions. Returns the problems, the leaf hashes and the last chain
    hash, and the bulk imports it checked and could not check."""
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
            with _mapped(session):
                _walk(v, _Rows(session, batch, hi), lo)
            if v.expected <= hi:
                v.problem(v.expected, f"sequence broken: expected {v.expected}, none up to {hi}")
            imports = (v.report.imports_checked, v.report.imports_unchecked)
            return v.report.problems, b"".join(v.leaves), v.chain, imports
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
            # in the order of the index's key (seq, ID): as the bodies list them, so equal lists
            # are the common case; anything else is compared as sets, event by event
            named, acting = v.chunk(chunk)
            if patients != named or users != acting:
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
        self.refs: list[_Ref] = []
        self.imports: list[tuple[int, bytes]] = []  # bulk import events, checked with the refs
        self.leaves: list[bytes] = []  # checked leaf hashes not yet folded into the frontier
        self.fold_here = True  # False in a worker, which hands its leaves to the parent
        self.hex_ids = not _postgres(session)  # how the review indexes spell IDs

    def problem(self, seq: int, what: str) -> None:
        self.report.problems.append((seq, what))

    def chunk(
        self, rows: list[tuple[Any, ...]]
    ) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """Check a run of events; returns the (seq, ID) pairs their bodies name for the two
        review indexes. The hashing is inlined here (the same operations as
        ``merkle.leaf_hash`` and ``chain_next``, which the tests hold to the RFC's vectors): a
        verifier call per event was a third of the time on a log of millions."""
        sha256 = hashlib.sha256
        leaves, hex_ids = self.leaves, self.hex_ids
        chain, expected = self.chain, self.expected
        named: list[tuple[int, str]] = []
        acting: list[tuple[int, str]] = []
        for seq, raw, stored_leaf, stored_chain, stored_at, stored_tag in rows:
            body = raw if type(raw) is bytes else bytes(raw)
            # The columns beside the body (what reviews sort and filter by) must say what was
            # hashed: a chart view moved to another year or relabelled as a system event is
            # an edit of the log, not of a convenience copy.
            at = body.find(b'},"at":"')  # the top-level time follows the (flat) actor object
            if at < 0 or body[at + 8 : at + 35] != _spelled_time(stored_at):
                self.problem(seq, "recorded_at column differs from the hashed event")
            at = body.rfind(b'"tag":"')
            if at < 0 or body[at + 7 : body.find(b'"', at + 7)] != stored_tag.encode():
                self.problem(seq, "tag column differs from the hashed event")
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
            if stored_tag == IMPORTED:
                self.imports.append((seq, body))
            at = body.rfind(b'"patients":[')  # as _indexed_ids, inlined
            if at >= 0:
                inner = body[at + 12 : body.find(b"]", at)]
                if inner:
                    inner = inner.replace(b"-", b"") if hex_ids else inner
                    named += [(seq, p[1:-1]) for p in inner.decode("ascii", "replace").split(",")]
            at = body.find(b'"user":"')
            if at >= 0:
                spelled = body[at + 8 : at + 44]
                spelled = spelled.replace(b"-", b"") if hex_ids else spelled
                acting.append((seq, spelled.decode("ascii", "replace")))
            expected += 1
        self.chain, self.expected = chain, expected
        return named, acting

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

    def _record_refs(self, seq: int, body: bytes) -> None:
        refs = _refs_in(seq, body)
        if isinstance(refs, str):
            self.problem(seq, refs)
        else:
            self.refs += refs

    def check_versions(self) -> None:
        """Look up the record versions the events so far named (between reads)."""
        if self.refs:
            _check_versions(self.session, self.refs, self.report)
            self.refs = []
        if self.imports:
            _check_imports(self.session, self.imports, self.report)
            self.imports = []

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
        for seq, raw, *_ in rows:
            named, user = _indexed_ids(bytes(raw), self.hex_ids)
            if patients.pop(seq, set()) != set(named) or users.pop(seq, set()) != (
                {user} if user else set()
            ):
                self.problem(seq, "review index differs from the event body")
        self.orphans(set(patients) | set(users))

    def orphans(self, seqs: set[int]) -> None:
        for seq in sorted(seqs):
            if 1 <= seq < self.expected:  # that event exists and was checked: the row was moved
                self.problem(seq, "review index row does not match the event it names (moved?)")
            else:
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
