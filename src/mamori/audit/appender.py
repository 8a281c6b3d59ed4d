"""Group commit for read events.

A read request's events are appended after its read transaction commits and before its data
is released (log-before-release). Done one transaction per request, every chart open pays its
own fsync, and concurrent requests queue on the log head one fsync after another. Here the
requests waiting at a moment share one write transaction (one fsync): a request arriving while
no append is in flight appends at once, in its own thread, **everything waiting** (the leader);
requests arriving while one is in flight wait, and when it ends the first of them to wake
appends all that queued meanwhile for everyone. A request still returns only after its own
events are durable; under load, many share a commit; alone, a request pays no hand-over to
another thread (two thread switches and a wait for the interpreter lock in each, which a
dedicated appending thread cost every chart open; figures in ``bench/README.md``).

If the batch cannot be stored, every request in it gets ``AuditUnavailable`` and releases
nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mamori.errors import AuditUnavailable

MAX_BATCH = 2000  # events per commit


@dataclass
class _Request:
    events: list[dict[str, Any]]
    wake: threading.Event = field(default_factory=threading.Event)  # stored, or now leading
    lead: bool = False
    error: BaseException | None = None


class Appender:
    def __init__(self, append_batch: Callable[[list[dict[str, Any]]], None]) -> None:
        self._append_batch = append_batch
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._busy = False  # a leader is appending; while it is, new requests queue
        self._closed = False
        self.commits = 0  # how many write transactions carried the events (for tests/bench)
        self.requests = 0

    def submit(self, events: list[dict[str, Any]]) -> None:
        """Block until ``events`` are durable in the log; ``AuditUnavailable`` otherwise."""
        request = _Request(events)
        with self._cond:
            if self._closed:
                raise AuditUnavailable()
            self._queue.append(request)
            if not self._busy:  # nothing in flight (and so nothing queued): lead at once
                self._busy = request.lead = True
        if not request.lead:
            request.wake.wait()  # until stored by a leader, or made the next leader
        if request.lead:
            self._lead()
        if request.error is not None:
            raise AuditUnavailable() from request.error

    def _lead(self) -> None:
        """Append everything waiting (the leader's own request first) in one transaction,
        wake every request in it, and hand the lead to the first that queued meanwhile."""
        with self._cond:
            batch: list[_Request] = []
            count = 0
            while self._queue and (not batch or count + len(self._queue[0].events) <= MAX_BATCH):
                batch.append(self._queue.pop(0))
                count += len(batch[-1].events)
        error: BaseException | None = None
        try:
            self._append_batch([ev for request in batch for ev in request.events])
        except BaseException as exc:  # every request in the batch must hear of any failure
            error = exc
        with self._cond:
            if error is None:
                self.commits += 1
            self.requests += len(batch)
            for request in batch:
                request.error, request.lead = error, False
                request.wake.set()
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].wake.set()
            else:
                self._busy = False
                self._cond.notify_all()
        if error is not None and not isinstance(error, Exception):
            raise error  # an interrupt goes on up the leader's own stack

    def close(self) -> None:
        """No new request is taken; an append in flight is waited for (up to 10 s)."""
        with self._cond:
            self._closed = True
            self._cond.wait_for(lambda: not self._busy, timeout=10)
