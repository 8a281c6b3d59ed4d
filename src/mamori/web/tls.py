"""TLS for ``mamori serve``: on by default.

A clinic LAN has no public host name, so a certificate from a public CA is rarely possible.
``mamori serve`` therefore creates a local certificate once (ECDSA P-256, self-signed, for
``localhost``, the machine's host name and the names in ``[server] tls_names``) in
``DIR/tls/``; staff browsers trust it once (docs/operations.md). A clinic with its own
certificate points ``[server] tls_cert``/``tls_key`` at it. Behind a reverse proxy that
terminates TLS, ``--behind-proxy`` serves plain HTTP, and only on a loopback address.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mamori.errors import InstanceError

VALID_DAYS = 825  # the longest lifetime browsers accept for a server certificate
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def local_certificate(home: Path, extra_names: Sequence[str] = ()) -> tuple[Path, Path]:
    """The instance's local certificate and key, created on first use (key file 0600)."""
    tls = home / "tls"
    cert_path, key_path = tls / "cert.pem", tls / "key.pem"
    if cert_path.is_file() and key_path.is_file():
        if key_path.stat().st_mode & 0o077:
            raise InstanceError(
                f"{key_path} が他のユーザーから読めます（chmod 600 が必要です）。",
                f"{key_path} is readable by others; chmod 600 it.",
            )
        return cert_path, key_path
    tls.mkdir(mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names = ["localhost", socket.gethostname(), "127.0.0.1", "::1", *extra_names]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "mamori local server"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mamori"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def require_loopback(host: str) -> None:
    if host not in LOOPBACK:
        raise InstanceError(
            f"--behind-proxy では平文 HTTP をループバック（127.0.0.1 など）でだけ待ち受けます"
            f"（指定: {host}）。",
            f"--behind-proxy serves plain HTTP on a loopback address only (got {host}).",
        )
