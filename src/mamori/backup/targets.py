"""Where backup copies go: a local directory (USB disk / NAS), SFTP, S3 with Object Lock.

Every target stores the same layout under ``<root>/mamori-backup/<instance id>/``::

    medium.json                          which medium this is (one chain of manifests each)
    generations/<generation>/…           the objects of one backup, manifest written last
    documents/<ab>/<sha256>.age          documents, content-addressed, written once

Writes are atomic per object where the storage allows it (temporary name, fsync, rename);
S3 objects appear whole or not at all. Nothing here decides what is valid: a generation counts
only once its signed manifest verifies (``mamori backup verify``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

from mamori.backup.config import TargetSpec, spec_from_url
from mamori.backup.fmt import BackupError, BackupInvalid

__all__ = ["TargetSpec", "open_target", "spec_from_url"]


class Target(Protocol):
    spec: TargetSpec
    enforces_retention: bool  # old generations protected by the storage itself

    def get_bytes(self, path: str) -> bytes | None: ...
    def get_file(self, path: str, dest: Path) -> None: ...
    def put_file(self, path: str, src: Path, retain_until: dt.datetime | None) -> None: ...
    def put_bytes(self, path: str, data: bytes, retain_until: dt.datetime | None) -> None: ...
    def put_stream(
        self,
        path: str,
        produce: Callable[[BinaryIO], None],
        retain_until: dt.datetime | None,
        *,
        sync: bool = True,
    ) -> None: ...
    def local_file(self, path: str) -> Path | None: ...
    def sync(self) -> None: ...
    def listing(self, prefix: str) -> dict[str, int]: ...
    def delete(self, path: str) -> None: ...
    def close(self) -> None: ...


def unreachable(spec: TargetSpec, why: object) -> BackupError:
    return BackupError(
        f"保存先「{spec.name}」({spec.url()}) に接続できません: {why}",
        f"Backup target '{spec.name}' ({spec.url()}) is unreachable: {why}",
    )


def relative(path: str) -> PurePosixPath:
    """An object path inside the target's root (never absolute, never climbing out)."""
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts:
        raise BackupError("不正なパスです。", f"Invalid object path {path!r}.")
    return rel


def open_target(spec: TargetSpec, instance_id: str) -> Target:
    root = PurePosixPath("mamori-backup") / instance_id
    if spec.kind == "dir":
        return DirTarget(spec, Path(spec.path) / root)
    if spec.kind == "sftp":
        return SftpTarget(spec, PurePosixPath(spec.path) / root)
    if spec.kind == "s3":
        return S3Target(spec, str(PurePosixPath(spec.path) / root) if spec.path else str(root))
    raise BackupError(f"保存先の種類 {spec.kind} は不明です。", f"Unknown target kind {spec.kind}.")


def medium_of(target: Target, instance_id: str, *, create: bool) -> dict[str, Any] | None:
    """The medium record (a rotated disk is a different medium each time it is swapped)."""
    raw = target.get_bytes("medium.json")
    if raw is not None:
        try:
            medium: dict[str, Any] = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            medium = {}
        if not isinstance(medium, dict) or not isinstance(medium.get("medium"), str):
            raise BackupError(
                "この保存先の medium.json が読めません（破損または mamori 以外のファイル）。",
                "This medium's medium.json is unreadable (damaged, or not mamori's).",
            )
        if medium.get("instance") != instance_id:
            raise BackupError(
                "この保存先は別のインスタンスのものです。",
                "This medium belongs to another instance.",
            )
        return medium
    if not create:
        return None
    medium = {
        "format": "mamori-medium-v1",
        "medium": str(uuid.uuid4()),
        "instance": instance_id,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": target.spec.name,
    }
    target.put_bytes("medium.json", json.dumps(medium, indent=1).encode(), None)
    return medium


# ---------------------------------------------------------------- local directory


