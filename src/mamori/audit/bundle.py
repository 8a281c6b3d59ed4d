"""``mamori audit bundle``: a folder an outside auditor can check offline, without mamori.

    OUT/
      README.md             how to verify (ja/en)
      verify_bundle.py      standalone verifier: Python + hashlib + cryptography only
      audit.vkey            the log's public key (compare with the copy kept on paper)
      checkpoints/*.note    every signed checkpoint (C2SP signed notes)
      events.jsonl          the events, one exact canonical body per line
      proofs.json           Merkle inclusion proofs to the latest checkpoint (when the bundle
                            holds a selection) and consistency proofs between checkpoints

The verifier is generated from the same ``merkle.py`` and ``checkpoint.py`` mamori itself
uses and tests, so the auditor runs the verified algorithms, not a second implementation.
Bodies carry IDs and hashes, never clinical text; a patient's bundle (``--patient``) holds only
the events naming that patient, each proven to be in the signed log.
"""

from __future__ import annotations

import inspect
import itertools
import json
import shutil
import uuid
from collections.abc import Collection
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit import checkpoint as checkpoint_module
from mamori.audit import merkle
from mamori.audit.checkpoint import Checkpoint, NoteVerifier
from mamori.audit.checkpointer import NOTE_SUFFIX, load_checkpoints
from mamori.audit.models import AuditEvent
from mamori.audit.verify import verify_log
from mamori.errors import MamoriError


class BundleRefused(MamoriError):
    status = 409
    code = "bundle_refused"


def _source(module: object) -> str:
    lines = inspect.getsource(module).splitlines()  # type: ignore[arg-type]
    return "\n".join(line for line in lines if line != "from __future__ import annotations")


VERIFIER_MAIN = """

def main() -> int:
    import base64
    import json
    import sys
    from pathlib import Path

    here = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    vkey = (sys.argv[2] if len(sys.argv) > 2 else (here / "audit.vkey").read_text()).strip()
    verifier = NoteVerifier.from_vkey(vkey)
    print(f"public key: {verifier.vkey()}")
    checkpoints = []
    for path in sorted((here / "checkpoints").glob("*.note")):
        try:
            checkpoints.append(open_note(path.read_text(encoding="utf-8"), [verifier]))
        except CheckpointError as exc:
            print(f"FAIL checkpoint {path.name}: {exc}")
            return 1
    if not checkpoints:
        print("FAIL no signed checkpoint")
        return 1
    checkpoints.sort(key=lambda c: c.size)
    proofs = json.loads((here / "proofs.json").read_text(encoding="utf-8"))
    for c in proofs["consistency"]:
        first = next(x for x in checkpoints if x.size == c["from"])
        second = next(x for x in checkpoints if x.size == c["to"])
        if not verify_consistency(first.size, second.size, first.root, second.root,
                                  [bytes.fromhex(h) for h in c["proof"]]):
            print(f"FAIL checkpoints {first.size} -> {second.size} are not consistent (fork)")
            return 1
    latest = checkpoints[-1]
    if proofs["tree_size"] != latest.size:
        print("FAIL proofs.json does not refer to the latest checkpoint")
        return 1
    lines = (here / "events.jsonl").read_bytes().splitlines()
    leaves = []
    for line in lines:
        try:
            seq = json.loads(line)["seq"]
        except (ValueError, KeyError, TypeError):
            print("FAIL an event line is not a valid event")
            return 1
        leaf = leaf_hash(line)
        if proofs["complete"]:
            if seq != len(leaves) + 1:
                print(f"FAIL event {seq}: the complete log must run 1, 2, 3, ...")
                return 1
            leaves.append(leaf)
            continue
        if str(seq) not in proofs["inclusion"]:
            print(f"FAIL event {seq} has no proof of inclusion (invented or misplaced)")
            return 1
        proof = [bytes.fromhex(h) for h in proofs["inclusion"][str(seq)]]
        if not verify_inclusion(seq - 1, latest.size, leaf, proof, latest.root):
            print(f"FAIL event {seq} is not in the signed log (edited, invented or misplaced)")
            return 1
    if proofs["complete"] and (len(leaves) != latest.size or root(leaves) != latest.root):
        print("FAIL the events do not rebuild the signed root")
        return 1
    print(f"OK: {len(lines)} events verified against checkpoint {latest.size} "
          f"(root {base64.b64encode(latest.root).decode()}), {len(checkpoints)} checkpoints")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
"""

