"""A readable copy of the clinic's records for the worst case (the escrow, BCP 3-4).

A stock-tool restore of a backup gives back a database whose patient fields are ciphertext:
without mamori and its KEK nobody can read it. So once a day the backup run adds to its
generation ``readable.tar.zst.age`` — encrypted, like every object, to the offline recovery
keys — holding::

    README.txt                       how to read it (Japanese and English)
    manifest.json                    kind (full / delta), since when, counts, the patients
    fhir/<ResourceType>/<n>.ndjson   FHIR R4 (JP Core), one resource per line, in parts
    charts/<患者番号>.pdf             the chart summary of each patient in it (A4, Japanese)

With the break-glass key, ``age``, ``zstd`` and ``tar`` alone a clinic can then *read* its
records even if mamori never runs again (docs/backup.md). Daily copies are **deltas**: only the
records changed since the previous escrow, and the chart of each patient with a change; every
``FULL_DAYS`` (and the first time) a **full** one holds every record and the chart of every
active patient (a record changed within ``ACTIVE_DAYS``). A reader applies the deltas in order
on the last full: a line with the same ``resourceType`` and ``id`` replaces the earlier one
(``meta.versionId`` says which version it is).

It is the clinic's whole record, restricted patients included (their chart PDFs are not made:
a restricted chart opens only with a person's reason; their resources are in the NDJSON) —
read by the clinic's director account on the backup's behalf (``[backup] readable_as``, else
the first active director), one audit event per chunk of patients naming them, and each chart
PDF recorded as a print, as for the downtime bundle.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mamori.authz.actor import Actor
from mamori.backup import fmt
from mamori.chart.pdf import render_chart_pdf
from mamori.chart.service import print_chart
from mamori.clinic.models import Clinic, StaffUser
from mamori.clinic.service import actor_for, staff_names
from mamori.clinical.models import Encounter
from mamori.errors import BreakGlassRequired, MamoriError
from mamori.fhir import bulk

FULL_DAYS = 7  # a full escrow at least this often; deltas in between
DUE_HOURS = 23  # one a day (a little less, so a daily run at a fixed time is never skipped)
ACTIVE_DAYS = 3 * 365  # a full escrow's chart PDFs: patients with a change this recent
OBJECT = "readable.tar.zst.age"

README = """mamori 読める控え（エスクロー） / mamori readable copy
=====================================================

このファイルは、mamori のバックアップ世代に含まれる「読める控え」です。mamori が二度と動かなくても、
オフライン鍵（非常用の紙の鍵）と age・zstd・tar だけで診療記録を読めるように作られています。

  age -d -i mamori-backup-breakglass.txt readable.tar.zst.age | zstd -d | tar -x

