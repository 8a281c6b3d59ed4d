"""An incident's evidence: the affected-patient list as CSV, and the audit events that list is
made of as a verifiable bundle (each event with its inclusion proof in a signed checkpoint,
``audit.bundle``), for the PPC, the police or the clinic's lawyer — written by
``mamori incident report`` and downloaded from the incident's page, through the same function.
"""

from __future__ import annotations

import csv
import io
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from mamori.audit.bundle import BundleRefused, write_bundle
from mamori.audit.checkpointer import origin, signer
from mamori.audit.trail import AuditTag, record
from mamori.authz.actor import Actor
from mamori.incidents import service
from mamori.incidents.affected import ITEMS
from mamori.settings import Settings

CSV_HEADER = (
    "患者番号", "氏名", "カナ", "住所", "閲覧", "変更", "最初", "最後", "情報項目", "通知日",
)  # fmt: skip

README = """\
インシデント {number} の証拠 / evidence of incident {number}

affected.csv   影響を受けた可能性のある患者の一覧（監査証跡から）/ the affected-patient list
evidence/      一覧のもとになった監査記録と、署名付きチェックポイントへの包含証明
               / the audit events the list is made of, each with its inclusion proof

検証 / verify:  python3 evidence/verify_bundle.py evidence
（mamori は不要。Python 3 と cryptography だけで検証できます / needs Python 3 and the
cryptography package, not mamori）
"""


def affected_csv(found: service.Affected | None) -> bytes:
    """The list in Excel's UTF-8 (BOM), one patient a row."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_HEADER)
    for r in found.rows if found else []:
        w.writerow(
            [r.number, r.name, r.kana, r.address, r.opens, r.writes,
             r.first.isoformat() if r.first else "", r.last.isoformat() if r.last else "",
             "、".join(ITEMS[k][0] for k in r.items), r.noticed or ""]
        )  # fmt: skip
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def write_evidence(
    session: Session,
    actor: Actor,
    settings: Settings,
    incident_id: uuid.UUID,
    found: service.Affected | None,
    out: Path,
) -> dict[str, Any] | None:
    """The events behind ``found`` as a bundle in ``out`` (an empty or missing folder), proven
    against the newest signed checkpoint (make one first for events after it), and the export
    itself recorded. None when the list holds no event; raises ``BundleRefused`` when the log
    does not verify (no bundle from a log that fails its own proof)."""
    seqs = found.seqs if found else []
    if not seqs:
        return None
    stats = write_bundle(
        session, out, settings.checkpoint_dir, signer(settings).verifier(), origin(settings),
        seqs=seqs,
    )  # fmt: skip
    record(session, actor, AuditTag.AUDIT_EXPORTED, detail={**stats, "incident": str(incident_id)})
    return stats


def package(
    session: Session, actor: Actor, settings: Settings, incident_id: uuid.UUID
) -> tuple[bytes, int]:
    """The evidence as one ZIP (the incident page's download): ``affected.csv``, ``evidence/``
    and a README; returns it and the incident's number. The bundle holds what the newest
    checkpoint covers; the caller signs one first."""
    view = service.get(session, actor, incident_id)
    found = service.affected_list(session, actor, incident_id)
    number = view.incident.number
    buffer = io.BytesIO()
    with (
        tempfile.TemporaryDirectory(prefix="mamori-evidence-") as tmp,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf,
    ):
        zf.writestr("README.txt", README.format(number=number))
        zf.writestr("affected.csv", affected_csv(found))
        try:
            stats = write_evidence(session, actor, settings, incident_id, found, Path(tmp) / "ev")
        except BundleRefused as exc:
            zf.writestr("evidence-refused.txt", f"{exc.ja}\n{exc.en}\n")
            stats = None
        if stats is not None:
            root = Path(tmp) / "ev"
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zf.write(path, f"evidence/{path.relative_to(root)}")
    return buffer.getvalue(), number