README = """# mamori 監査証跡バンドル / audit trail bundle

検証方法 / To verify (Python 3.11+ と cryptography のみ / only Python and `cryptography`):

    python verify_bundle.py .                 # audit.vkey を使う / uses audit.vkey
    python verify_bundle.py . 'KEY-STRING'    # 紙に控えた公開鍵で / with the key kept on paper

- `events.jsonl`: 監査イベント（1行1件、署名対象そのままのバイト列）/ one exact event body per line
- `checkpoints/`: 署名付きチェックポイント（C2SP signed note, Ed25519）/ signed checkpoints
- `proofs.json`: Merkle 包含証明・一貫性証明（RFC 9162）/ inclusion and consistency proofs
- `audit.vkey`: 公開鍵。医院で紙に控えた値と一致するか確認してください。
  Compare it with the copy the clinic keeps on paper: a bundle signed by another key proves
  nothing.

イベントには ID・ハッシュのみが含まれ、診療記録の本文は含まれません。
Events hold IDs and hashes only, never clinical text. Any RFC 9162 implementation can check
the proofs; the hashing is leaf = SHA-256(0x00 ‖ body), node = SHA-256(0x01 ‖ left ‖ right).
"""


def write_bundle(
    session: Session,
    out: Path,
    checkpoint_dir: Path,
    verifier: NoteVerifier,
    log_origin: str,
    patient: uuid.UUID | None = None,
    seqs: Collection[int] | None = None,
) -> dict[str, int]:
    """Write the bundle; refuses if the log does not verify against its checkpoints. With
    ``patient`` or ``seqs`` (an incident's evidence: the events its affected-patient list is
    made of) it holds only those events, each with its inclusion proof."""
    checkpoints, bad = load_checkpoints(checkpoint_dir, [verifier], log_origin)
    report = verify_log(session, checkpoints)
    if bad or not report.ok:
        raise BundleRefused(
            "監査証跡の検証に失敗したため、バンドルを作成しません。",
            "The audit log does not verify; no bundle was written.",
        )
    if not checkpoints:
        raise BundleRefused(
            "署名付きチェックポイントがありません（mamori audit checkpoint）。",
            "No signed checkpoint yet (run `mamori audit checkpoint`).",
        )
    checkpoints.sort(key=lambda c: c.size)
    latest: Checkpoint = checkpoints[-1]
    if out.exists() and any(out.iterdir()):
        raise BundleRefused(f"{out} は空ではありません。", f"{out} is not empty.")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for path in checkpoint_dir.glob(f"*{NOTE_SUFFIX}"):
        shutil.copy2(path, out / "checkpoints" / path.name)
    (out / "audit.vkey").write_text(verifier.vkey() + "\n", encoding="utf-8")
    (out / "verify_bundle.py").write_text(
        '#!/usr/bin/env python3\n"""Standalone verifier for a mamori audit bundle '
        '(generated)."""\n\nfrom __future__ import annotations\n\n'
        + _source(merkle)
        + "\n\n"
        + _source(checkpoint_module)
        + VERIFIER_MAIN,
        encoding="utf-8",
    )
    (out / "README.md").write_text(README, encoding="utf-8")
    leaves: list[bytes] = []
    selected: list[int] = []
    needle = f'"{patient}"'.encode() if patient else None
    wanted = set(seqs) if seqs is not None else None
    selection = patient is not None or wanted is not None
    with (out / "events.jsonl").open("wb") as fh:
        stmt = (
            select(AuditEvent.seq, AuditEvent.body)
            .where(AuditEvent.seq <= latest.size)
            .order_by(AuditEvent.seq)
            .execution_options(yield_per=5000)
        )
        for seq, raw in session.execute(stmt):
            body = bytes(raw)
            leaves.append(merkle.leaf_hash(body))
            if wanted is not None:
                chosen = seq in wanted
            else:
                chosen = needle is None or (
                    needle in body and str(patient) in json.loads(body)["patients"]
                )
            if chosen:
                fh.write(body + b"\n")
                selected.append(seq)
    tree = merkle.Tree(leaves)
    proofs = {
        "tree_size": latest.size,
        "complete": not selection,
        "inclusion": {}
        if not selection
        else {str(seq): [h.hex() for h in tree.inclusion_proof(seq - 1)] for seq in selected},
        "consistency": [
            {
                "from": a.size,
                "to": b.size,
                "proof": [h.hex() for h in tree.consistency_proof(a.size, b.size)],
            }
            for a, b in itertools.pairwise(checkpoints)
            if 0 < a.size < b.size
        ],
    }
    (out / "proofs.json").write_text(json.dumps(proofs, indent=1), encoding="utf-8")
    return {"events": len(selected), "tree_size": latest.size, "checkpoints": len(checkpoints)}
