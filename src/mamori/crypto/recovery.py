"""Offline recovery copy of the KEK: ``mamori keys export`` and ``mamori keys recover``.

The KEK is exported wrapped (AES-256-GCM) under a key derived with Argon2id from a *recovery
code* that mamori generates and shows once: 24 random bytes as 8 groups of 5 base32 letters,
to be written on paper or printed and locked away apart from the export file. The file (JSON,
also as a QR code in an SVG for a paper copy) can go on a USB stick or into the backup set: it
is useless without the code. Recovery needs only the file, the code and mamori — or, by hand,
Python with ``argon2-cffi`` and ``cryptography`` (docs/operations.md shows the ten lines).

A KEK inside a PKCS#11 token cannot be exported (it is generated non-extractable); use the
token vendor's backup procedure. A passphrase KEK is recovered from the passphrase itself.
"""

from __future__ import annotations

import base64
import json
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mamori.crypto.kek import KEY_BYTES, KeyUnavailable, LocalKek, write_key_file

FORMAT = "mamori-kek-export-v1"
KDF = {"alg": "argon2id", "t": 3, "m": 65536, "p": 4}
CODE_BYTES = 25  # 200 bits → 40 base32 letters, 8 groups of 5


def new_code() -> str:
    text = base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode()
    return "-".join(text[i : i + 5] for i in range(0, len(text), 5))


def _normalise(code: str) -> str:
    """Paper copies get typed back with spaces, lower case, full-width letters: all accepted."""
    text = unicodedata.normalize("NFKC", code).upper()
    return "".join(c for c in text if c.isalnum())


def _wrapping_key(code: str, kdf: dict[str, Any]) -> bytes:
    return hash_secret_raw(
        _normalise(code).encode(),
        bytes.fromhex(kdf["salt"]),
        time_cost=int(kdf["t"]),
        memory_cost=int(kdf["m"]),
        parallelism=int(kdf["p"]),
        hash_len=KEY_BYTES,
        type=Type.ID,
    )


def _aad(doc: dict[str, Any]) -> bytes:
    return f"{FORMAT}|{doc['instance']}|{doc['kek_id']}".encode()


@dataclass(frozen=True)
class Exported:
    file: Path
    paper: Path
    code: str
    kek_id: str


def export_kek(kek: LocalKek, instance_id: str, out_dir: Path) -> Exported:
    if kek.source != "file":
        raise KeyUnavailable(
            "パスフレーズ方式の鍵はパスフレーズそのものが控えです（書き出す鍵ファイルはありません）。",
            "A passphrase KEK is recovered from the passphrase; there is no key file to export.",
        )
    code = new_code()
    kdf = {**KDF, "salt": secrets.token_hex(16)}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "instance": instance_id,
        "kek_id": kek.kek_id,
        "kdf": kdf,
    }
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_wrapping_key(code, kdf)).encrypt(nonce, kek.raw, _aad(doc))
    doc["nonce"] = nonce.hex()
    doc["ciphertext"] = base64.b64encode(sealed).decode()
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = f"mamori-kek-{instance_id[:8]}-{kek.kek_id[:8]}"
    file = out_dir / f"{stem}.json"
    text = json.dumps(doc, indent=1, sort_keys=True)
    file.write_text(text + "\n", encoding="utf-8")
    file.chmod(0o600)
    paper = out_dir / f"{stem}.svg"
    _paper(text, paper, instance_id, kek.kek_id)
    return Exported(file, paper, code, kek.kek_id)


def _paper(text: str, path: Path, instance_id: str, kek_id: str) -> None:
    """A QR code of the export for a paper copy (the recovery code is *not* in it)."""
    import segno  # only when a QR code is drawn (start-up time)

    segno.make(json.dumps(json.loads(text), separators=(",", ":")), error="m").save(
        str(path), kind="svg", scale=4, title=f"mamori KEK {instance_id} {kek_id}"
    )
    path.chmod(0o600)


def recover_kek(export: Path, code: str) -> LocalKek:
    try:
        doc = json.loads(export.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(doc.get("format"))
        sealed = base64.b64decode(doc["ciphertext"])
        raw = AESGCM(_wrapping_key(code, doc["kdf"])).decrypt(
            bytes.fromhex(doc["nonce"]), sealed, _aad(doc)
        )
    except InvalidTag:
        raise KeyUnavailable(
            "復旧コードが違うか、控えのファイルが改変されています。",
            "Wrong recovery code, or the export file was altered.",
        ) from None
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise KeyUnavailable(
            f"鍵の控えファイルを読めません: {exc}", f"Cannot read the key export: {exc}"
        ) from exc
    kek = LocalKek(raw, "file")
    if kek.kek_id != doc["kek_id"]:
        raise KeyUnavailable("控えの鍵 ID が一致しません。", "The export's key ID does not match.")
    return kek


def restore_key_file(kek: LocalKek, path: Path) -> None:
    """Write the recovered KEK where the instance expects it (refuses to overwrite)."""
    if path.exists():
        raise KeyUnavailable(
            f"{path} は既にあります。上書きしません。", f"{path} exists; not overwriting it."
        )
    write_key_file(path, kek.raw, exclusive=True)
