"""Services over any versioned record: history, "delete" as entered-in-error, verification."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record_system
from mamori.authz import gate
from mamori.authz.actor import Actor, Intent
from mamori.clinical.models import Document
from mamori.crypto.sealed import lenient, seal_failure
from mamori.documents.store import DocumentStore
from mamori.errors import Conflict, MamoriError, NotFound
from mamori.models import patient_scoped_models, record_types
from mamori.patients.access import patient_for
from mamori.patients.models import Patient, PatientStatus
from mamori.records.versioning import (
    ChangeKind,
    RecordVersion,
    VerifyProblem,
    Versioned,
    check_head,
    list_versions,
    verify_history,
    write_version,
)

RETRACTED = "entered-in-error"


def _model(record_type: str) -> type[Versioned]:
    """A patient's record kind; the clinic's own versioned records (an incident, its
    timeline) have their own domain's routes and checks, never these generic ones."""
    model = record_types().get(record_type)
    if model is None or not (model is Patient or model in patient_scoped_models()):
        raise NotFound("record type")
    return model


def _load(
    session: Session, actor: Actor, record_type: str, record_id: uuid.UUID, intent: Intent
) -> Versioned:
    model = _model(record_type)
    if model is Patient:
        return patient_for(session, actor, record_id, intent)  # checks the head for a write
    record = gate.record_for(session, actor, model, record_id, intent)  # type: ignore[type-var]
    if intent is Intent.WRITE:
        check_head(session, record)
    return record


def record_history(
    session: Session, actor: Actor, record_type: str, record_id: uuid.UUID
) -> list[RecordVersion]:
    """Every version of one record, oldest first: the full, readable history (ES-A3)."""
    _load(session, actor, record_type, record_id, Intent.READ)
    return list_versions(session, record_type, record_id)


def mark_entered_in_error(
    session: Session,
    actor: Actor,
    record_type: str,
    record_id: uuid.UUID,
    reason: str,
    expected_version: int,
) -> Versioned:
    """The only kind of "delete": a new version with status entered-in-error and a reason."""
    record = _load(session, actor, record_type, record_id, Intent.WRITE)
    if record.status == RETRACTED:
        raise Conflict("この記録はすでに取り消されています。", "This record is already retracted.")
    record.status = (
        PatientStatus.ENTERED_IN_ERROR.value if isinstance(record, Patient) else RETRACTED
    )
    write_version(
        session,
        actor,
        record,
        ChangeKind.ENTERED_IN_ERROR,
        reason=reason,
        expected_version=expected_version,
    )
    return record


def _check_documents(
    documents: Iterable[Document], store: DocumentStore, checked: set[str]
) -> list[VerifyProblem]:
    """Each document's stored file present, opening under its key and matching the hash its
    (sealed) record holds; each distinct file read once."""
    problems: list[VerifyProblem] = []
    for doc in documents:
        if seal_failure(doc) is not None or doc.sha256 in checked:
            continue  # a damaged record is reported by its chain check
        checked.add(doc.sha256)
        try:
            store.get(doc.sha256)
        except MamoriError as exc:
            problems.append(VerifyProblem("Document", doc.id, doc.version, f"file: {exc.en}"))
    return problems


def verify_patient_records(
    session: Session, actor: Actor, patient_id: uuid.UUID, store: DocumentStore | None = None
) -> list[VerifyProblem]:
    """Recompute the hash chain of the patient and each of their records; with ``store``,
    check their document files too."""
    patient = patient_for(session, actor, patient_id, Intent.READ, "verify")
    heads: list[Versioned] = [patient]
    problems: list[VerifyProblem] = []
    with lenient(session):  # a damaged ciphertext is one of the problems reported
        for model in patient_scoped_models():
            heads.extend(session.scalars(select(model).where(model.patient_id == patient.id)))
        for head in heads:
            problems += verify_history(list_versions(session, head.__record_type__, head.id), head)
        if store is not None:
            docs = [h for h in heads if isinstance(h, Document)]
            problems += _check_documents(docs, store, set())
    return problems


def verify_all(
    session: Session,
    clinic_id: uuid.UUID | None = None,
    batch: int = 5000,
    store: DocumentStore | None = None,
) -> tuple[int, list[VerifyProblem]]:
    """Check every record chain in the database (CLI/maintenance; no patient data leaves).

    Returns (records checked, problems). Heads and versions are both read in record-ID order
    and merged, in batches, so memory stays flat however large the clinic.
    """

    problems: list[VerifyProblem] = []
    checked = 0
    with lenient(session):  # damaged ciphertexts are reported, not fatal, here
        for record_type, model in record_types().items():
            heads_stmt = select(model).order_by(model.id)
            vers_stmt = (
                select(RecordVersion)
                .where(RecordVersion.record_type == record_type)
                .order_by(RecordVersion.record_id, RecordVersion.version)
            )
            if clinic_id is not None:
                heads_stmt = heads_stmt.where(model.clinic_id == clinic_id)
                vers_stmt = vers_stmt.where(RecordVersion.clinic_id == clinic_id)
            heads = iter(session.scalars(heads_stmt.execution_options(yield_per=batch)))
            versions = iter(session.scalars(vers_stmt.execution_options(yield_per=batch)))
            head = next(heads, None)
            version = next(versions, None)
            while head is not None or version is not None:
                if version is None or (head is not None and head.id < version.record_id):
                    problems.extend(verify_history([], head))  # head without versions
                    head, checked = next(heads, None), checked + 1
                    continue
                rid, chain = version.record_id, []
                while version is not None and version.record_id == rid:
                    chain.append(version)
                    version = next(versions, None)
                if head is not None and head.id == rid:
                    problems.extend(verify_history(chain, head))
                    head, checked = next(heads, None), checked + 1
                else:
                    problems.append(VerifyProblem(record_type, rid, None, "versions without head"))
                    problems.extend(verify_history(chain, None))
            session.expunge_all()
        if store is not None:  # and every document file behind the records
            stmt = select(Document).order_by(Document.id).execution_options(yield_per=batch)
            if clinic_id is not None:
                stmt = stmt.where(Document.clinic_id == clinic_id)
            problems.extend(_check_documents(session.scalars(stmt), store, set()))
            session.expunge_all()
    # Hashes were recomputed over every record; nothing was shown. Logged all the same.
    record_system(
        session, AuditTag.RECORDS_VERIFIED, {"records": checked, "problems": len(problems)}
    )
    return checked, problems
