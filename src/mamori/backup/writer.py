"""Writing one snapshot's generation to every medium: each object (database full or page delta,
documents, the instance bundle) compressed, encrypted and signed at most once, then copied."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import zstandard

from mamori.backup import fmt
from mamori.backup.config import TargetSpec
from mamori.backup.fmt import BackupError, PageMap
from mamori.backup.generations import prune, retain_until
from mamori.backup.targets import Target, medium_of, open_target
from mamori.backup.verify import read_manifests
from mamori.settings import Settings

DELTA_LIMIT = 0.5  # a delta bigger than half the database is written as a full instead

FULL_OBJECT = {"sqlite": "db.full.sqlite.zst.age", "postgresql": "db.full.pgdump.zst.age"}

Progress = Callable[[str, int, int], None]


@dataclass
class TargetResult:
    target: str
    ok: bool
    kind: str = ""
    medium: str = ""
    link: int = 0
    manifest: str = ""
    bytes: int = 0
    documents: int = 0
    error: str = ""
    error_ja: str = ""
    pruned: list[int] = field(default_factory=list)


READABLE_OBJECT = "readable.tar.zst.age"  # continuity.escrow


class GenerationWriter:
    """Writes one snapshot's generation to media, producing each object at most once."""

    def __init__(
        self,
        settings: Settings,
        state: dict[str, Any],
        staging: Path,
        recipients: list[Any],
        signer: Any,
        pages: PageMap | None,
        snap: Path,
        facts: dict[str, Any],
        docs: dict[str, str],
        bundle: fmt.Sealed,
        kek_info: dict[str, Any],
        generation: int,
        now: dt.datetime,
        force_full: bool,
        say: Progress,
        alarm: dict[str, Any] | None,
        readable: tuple[fmt.Sealed, dict[str, Any]] | None = None,
        attestation: Future[dict[str, Any]] | None = None,
    ) -> None:
        self.settings, self.state, self.staging = settings, state, staging
        self.attestation = attestation  # the snapshot's integrity check, running beside
        self.recipients, self.signer = recipients, signer
        self.pages, self.snap, self.facts, self.docs = pages, snap, facts, docs
        self.bundle, self.kek_info = bundle, kek_info
        self.generation, self.now, self.force_full = generation, now, force_full
        self.say, self.alarm, self.readable = say, alarm, readable
        self._sealed: dict[str, fmt.Sealed] = {}
        self._pagemap_saved = False
        self.engine = "sqlite" if pages is not None else "postgresql"  # no page map: a dump
        self._flushing: list[Future[None]] = []
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="mamori-backup-flush")

    def put_sealed(
        self,
        target: Target,
        path: str,
        source: Callable[[], BinaryIO],
        retain: dt.datetime | None,
        *,
        compress: bool,
        share: str | None = None,
        sync: bool = True,
        flush_behind: bool = False,
    ) -> fmt.Sealed:
        """Seal ``source`` onto ``target`` at ``path``: straight into the file on a mounted disk
        (no staging copy), through staging for SFTP and S3. An object ``share``d between media
        is sealed once and copied to the others. ``flush_behind``: a large object on a mounted
        disk is fsynced by a second thread while the run goes on (the documents), and
        ``flushed()`` waits for it before the manifest."""
        done = self._sealed.get(share) if share else None
        if done is not None:
            target.put_file(path, done.path, retain)
            return done
        local = target.local_file(path)
        if local is not None:
            box: list[tuple[str, int]] = []

            def produce(out: BinaryIO) -> None:
                with source() as src:
                    box.append(fmt.seal_to(src, out, self.recipients, compress=compress))

            target.put_stream(path, produce, retain, sync=sync and not flush_behind)
            sealed = fmt.Sealed(local, *box[0])
            if sync and flush_behind:
                self._flushing.append(self._flusher.submit(_fsync, local))
        else:
            staged = self.staging / f"{len(self._sealed)}-{PurePosixPath(path).name}"
            with source() as src:
                sealed = fmt.seal_file(src, staged, self.recipients, compress=compress)
            target.put_file(path, staged, retain)
        if share:
            self._sealed[share] = sealed
        return sealed

    def full_object(self, target: Target, path: str, retain: dt.datetime | None) -> fmt.Sealed:
        self.say("compress+encrypt database", 0, 1)
        sealed = self.put_sealed(
            target, path, lambda: self.snap.open("rb"), retain, compress=True, share="full",
            flush_behind=True,
        )  # fmt: skip
        self.say("compress+encrypt database", 1, 1)
        return sealed

    def delta_object(
        self,
        target: Target,
        path: str,
        retain: dt.datetime | None,
        base_generation: int,
        changed: list[int],
        base: PageMap,
    ) -> fmt.Sealed:
        pages = self.pages
        assert pages is not None  # deltas are of SQLite pages only

        def source() -> BinaryIO:
            return fmt.DeltaReader(self.snap, pages, base, changed)  # type: ignore[return-value]

        return self.put_sealed(
            target, path, source, retain, compress=True, share=f"delta-{base_generation}"
        )

    def flushed(self) -> None:
        """Every flush-behind finished (an I/O error surfaces here, before any manifest)."""
        while self._flushing:
            self._flushing.pop(0).result()

    def close(self) -> None:
        self._flusher.shutdown(wait=True)

    def save_pagemap(self) -> str | None:
        if self.pages is None:
            return None  # a PostgreSQL dump: never the base of a page delta
        name = f"pagemap-{self.generation}.bin"
        if not self._pagemap_saved:
            self.pages.save(self.settings.backup_dir / name)
            self._pagemap_saved = True
        return name

    def write_to(self, spec: TargetSpec) -> TargetResult:
        res = TargetResult(target=spec.name, ok=False)
        try:
            target = open_target(spec, self.settings.instance_id)
        except BackupError as exc:
            res.error, res.error_ja = exc.en, exc.ja
            return res
        try:
            self._write(target, spec, res)
            res.ok = True
        except BackupError as exc:
            res.error, res.error_ja = exc.en, exc.ja
        except OSError as exc:  # disk full, connection lost: this generation is not valid
            res.error = res.error_ja = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # SSH/S3 client errors: reported, never a half-valid backup
            res.error = res.error_ja = f"{type(exc).__name__}: {exc}"
        finally:
            for pending in self._flushing:  # a failed target's flush is its own, not the next's
                with suppress(Exception):
                    pending.result()
            self._flushing.clear()
            with suppress(Exception):
                target.close()
        return res

    def _write(self, target: Target, spec: TargetSpec, res: TargetResult) -> None:

        instance = self.settings.instance_id
        medium = medium_of(target, instance, create=True)
        assert medium is not None
        mid = medium["medium"]
        res.medium = mid
        mstate = self.state["media"].setdefault(mid, {"target": spec.name})
        gens, _problems, _incomplete, _dirs = read_manifests(
            target, self.signer.public_key(), instance, mid
        )
        good = [g for g in gens if g.ok]
        top = max(good, key=lambda g: g.link, default=None)
        head: dict[str, Any] | None = {"hash": top.hash, "link": top.link} if top else None
        known = mstate.get("head")
        # newer manifests signed by this instance are its own (a run killed before it saved
        # its state); the one it last wrote missing means deletion or a rollback of the medium
        if known and not any(g.hash == known for g in good):
            raise BackupError(
                "保存先に前回書いた目録がありません（削除・巻き戻し・改ざんの疑い）。"
                "書き込みを中止しました。`mamori backup verify` で確認してください。",
                "The manifest last written to this target is gone (deleted, rolled back or "
                "altered?). Nothing written; run `mamori backup verify`.",
            )
        base = mstate.get("base")
        gen_dir = f"generations/{self.generation:010d}"
        retain = retain_until(spec, self.settings, self.now)
        base_map_path = (
            self.settings.backup_dir / base["pagemap"] if base and base.get("pagemap") else None
        )
        objects: list[dict[str, Any]] = []
        kind = "full"
        manifest_base = None
        changed_pages = self.pages.page_count if self.pages else None
        if (
            not self.force_full
            and self.pages is not None
            and base
            and base_map_path is not None
            and base_map_path.exists()
            and self.now - dt.datetime.fromisoformat(base["at"])
            < dt.timedelta(hours=self.settings.backup.full_hours)
        ):
            base_map = PageMap.load(base_map_path)
            changed = self.pages.changed_since(base_map)
            if len(changed) <= DELTA_LIMIT * self.pages.page_count:
                kind = "delta"
                manifest_base = {
                    "generation": base["generation"],
                    "manifest": base["manifest"],
                    "sha256": base_map.sha256,
                }
                self.say(f"{spec.name}: delta", 0, 1)
                name = "db.delta.pages.zst.age"
                delta = self.delta_object(
                    target, f"{gen_dir}/{name}", retain, int(base["generation"]), changed, base_map
                )
                self.say(f"{spec.name}: delta", 1, 1)
                objects.append(_obj(name, delta))
                res.bytes += delta.size
                changed_pages = len(changed)
        if kind == "full":
            name = FULL_OBJECT[self.engine]
            sealed = self.full_object(target, f"{gen_dir}/{name}", retain)
            objects.append(_obj(name, sealed))
            res.bytes += sealed.size
        target.put_file(f"{gen_dir}/instance.tar.zst.age", self.bundle.path, retain)
        objects.append(_obj("instance.tar.zst.age", self.bundle))
        res.bytes += self.bundle.size
        if self.readable is not None:  # the records readable without mamori (once a day)
            sealed = self.readable[0]
            target.put_file(f"{gen_dir}/{READABLE_OBJECT}", sealed.path, retain)
            objects.append(_obj(READABLE_OBJECT, sealed))
            res.bytes += sealed.size
        index, known, uploaded, up_bytes = self._documents(target, mstate, retain, spec.name)
        res.documents, res.bytes = uploaded, res.bytes + up_bytes
        index_bytes = zstandard.ZstdCompressor(level=3).compress(
            json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        )
        target.put_bytes(f"{gen_dir}/documents.json.zst", index_bytes, retain)
        objects.append(
            {
                "name": "documents.json.zst",
                "sha256": hashlib.sha256(index_bytes).hexdigest(),
                "size": len(index_bytes),
            }
        )
        link = (head["link"] + 1) if head else 1
        manifest: dict[str, Any] = {
            "format": fmt.FORMAT,
            "instance": instance,
            "medium": mid,
            "target": spec.name,
            "link": link,
            "prev": head["hash"] if head else None,
            "generation": self.generation,
            "kind": kind,
            "base": manifest_base,
            "created": self.now.isoformat(timespec="seconds"),
            "engine": self.engine,
            "db": {
                **self.facts,
                **({"changed_pages": changed_pages} if self.pages else {}),
                **({"attested": self.attestation.result()} if self.attestation else {}),
            },
            "objects": objects,
            "documents": {"count": len(index["files"]), "objects": len(index["objects"])},
            "kek": self.kek_info,
            "alarm": self.alarm,
            "signer": fmt.public_text(self.signer),
        }
        if self.readable is not None:
            manifest["readable"] = {k: v for k, v in self.readable[1].items() if k != "seconds"}
        body, sig = fmt.sign(manifest, self.signer)
        self.flushed()  # the database object, fsynced behind the documents
        target.sync()  # every object (documents were written unsynced) before the manifest
        # the manifest goes last, signature first: a manifest without its signature is invalid
        target.put_bytes(f"{gen_dir}/manifest.sig", sig, retain)
        target.put_bytes(f"{gen_dir}/manifest.json", body, retain)
        digest = fmt.manifest_hash(body)
        # the medium's documents are trusted from local state only once a manifest lists them
        mstate.update({"target": spec.name, "head": digest, "link": link, "documents": known})
        if kind == "full":
            mstate["base"] = {
                "generation": self.generation,
                "manifest": digest,
                "pagemap": self.save_pagemap(),
                "at": self.now.isoformat(),
            }
        mstate["last"] = {
            "generation": self.generation,
            "kind": kind,
            "at": self.now.isoformat(timespec="seconds"),
        }
        res.kind, res.link, res.manifest = kind, link, digest
        self._forget_unused_pagemaps()
        # an alarm holds every generation: nothing is pruned until a person has looked
        if spec.kind != "s3" and not self.state.get("hold"):
            gens, _p, _i, _d = read_manifests(target, self.signer.public_key(), instance, mid)
            res.pruned = prune(target, self.settings, gens, self.now)

    def _documents(
        self, target: Target, mstate: dict[str, Any], retain: dt.datetime | None, name: str
    ) -> tuple[dict[str, Any], dict[str, list[Any]], int, int]:
        """Upload the stored documents this medium lacks (encrypted once each, by content)."""
        objects: dict[str, list[Any]] = dict(mstate.get("documents", {}))
        if not objects:
            objects = _previous_index(target, mstate).get("objects", {})
        present = target.listing("documents")
        for digest in [d for d in objects if f"documents/{d[:2]}/{d}.age" not in present]:
            del objects[digest]  # lost from the medium (or never finished): written again
        missing = sorted({d for d in self.docs.values() if d not in objects})
        uploaded = up_bytes = 0
        where = {d: r for r, d in self.docs.items()}
        for i, digest in enumerate(missing):
            self.say(f"{name}: documents", i, len(missing))
            src = self.settings.documents_dir / where[digest]
            path = f"documents/{digest[:2]}/{digest}.age"
            sealed = self.put_sealed(
                target, path, partial(_open_rb, src), retain, compress=False, sync=False
            )
            if sealed.path.is_relative_to(self.staging):
                sealed.path.unlink()
            objects[digest] = [sealed.sha256, sealed.size]
            uploaded += 1
            up_bytes += sealed.size
        self.say(f"{name}: documents", len(missing), len(missing))
        used = sorted(set(self.docs.values()))
        return (
            {"files": dict(sorted(self.docs.items())), "objects": {d: objects[d] for d in used}},
            objects,
            uploaded,
            up_bytes,
        )

    def _forget_unused_pagemaps(self) -> None:
        keep = {"pagemap-last.bin"} | {
            m["base"]["pagemap"] for m in self.state["media"].values() if m.get("base")
        }
        if self._pagemap_saved:
            keep.add(f"pagemap-{self.generation}.bin")
        for p in self.settings.backup_dir.glob("pagemap-*.bin"):
            if p.name not in keep:
                p.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_rb(path: Path) -> BinaryIO:
    return path.open("rb")


def _previous_index(target: Target, mstate: dict[str, Any]) -> dict[str, Any]:
    """The document index of the medium's newest generation, when local state was lost."""
    last = mstate.get("last")
    if not last:
        return {}
    raw = target.get_bytes(f"generations/{int(last['generation']):010d}/documents.json.zst")
    if raw is None:
        return {}
    index: dict[str, Any] = json.loads(zstandard.ZstdDecompressor().decompress(raw))
    return index


def _obj(name: str, sealed: fmt.Sealed) -> dict[str, Any]:
    return {"name": name, "sha256": sealed.sha256, "size": sealed.size}
