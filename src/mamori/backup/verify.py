"""``mamori backup verify`` (no private key needed) and the checks a restore repeats.

For each medium: every manifest's signature under the instance's signer key, the instance and
medium it names, its place in the medium's chain (link numbers without gaps, each ``prev`` the
hash of the manifest before it — a fork, a removed or replayed manifest breaks it), and every
object it lists: present, of the recorded size and SHA-256 of the ciphertext. Objects without a
manifest are an interrupted run: reported, never counted as a backup. Against the instance's
own record (local state and the audit trail) the newest manifest must be the one last written:
a medium rolled back to an older chain is caught even though each old manifest is genuine.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mamori.backup import fmt
from mamori.backup.fmt import BackupError, BackupInvalid
from mamori.backup.targets import Target, medium_of

MAX_INDEX_BYTES = 256 << 20


@dataclass
class Generation:
    generation: int
    link: int
    kind: str
    created: str
    manifest: dict[str, Any]
    hash: str
    problems: list[str] = field(default_factory=list)
    pruned: bool = False  # objects removed by the retention policy (signed mark)
    # document objects missing, of the wrong size or altered (digest → why); each is also in
    # ``problems``. A restore may leave exactly these out when a person allows it.
    document_problems: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def ok_but_documents(self) -> bool:
        """Everything verifies except some document objects (restorable without them)."""
        texts = {f"document object {d[:12]} {why}" for d, why in self.document_problems.items()}
        return bool(self.problems) and all(p in texts for p in self.problems)


@dataclass
class MediumReport:
    target: str
    medium: str = ""
    generations: list[Generation] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    objects_checked: int = 0
    bytes_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and all(g.ok for g in self.generations)

    def newest_valid(self) -> Generation | None:
        good = [g for g in self.generations if g.ok and not g.pruned]
        return max(good, key=lambda g: g.link) if good else None


def _gen_dirs(listing: dict[str, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for path, size in listing.items():
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "generations":
            out.setdefault(parts[1], {})[parts[2]] = size
    return out


def read_manifests(
    target: Target, signer: Ed25519PublicKey, instance_id: str, medium: str
) -> tuple[list[Generation], list[str], list[str], dict[str, dict[str, int]]]:
    """Every signed manifest on the medium, chain-checked; problems; incomplete generations."""
    dirs = _gen_dirs(target.listing("generations"))
    gens: list[Generation] = []
    problems: list[str] = []
    incomplete: list[str] = []
    for name, files in sorted(dirs.items()):
        if "manifest.json" not in files or "manifest.sig" not in files:
            incomplete.append(name)
            continue
        body = target.get_bytes(f"generations/{name}/manifest.json") or b""
        sig = target.get_bytes(f"generations/{name}/manifest.sig") or b""
        try:
            m = fmt.check_signature(body, sig, signer)
        except BackupInvalid as exc:
            problems.append(f"generation {name}: {exc.en}")
            continue
        g = Generation(
            int(m.get("generation", -1)),
            int(m.get("link", -1)),
            str(m.get("kind")),
            str(m.get("created")),
            m,
            fmt.manifest_hash(body),
        )
        if "pruned.sig" in files:
            mark = target.get_bytes(f"generations/{name}/pruned.sig") or b""
            if fmt.prune_mark_valid(g.hash, mark, signer):
                g.pruned = True
            else:
                g.problems.append("pruned mark not signed by this instance")
        if f"{g.generation:010d}" != name:
            g.problems.append(
                f"manifest of generation {g.generation} found under {name} (replayed/moved)"
            )
        if m.get("instance") != instance_id:
            g.problems.append(f"manifest is for instance {m.get('instance')} (another clinic)")
        if m.get("medium") != medium:
            g.problems.append("manifest belongs to another medium (copied from elsewhere)")
        gens.append(g)
    gens.sort(key=lambda g: (g.link, g.generation))
    by_link: dict[int, Generation] = {}
    for g in gens:
        if g.link in by_link:
            g.problems.append(f"two manifests claim link {g.link} (fork)")
            continue
        by_link[g.link] = g
    for g in gens:
        prev = by_link.get(g.link - 1)
        if g.link == 1:
            if g.manifest.get("prev") is not None:
                g.problems.append("first link has a predecessor")
        elif prev is None:
            g.problems.append(f"link {g.link - 1} before it is missing (deleted manifest)")
        elif g.manifest.get("prev") != prev.hash:
            g.problems.append(f"does not chain to link {g.link - 1} (altered or forked)")
        elif prev.generation >= g.generation:
            g.problems.append("generation numbers go backwards")
    return gens, problems, incomplete, dirs


def verify_target(
    target: Target,
    signer: Ed25519PublicKey,
    instance_id: str,
    *,
    expected_heads: dict[str, str] | None = None,
    deep: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> MediumReport:
    say = progress or (lambda _w, _d, _t: None)
    report = MediumReport(target=target.spec.name)
    try:
        medium = medium_of(target, instance_id, create=False)
    except BackupError as exc:  # another instance's medium, or a damaged record: a finding
        report.problems.append(exc.en)
        return report
    if medium is None:
        report.problems.append("no mamori backup on this target (medium.json missing)")
        return report
    report.medium = medium["medium"]
    gens, problems, incomplete, dirs = read_manifests(target, signer, instance_id, report.medium)
    report.generations, report.problems, report.incomplete = gens, problems, incomplete
    doc_listing = target.listing("documents")
    checked_docs: dict[str, str] = {}
    total = sum(len(g.manifest.get("objects", [])) for g in gens)
    done = 0
    for g in gens:
        files = dirs.get(f"{g.generation:010d}", {})
        for obj in g.manifest.get("objects", []):
            if g.pruned and obj["name"] != "documents.json.zst":
                continue
            done += 1
            say("objects", done, total)
            name = str(obj["name"])
            if name not in files:
                g.problems.append(f"object {name} missing")
                continue
            if files[name] != obj["size"]:
                g.problems.append(f"object {name} has size {files[name]}, manifest {obj['size']}")
                continue
            if deep:
                data_hash = _hash_object(target, f"generations/{g.generation:010d}/{name}")
                report.objects_checked += 1
                report.bytes_checked += int(obj["size"])
                if data_hash != obj["sha256"]:
                    g.problems.append(f"object {name} altered (SHA-256 differs)")
                    continue
            if name == "documents.json.zst":
                _check_documents(target, g, doc_listing, checked_docs, deep, report)
        if g.kind == "delta":
            base = (g.manifest.get("base") or {}).get("manifest")
            if not g.pruned and not any(
                b.hash == base and b.kind == "full" and not b.pruned for b in gens
            ):
                g.problems.append("the full backup this delta needs is not on this medium")
    expected = (expected_heads or {}).get(report.medium)
    if expected and not any(g.hash == expected for g in gens):
        # newer manifests signed by this instance are fine (a run that died before saving its
        # state); the one it last wrote being gone means deletion or a rolled-back medium
        report.problems.append(
            "the last generation this server wrote is not on the medium (deleted or rolled back)"
        )
    return report


def _hash_object(target: Target, path: str) -> str:

    raw = getattr(target, "root", None)
    if isinstance(raw, Path):  # local directory: hash in place
        return fmt.sha256_file(raw / path)
    with tempfile.NamedTemporaryFile() as tmp:
        target.get_file(path, Path(tmp.name))
        return fmt.sha256_file(Path(tmp.name))


def _check_documents(
    target: Target,
    g: Generation,
    listing: dict[str, int],
    checked: dict[str, str],
    deep: bool,
    report: MediumReport,
) -> None:
    raw = target.get_bytes(f"generations/{g.generation:010d}/documents.json.zst") or b""
    try:
        index = json.loads(
            zstandard.ZstdDecompressor().decompress(raw, max_output_size=MAX_INDEX_BYTES)
        )
        objects: dict[str, list[Any]] = index["objects"]
        files: dict[str, str] = index["files"]
    except (zstandard.ZstdError, ValueError, KeyError, TypeError):
        g.problems.append("document index unreadable")
        return
    if any(d not in objects for d in files.values()):
        g.problems.append("document index refers to objects it does not list")
    for digest, (ct_sha, size) in objects.items():
        path = f"documents/{digest[:2]}/{digest}.age"
        why = ""
        if path not in listing:
            why = "missing"
        elif listing[path] != size:
            why = "has the wrong size"
        elif deep:
            if path not in checked:
                checked[path] = _hash_object(target, path)
                report.objects_checked += 1
                report.bytes_checked += int(size)
            if checked[path] != ct_sha:
                why = "altered"
        if why:
            g.document_problems[digest] = why
            g.problems.append(f"document object {digest[:12]} {why}")


def require_ok(report: MediumReport, generation: Generation) -> None:
    if not generation.ok:
        raise BackupInvalid(
            f"世代 {generation.generation} は検証に失敗しました: {generation.problems[0]}",
            f"Generation {generation.generation} fails verification: {generation.problems[0]}",
        )
    if report.problems:
        raise BackupInvalid(
            f"保存先の検証に失敗しました: {report.problems[0]}",
            f"The target fails verification: {report.problems[0]}",
        )
