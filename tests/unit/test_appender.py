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


def test_a_request_alone_is_appended_in_its_own_thread() -> None:
    # no hand-over to another thread when nothing else is in flight; under load the caller
    # that finds no append in flight appends for everyone waiting (the test above)
    threads: list[int] = []
    appender = Appender(lambda events: threads.append(threading.get_ident()))
    appender.submit([{"n": 1}])
    worker = threading.Thread(target=appender.submit, args=([{"n": 2}],))
    worker.start()
    worker.join(10)
    assert threads == [threading.get_ident(), worker.ident]
    assert appender.commits == 2 and appender.requests == 2
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


def test_an_unexpected_error_fails_the_request_and_the_appender_lives_on() -> None:
    # Any error — not only a database's — must reach the waiting callers: one that escaped
    # the leader would leave every request of its batch waiting for ever.
    calls: list[int] = []

    def append_batch(events: list[dict[str, Any]]) -> None:
        calls.append(len(events))
        if len(calls) == 1:
            raise ValueError("a frontier that does not fit its size")

    appender = Appender(append_batch)
    outcome: list[BaseException | None] = []

    def first() -> None:
        try:
            appender.submit([{"n": 1}])
            outcome.append(None)
        except AuditUnavailable as exc:
            outcome.append(exc)

    t = threading.Thread(target=first)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the request was left waiting"
    assert isinstance(outcome[0], AuditUnavailable)
    assert isinstance(outcome[0].__cause__, ValueError)
    appender.submit([{"n": 2}])  # the next request is stored by the same appender
    assert calls == [1, 1]
    appender.close()
