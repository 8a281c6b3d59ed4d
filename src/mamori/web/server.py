"""Uvicorn, with a prompt graceful stop.

On a stop (SIGTERM from systemd, Ctrl-C) uvicorn closes idle keep-alive connections politely:
over TLS that waits for the client's close_notify, up to asyncio's 30-second SSL shutdown
timeout, so one idle browser tab held every stop for 30 s and a supervisor with a shorter stop
timeout killed the server before its shutdown checkpoint. An idle connection has nothing in
flight, so it is aborted at once; a request still being answered keeps up to
``GRACE_SECONDS`` to finish, then the server stops anyway (the unit's TimeoutStopSec must be
longer: docs/operations.md).
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

GRACE_SECONDS = 15  # for requests in flight at a stop; idle connections end at once


class Server(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            transport = getattr(connection, "transport", None)
            if transport is not None and (cycle is None or cycle.response_complete):
                transport.abort()  # idle: no close_notify wait, nothing is lost
        await super().shutdown(sockets)


def serve(app: Any, **options: Any) -> None:
    """``uvicorn.run`` with :class:`Server` and the grace period."""
    config = uvicorn.Config(app, timeout_graceful_shutdown=GRACE_SECONDS, **options)
    Server(config).run()
