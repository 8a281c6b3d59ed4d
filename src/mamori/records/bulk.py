"""Bulk loading of versioned records (synthetic data, imports).

Rows are built as mappings and sealed with the same :func:`seal_version` the services use, so
a bulk-loaded record verifies exactly like one written through the API. Inserts go out in
foreign-key order in batches (executemany), which is what makes the L dataset practical.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from mamori.audit import merkle
from mamori.audit.trail import AuditTag, record_system
from mamori.crypto.sealed import keyring_of, seal_mapping
from mamori.db import new_id
from mamori.records.versioning import (
    ChangeKind,
    PatientRecord,
    RecordVersion,
    Versioned,
    content_of,
    seal_version,
    versioned_models,
)


class BulkWriter:
    def __init__(
        self, session: Session, clinic_id: uuid.UUID, id_factory: Callable[[], uuid.UUID] = new_id
    ) -> None:
        self.session = session
        self.clinic_id = clinic_id
        self.new_id = id_factory
        self.rows: dict[type[Versioned], list[dict[str, Any]]] = defaultdict(list)
        self.versions: list[dict[str, Any]] = []
        self.counts: dict[str, int] = defaultdict(int)
        self.version_count = 0

    def pending(self) -> int:
        return len(self.versions)

    def add(
        self,
        model: type[Versioned],
        values: dict[str, Any],
        *,
        by: uuid.UUID,
        at: dt.datetime,
        reason: str = "",
    ) -> dict[str, Any]:
        """Queue a new record (version 1). Returns the row mapping for later revisions."""
        values.update(
            id=self.new_id(),
            clinic_id=self.clinic_id,
            version=0,
            created_at=at,
            updated_at=at,
            created_by_id=by,
            updated_by_id=by,
            content_hash="",
        )
        self.rows[model].append(values)
        self._seal(model, values, ChangeKind.CREATED, by, at, reason)
        self.counts[model.__record_type__] += 1
        return values

    def revise(
        self,
        model: type[Versioned],
        values: dict[str, Any],
        change: ChangeKind,
        *,
        by: uuid.UUID,
        at: dt.datetime,
        reason: str = "",
        **changes: Any,
    ) -> None:
        """Apply changes to a row still queued (not yet flushed) and append its next version."""
        values.update(changes, updated_at=at, updated_by_id=by)
        self._seal(model, values, change, by, at, reason)

    def _seal(
        self,
        model: type[Versioned],
        values: dict[str, Any],
        change: ChangeKind,
        by: uuid.UUID,
        at: dt.datetime,
        reason: str,
    ) -> None:
        pid = values.get("patient_id") if issubclass(model, PatientRecord) else values["id"]
        sealed = seal_version(
            record_type=model.__record_type__,
            record_id=values["id"],
            clinic_id=self.clinic_id,
            patient_id=pid,
            version=values["version"] + 1,
            change=change,
            status=values["status"],
            content=content_of(model, values),
            changed_by_id=by,
            changed_at=at,
            reason=reason,
            prev_hash=values["content_hash"] or None,
            version_id=self.new_id(),
        )
        values["version"] = sealed["version"]
        values["content_hash"] = sealed["content_hash"]
        self.versions.append(sealed)

    def flush(self) -> None:
        # Core executemany on the session's connection: one batched statement per table,
        # with the same column types (UTC datetimes, UUIDs) as the ORM would apply.
        # Rows are sealed here, once their last version is known (the version is part of the
        # ciphertext's associated data), by the same code the ORM uses.
        conn = self.session.connection()
        keyring = keyring_of(self.session)
        for model in versioned_models():  # foreign-key order: patients first
            rows = self.rows.get(model)
            if rows:
                sealed = [seal_mapping(keyring, model, r) for r in rows]
                conn.execute(insert(model.__table__), sealed)  # type: ignore[attr-defined]
                rows.clear()
        if self.versions:
            batch = self.new_id()
            for v in self.versions:
                v["import_batch"] = batch
            sealed = [seal_mapping(keyring, RecordVersion, v) for v in self.versions]
            conn.execute(insert(RecordVersion.__table__), sealed)  # type: ignore[arg-type]
            # One event per batch: the log shows that, when and how much was bulk-loaded, with
            # a Merkle root over the batch's version hashes (per-version events would be
            # millions of rows for an L clinic). ``mamori audit verify`` recomputes the root
            # from the rows that name the batch (``merkle.batch_root``).
            record_system(
                self.session,
                AuditTag.DATA_IMPORTED,
                {
                    "batch": str(batch),
                    "versions": len(self.versions),
                    "versions_root": merkle.batch_root(
                        v["content_hash"] for v in self.versions
                    ).hex(),
                    "first_version": str(self.versions[0]["id"]),
                },
            )
            self.version_count += len(self.versions)
            self.versions.clear()