- fhir/<種類>/*.ndjson   FHIR R4（JP Core）形式の記録。1 行に 1 件（いくつかのファイルに分割）。
  種類ごとにまとめるには cat fhir/Observation/*.ndjson > Observation.ndjson
- charts/*.pdf    患者ごとのカルテ要約（A4、日本語）。そのまま印刷できます。
- manifest.json   この控えの種類（full = 全件 / delta = 前回からの変更分）、作成日時、件数。

差分（delta）は前回の控えからの変更分だけです。最新の全件（full）に、その後の差分を古い順に重ねて
読みます（同じ resourceType と id の行は、後のものが新しい版です。meta.versionId が版番号）。
閲覧制限の患者（職員・VIP・要配慮）のカルテ要約 PDF は作られません（記録は fhir/ にあります）。

This is the readable copy in a mamori backup generation: with the offline (break-glass) key,
age, zstd and tar alone, the records can be read even if mamori never runs again.
fhir/<Type>/*.ndjson holds FHIR R4 (JP Core) resources, one per line, in parts (cat them
to join a type); charts/*.pdf a printable chart
summary per patient; manifest.json says whether this copy is full or a delta since the previous
one. Apply deltas in order on the last full: a later line with the same resourceType and id is
the newer version (meta.versionId). Restricted patients have no chart PDF (their resources are
in fhir/).
"""


@dataclasses.dataclass(frozen=True)
class Due:
    full: bool
    since: dt.datetime | None  # a delta: records changed after this


def due(state: dict[str, Any], now: dt.datetime) -> Due | None:
    """Whether this backup run carries a readable copy, and which (None: not today)."""
    last = state.get("readable")
    if not last:
        return Due(full=True, since=None)
    at = dt.datetime.fromisoformat(last["at"])
    if now - at < dt.timedelta(hours=DUE_HOURS):
        return None
    if now - dt.datetime.fromisoformat(last["full_at"]) >= dt.timedelta(days=FULL_DAYS):
        return Due(full=True, since=None)
    return Due(full=False, since=dt.datetime.fromisoformat(last["started"]))


def escrow_actor(session: Session, login: str | None) -> Actor:
    """The director account the copy is read under (``readable_as``, else the first active
    director of the clinic), marked as the backup's doing."""
    stmt = select(StaffUser).where(StaffUser.active.is_(True), StaffUser.role == "director")
    if login:
        stmt = select(StaffUser).where(StaffUser.login_id == login, StaffUser.active.is_(True))
    user = session.scalars(stmt.order_by(StaffUser.created_at)).first()
    if user is None:
        raise MamoriError(
            "読める控えを作る院長のアカウントがありません（[backup] readable_as）。",
            "No director account to make the readable copy under ([backup] readable_as).",
        )
    return dataclasses.replace(actor_for(user, "backup"), auth_method="schedule")


def write(
    session: Session,
    actor: Actor,
    dest: Path,
    recipients: Sequence[Any],
    when: Due,
    started: dt.datetime,
) -> tuple[fmt.Sealed, dict[str, Any]]:
    """The readable copy, sealed to ``recipients`` at ``dest``; its manifest.

    Nothing of it is ever on disk in the clear: each part (a chunk's NDJSON of one type, a
    chart PDF) is encrypted as it is made under a key that lives only in this process, and the
    tar is streamed from them straight into zstd and age."""
    t0 = time.monotonic()
    clinic = session.get(Clinic, actor.clinic_id)
    assert clinic is not None
    work = Path(tempfile.mkdtemp(prefix=".readable-", dir=dest.parent))
    stash = _Stash(work)
    try:
        ids = bulk.patient_ids(session, actor)
        counts = dict.fromkeys((*bulk.RESOURCE_TYPES, "restricted"), 0)
        changed: set[uuid.UUID] = set()
        for i, chunk in enumerate(bulk.chunks(ids)):
            got = bulk.export_chunk(
                session, actor, i, chunk, work, since=when.since, everyone=True, seen=changed,
                sink=lambda rtype, part, data: stash.put(f"fhir/{rtype}/{part}.ndjson", data),
            )  # fmt: skip
            for k, v in got.items():
                counts[k] += v
        fhir_s = time.monotonic() - t0
        charts = _charts(
            session, actor, clinic, changed if when.since else _active(session, actor), stash
        )
        manifest = {
            "format": "mamori-readable/1",
            "kind": "full" if when.since is None else "delta",
            "since": when.since.isoformat() if when.since else None,
            "started": started.isoformat(),
            "clinic": clinic.name,
            "institution_code": clinic.institution_code,
            "resources": {k: v for k, v in counts.items() if k != "restricted"},
            "patients_changed": len(changed),
            "charts": charts,
            "seconds": {
                "fhir": round(fhir_s, 1),
                "charts": round(time.monotonic() - t0 - fhir_s, 1),
            },
        }
        sealed = stash.seal(
            dest,
            recipients,
            [
                ("README.txt", README.encode()),
                ("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1).encode()),
            ],
        )
        return sealed, manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Stash:
    """Parts encrypted at rest under a key held only in memory, then streamed into one tar."""

    def __init__(self, work: Path) -> None:
        self.work, self.key = work, AESGCM(AESGCM.generate_key(bit_length=256))
        self.parts: list[tuple[str, Path]] = []

    def put(self, name: str, data: bytes) -> None:
        if not data:
            return
        nonce = os.urandom(12)
        path = self.work / f"{len(self.parts):08d}.part"
        path.write_bytes(nonce + self.key.encrypt(nonce, data, name.encode()))
        self.parts.append((name, path))

    def _get(self, name: str, path: Path) -> bytes:
        blob = path.read_bytes()
        return self.key.decrypt(blob[:12], blob[12:], name.encode())

    def seal(
        self, dest: Path, recipients: Sequence[Any], head: list[tuple[str, bytes]]
    ) -> fmt.Sealed:
        read_fd, write_fd = os.pipe()
        with ThreadPoolExecutor(1, thread_name_prefix="mamori-readable") as pool:
            sealing = pool.submit(_seal_from, read_fd, dest, recipients)
            try:
                with (
                    os.fdopen(write_fd, "wb") as pipe,
                    tarfile.open(fileobj=pipe, mode="w|") as tar,
                ):
                    for name, data in head:
                        _add(tar, name, data)
                    for name, path in self.parts:
                        _add(tar, name, self._get(name, path))
            finally:
                sealed = sealing.result()
        return sealed


def _seal_from(read_fd: int, dest: Path, recipients: Sequence[Any]) -> fmt.Sealed:
    with os.fdopen(read_fd, "rb") as src:
        return fmt.seal_file(src, dest, recipients, compress=True)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    tar.addfile(info, io.BytesIO(data))


def _active(session: Session, actor: Actor) -> set[uuid.UUID]:
    """Patients seen (a visit changed) within ``ACTIVE_DAYS``: a full copy's chart PDFs."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=ACTIVE_DAYS)
    return set(
        session.scalars(
            select(Encounter.patient_id).where(
                Encounter.clinic_id == actor.clinic_id,
                or_(Encounter.updated_at >= cutoff, Encounter.created_at >= cutoff),
            )
        )
    )


def _charts(
    session: Session, actor: Actor, clinic: Clinic, patients: set[uuid.UUID], stash: _Stash
) -> int:
    names = staff_names(session, actor)
    made = 0
    for pid in sorted(patients):
        try:
            chart = print_chart(session, actor, pid)
        except BreakGlassRequired:
            continue  # a restricted chart opens only with a person's reason
        pdf = render_chart_pdf(chart, clinic.name, "バックアップ（読める控え）", names)
        stash.put(f"charts/{chart.patient.patient_number:06d}.pdf", pdf)
        made += 1
        session.expunge_all()
    return made
