"""One typed ``Settings`` for an instance directory.

An instance is a directory made by ``mamori init``::

    DIR/mamori.toml        settings (no secrets in it)
    DIR/data/mamori.db     the SQLite database (default; PostgreSQL via ``database.url``)
    DIR/documents/         document contents, stored by SHA-256
    DIR/secrets/           one file per secret, mode 0600, directory 0700

There are no default secrets: a missing, short or group/world-readable secret file stops the
process before it serves anything (fail closed).
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
import tomllib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mamori.backup.config import BackupSettings, backup_settings
from mamori.continuity.schedule import DowntimeSettings, downtime_settings
from mamori.crypto.kek import check_outside, new_key_file
from mamori.errors import InstanceError

SETTINGS_FILE = "mamori.toml"
SECRET_NAMES = ("token_pepper", "audit_signing_key")
MIN_SECRET_BYTES = 32


def _checkpoint_copies(home: Path, raw: Any) -> tuple[Path, ...]:
    """``[audit] checkpoint_copies``: absolute directories outside the instance (a copy inside
    it would roll back with it — refused, like a key file beside the data)."""
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise InstanceError(
            "[audit] checkpoint_copies はディレクトリのリストで指定してください。",
            "[audit] checkpoint_copies must be a list of directories.",
        )
    out = []
    for item in raw:
        path = Path(item)
        if not path.is_absolute() or path.resolve().is_relative_to(home.resolve()):
            raise InstanceError(
                f"チェックポイントの写し {item} はインスタンスの外の絶対パスにしてください。",
                f"Checkpoint copy {item} must be an absolute path outside the instance.",
            )
        out.append(path)
    return tuple(out)


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    documents_dir: Path
    token_pepper: bytes
    audit_signing_key: bytes  # Ed25519 seed (32 bytes) for signing audit checkpoints
    instance_id: str = ""
    checkpoint_dir: Path = Path()
    checkpoint_interval: float = 60.0
    # outside copies of checkpoints/ (a NAS share, a WORM mount): a rollback of the whole
    # instance directory, database and checkpoints together, still disagrees with them
    checkpoint_copies: tuple[Path, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    max_json_bytes: int = 1 * 1024 * 1024
    max_upload_bytes: int = 25 * 1024 * 1024
    # requests inside the service layer at once (the rest wait, their bodies received, on the
    # event loop): more only make the threads fight for the interpreter lock
    concurrent_requests: int = 2
    debug: bool = False
    tls_cert: Path | None = None  # a clinic's own certificate; default: a generated local one
    tls_key: Path | None = None
    tls_names: tuple[str, ...] = ()  # extra host names/addresses for the local certificate
    auth: AuthSettings = field(default_factory=lambda: AuthSettings())
    syslog: SyslogTarget | None = None
    keys: KeySettings = field(default_factory=lambda: KeySettings())
    backup: BackupSettings = field(default_factory=BackupSettings)
    downtime: DowntimeSettings = field(default_factory=DowntimeSettings)

    @property
    def backup_dir(self) -> Path:
        """Local backup state: recipients, page maps, the chain heads of each medium."""
        return self.home / "backup"


KEY_SOURCES = ("file", "passphrase", "pkcs11")


@dataclass(frozen=True)
class KeySettings:
    """``[keys]``: where the key-encryption key (KEK) comes from. Never inside the instance."""

    source: str = "file"  # file | passphrase | pkcs11
    file: Path | None = None  # source = file: the KEK file, outside the instance directory
    pkcs11_module: Path | None = None  # source = pkcs11: the token's PKCS#11 library
    pkcs11_token: str = ""  # token label
    pkcs11_pin_file: Path | None = None  # else MAMORI_PKCS11_PIN


@dataclass(frozen=True)
class SyslogTarget:
    """``[syslog]``: where the audit trail is streamed (RFC 5424 over TLS), if anywhere."""

    host: str
    port: int = 6514  # RFC 5425
    ca_file: Path | None = None  # None: the system's trust store
    client_cert: Path | None = None  # mutual TLS, when the receiver asks for it
    client_key: Path | None = None
    server_name: str | None = None  # the name in the receiver's certificate
    batch: int = 500
    interval_seconds: float = 2.0
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class AuthSettings:
    """Sign-in policy. The defaults satisfy the MHLW checklist on their own (CL-2-7/8/10)."""

    idle_minutes: int = 15  # idle logoff
    shared_idle_minutes: int = 5  # shared reception terminals
    absolute_hours: int = 12  # a session never outlives a working day
    reauth_minutes: int = 5  # how long a re-authentication covers sensitive actions
    break_glass_minutes: int = 60
    # WebAuthn relying party: the host name staff type in the browser, and its origins
    rp_id: str = "localhost"
    origins: tuple[str, ...] = ("https://localhost:8443", "http://localhost:8000")
    # cookies carry the Secure flag; only a development instance served over plain HTTP on
    # loopback may turn this off
    secure_cookies: bool = True
    # accounts not signed in for this many days are disabled by `mamori serve` (0: off, the
    # default — the account review screen asks a person instead); at least 30 when on
    disable_unused_days: int = 0


def resolve_home(option: str | os.PathLike[str] | None) -> Path:
    """The instance named by ``--instance`` or ``MAMORI_HOME``; a clear error when neither."""
    raw = option if option is not None else os.environ.get("MAMORI_HOME")
    if not raw:
        raise InstanceError(
            "インスタンスが指定されていません。--instance DIR を付けるか、環境変数 MAMORI_HOME を"
            "設定してください（新規作成は mamori init DIR）。",
            "No instance given: pass --instance DIR or set MAMORI_HOME "
            "(create one with `mamori init DIR`).",
        )
    home = Path(raw).expanduser().resolve()
    if not (home / SETTINGS_FILE).is_file():
        raise InstanceError(
            f"{home} は mamori のインスタンスではありません（{SETTINGS_FILE} がありません）。",
            f"{home} is not a mamori instance ({SETTINGS_FILE} is missing).",
        )
    return home


def _read_secret(home: Path, name: str) -> bytes:
    path = home / "secrets" / name
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InstanceError(
            f"秘密鍵ファイル {path} がありません。起動を中止します。",
            f"Secret file {path} is missing; refusing to start.",
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InstanceError(
            f"秘密鍵ファイル {path} が他のユーザーから読めます（chmod 600 が必要）。"
            "起動を中止します。",
            f"Secret file {path} is readable by other users (needs chmod 600); refusing to start.",
        )
    value = path.read_bytes().strip()
    if len(value) < MIN_SECRET_BYTES:
        raise InstanceError(
            f"秘密鍵ファイル {path} の内容が短すぎます。起動を中止します。",
            f"Secret file {path} is too short; refusing to start.",
        )
    return value


def default_sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'data' / 'mamori.db'}"


def load_settings(home: Path) -> Settings:
    """Read ``mamori.toml`` and the secrets; raise ``InstanceError`` on anything unsafe."""
    try:
        raw = tomllib.loads((home / SETTINGS_FILE).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InstanceError(
            f"{SETTINGS_FILE} を読めません: {exc}", f"Cannot parse {SETTINGS_FILE}: {exc}"
        ) from exc
    db = raw.get("database", {})
    server = raw.get("server", {})
    limits = raw.get("limits", {})
    url = os.environ.get("MAMORI_DATABASE_URL") or db.get("url") or default_sqlite_url(home)
    audit = raw.get("audit", {})
    auth = _auth_settings(raw.get("auth", {}))
    instance_id = str(raw.get("instance", {}).get("id", ""))
    if not instance_id:
        raise InstanceError(
            f"{SETTINGS_FILE} に [instance] id がありません。",
            f"{SETTINGS_FILE} has no [instance] id.",
        )
    try:
        seed = base64.b64decode(_read_secret(home, "audit_signing_key"), validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise InstanceError(
            "監査署名鍵の形式が正しくありません。起動を中止します。",
            "The audit signing key is malformed; refusing to start.",
        )
    return Settings(
        home=home,
        database_url=url,
        documents_dir=home / "documents",
        token_pepper=_read_secret(home, "token_pepper"),
        audit_signing_key=seed,
        instance_id=instance_id,
        checkpoint_dir=home / "checkpoints",
        checkpoint_interval=float(audit.get("checkpoint_interval_seconds", 60)),
        checkpoint_copies=_checkpoint_copies(home, audit.get("checkpoint_copies", [])),
        host=str(server.get("host", "127.0.0.1")),
        port=int(server.get("port", 8000)),
        max_json_bytes=int(limits.get("max_json_bytes", 1024 * 1024)),
        max_upload_bytes=int(limits.get("max_upload_bytes", 25 * 1024 * 1024)),
        concurrent_requests=_concurrent_requests(limits.get("concurrent_requests", 0)),
        debug=bool(server.get("debug", False)),
        tls_cert=Path(server["tls_cert"]) if server.get("tls_cert") else None,
        tls_key=Path(server["tls_key"]) if server.get("tls_key") else None,
        tls_names=tuple(str(n) for n in server.get("tls_names", ())),
        auth=auth,
        syslog=_syslog_settings(raw.get("syslog")),
        keys=_key_settings(raw.get("keys", {})),
        backup=backup_settings(raw.get("backup", {})),
        downtime=downtime_settings(raw.get("downtime", {})),
    )


def _key_settings(raw: dict[str, object]) -> KeySettings:
    source = str(raw.get("source", "file"))
    if source not in KEY_SOURCES:
        raise InstanceError(
            f"[keys] source は {', '.join(KEY_SOURCES)} のいずれかにしてください。",
            f"[keys] source must be one of {', '.join(KEY_SOURCES)}.",
        )

    def path(key: str) -> Path | None:
        value = raw.get(key)
        return Path(str(value)).expanduser() if value else None

    out = KeySettings(
        source=source,
        file=path("file"),
        pkcs11_module=path("pkcs11_module"),
        pkcs11_token=str(raw.get("pkcs11_token", "")),
        pkcs11_pin_file=path("pkcs11_pin_file"),
    )
    if source == "file" and out.file is None:
        raise InstanceError(
            "[keys] file（鍵ファイルの場所）がありません。起動を中止します。",
            "[keys] file (where the key file is) is missing. Refusing to start.",
        )
    if source == "pkcs11" and (out.pkcs11_module is None or not out.pkcs11_token):
        raise InstanceError(
            "[keys] に pkcs11_module と pkcs11_token が必要です。",
            "[keys] needs pkcs11_module and pkcs11_token.",
        )
    return out


def default_key_dir() -> Path:
    """Where ``mamori init`` puts KEK files unless told otherwise: the user's configuration
    directory, not the instance (``MAMORI_KEY_DIR`` overrides, e.g. a mounted USB key)."""
    raw = os.environ.get("MAMORI_KEY_DIR")
    if raw:
        return Path(raw).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mamori" / "keys"


# each may hold two database connections (its own, and the audit append's) of the pool's 10 + 10,
# which background work (checkpoints, statistics, backups) shares
MAX_CONCURRENT_REQUESTS = 8


def _concurrent_requests(raw: object) -> int:
    """``[limits] concurrent_requests``: 0 (the default) is one per CPU core, at least two."""
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= MAX_CONCURRENT_REQUESTS:
        raise InstanceError(
            f"[limits] concurrent_requests は 0〜{MAX_CONCURRENT_REQUESTS} の整数で指定してください"
            "（0 は CPU コア数）。起動を中止します。",
            f"[limits] concurrent_requests must be an integer from 0 to "
            f"{MAX_CONCURRENT_REQUESTS} (0: one per CPU core); refusing to start.",
        )
    return raw or min(MAX_CONCURRENT_REQUESTS, max(2, os.cpu_count() or 2))


def _syslog_settings(raw: dict[str, object] | None) -> SyslogTarget | None:
    if not raw or not raw.get("host"):
        return None

    def path(key: str) -> Path | None:
        value = raw.get(key)
        return Path(str(value)) if value else None

    try:
        target = SyslogTarget(
            host=str(raw["host"]),
            port=int(str(raw.get("port", 6514))),
            ca_file=path("ca_file"),
            client_cert=path("client_cert"),
            client_key=path("client_key"),
            server_name=str(raw["server_name"]) if raw.get("server_name") else None,
            batch=int(str(raw.get("batch", 500))),
            interval_seconds=float(str(raw.get("interval_seconds", 2.0))),
        )
    except (TypeError, ValueError) as exc:
        raise InstanceError(
            f"{SETTINGS_FILE} の [syslog] が正しくありません: {exc}",
            f"Invalid [syslog] section in {SETTINGS_FILE}: {exc}",
        ) from exc
    for f in (target.ca_file, target.client_cert, target.client_key):
        if f is not None and not f.is_file():
            raise InstanceError(
                f"[syslog] のファイル {f} がありません。", f"[syslog] file {f} does not exist."
            )
    if not 1 <= target.batch <= 10000 or target.interval_seconds <= 0:
        raise InstanceError(
            "[syslog] の batch は 1〜10000、interval_seconds は正の数にしてください。",
            "[syslog] batch must be 1-10000 and interval_seconds positive.",
        )
    return target


def _auth_settings(raw: dict[str, object]) -> AuthSettings:
    base = AuthSettings()
    try:
        out = AuthSettings(
            idle_minutes=int(str(raw.get("idle_minutes", base.idle_minutes))),
            shared_idle_minutes=int(str(raw.get("shared_idle_minutes", base.shared_idle_minutes))),
            absolute_hours=int(str(raw.get("absolute_hours", base.absolute_hours))),
            reauth_minutes=int(str(raw.get("reauth_minutes", base.reauth_minutes))),
            break_glass_minutes=int(str(raw.get("break_glass_minutes", base.break_glass_minutes))),
            rp_id=str(raw.get("rp_id", base.rp_id)),
            origins=tuple(str(o) for o in raw.get("origins", base.origins)),  # type: ignore[attr-defined]
            secure_cookies=bool(raw.get("secure_cookies", base.secure_cookies)),
            disable_unused_days=int(str(raw.get("disable_unused_days", base.disable_unused_days))),
        )
    except (TypeError, ValueError) as exc:
        raise InstanceError(
            f"{SETTINGS_FILE} の [auth] が正しくありません: {exc}",
            f"Invalid [auth] section in {SETTINGS_FILE}: {exc}",
        ) from exc
    if out.disable_unused_days and not 30 <= out.disable_unused_days <= 3650:
        raise InstanceError(
            "[auth] disable_unused_days は 0（使わない）か 30〜3650 日にしてください。",
            "[auth] disable_unused_days is 0 (off) or 30-3650 days.",
        )
    if not (1 <= out.shared_idle_minutes <= out.idle_minutes <= 60) or not (
        1 <= out.absolute_hours <= 24
    ):
        raise InstanceError(
            "[auth] の時間設定が範囲外です（無操作ログオフ 1〜60分、共用端末はそれ以下、"
            "最長 24 時間）。",
            "[auth] timeouts out of range (idle 1-60 min, shared terminals no longer, "
            "absolute at most 24 h).",
        )
    return out


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def host_in_url(name: str) -> str:
    """An IPv6 address goes in brackets in a URL (and in an Origin header)."""
    return f"[{name}]" if ":" in name else name


def write_instance_files(
    home: Path,
    *,
    database_url: str | None,
    port: int,
    key_source: str = "file",
    key_file: Path | None = None,
    pkcs11_module: Path | None = None,
    pkcs11_token: str = "",
    public_names: Sequence[str] = (),
) -> None:
    """Create the directory tree, settings and fresh secrets. Refuses a non-empty directory.

    ``public_names``: the names or addresses other PCs reach the server by (a demo tried from
    the reception PC): the server listens on all addresses, its certificate carries them and
    they are allowed origins; without them it serves this machine only (loopback).

    With the default key source a new KEK file is written outside the directory (``key_file``
    or ``default_key_dir()/<instance id>.kek``); the other sources make their KEK when the
    database gets its first keys."""
    if home.exists() and any(home.iterdir()):
        raise InstanceError(
            f"{home} は空ではありません。既存のインスタンスを上書きしません。",
            f"{home} is not empty; refusing to overwrite an existing instance.",
        )
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)
    # checkpoints/ sits outside the database so that restoring an old database copy is
    # caught; backups and an outside copy take it along.
    for sub in ("data", "documents", "secrets", "checkpoints", "backup"):
        (home / sub).mkdir(mode=0o700)
    instance_id = str(uuid.uuid4())
    lines = [
        "# mamori instance settings. Secrets live in secrets/, never here; the key that",
        "# encrypts patient data lives outside this directory altogether ([keys]).",
        "[instance]",
        f'id = "{instance_id}"',
        "",
        "[keys]",
        f'source = "{key_source}"',
    ]
    if key_source == "file":
        key_file = (key_file or default_key_dir() / f"{instance_id}.kek").expanduser().resolve()
        lines.append(f"file = {_toml_str(str(key_file))}")
    elif key_source == "pkcs11":
        lines += [
            f"pkcs11_module = {_toml_str(str(pkcs11_module))}",
            f"pkcs11_token = {_toml_str(pkcs11_token)}",
            "# PIN: environment MAMORI_PKCS11_PIN, or pkcs11_pin_file (mode 0600)",
        ]
    else:
        lines.append("# passphrase: typed at start, or environment MAMORI_KEK_PASSPHRASE")
    lines += ["", "[database]"]
    if database_url:
        lines.append(f"url = {_toml_str(database_url)}")
    else:
        lines.append("# url defaults to SQLite at data/mamori.db")
    # The signed checkpoints and the verifier key are copied outside the instance from the
    # first one on (beside the key file by default): a rollback or rewrite of the whole
    # instance directory, key and notes included, still meets the copy's pinned key.
    copies = default_key_dir().expanduser().resolve() / f"{instance_id}.checkpoints"
    copies.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines += [
        "",
        "[audit]",
        "checkpoint_interval_seconds = 60",
        "# copies outside this directory (add a NAS or a USB key; each is refused inside it)",
        f"checkpoint_copies = [{_toml_str(str(copies))}]",
        "",
        "[server]",
        f'host = "{"0.0.0.0" if public_names else "127.0.0.1"}"',  # noqa: S104 - asked for
        f"port = {port}",
        "# TLS is on: a local certificate is made in tls/ for localhost and this host's name;",
        "# add the names staff type (e.g. 192.168.1.10, karte.local) or use your own files:",
        f"tls_names = [{', '.join(_toml_str(n) for n in public_names)}]"
        if public_names
        else "# tls_names = []",
        '# tls_cert = "/etc/ssl/mamori/cert.pem"',
        '# tls_key = "/etc/ssl/mamori/key.pem"',
        "",
        "[auth]",
        "idle_minutes = 15",
        "shared_idle_minutes = 5",
        "absolute_hours = 12",
        "# WebAuthn (passkeys): the host name staff use in the browser, and its origins",
        'rp_id = "localhost"',
        "origins = ["
        + ", ".join(
            _toml_str(o)
            for o in (
                f"https://localhost:{port}",
                f"http://localhost:{port}",
                *(f"https://{host_in_url(n)}:{port}" for n in public_names),
            )
        )
        + "]",
        "",
        "[backup]",
        "# public keys: backup/recipients.txt (`mamori backup keygen`); the server cannot read",
        "# its own backups. Page-delta backups every interval_minutes, a full every full_hours.",
        "interval_minutes = 15",
        "full_hours = 24",
        "keep_daily = 14",
        "keep_weekly = 8",
        "keep_monthly = 12",
        "# At least two targets, one offline (rotated USB disk) or immutable (S3 Object Lock):",
        "# [[backup.targets]]",
        '# name = "usb"',
        '# kind = "dir"',
        '# path = "/media/mamori-usb"',
        "# [[backup.targets]]",
        '# name = "offsite"',
        '# kind = "s3"',
        '# bucket = "clinic-backup"',
        '# endpoint = "https://s3.ap-northeast-1.amazonaws.com"',
        '# lock_mode = "COMPLIANCE"',
        "",
        "# Live copy of the audit trail to a SIEM (RFC 5424 syslog over TLS):",
        "# [syslog]",
        '# host = "siem.example.lan"',
        "# port = 6514",
        '# ca_file = "/etc/ssl/siem-ca.pem"',
        "",
        "[limits]",
        "max_json_bytes = 1048576",
        "max_upload_bytes = 26214400",
        "# requests served at once (the rest wait their turn); 0 = one per CPU core",
        "concurrent_requests = 0",
        "",
    ]
    (home / SETTINGS_FILE).write_text("\n".join(lines), encoding="utf-8")
    values = {
        "token_pepper": secrets.token_urlsafe(48),
        "audit_signing_key": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    for name in SECRET_NAMES:
        fd = os.open(home / "secrets" / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(values[name] + "\n")
    if key_source == "file" and key_file is not None:
        check_outside(key_file, [home])
        new_key_file(key_file)
