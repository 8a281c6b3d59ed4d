"""Live streaming of the audit trail to a SIEM: RFC 5424 syslog messages over TLS (RFC 5425
octet-counted framing), at least once, in log order.

The audit log itself is the durable queue. A cursor file (``checkpoints/syslog.cursor``) holds
the last sequence number the receiver has **confirmed**; each batch is sent on its own TLS
connection that is then closed with ``close_notify`` — the receiver answering with its own
``close_notify`` means it has read every record before it (TLS records arrive in order), and
only then does the cursor move. A receiver that restarts or vanishes mid-batch leaves the
cursor where it was and the batch is sent again: nothing is lost, and a SIEM can drop the
occasional duplicate by the ``seq`` every message carries.

Message shape::

    <PRI>1 TIMESTAMP HOST mamori - TAG [mamori@32473 seq="…" leaf="…" outcome="…"] BOM{json}

PRI is facility authpriv (10) with severity notice, or warning for failures. The structured
data ID uses 32473, the private enterprise number RFC 5612 reserves for documentation, until
mamori has its own. The message is the event's canonical JSON (IDs, roles, tags, hashes —
never clinical free text), so the SIEM receives exactly the bytes the Merkle tree covers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from mamori.audit.models import AuditEvent
from mamori.db import Database
from mamori.settings import SyslogTarget

log = logging.getLogger("mamori.audit.syslog")

SD_ID = "mamori@32473"
FACILITY_AUTHPRIV = 10
NOTICE, WARNING = 5, 4
BOM = "\ufeff"


def _sd_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(value: str, limit: int) -> str:
    out = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)
    return out[:limit] or "-"


def format_message(seq: int, tag: str, body: bytes, leaf: bytes, host: str) -> bytes:
    """One RFC 5424 message for one audit event."""
    event = json.loads(body)
    failure = event.get("outcome") not in (None, "success")
    pri = FACILITY_AUTHPRIV * 8 + (WARNING if failure else NOTICE)
    stamp = str(event.get("at") or "-")
    sd = (
        f'[{SD_ID} seq="{seq}" leaf="{leaf.hex()}" '
        f'outcome="{_sd_value(str(event.get("outcome", "success")))}"]'
    )
    header = f"<{pri}>1 {stamp} {_printable(host, 255)} mamori - {_printable(tag, 32)} {sd} "
    return header.encode("ascii") + BOM.encode("utf-8") + body


def frame(message: bytes) -> bytes:
    """RFC 5425 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


class Cursor:
    """The last sequence number the receiver confirmed, in a small file beside the checkpoints
    (written atomically; lost → everything is sent again, never skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int:
        try:
            return int(self.path.read_text(encoding="ascii").strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def write(self, seq: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{seq}\n", encoding="ascii")
        os.replace(tmp, self.path)


class Forwarder:
    def __init__(
        self, db: Database, target: SyslogTarget, cursor_path: Path, host: str | None = None
    ) -> None:
        self.db, self.target = db, target
        self.cursor = Cursor(cursor_path)
        self.host = host or socket.gethostname()

    def _context(self) -> ssl.SSLContext:
        t = self.target
        ctx = ssl.create_default_context(cafile=str(t.ca_file) if t.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if t.client_cert:
            ctx.load_cert_chain(str(t.client_cert), str(t.client_key) if t.client_key else None)
        return ctx

    def _pending(self, after: int) -> Sequence[tuple[int, str, bytes, bytes]]:
        with self.db.session(write=False) as s:
            rows = s.execute(
                select(AuditEvent.seq, AuditEvent.tag, AuditEvent.body, AuditEvent.leaf_hash)
                .where(AuditEvent.seq > after)
                .order_by(AuditEvent.seq)
                .limit(self.target.batch)
            ).all()
        return [(seq, tag, bytes(body), bytes(leaf)) for seq, tag, body, leaf in rows]

    def send_batch(self) -> int:
        """Send the next batch and wait for the receiver's confirmation. Returns the number of
        events confirmed (0 when there was nothing to send); raises ``OSError`` when the
        receiver could not be reached or did not confirm — the cursor stays put."""
        after = self.cursor.read()
        rows = self._pending(after)
        if not rows:
            return 0
        t = self.target
        payload = b"".join(
            frame(format_message(seq, tag, body, leaf, self.host)) for seq, tag, body, leaf in rows
        )
        with (
            socket.create_connection((t.host, t.port), timeout=t.timeout_seconds) as raw,
            self._context().wrap_socket(raw, server_hostname=t.server_name or t.host) as tls,
        ):
            tls.sendall(payload)
            tls.unwrap()  # our close_notify, then the receiver's: it has read the whole batch
        self.cursor.write(rows[-1][0])
        return len(rows)

    def drain(self) -> int:
        """Send batches until the log is caught up; returns the events confirmed."""
        total = 0
        while True:
            sent = self.send_batch()
            if not sent:
                return total
            total += sent

    def run_once(self) -> int:
        """One catch-up round for the server's background loop: never raises."""
        try:
            return self.drain()
        except (OSError, ssl.SSLError) as exc:
            log.warning("syslog receiver %s:%s unavailable (%s); will retry", *_addr(self), exc)
            return 0


def _addr(fwd: Forwarder) -> tuple[str, int]:
    return fwd.target.host, fwd.target.port
