"""The audit trail streamed to a real rsyslog over TLS: every event, in order, as RFC 5424, with
no event lost when the receiver restarts and nothing sent to a receiver we cannot verify."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient
from tests.conftest import SAMPLE_PATIENT, World
from tests.rsyslog import Rsyslog, make_ca_and_server_cert

from mamori.app import create_app
from mamori.audit.models import AuditEvent
from mamori.audit.syslog import Forwarder
from mamori.settings import SyslogTarget


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    server = Rsyslog(tmp_path / "rsyslog")
    server.start()
    yield server
    server.stop()


def _target(server: Rsyslog, **kw: object) -> SyslogTarget:
    return SyslogTarget(
        host="127.0.0.1",
        port=server.port,
        ca_file=server.ca,
        server_name="localhost",
        **kw,  # type: ignore[arg-type]
    )


def _log(world: World) -> list[tuple[int, str, bytes]]:
    with world.db.session(write=False) as s:
        rows = s.execute(select(AuditEvent.seq, AuditEvent.tag, AuditEvent.body)).all()
    return [(seq, tag, bytes(body)) for seq, tag, body in rows]


def _activity(world: World, n: int = 3) -> None:
    for i in range(n):
        body = {**SAMPLE_PATIENT, "phone": f"090-1111-{i:04d}", "register_anyway": True}
        pid = world.http.post("/api/v1/patients", json=body, headers=world.h("clerk_chika")).json()[
            "id"
        ]
        world.http.post(
            f"/api/v1/patients/{pid}/notes",
            json={"subjective": "胸部不快感が三日続く"},
            headers=world.h("dr_aiko"),
        )
        world.http.get(f"/api/v1/patients/{pid}/chart", headers=world.h("dr_aiko"))
    # a denial: reception asking for notes (an event with outcome "failure")
    world.http.get(f"/api/v1/patients/{pid}/notes", headers=world.h("clerk_chika"))


def _seqs(server: Rsyslog) -> list[int]:
    out = []
    for fields in server.received():
        sd = fields[5]
        out.append(int(sd.split('seq="')[1].split('"')[0]))
    return out


def _written(server: Rsyslog, expected: int, seconds: float = 15) -> list[int]:
    """The sequence numbers in rsyslog's output file once it holds ``expected`` lines (or the
    deadline passes): rsyslog writes what it received from its own queue, a moment after the
    forwarder's batch was confirmed, so an immediate read can miss the last batch."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(_seqs(server)) < expected:
        time.sleep(0.05)
    return _seqs(server)


@pytest.mark.one_backend
def test_every_event_arrives_as_rfc5424_in_order(
    world: World, rsyslog: Rsyslog, tmp_path: Path
) -> None:
    _activity(world)
    fwd = Forwarder(
        world.db, _target(rsyslog, batch=7), tmp_path / "syslog.cursor", host="clinic-pc"
    )
    sent = fwd.drain()
    log = _log(world)
    assert sent == len(log) >= 10
    assert _written(rsyslog, len(log)) == [seq for seq, _, _ in log]  # all, once, in order
    received = rsyslog.received()
    by_seq = {seq: (tag, body) for seq, tag, body in log}
    for pri, version, stamp, app, msgid, sd, msg in received:
        seq = int(sd.split('seq="')[1].split('"')[0])
        tag, body = by_seq[seq]
        assert version == "1" and app == "mamori" and msgid == tag
        event = json.loads(body)
        severity = int(pri) % 8
        assert int(pri) // 8 == 10 and severity == (5 if event["outcome"] == "success" else 4)
        assert stamp.startswith(event["at"][:19])
        assert msg.lstrip("\ufeff").encode() == body  # exactly the bytes the Merkle tree covers
    assert not any("胸部不快感" in m[-1] for m in received)  # never clinical free text
    assert fwd.drain() == 0  # caught up: nothing is sent twice


@pytest.mark.one_backend
def test_no_event_is_lost_when_the_receiver_restarts(
    world: World, rsyslog: Rsyslog, tmp_path: Path
) -> None:
    fwd = Forwarder(world.db, _target(rsyslog, batch=5), tmp_path / "syslog.cursor")
    _activity(world, 1)
    assert fwd.drain() > 0
    confirmed = fwd.cursor.read()
    rsyslog.stop()
    _activity(world, 2)  # the clinic keeps working while the SIEM is down
    assert fwd.run_once() == 0  # unreachable: logged, retried later, never raised
    assert fwd.cursor.read() == confirmed
    rsyslog.start()
    assert fwd.drain() > 0
    log = _log(world)
    seqs = _written(rsyslog, len(log))
    assert sorted(set(seqs)) == [seq for seq, _, _ in log]


@pytest.mark.one_backend
def test_an_unverified_receiver_gets_nothing(
    world: World, rsyslog: Rsyslog, tmp_path: Path
) -> None:
    _activity(world, 1)
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "impostor")
    cursor = tmp_path / "syslog.cursor"
    fwd = Forwarder(world.db, dataclasses.replace(_target(rsyslog), ca_file=other_ca), cursor)
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        fwd.drain()
    wrong_name = dataclasses.replace(_target(rsyslog), server_name="siem.example")
    with pytest.raises(OSError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
        Forwarder(world.db, wrong_name, cursor).drain()
    assert rsyslog.received() == [] and fwd.cursor.read() == 0


@pytest.mark.one_backend
def test_the_server_streams_while_it_runs(world: World, rsyslog: Rsyslog) -> None:
    settings = dataclasses.replace(world.settings, syslog=_target(rsyslog, interval_seconds=0.2))
    with TestClient(create_app(settings, world.db)) as client:  # runs the lifespan
        r = client.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=world.h("clerk_chika"))
        assert r.status_code == 201
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(_seqs(rsyslog)) < len(_log(world)):
            time.sleep(0.1)
        assert _seqs(rsyslog) == [seq for seq, _, _ in _log(world)]
    assert (settings.checkpoint_dir / "syslog.cursor").read_text().strip() == str(len(_log(world)))


@pytest.mark.one_backend
def test_a_receiver_that_dies_mid_batch_does_not_move_the_cursor(
    world: World, tmp_path: Path
) -> None:
    """The receiver reads part of a batch and drops the connection without confirming (a crash
    or a restart at the wrong moment): the batch counts as not delivered."""
    import socket
    import ssl
    import threading

    ca, cert, key = make_ca_and_server_cert(tmp_path / "dying")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(64)  # a little of the batch, then gone without close_notify
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    _activity(world, 1)
    target = SyslogTarget(host="127.0.0.1", port=port, ca_file=ca, server_name="localhost")
    fwd = Forwarder(world.db, target, tmp_path / "syslog.cursor")
    with pytest.raises((ssl.SSLError, ConnectionError)):  # no close_notify came back
        fwd.drain()
    thread.join(timeout=10)
    listener.close()
    assert fwd.cursor.read() == 0  # everything is sent again to the next receiver
