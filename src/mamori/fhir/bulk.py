"""Bulk FHIR export (``mamori export fhir``): the whole clinic as NDJSON, one file per type.

The clinic's patients are taken in chunks of ``CHUNK``. Each chunk is one unit of work: its
patients pass the access rules together — the director's ``export:bulk``, the read permission
of every kind, tenancy (only this clinic's rows are selected), and the restriction: a
restricted patient without a break-the-glass grant is left out and counted — and one audit
event per chunk names every patient it exported. Each record kind is then read for the whole
chunk in one statement (not one per patient and type), mapped, and written to the chunk's part
files. With ``workers`` > 1 the chunks run in that many processes, each opening the instance
itself; the parts are joined in chunk order, so the output does not depend on the number of
workers, and every file appears under its final name only when complete.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit import trail
from mamori.authz import restricted
from mamori.authz.actor import Actor
from mamori.authz.permissions import P, permission_for
from mamori.clinic.models import Clinic
from mamori.clinic.service import clinic_of
from mamori.clinical.models import (
    AllergyIntolerance,
    Condition,
    Document,
    Encounter,
    MedicationRequest,
    Observation,
    ProgressNote,
)
from mamori.detection.models import ContactLog
from mamori.errors import BreakGlassRequired
from mamori.fhir import mapping
from mamori.instance import Instance, open_instance
from mamori.patients.models import Coverage, Patient, PatientStatus
from mamori.records.reader import read_views

CHUNK = 400  # patients per unit of work (a chunk of an L clinic is about 40k resources)

RESOURCE_TYPES = (
    "Patient",
    "Coverage",
    "Encounter",
    "Condition",
    "MedicationRequest",
    "AllergyIntolerance",
    "Observation",
    "DocumentReference",
    "Communication",
)

Convert = Callable[[Any, Clinic], list[dict[str, Any]]]
# (model, resource type, converter), patients first
KINDS: tuple[tuple[type[Any], str, Convert], ...] = (
    (Patient, "Patient", lambda r, c: [mapping.patient(r, c)]),
    (Coverage, "Coverage", lambda r, c: [mapping.coverage(r)]),
    (Encounter, "Encounter", lambda r, c: [mapping.encounter(r, c)]),
    (Condition, "Condition", lambda r, c: [mapping.condition(r)]),
    (MedicationRequest, "MedicationRequest", lambda r, c: mapping.medication_requests(r)),
    (AllergyIntolerance, "AllergyIntolerance", lambda r, c: [mapping.allergy(r)]),
    (Observation, "Observation", lambda r, c: [mapping.observation(r)]),
    (Document, "DocumentReference", lambda r, c: [mapping.document(r)]),
    (ProgressNote, "DocumentReference", lambda r, c: [mapping.note(r)]),
    (ContactLog, "Communication", lambda r, c: [mapping.contact(r)]),
)


def patient_ids(session: Session, actor: Actor) -> list[uuid.UUID]:
    """All patients of the actor's clinic in the database's own order of their IDs, so that a
    chunk is a contiguous range of IDs each kind can be read by."""
    stmt = (
        select(Patient.id)
        .where(
            Patient.clinic_id == actor.clinic_id,
            Patient.status != PatientStatus.ENTERED_IN_ERROR.value,
        )
        .order_by(Patient.id)
    )
    return list(session.scalars(stmt))


def chunks(ids: Sequence[uuid.UUID]) -> Iterator[list[uuid.UUID]]:
    for i in range(0, len(ids), CHUNK):
        yield list(ids[i : i + CHUNK])


def export_chunk(
    session: Session,
    actor: Actor,
    index: int,
    ids: list[uuid.UUID],
    parts: Path,
    *,
    since: dt.datetime | None = None,
    everyone: bool = False,
    seen: set[uuid.UUID] | None = None,
    sink: Callable[[str, str, bytes], None] | None = None,
) -> dict[str, int]:
    """One chunk: admitted together, one audit event naming the patients whose records were
    written, each kind in one statement, written to ``parts/<Type>.<index>``. Returns counts
    per type and ``restricted`` (patients left out).

    ``since``: only records changed after it (the readable copy's deltas). ``everyone``: the
    readable copy in the backup, which holds restricted patients too (the clinic's whole
    record, for the offline key). ``seen`` collects the patients written. ``sink``: each
    kind's lines handed over (type, part name, bytes) instead of written to ``parts``."""
    for _model, rtype, _c in KINDS:
        actor.require(permission_for(f"fhir:{rtype}", write=False))
    clinic = clinic_of(session, actor)
    allowed: list[uuid.UUID] = []
    left_out = 0
    for pid in ids:
        if not everyone:
            try:
                restricted.check(session, actor, pid, "fhir:Observation")  # a clinical kind
            except BreakGlassRequired:
                left_out += 1
                continue
        allowed.append(pid)
    counts = dict.fromkeys(RESOURCE_TYPES, 0)
    counts["restricted"] = left_out
    files: dict[str, Any] = {}
    keep = set(allowed)
    written: set[uuid.UUID] = set()
    where_since = [("updated_at", ">", since)] if since is not None else []
    try:
        for model, rtype, convert in KINDS:
            key = "id" if model is Patient else "patient_id"
            rows = (
                read_views(
                    session,
                    model,
                    [
                        ("clinic_id", "=", actor.clinic_id),
                        (key, ">=", ids[0]),
                        (key, "<=", ids[-1]),
                        *where_since,
                    ],
                    order_by=[(key, False), ("created_at", False), ("id", False)],
                )
                if ids
                else []
            )
            lines: list[str] = []
            for row in rows:
                pid = getattr(row, key)
                if pid in keep:  # the range also holds restricted or erroneous patients
                    lines.extend(_json(res) for res in convert(row, clinic))
                    written.add(pid)
            if sink is not None:
                sink(rtype, f"{index:06d}-{model.__tablename__}", "".join(lines).encode("utf-8"))
            else:
                fh = files.get(rtype)
                if fh is None:
                    name = f"{rtype}.{index:06d}"
                    fh = files[rtype] = (parts / name).open("w", encoding="utf-8")
                fh.write("".join(lines))
            counts[rtype] += len(lines)
    finally:
        for fh in files.values():
            fh.close()
    if written:  # in the unit of work that read them: no read goes unrecorded
        trail.record(
            session,
            actor,
            trail.AuditTag.DATA_EXPORTED,
            patients=sorted(written),
            detail={"what": "escrow" if everyone else "fhir:bulk", "chunk": index},
        )
    if seen is not None:
        seen |= written
    return counts


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one, not one per line


def _json(res: dict[str, Any]) -> str:
    return _ENCODER.encode(res) + "\n"


def export_ndjson(
    session: Session,
    actor: Actor,
    out_dir: Path,
    progress: Callable[[int], None] | None = None,
    *,
    reauth_minutes: int,
    home: Path | None = None,
    workers: int = 1,
) -> dict[str, int]:
    """The bulk export into ``out_dir``: ``<ResourceType>.ndjson`` per type. Needs
    ``export:bulk`` (the director: physicians may request an export, the director approves and
    runs it) and a fresh re-authentication (the CLI's operator holds the instance's secrets).
    ``home`` and ``workers`` > 1: the chunks run in worker processes opening that instance.
    Returns counts per type, and ``restricted``: patients left out (no break-the-glass)."""
    actor.require(P.EXPORT_BULK)
    restricted.require_recent_auth(actor, reauth_minutes)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ids = patient_ids(session, actor)
    chunks_ = list(chunks(ids))
    parts = Path(tempfile.mkdtemp(prefix=".fhir-parts-", dir=out_dir))
    totals = dict.fromkeys((*RESOURCE_TYPES, "restricted"), 0)
    try:
        if workers > 1 and home is not None and len(chunks_) > 1:
            context = multiprocessing.get_context("spawn")  # a clean process, no inherited locks
            with ProcessPoolExecutor(min(workers, len(chunks_)), mp_context=context) as pool:
                futures = {
                    pool.submit(_worker_chunk, str(home), actor, i, c, str(parts)): len(c)
                    for i, c in enumerate(chunks_)
                }
                for future in as_completed(futures):
                    for k, v in future.result().items():
                        totals[k] += v
                    if progress:
                        progress(futures[future])
        else:
            for i, chunk in enumerate(chunks_):
                for k, v in export_chunk(session, actor, i, chunk, parts).items():
                    totals[k] += v
                if progress:
                    progress(len(chunk))
        for rtype in RESOURCE_TYPES:
            partial = out_dir / f".{rtype}.ndjson.partial"
            with partial.open("wb") as out:
                for part in sorted(parts.glob(f"{rtype}.*")):
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(out_dir / f"{rtype}.ndjson")
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    return totals


_INSTANCES: dict[str, Instance] = {}  # a worker's instance, opened once per process


def _worker_chunk(
    home: str, actor: Actor, index: int, ids: list[uuid.UUID], parts: str
) -> dict[str, int]:
    """One chunk in a worker process: the instance opened here (once), one transaction."""
    inst = _INSTANCES.get(home)
    if inst is None:
        inst = _INSTANCES[home] = open_instance(home)
    with inst.transaction(write=False) as session:
        return export_chunk(session, actor, index, ids, Path(parts))
