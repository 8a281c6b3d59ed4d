"""A graceful stop is prompt: an idle keep-alive connection (a browser tab left open) does not
hold the stop for asyncio's 30-second TLS shutdown wait, and the shutdown checkpoint is
signed before the process ends."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mamori.instance import create_instance

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_idle_connection_does_not_hold_the_stop(tmp_path: Path) -> None:
    created = create_instance(tmp_path / "i", clinic_name="停止試験", institution_code="1310123455")
    created.instance.db.dispose()
    home = created.instance.settings.home
    port = _port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mamori",
            "serve",
            "--instance",
            str(home),
            "--port",
            str(port),
            "--without-backups",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        ctx = ssl.create_default_context(cafile=str(home / "tls" / "cert.pem"))
        conn = ctx.wrap_socket(raw, server_hostname="localhost")
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)  # the connection is now idle, kept alive, never closed by the client
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=25)
        stopped = time.monotonic() - started
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    proc.stdout.close()
    # uvicorn ends by re-raising the signal it handled, as a supervisor expects
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert stopped < 10, f"stop took {stopped:.1f} s"
    notes = sorted((home / "checkpoints").glob("*.note"))
    assert notes, output  # the shutdown checkpoint (and the commands' own) were signed
