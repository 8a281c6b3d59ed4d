"""Progress notes (経過記録): drafts, 確定 with who and when, amendments with a reason, and proxy
entries (代行入力) a named physician confirms."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.orm import Session

from mamori.authz import gate
from mamori.authz.actor import Actor, Intent
from mamori.authz.permissions import Permission
from mamori.authz.roles import Role
from mamori.clinical.models import (
    Encounter,
    NoteKind,
    NoteStatus,
    ProgressNote,
)
from mamori.clinical.schemas import (
    NoteAmend,
    NoteEdit,
    NoteIn,
)
from mamori.clinical.service import clinic_staff, same_patient_visit
from mamori.continuity.entries import claim
from mamori.db import utcnow
from mamori.errors import Conflict, InvalidInput, NotAllowed, NoteAlreadyFinal
from mamori.patients.service import active_patient
from mamori.records.reader import Where, read_views
from mamori.records.versioning import ChangeKind, record_checked, record_for_write, write_version


def write_note(session: Session, actor: Actor, patient_id: uuid.UUID, data: NoteIn) -> ProgressNote:
    """A draft note. With ``proxy_for_id`` it is a 代行入力: the typist is recorded separately
    and only the named physician can confirm it."""
    patient = active_patient(session, actor, patient_id, "ProgressNote")
    same_patient_visit(session, actor, Encounter, data.encounter_id, patient.id)
    if actor.role is Role.SCRIBE:
        # 医師事務作業補助者: every entry is a proxy entry for a named physician, who alone
        # confirms it; a scribe writes no note of their own (not even a nursing note)
        if data.kind is NoteKind.NURSING:
            raise NotAllowed(
                "医師事務作業補助者は看護記録を書けません。",
                "A scribe does not write nursing notes.",
                field="kind",
            )
        if data.proxy_for_id is None or data.proxy_for_id == actor.user_id:
            raise InvalidInput(
                "医師事務作業補助者の入力は代行入力として承認医を指定してください。",
                "A scribe's entry must name the confirming physician (proxy_for_id).",
                field="proxy_for_id",
            )
    author_id = actor.user_id
    is_proxy = False
    if data.proxy_for_id is not None and data.proxy_for_id != actor.user_id:
        physician = clinic_staff(session, actor, data.proxy_for_id, "proxy_for_id")
        if not Role(physician.role).signs_clinical_records:
            raise InvalidInput(
                "代行入力の承認者は医師を指定してください。",
                "A proxy entry must name a physician to confirm it.",
                field="proxy_for_id",
            )
        author_id, is_proxy = physician.id, True
    elif not actor.can(Permission.NOTE_SIGN) and data.kind is not NoteKind.NURSING:
        raise NotAllowed(
            "看護師が書けるのは看護記録です（SOAP の経過記録は医師が記載します）。",
            "Nurses write nursing notes; SOAP progress notes are the physician's.",
            field="kind",
        )
    note = ProgressNote(
        patient_id=patient.id,
        encounter_id=data.encounter_id,
        kind=data.kind.value,
        subjective=data.subjective,
        objective=data.objective,
        assessment=data.assessment,
        plan=data.plan,
        author_id=author_id,
        entered_by_id=actor.user_id,
        is_proxy_entry=is_proxy,
        finalised_by_id=None,
        finalised_at=None,
        status=NoteStatus.DRAFT.value,
    )
    if data.late is not None:  # 事後入力: the paper's time of care and its downtime number
        note.care_at = data.late.care_at
        note.downtime_number = data.late.downtime_number
        note.paper_ref = data.late.paper_ref
    write_version(session, actor, note, ChangeKind.CREATED)
    if data.late is not None:
        claim(session, actor, data.late.downtime_number, "ProgressNote", note.id)
    return note


def _set_sections(note: ProgressNote, data: NoteEdit | NoteAmend) -> None:
    note.subjective = data.subjective
    note.objective = data.objective
    note.assessment = data.assessment
    note.plan = data.plan


def edit_draft(session: Session, actor: Actor, note_id: uuid.UUID, data: NoteEdit) -> ProgressNote:
    note = record_for_write(session, actor, ProgressNote, note_id)
    if note.status != NoteStatus.DRAFT:
        raise NoteAlreadyFinal()
    if actor.user_id not in (note.author_id, note.entered_by_id):
        raise NotAllowed(
            "下書きを編集できるのは作成者だけです。",
            "Only the note's author or typist may edit a draft.",
        )
    _set_sections(note, data)
    write_version(session, actor, note, ChangeKind.UPDATED, expected_version=data.expected_version)
    return note


def may_sign(actor: Actor, note: ProgressNote) -> bool:
    """Who may finalise (確定) a note: the physician a proxy entry names (ES-A4); a nursing
    note, the nurse who wrote it (normal practice) or a physician; a SOAP note, the physician
    who wrote it. A scribe finalises nothing, whatever a note's fields say."""
    if actor.role is Role.SCRIBE:
        return False
    if note.is_proxy_entry:
        return actor.user_id == note.author_id and actor.can(Permission.NOTE_SIGN)
    if note.kind == NoteKind.NURSING:
        return actor.user_id == note.author_id or actor.can(Permission.NOTE_SIGN)
    return actor.can(Permission.NOTE_SIGN) and actor.user_id == note.author_id