class DirTarget:
    """A mounted USB disk or NAS share. The mount point must exist: a disk that is not plugged
    in is reported as absent, never silently replaced by an empty directory on the server."""

    enforces_retention = False

    def __init__(self, spec: TargetSpec, root: Path) -> None:
        self.spec = spec
        mount = Path(spec.path)
        if not mount.is_dir():
            raise unreachable(spec, "mount point missing / ディスク未接続")
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise unreachable(spec, exc) from exc

    def _p(self, path: str) -> Path:
        return self.root / relative(path)

    def get_bytes(self, path: str) -> bytes | None:
        try:
            return self._p(path).read_bytes()
        except FileNotFoundError:
            return None

    def get_file(self, path: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._p(path), dest)
        except FileNotFoundError:
            raise missing_object(path) from None

    def _atomic(self, path: str, write: Any, sync: bool = True) -> None:
        """Temporary name, (fsync), rename. ``sync=False`` leaves durability to one ``sync()``
        before the manifest — used for the many document objects of a run, which are trusted
        only once a valid manifest lists them."""
        target = self._p(path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
            if sync:
                dfd = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except BaseException:
            with suppress(OSError):
                tmp.unlink()
            raise

    def put_file(self, path: str, src: Path, retain_until: dt.datetime | None) -> None:
        def write(fh: Any) -> None:
            with src.open("rb") as s:
                shutil.copyfileobj(s, fh, 1 << 20)

        self._atomic(path, write)

    def put_bytes(self, path: str, data: bytes, retain_until: dt.datetime | None) -> None:
        self._atomic(path, lambda fh: fh.write(data))

    def put_stream(
        self,
        path: str,
        produce: Callable[[BinaryIO], None],
        retain_until: dt.datetime | None,
        *,
        sync: bool = True,
    ) -> None:
        self._atomic(path, produce, sync)

    def local_file(self, path: str) -> Path | None:
        """Objects on a mounted disk are written and read in place (no staging copy)."""
        return self._p(path)

    def sync(self) -> None:
        os.sync()  # everything written so far is on the disk (one flush for many objects)

    def listing(self, prefix: str) -> dict[str, int]:
        base = self._p(prefix) if prefix else self.root
        out: dict[str, int] = {}
        if not base.exists():
            return out
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                full = Path(dirpath) / f
                out[full.relative_to(self.root).as_posix()] = full.stat().st_size
        return out

    def delete(self, path: str) -> None:
        p = self._p(path)
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)

    def close(self) -> None:
        pass


def missing_object(path: str) -> BackupError:
    return BackupInvalid(
        f"バックアップの部品 {path} が保存先にありません。",
        f"Backup object {path} is missing from the target.",
    )


# ---------------------------------------------------------------- SFTP


