"""``[backup]`` settings: targets, schedule, generations, alarm (no secrets here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mamori.errors import InstanceError

TARGET_KINDS = ("dir", "sftp", "s3")


@dataclass(frozen=True)
class TargetSpec:
    """One ``[[backup.targets]]`` entry (or a ``--from`` URL for a restore elsewhere)."""

    name: str
    kind: str  # dir | sftp | s3
    path: str = ""  # dir: the mount point; sftp: the remote directory; s3: key prefix
    host: str = ""
    port: int = 0
    user: str = ""
    key_file: Path | None = None  # sftp: private key of the backup account
    known_hosts: Path | None = None  # sftp: the server's host key, pinned (required)
    bucket: str = ""
    endpoint: str = ""  # s3: e.g. https://s3.ap-northeast-1.amazonaws.com
    region: str = ""
    lock_mode: str = ""  # s3: COMPLIANCE | GOVERNANCE ("" = the bucket's default retention)
    offline: bool = False  # a rotated disk: absent most of the time, not an error
    extra: dict[str, str] = field(default_factory=dict)

    def url(self) -> str:
        if self.kind == "dir":
            return f"dir:{self.path}"
        if self.kind == "sftp":
            return f"sftp://{self.user}@{self.host}:{self.port or 22}{self.path}"
        return f"s3://{self.bucket}/{self.path}"


def spec_from_url(url: str, **options: Any) -> TargetSpec:
    """``dir:/media/usb``, ``sftp://user@host:22/srv/backup``, ``s3://bucket/prefix``."""
    if url.startswith("dir:") or url.startswith("/"):
        return TargetSpec(name="from", kind="dir", path=url.removeprefix("dir:"))
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "sftp" and parts.hostname:
        return TargetSpec(
            name="from",
            kind="sftp",
            host=parts.hostname,
            port=parts.port or 22,
            user=unquote(parts.username or ""),
            path=parts.path or "/",
            key_file=Path(options["key_file"]) if options.get("key_file") else None,
            known_hosts=Path(options["known_hosts"]) if options.get("known_hosts") else None,
        )
    if parts.scheme == "s3" and parts.hostname:
        return TargetSpec(
            name="from",
            kind="s3",
            bucket=parts.hostname,
            path=parts.path.lstrip("/"),
            endpoint=query.get("endpoint", options.get("endpoint", "")),
            region=query.get("region", ""),
        )
    raise InstanceError(
        f"保存先 {url} を解釈できません（dir:/パス、sftp://…、s3://… のいずれか）。",
        f"Cannot parse target {url} (use dir:/path, sftp://…, or s3://…).",
    )


@dataclass(frozen=True)
class BackupSettings:
    targets: tuple[TargetSpec, ...] = ()
    interval_minutes: int = 15  # page-delta backups while serving: the RPO
    full_hours: int = 24  # a new full backup at least this often
    keep_daily: int = 14  # grandfather-father-son: the newest full of each day,
    keep_weekly: int = 8  # of each ISO week,
    keep_monthly: int = 12  # of each month; deltas only while their full is kept
    alarm_floor: float = 0.25  # share of pages changed that always raises the alarm
    alarm_factor: float = 8.0  # … or this many times the usual change
    schedule: bool = True  # run inside `mamori serve`
    # once a day, a readable copy (FHIR NDJSON and chart PDFs) in the generation
    readable: bool = True
    readable_as: str = ""  # the director account it is read under (default: the first one)


def backup_settings(raw: dict[str, Any]) -> BackupSettings:
    base = BackupSettings()
    try:
        targets = tuple(_target(t) for t in raw.get("targets", ()))
        out = BackupSettings(
            targets=targets,
            interval_minutes=int(raw.get("interval_minutes", base.interval_minutes)),
            full_hours=int(raw.get("full_hours", base.full_hours)),
            keep_daily=int(raw.get("keep_daily", base.keep_daily)),
            keep_weekly=int(raw.get("keep_weekly", base.keep_weekly)),
            keep_monthly=int(raw.get("keep_monthly", base.keep_monthly)),
            alarm_floor=float(raw.get("alarm_floor", base.alarm_floor)),
            alarm_factor=float(raw.get("alarm_factor", base.alarm_factor)),
            schedule=bool(raw.get("schedule", base.schedule)),
            readable=bool(raw.get("readable", base.readable)),
            readable_as=str(raw.get("readable_as", base.readable_as)),
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise InstanceError(
            f"[backup] の設定が正しくありません: {exc}", f"Invalid [backup] settings: {exc}"
        ) from exc
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise InstanceError("[backup] の保存先の名前が重複しています。", "Duplicate target names.")
    if not (1 <= out.interval_minutes <= 24 * 60 and 1 <= out.full_hours <= 24 * 31):
        raise InstanceError(
            "[backup] interval_minutes は 1〜1440、full_hours は 1〜744 にしてください。",
            "[backup] interval_minutes must be 1-1440 and full_hours 1-744.",
        )
    if min(out.keep_daily, out.keep_weekly, out.keep_monthly) < 1 or out.keep_daily < 2:
        raise InstanceError(
            "[backup] の世代数が少なすぎます（日次 2 以上、週次・月次 1 以上）。",
            "[backup] keeps too few generations (daily at least 2, weekly/monthly at least 1).",
        )
    return out


def _target(raw: dict[str, Any]) -> TargetSpec:
    kind = str(raw["kind"])
    if kind not in TARGET_KINDS:
        raise ValueError(f"target kind {kind!r} (dir, sftp, s3)")

    def path(key: str) -> Path | None:
        value = raw.get(key)
        return Path(str(value)).expanduser() if value else None

    spec = TargetSpec(
        name=str(raw["name"]),
        kind=kind,
        path=str(raw.get("path", "")),
        host=str(raw.get("host", "")),
        port=int(raw.get("port", 22 if kind == "sftp" else 0)),
        user=str(raw.get("user", "")),
        key_file=path("key_file"),
        known_hosts=path("known_hosts"),
        bucket=str(raw.get("bucket", "")),
        endpoint=str(raw.get("endpoint", "")),
        region=str(raw.get("region", "")),
        lock_mode=str(raw.get("lock_mode", "")),
        offline=bool(raw.get("offline", kind == "dir")),
    )
    if spec.lock_mode not in ("", "COMPLIANCE", "GOVERNANCE"):
        raise ValueError("lock_mode must be COMPLIANCE or GOVERNANCE")
    if (kind == "dir" and not spec.path) or (kind == "sftp" and not (spec.host and spec.user)):
        raise ValueError(f"target {spec.name}: path / host and user missing")
    if kind == "s3" and not spec.bucket:
        raise ValueError(f"target {spec.name}: bucket missing")
    return spec
