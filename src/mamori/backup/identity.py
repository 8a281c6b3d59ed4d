"""The offline recovery identities (``mamori backup keygen``) and the server's recipients.

Two age X25519 identities are made, and only their public halves (recipients) stay on the
server, in ``backup/recipients.txt`` (an ordinary age recipients file):

- **primary** — a passphrase-protected age identity file (scrypt), for a USB stick kept off
  the server: ``age -d -i mamori-backup-primary.age`` asks for the passphrase;
- **break-glass** — a plain identity printed on paper (text and QR code) and locked in the
  clinic's safe, for the day the USB stick and its passphrase are gone.

Both files carry comment lines that age ignores and mamori reads: the instance ID and the
manifest signer's public key. A restore trusts manifests signed by that key only, so a backup
forged by someone who knows the (public) recipients is refused.
"""

from __future__ import annotations

import datetime as dt
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pyrage

from mamori.backup.fmt import BackupError, recipients_of

RECIPIENTS_FILE = "recipients.txt"
PRIMARY_FILE = "mamori-backup-primary.age"
BREAKGLASS_FILE = "mamori-backup-breakglass.txt"
PAPER_FILE = "mamori-backup-breakglass-qr.svg"
MIN_PASSPHRASE = 12
PASSPHRASE_ENV = "MAMORI_BACKUP_PASSPHRASE"  # noqa: S105 - the variable's name


@dataclass(frozen=True)
class Generated:
    primary: Path
    breakglass: Path
    paper: Path
    recipients: list[str]


@dataclass(frozen=True)
class Identity:
    identity: pyrage.x25519.Identity
    instance_id: str
    signer: str  # "ed25519:<base64>" of the manifest signing key


def _text(
    identity: pyrage.x25519.Identity, role: str, instance_id: str, clinic: str, signer: str
) -> str:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return (
        f"# mamori backup identity ({role}) — keep offline / オフラインで保管\n"
        f"# clinic: {clinic}\n"
        f"# instance: {instance_id}\n"
        f"# signer: {signer}\n"
        f"# created: {now}\n"
        f"# public key: {identity.to_public()}\n"
        f"{identity}\n"
    )


def keep_trust_root(out_dir: Path, vkey: str) -> Path:
    """The audit trail's verification key beside the offline identities, so the trust root
    travels with the recovery keys (``mamori audit verify --trusted-key``)."""
    path = out_dir / "audit.vkey"
    path.write_text(vkey + "\n", encoding="utf-8")
    return path


def keygen(
    out_dir: Path,
    *,
    instance_id: str,
    clinic: str,
    signer: str,
    passphrase: str,
) -> Generated:
    """Write both identities into ``out_dir`` (which must be new or empty) and return the
    recipients for the server."""
    passphrase = unicodedata.normalize("NFC", passphrase)
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(
            f"パスフレーズは {MIN_PASSPHRASE} 文字以上にしてください。",
            f"The passphrase must be at least {MIN_PASSPHRASE} characters.",
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BackupError(
            f"{out_dir} は空ではありません。既存の鍵を上書きしません。",
            f"{out_dir} is not empty; refusing to overwrite existing keys.",
        )
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    primary, breakglass = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    p_text = _text(primary, "primary", instance_id, clinic, signer)
    b_text = _text(breakglass, "break-glass", instance_id, clinic, signer)
    _private(out_dir / PRIMARY_FILE, pyrage.passphrase.encrypt(p_text.encode(), passphrase))
    _private(out_dir / BREAKGLASS_FILE, b_text.encode())
    import segno  # only when a QR code is drawn (start-up time)

    paper = out_dir / PAPER_FILE
    segno.make(b_text.splitlines()[-1], error="q").save(
        str(paper), kind="svg", scale=6, title=f"mamori backup break-glass {instance_id}"
    )
    paper.chmod(0o600)
    return Generated(
        primary=out_dir / PRIMARY_FILE,
        breakglass=out_dir / BREAKGLASS_FILE,
        paper=paper,
        recipients=[str(primary.to_public()), str(breakglass.to_public())],
    )


def install_recipients(backup_dir: Path, recipients: list[str], instance_id: str) -> Path:
    recipients_of(recipients)  # refuse anything that is not a recipient
    backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = backup_dir / RECIPIENTS_FILE
    lines = [
        f"# mamori backup recipients for instance {instance_id} (public keys only).",
        "# The matching identities are offline: this server cannot read its own backups.",
        *recipients,
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_recipients(backup_dir: Path) -> list[pyrage.x25519.Recipient]:
    path = backup_dir / RECIPIENTS_FILE
    if not path.is_file():
        raise BackupError(
            "バックアップの公開鍵がありません。`mamori backup keygen` で作成してください。",
            "No backup public keys: create them with `mamori backup keygen`.",
        )
    return recipients_of(path.read_text(encoding="utf-8").splitlines())


def load_identity(path: Path, passphrase: str | None) -> Identity:
    """An identity file written by keygen (passphrase-protected or plain)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BackupError(f"鍵ファイル {path} を読めません。", f"Cannot read {path}.") from exc
    if raw.startswith(b"age-encryption.org/v1"):
        if not passphrase:
            raise BackupError(
                "この鍵ファイルにはパスフレーズが必要です。",
                f"This identity file needs its passphrase ({PASSPHRASE_ENV} or the prompt).",
            )
        try:
            raw = pyrage.passphrase.decrypt(raw, unicodedata.normalize("NFC", passphrase))
        except pyrage.DecryptError:
            raise BackupError(
                "パスフレーズが違います。", "Wrong passphrase for the identity file."
            ) from None
    meta: dict[str, str] = {}
    secret = ""
    for line in raw.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("#") and ":" in line:
            k, _, v = line[1:].partition(":")
            meta[k.strip()] = v.strip()
        elif line.startswith("AGE-SECRET-KEY-1"):
            secret = line
    try:
        identity = pyrage.x25519.Identity.from_str(secret)
    except pyrage.IdentityError:
        raise BackupError(
            "age の秘密鍵が見つかりません。", "No age secret key in the identity file."
        ) from None
    if not meta.get("instance") or not meta.get("signer"):
        raise BackupError(
            "鍵ファイルにインスタンスと署名鍵の記載がありません（mamori backup keygen で作成）。",
            "The identity file lacks the instance and signer lines (made by mamori backup keygen).",
        )
    return Identity(identity, meta["instance"], meta["signer"])


def _private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
