"""Signed checkpoints of the audit log in the C2SP formats (c2sp.org/tlog-checkpoint,
c2sp.org/signed-note), so existing witness and verifier tooling can read them.

A checkpoint body is three lines — origin, decimal tree size, base64 root hash — and the note
carries one or more signature lines ``— <key name> base64(key ID ‖ Ed25519 signature)``.
The key ID is ``SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]``. Checkpoints hold hashes
only, never patient data, so they may leave the clinic.

Uses only ``hashlib``, ``base64`` and ``cryptography`` (shipped in the auditor's verifier).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_SIZE = re.compile(r"^(0|[1-9][0-9]*)$")


class CheckpointError(ValueError):
    """The note is malformed, unsigned by a trusted key, or carries a bad signature."""


def _check_key_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise ValueError("a key name is non-empty and has no spaces or '+'")
    return name


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        if not self.origin or "\n" in self.origin or self.size < 0 or len(self.root) != 32:
            raise ValueError("invalid checkpoint")
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise CheckpointError("a checkpoint has origin, size and root lines")
        origin, size, root_b64 = lines[0], lines[1], lines[2]
        if not origin or not _SIZE.match(size):
            raise CheckpointError("bad origin or tree size line")
        try:
            root = base64.b64decode(root_b64, validate=True)
        except ValueError:
            raise CheckpointError("root hash is not base64") from None
        if len(root) != 32:
            raise CheckpointError("root hash is not 32 bytes")
        return cls(origin=origin, size=int(size), root=root)


class NoteSigner:
    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = _check_key_name(name)
        self.private_key = private_key
        self.public_raw = _raw(private_key.public_key())
        self.key_id = key_id(name, self.public_raw)

    def signature_line(self, text: str) -> str:
        sig = self.private_key.sign(text.encode("utf-8"))
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(self.key_id + sig).decode()}\n"

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.public_raw)


class NoteVerifier:
    def __init__(self, name: str, public_raw: bytes) -> None:
        if len(public_raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        self.name = _check_key_name(name)
        self.public_raw = public_raw
        self.public_key = Ed25519PublicKey.from_public_bytes(public_raw)
        self.key_id = key_id(name, public_raw)

    def vkey(self) -> str:
        """``<name>+<key ID hex>+<base64(0x01 ‖ public key)>``, the usual way to publish it."""
        encoded = base64.b64encode(ED25519 + self.public_raw).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        try:
            name, kid, key_b64 = vkey.strip().split("+", 2)  # base64 may itself contain "+"
            raw = base64.b64decode(key_b64, validate=True)
        except ValueError:
            raise ValueError("not a verifier key") from None
        if raw[:1] != ED25519:
            raise ValueError("not an Ed25519 verifier key")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != kid:
            raise ValueError("verifier key ID does not match its key")
        return verifier


def sign(checkpoint: Checkpoint, signers: Sequence[NoteSigner]) -> str:
    text = checkpoint.body()
    return text + "\n" + "".join(s.signature_line(text) for s in signers)


def open_note(note: str, trusted: Sequence[NoteVerifier]) -> Checkpoint:
    """Verify a signed checkpoint note against trusted keys and return its checkpoint.

    Signatures from unknown keys are ignored; a known key's bad signature rejects the note; at
    least one known key must have signed (c2sp.org/signed-note).
    """
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise CheckpointError("control characters in note")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise CheckpointError("no signature block")
    text, block = note[: split + 1], note[split + 2 :]
    known = {(v.name, v.key_id): v for v in trusted}
    verified = 0
    for line in block.split("\n")[:-1]:
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError("malformed signature line")
        name, _, sig_b64 = line[len(SIGNATURE_PREFIX) :].rpartition(" ")
        try:
            raw = base64.b64decode(sig_b64, validate=True)
        except ValueError:
            raise CheckpointError("signature is not base64") from None
        if len(raw) < 5:
            raise CheckpointError("signature too short")
        verifier = known.get((name, raw[:4]))
        if verifier is None:
            continue
        try:
            verifier.public_key.verify(raw[4:], text.encode("utf-8"))
        except InvalidSignature:
            raise CheckpointError(f"bad signature by {name}") from None
        verified += 1
    if not verified:
        raise CheckpointError("not signed by any trusted key")
    return Checkpoint.parse(text)
