"""C2SP signed checkpoints: round trip, the spec's key ID, and the attacks a verifier must
refuse (edited body, wrong key, unknown-only signatures, re-signing, malformed notes)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mamori.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteSigner,
    NoteVerifier,
    key_id,
    open_note,
    sign,
)

ROOT = hashlib.sha256(b"root").digest()


def _signer(name: str = "mamori.example/clinic-1/audit") -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


def test_round_trip_and_format() -> None:
    s = _signer()
    cp = Checkpoint("mamori.example/clinic-1/audit", 42, ROOT)
    note = sign(cp, [s])
    lines = note.split("\n")
    assert lines[:4] == ["mamori.example/clinic-1/audit", "42", base64.b64encode(ROOT).decode(), ""]
    assert lines[4].startswith("\u2014 mamori.example/clinic-1/audit ")
    raw = base64.b64decode(lines[4].rsplit(" ", 1)[1])
    assert raw[:4] == s.key_id and len(raw) == 4 + 64
    assert open_note(note, [s.verifier()]) == cp


def test_key_id_follows_the_spec() -> None:
    s = _signer("example.com/k")
    expected = hashlib.sha256(b"example.com/k\n\x01" + s.public_raw).digest()[:4]
    assert key_id("example.com/k", s.public_raw) == expected == s.key_id
    vkey = s.verifier().vkey()
    assert vkey.startswith(f"example.com/k+{expected.hex()}+")
    assert NoteVerifier.from_vkey(vkey).public_raw == s.public_raw
    with pytest.raises(ValueError, match="does not match"):
        NoteVerifier.from_vkey(vkey.replace(expected.hex(), "00000000"))


def test_edited_body_is_refused() -> None:
    s = _signer()
    note = sign(Checkpoint("o", 10, ROOT), [s])
    for forged in (
        note.replace("\n10\n", "\n11\n", 1),
        note.replace("o\n", "p\n", 1),
        note.replace(
            base64.b64encode(ROOT).decode(),
            base64.b64encode(hashlib.sha256(b"x").digest()).decode(),
        ),
    ):
        with pytest.raises(CheckpointError, match="bad signature"):
            open_note(forged, [s.verifier()])


def test_wrong_and_unknown_keys() -> None:
    trusted, attacker = _signer("k"), _signer("k")  # same name, different key
    note = sign(Checkpoint("o", 1, ROOT), [attacker])
    with pytest.raises(CheckpointError, match="not signed by any trusted key"):
        open_note(note, [trusted.verifier()])
    # an extra unknown signature is ignored as long as a trusted one verifies
    both = sign(Checkpoint("o", 1, ROOT), [attacker, trusted])
    assert open_note(both, [trusted.verifier()]).size == 1
    # a trusted key's signature spliced onto another body fails
    body_a = sign(Checkpoint("o", 1, ROOT), [trusted])
    body_b = sign(Checkpoint("o", 2, ROOT), [trusted])
    spliced = body_b.split("\n\n")[0] + "\n\n" + body_a.split("\n\n")[1]
    with pytest.raises(CheckpointError, match="bad signature"):
        open_note(spliced, [trusted.verifier()])


@pytest.mark.parametrize(
    "note",
    [
        "",
        "o\n1\n",
        "o\n1\nAAAA\n\n",
        "o\n01\n" + base64.b64encode(ROOT).decode() + "\n\n— k AAAAAA==\n",
        "o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n- k AAAA\n",
        "o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n— k !!!\n",
        "o\n1\n" + base64.b64encode(ROOT).decode() + "\x07\n\n— k AAAAAA==\n",
    ],
)
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(CheckpointError):
        open_note(note, [_signer("k").verifier()])


def test_key_names_are_checked() -> None:
    for bad in ("", "a b", "a+b"):
        with pytest.raises(ValueError, match="key name"):
            _signer(bad)


def test_vkey_with_plus_in_base64_round_trips() -> None:
    # fixed seeds, so the case where base64 contains "+" is always exercised
    for seed in range(256):
        s = NoteSigner("k", Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))
        vkey = s.verifier().vkey()
        if "+" in vkey.split("+", 2)[2]:
            assert NoteVerifier.from_vkey(vkey).public_raw == s.public_raw
            return
    raise AssertionError("no seed produced a '+' in base64")