def finalise_note(
    session: Session, actor: Actor, note_id: uuid.UUID, expected_version: int
) -> ProgressNote:
    """確定: records who finalised and when (ES-A2); a proxy entry becomes confirmed."""
    note = record_for_write(session, actor, ProgressNote, note_id)
    if note.status != NoteStatus.DRAFT:
        raise NoteAlreadyFinal()
    if not may_sign(actor, note):
        raise NotAllowed(
            "この記録を確定できるのは責任者の医師（看護記録は記載者）だけです。",
            "Only the responsible physician (or the nurse for a nursing note) "
            "may finalise this note.",
        )
    note.status = NoteStatus.FINAL.value
    note.finalised_by_id = actor.user_id
    note.finalised_at = utcnow()
    kind = ChangeKind.CONFIRMED if note.is_proxy_entry else ChangeKind.FINALISED
    write_version(session, actor, note, kind, expected_version=expected_version)
    return note


def amend_note(session: Session, actor: Actor, note_id: uuid.UUID, data: NoteAmend) -> ProgressNote:
    """Change a finalised note: a new ``amended`` version with a reason; the original stays
    readable in the history (ES-A3)."""
    note = record_for_write(session, actor, ProgressNote, note_id)
    if note.status not in (NoteStatus.FINAL, NoteStatus.AMENDED):
        raise Conflict(
            "確定前の記録は修正ではなく編集してください。",
            "Only finalised notes are amended; edit the draft instead.",
        )
    allowed = actor.can(Permission.NOTE_SIGN) or (
        note.kind == NoteKind.NURSING and actor.user_id == note.author_id
    )
    if not allowed:
        raise NotAllowed(
            "確定済みの記録を修正できるのは医師（看護記録は記載者）だけです。",
            "Only a physician (or the nurse for a nursing note) may amend.",
        )
    _set_sections(note, data)
    note.status = NoteStatus.AMENDED.value
    note.finalised_by_id = actor.user_id
    note.finalised_at = utcnow()
    write_version(
        session,
        actor,
        note,
        ChangeKind.AMENDED,
        reason=data.reason,
        expected_version=data.expected_version,
    )
    return note


def get_note(session: Session, actor: Actor, note_id: uuid.UUID) -> ProgressNote:
    return record_checked(session, actor, ProgressNote, note_id, Intent.READ)


def list_notes(
    session: Session,
    actor: Actor,
    patient_id: uuid.UUID,
    limit: int = 20,
    include_retracted: bool = False,
) -> Sequence[ProgressNote]:
    patient = gate.patient_ref(session, actor, patient_id, Intent.READ, "ProgressNote")
    where: list[Where] = [("patient_id", "=", patient.id)]
    if not include_retracted:
        where.append(("status", "!=", NoteStatus.ENTERED_IN_ERROR.value))
    return read_views(session, ProgressNote, where, order_by=[("created_at", True)], limit=limit)
