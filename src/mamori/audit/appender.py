"""Group commit for read events.

A read request's events are appended after its read transaction commits and before its data
is released (log-before-release). Done one transaction per request, every chart open pays its
own fsync, and concurrent requests queue on the log head one fsync after another. The
appender is one thread per database that takes **everything waiting**, appends it in one
write transaction, commits once (one fsync), and then wakes every waiting request. A request
still returns only after its own events are durable; under load, many share a commit.

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
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Appender:
    def __init__(self, append_batch: Callable[[list[dict[str, Any]]], None]) -> None:
        self._append_batch = append_batch
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
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
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="mamori-audit-appender", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        request.done.wait()
        if request.error is not None:
            raise AuditUnavailable() from request.error

    def _take(self) -> list[_Request] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            batch: list[_Request] = []
            count = 0
            while self._queue and (not batch or count + len(self._queue[0].events) <= MAX_BATCH):
                request = self._queue.pop(0)
                batch.append(request)
                count += len(request.events)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            error: BaseException | None = None
            try:
                self._append_batch([ev for request in batch for ev in request.events])
                self.commits += 1
                self.requests += len(batch)
            except Exception as exc:  # every waiting request must hear of any failure
                error = exc  # (an escaped error would end this thread and leave them waiting)
            for request in batch:
                request.error = error
                request.done.set()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
