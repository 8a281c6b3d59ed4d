"""A real rsyslog server on loopback, receiving RFC 5425 syslog over TLS (Debian packages
``rsyslog`` and ``rsyslog-openssl``, installed by ``.ci/run``), with a test CA of its own."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
FIELD_SEP = "\x1f"  # between the fields the template writes, never inside them


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_ca_and_server_cert(where: Path, name: str = "localhost") -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mamori test SIEM CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    where.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = where / "ca.pem", where / "cert.pem", where / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return ca_path, cert_path, key_path


class Rsyslog:
    def __init__(self, root: Path) -> None:
        if not Path(RSYSLOGD).exists():
            raise RuntimeError("rsyslogd is missing: apt-get install rsyslog rsyslog-openssl")
        self.root = root
        self.port = _free_port()
        self.ca, cert, key = make_ca_and_server_cert(root / "tls")
        self.out = root / "received.log"
        (root / "work").mkdir(parents=True, exist_ok=True)
        self.conf = root / "rsyslog.conf"
        self.conf.write_text(
            f"""
global(workDirectory="{root / "work"}"
       DefaultNetstreamDriver="ossl"
       DefaultNetstreamDriverCAFile="{self.ca}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{self.port}" address="127.0.0.1")
template(name="fields" type="list") {{
  property(name="pri") constant(value="{FIELD_SEP}")
  property(name="protocol-version") constant(value="{FIELD_SEP}")
  property(name="timereported" dateFormat="rfc3339") constant(value="{FIELD_SEP}")
  property(name="app-name") constant(value="{FIELD_SEP}")
  property(name="msgid") constant(value="{FIELD_SEP}")
  property(name="structured-data") constant(value="{FIELD_SEP}")
  property(name="msg") constant(value="\\n")
}}
action(type="omfile" file="{self.out}" template="fields" flushOnTXEnd="on")
""",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        pid = self.root / "rsyslogd.pid"
        pid.unlink(missing_ok=True)
        with (self.root / "rsyslogd.log").open("ab") as err:
            self.proc = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        ctx = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw,
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls,
                ):
                    tls.unwrap()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError("rsyslogd did not start: " + (self.root / "rsyslogd.log").read_text())

    def stop(self) -> None:
        """A graceful restart's first half: SIGTERM, rsyslog flushes its queue and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.proc = None

    def received(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        lines = self.out.read_text(encoding="utf-8").splitlines()
        return [line.split(FIELD_SEP) for line in lines if line]
