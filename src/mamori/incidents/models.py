"""The incident register (インシデント台帳).

* ``incident``: one incident, a versioned record — every change (stage, owner, the
  reportability decision, a report marked sent) is a new version, hash-chained and audited
  like a clinical record; its free text is sealed. ``steps`` is the playbook as it stood when
  the incident was opened (canonical JSON), so a later edit of the playbook never rewrites a
  running response.
* ``incident_entry``: the timeline — what was seen, each step checked off, each decision, each
  reminder — written once (version 1) and never changed; an edit or a deletion behind
  mamori's back breaks the record chain and the audit log that names its hash.
* ``incident_notice``: a notice letter to one affected patient, a record about that patient
  (to whom, how, when, to which address).
* ``incident_playbook``: the clinic's own response steps for one kind of incident (absent:
  the shipped defaults, ``playbooks.json``).
* ``incident_contact``: the contact chart (連絡体制図): the clinic's own escalation list and
  the outside bodies, names and numbers sealed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mamori.authz.permissions import Permission, RecordAccess
from mamori.crypto.sealed import Sealed, sealed_str
from mamori.db import Base, UTCDateTime, new_id, utcnow
from mamori.records.versioning import PatientRecord, Versioned

INCIDENT_ACCESS = RecordAccess(Permission.INCIDENT_READ, Permission.INCIDENT_MANAGE)


class Incident(Versioned, Base):
    """One incident: what happened, who runs it, where the response stands, and the APPI
    decision and reports."""

    __tablename__ = "incident"
    __record_type__ = "Incident"
    __access__ = INCIDENT_ACCESS
    __content_fields__ = (
        "number",
        "kind",
        "stage",
        "severity",
        "knew_on",
        "occurred_on",
        "reporter_id",
        "owner_id",
        "title",
        "seen",
        "place",
        "device",
        "source",
        "steps",
        "malicious",
        "encrypted",
        "reportable",
        "decision_reason",
        "decided_by_id",
        "decided_on",
        "prompt_sent_on",
        "final_sent_on",
        "published_on",
        "review_result",
        "review_leak",
        "review_missing",
        "closed_on",
        "entries",
    )
    __table_args__ = (UniqueConstraint("clinic_id", "number"),)
    __clinic_index__ = False  # the unique (clinic_id, number) serves

    number: Mapped[int] = mapped_column(Integer)  # No.1, No.2 … per clinic
    kind: Mapped[str] = mapped_column(String(24))  # see service.KINDS
    stage: Mapped[str] = mapped_column(
        String(16), default="open"
    )  # open|contained|recovering|closed
    severity: Mapped[str] = mapped_column(String(12), default="unknown")
    knew_on: Mapped[dt.date] = mapped_column(Date)  # 知った日: the APPI clock starts here
    occurred_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    reporter_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    owner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_user.id"), nullable=True)
    title = sealed_str()
    seen = sealed_str()  # BCP 2-2: what was seen
    place = sealed_str()  # where (発生場所・箇所)
    device = sealed_str()  # which device
    # where it came from: "report" (a staff member's 「インシデントかも？」), "direct",
    # "detection-case:<id>", "alert:<id>", "backup-alarm", "audit-verify", "device:<hash>"
    source: Mapped[str] = mapped_column(String(80), default="report")
    steps: Mapped[str] = mapped_column(String(8000), default="[]")  # the playbook, as opened
    malicious: Mapped[bool] = mapped_column(Boolean, default=False)  # 不正の目的のおそれ
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)  # 高度な暗号化で保護
    reportable: Mapped[str] = mapped_column(String(8), default="")  # "" undecided | yes | no
    decision_reason = sealed_str()
    decided_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff_user.id"), nullable=True
    )
    decided_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    prompt_sent_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)  # 速報
    final_sent_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)  # 確報
    published_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)  # 公表
    review_result = sealed_str()  # 事後対応: the result
    review_leak = sealed_str()  # leaked, not leaked, unknown — and how that was established
    review_missing = sealed_str()  # what was missing (contacts, preparation)
    closed_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    # how many timeline entries there are: each entry is a new version of the incident, so a
    # deleted entry row is seen as a count that no longer matches the hash-chained head
    entries: Mapped[int] = mapped_column(Integer, default=0)


class IncidentEntry(Versioned, Base):
    """One line of an incident's timeline, attributable and never changed."""

    __tablename__ = "incident_entry"
    __record_type__ = "IncidentEntry"
    __access__ = INCIDENT_ACCESS
    __content_fields__ = ("incident_id", "kind", "step_no", "outcome", "text", "owner_id", "due_on")
    __clinic_index__ = False
    __table_args__ = (Index("ix_incident_entry_incident_created", "incident_id", "created_at"),)

    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incident.id"))
    # opened | note | step | stage | decision | sent | notice | measure | reminder | affected
    kind: Mapped[str] = mapped_column(String(16))
    step_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default="")  # a step: done | skipped
    text = sealed_str()
    owner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_user.id"), nullable=True)
    due_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)  # a measure's date


class IncidentNotice(PatientRecord, Base):
    """A notice to one affected patient (規則第10条): how it went, when, to which address."""

    __tablename__ = "incident_notice"
    __record_type__ = "IncidentNotice"
    __access__ = RecordAccess(
        Permission.INCIDENT_READ, Permission.INCIDENT_MANAGE, demographic=True
    )
    __content_fields__ = ("incident_id", "patient_id", "method", "sent_on", "address")
    # one notice per incident and patient: when two registrations of one person were both
    # notified, a merge leaves the duplicate's notice on the duplicate (what was sent, to
    # which registration's address, stays as it happened) instead of refusing the merge
    __merge_unique__ = ("incident_id",)
    __table_args__ = (
        UniqueConstraint("incident_id", "patient_id"),
        Index("ix_incident_notice_patient", "patient_id"),
    )

    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incident.id"))
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"))
    method: Mapped[str] = mapped_column(String(12))  # mail | hand | phone | public
    sent_on: Mapped[dt.date] = mapped_column(Date)
    address = sealed_str()  # the address the letter went to, as it was


class IncidentPlaybook(Base):
    """The clinic's response steps for one kind of incident (an edit is a new version)."""

    __tablename__ = "incident_playbook"
    __table_args__ = (UniqueConstraint("clinic_id", "kind"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"))
    kind: Mapped[str] = mapped_column(String(24))
    version: Mapped[int] = mapped_column(Integer, default=1)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{title, role, action}]
    updated_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IncidentContact(Sealed, Base):
    """One line of the contact chart: who is called for what, with a deputy and a number."""

    __tablename__ = "incident_contact"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    scope: Mapped[str] = mapped_column(String(12))  # internal | external
    duty: Mapped[str] = mapped_column(String(24))  # see service.DUTIES
    position: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    organisation = sealed_str()
    name = sealed_str()
    deputy = sealed_str()
    phone = sealed_str()
    when_to_call = sealed_str()
