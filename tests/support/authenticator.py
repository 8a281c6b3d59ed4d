"""A software WebAuthn authenticator built from Yubico's ``fido2`` structures and a real P-256
key: it answers mamori's registration and assertion options the way a platform authenticator
does (packed "none" attestation, signed authenticator data), so the server's verification runs
for real. Chromium's virtual authenticator drives the same endpoints in the browser tests.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.webauthn import (
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    CollectedClientData,
)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftAuthenticator:
    origin: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    counter: int = 0

    def register(self, options: dict[str, Any]) -> dict[str, Any]:
        rp_id = options["rp"]["id"]
        client = CollectedClientData.create(
            type="webauthn.create", challenge=unb64u(options["challenge"]), origin=self.origin
        )
        cose = ES256.from_cryptography_key(self.key.public_key())
        cred = AttestedCredentialData.create(b"\0" * 16, self.credential_id, cose)
        flags = AuthenticatorData.FLAG.UP | AuthenticatorData.FLAG.UV | AuthenticatorData.FLAG.AT
        auth_data = AuthenticatorData.create(
            hashlib.sha256(rp_id.encode()).digest(), flags, self.counter, bytes(cred)
        )
        attestation = AttestationObject.create("none", auth_data, {})
        return {
            "id": b64u(self.credential_id),
            "rawId": b64u(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64u(bytes(client)),
                "attestationObject": b64u(bytes(attestation)),
            },
        }

    def sign(
        self, options: dict[str, Any], *, origin: str | None = None, counter: int | None = None
    ) -> dict[str, Any]:
        self.counter = self.counter + 1 if counter is None else counter
        rp_id = options["rpId"]
        client = CollectedClientData.create(
            type="webauthn.get",
            challenge=unb64u(options["challenge"]),
            origin=origin or self.origin,
        )
        flags = AuthenticatorData.FLAG.UP | AuthenticatorData.FLAG.UV
        auth_data = bytes(
            AuthenticatorData.create(hashlib.sha256(rp_id.encode()).digest(), flags, self.counter)
        )
        signature = self.key.sign(
            auth_data + hashlib.sha256(bytes(client)).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64u(self.credential_id),
            "rawId": b64u(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64u(bytes(client)),
                "authenticatorData": b64u(auth_data),
                "signature": b64u(signature),
            },
        }
