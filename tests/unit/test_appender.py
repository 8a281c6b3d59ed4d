"""The group-commit appender: requests waiting while a commit is in flight share the next one,
each caller returns only after its own events are stored, and a failed commit fails everyone
in it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mamori.audit.appender import Appender
from mamori.errors import AuditUnavailable


def test_waiting_requests_share_one_commit() -> None:
    stored: list[list[dict[str, Any]]] = []
    first_started, release_first = threading.Event(), threading.Event()

    def append_batch(events: list[dict[str, Any]]) -> None:
        if not stored:
            first_started.set()
            release_first.wait(10)  # the first commit is "in flight" (its fsync)
        stored.append(events)

    appender = Appender(append_batch)
    returned: list[int] = []

    def request(i: int) -> None:
        appender.submit([{"n": i}])
        assert any({"n": i} in batch for batch in stored)  # durable before returning
        returned.append(i)

    first = threading.Thread(target=request, args=(0,))
    first.start()
    assert first_started.wait(10)
    others = [threading.Thread(target=request, args=(i,)) for i in range(1, 9)]
    for t in others:
        t.start()
    while len(appender._queue) < 8:  # all eight are waiting behind the first commit
        threading.Event().wait(0.01)
    assert returned == []
    release_first.set()
    for t in [first, *others]:
        t.join(10)
    assert sorted(returned) == list(range(9))
    assert [len(b) for b in stored] == [1, 8]  # two commits for nine requests
    assert appender.commits == 2 and appender.requests == 9
    appender.close()


def test_a_failed_commit_fails_every_request_in_it() -> None:
    def append_batch(events: list[dict[str, Any]]) -> None:
        raise AuditUnavailable()

    appender = Appender(append_batch)
    with pytest.raises(AuditUnavailable):
        appender.submit([{"n": 1}])
    appender.close()
    with pytest.raises(AuditUnavailable):  # and nothing is accepted after close
        appender.submit([{"n": 2}])