class SftpTarget:
    """SFTP (OpenSSH). The server's host key must be pinned in ``known_hosts``; an unknown or
    changed host key is refused. SFTP cannot make files immutable: that must come from the
    server (a job that ``chattr +i``s finished files, or filesystem snapshots) — docs/backup.md."""

    enforces_retention = False

    def __init__(self, spec: TargetSpec, root: PurePosixPath) -> None:
        import paramiko  # SFTP targets only (start-up time)

        self.spec = spec
        self.root = root
        if spec.known_hosts is None or not spec.known_hosts.is_file():
            raise BackupError(
                f"保存先「{spec.name}」: サーバーの鍵 (known_hosts) が指定されていません。",
                f"Target '{spec.name}': the server's host key (known_hosts) is not configured.",
            )
        self._ssh = paramiko.SSHClient()
        self._ssh.load_host_keys(str(spec.known_hosts))
        self._ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self._ssh.connect(
                spec.host,
                port=spec.port or 22,
                username=spec.user,
                key_filename=str(spec.key_file) if spec.key_file else None,
                allow_agent=False,
                look_for_keys=False,
                timeout=15,
                banner_timeout=15,
                auth_timeout=15,
            )
            self._sftp = self._ssh.open_sftp()
            self._sftp.get_channel().settimeout(60)
            self._mkdirs(root)
        except (OSError, paramiko.SSHException) as exc:
            self._ssh.close()
            raise unreachable(spec, exc) from exc

    def _p(self, path: str) -> str:
        return str(self.root / relative(path))

    def _mkdirs(self, path: PurePosixPath) -> None:
        for parent in [*reversed(path.parents), path]:
            if str(parent) in ("/", "."):
                continue
            try:
                self._sftp.stat(str(parent))
            except FileNotFoundError:
                self._sftp.mkdir(str(parent), 0o700)

    def get_bytes(self, path: str) -> bytes | None:
        try:
            with self._sftp.open(self._p(path), "rb") as fh:
                data: bytes = fh.read()
                return data
        except FileNotFoundError:
            return None

    def get_file(self, path: str, dest: Path) -> None:
        try:
            self._sftp.get(self._p(path), str(dest))
        except FileNotFoundError:
            raise missing_object(path) from None

    def _put(self, path: str, send: Any) -> None:
        final = self._p(path)
        self._mkdirs(PurePosixPath(final).parent)
        tmp = f"{final}.{uuid.uuid4().hex[:8]}.partial"
        try:
            send(tmp)
            self._sftp.posix_rename(tmp, final)
        except BaseException:
            with suppress(OSError):
                self._sftp.remove(tmp)
            raise

    def put_file(self, path: str, src: Path, retain_until: dt.datetime | None) -> None:
        self._put(path, lambda tmp: self._sftp.put(str(src), tmp, confirm=True))

    def put_bytes(self, path: str, data: bytes, retain_until: dt.datetime | None) -> None:
        def write(fh: BinaryIO) -> None:
            fh.write(data)

        self.put_stream(path, write, retain_until)

    def put_stream(
        self,
        path: str,
        produce: Callable[[BinaryIO], None],
        retain_until: dt.datetime | None,
        *,
        sync: bool = True,
    ) -> None:
        def send(tmp: str) -> None:
            with self._sftp.open(tmp, "wb") as fh:
                fh.set_pipelined(True)
                produce(fh)

        self._put(path, send)

    def local_file(self, path: str) -> Path | None:
        return None

    def sync(self) -> None:
        pass  # each file is closed (and acknowledged) before its rename; the server keeps it

    def listing(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        start = PurePosixPath(self._p(prefix)) if prefix else self.root

        def walk(d: PurePosixPath) -> Iterator[tuple[PurePosixPath, int]]:
            try:
                entries = self._sftp.listdir_attr(str(d))
            except FileNotFoundError:
                return
            for e in entries:
                child = d / e.filename
                if e.st_mode is not None and stat.S_ISDIR(e.st_mode):
                    yield from walk(child)
                else:
                    yield child, int(e.st_size or 0)

        for p, size in walk(start):
            out[p.relative_to(self.root).as_posix()] = size
        return out

    def delete(self, path: str) -> None:
        for rel in sorted(self.listing(path), reverse=True):
            self._sftp.remove(self._p(rel))
        with suppress(OSError):
            self._sftp.rmdir(self._p(path))

    def close(self) -> None:
        self._ssh.close()


# ---------------------------------------------------------------- S3 with Object Lock


class S3Target:
    """S3-compatible storage. With Object Lock on the bucket, every object is uploaded with a
    SHA-256 checksum (which Object Lock requires) and, when ``lock_mode`` is set, its own
    retain-until date from the generation policy. The credentials should have no delete right:
    expiry is the bucket's lifecycle rule, never this client (docs/backup.md)."""

    def __init__(self, spec: TargetSpec, prefix: str) -> None:
        import boto3  # S3 targets only (its import is slow)
        from botocore.config import Config  # S3 targets only (its import is slow)

        self.spec = spec
        self.prefix = prefix.rstrip("/")
        self.enforces_retention = bool(spec.lock_mode)
        self._s3 = boto3.client(
            "s3",
            endpoint_url=spec.endpoint or None,
            region_name=spec.region or None,
            config=Config(
                connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
            ),
        )
        try:
            self._s3.head_bucket(Bucket=spec.bucket)
        except Exception as exc:  # botocore raises several unrelated types here
            raise unreachable(spec, exc) from exc

    def _k(self, path: str) -> str:
        return f"{self.prefix}/{relative(path)}"

    def _lock(self, retain_until: dt.datetime | None) -> dict[str, Any]:
        if not self.spec.lock_mode or retain_until is None:
            return {}
        return {"ObjectLockMode": self.spec.lock_mode, "ObjectLockRetainUntilDate": retain_until}

    def get_bytes(self, path: str) -> bytes | None:
        from botocore.exceptions import ClientError  # S3 targets only (its import is slow)

        try:
            obj = self._s3.get_object(Bucket=self.spec.bucket, Key=self._k(path))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        data: bytes = obj["Body"].read()
        return data

    def get_file(self, path: str, dest: Path) -> None:
        from botocore.exceptions import ClientError  # S3 targets only (its import is slow)

        try:
            self._s3.download_file(self.spec.bucket, self._k(path), str(dest))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise missing_object(path) from None
            raise

    def put_file(self, path: str, src: Path, retain_until: dt.datetime | None) -> None:
        with src.open("rb") as fh:
            self._s3.put_object(
                Bucket=self.spec.bucket,
                Key=self._k(path),
                Body=fh,
                ChecksumAlgorithm="SHA256",
                **self._lock(retain_until),
            )

    def put_bytes(self, path: str, data: bytes, retain_until: dt.datetime | None) -> None:
        self._s3.put_object(
            Bucket=self.spec.bucket,
            Key=self._k(path),
            Body=data,
            ChecksumAlgorithm="SHA256",
            **self._lock(retain_until),
        )

    def put_stream(
        self,
        path: str,
        produce: Callable[[BinaryIO], None],
        retain_until: dt.datetime | None,
        *,
        sync: bool = True,
    ) -> None:

        # one PUT with its SHA-256 checksum header (Object Lock needs it): spooled first
        with tempfile.TemporaryFile() as fh:
            produce(fh)
            fh.seek(0)
            self._s3.put_object(
                Bucket=self.spec.bucket,
                Key=self._k(path),
                Body=fh,
                ChecksumAlgorithm="SHA256",
                **self._lock(retain_until),
            )

    def local_file(self, path: str) -> Path | None:
        return None

    def sync(self) -> None:
        pass  # an acknowledged PUT is stored

    def listing(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        start = self._k(prefix) if prefix else self.prefix + "/"
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.spec.bucket, Prefix=start
        ):
            for obj in page.get("Contents", ()):
                out[obj["Key"][len(self.prefix) + 1 :]] = int(obj["Size"])
        return out

    def delete(self, path: str) -> None:
        raise BackupError(
            "S3 の世代は保存先の保持設定（Object Lock とライフサイクル）で失効します。mamori は"
            "削除しません。",
            "S3 generations expire by the bucket's retention (Object Lock and lifecycle); "
            "mamori does not delete them.",
        )

    def close(self) -> None:
        pass
