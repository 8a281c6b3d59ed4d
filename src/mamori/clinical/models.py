"""Clinical records: encounters, progress notes, diagnoses, prescriptions, allergies,
observations and documents. All are versioned (see ``records/versioning.py``); FHIR names."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import Boolean, Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from mamori.authz.permissions import Permission, RecordAccess
from mamori.crypto.sealed import (
    SealedField,
    sealed_bool,
    sealed_int,
    sealed_json,
    sealed_opt_date,
    sealed_opt_datetime,
    sealed_opt_int,
    sealed_str,
)
from mamori.db import Base, UTCDateTime
from mamori.records.versioning import PatientRecord


class EncounterStatus(enum.StrEnum):
    PLANNED = "planned"  # 予約
    ARRIVED = "arrived"  # 受付
    IN_PROGRESS = "in-progress"  # 診察中
    BILLING = "billing"  # 会計待ち
    FINISHED = "finished"  # 終了
    CANCELLED = "cancelled"  # キャンセル
    ENTERED_IN_ERROR = "entered-in-error"


ENCOUNTER_STATUS_JA = {
    EncounterStatus.PLANNED: "予約",
    EncounterStatus.ARRIVED: "受付",
    EncounterStatus.IN_PROGRESS: "診察中",
    EncounterStatus.BILLING: "会計待ち",
    EncounterStatus.FINISHED: "終了",
    EncounterStatus.CANCELLED: "キャンセル",
    EncounterStatus.ENTERED_IN_ERROR: "取消",
}

# 受付 → 診察 → 会計 → 終了, with cancellation before the consultation starts.
ENCOUNTER_TRANSITIONS: dict[EncounterStatus, frozenset[EncounterStatus]] = {
    EncounterStatus.PLANNED: frozenset({EncounterStatus.ARRIVED, EncounterStatus.CANCELLED}),
    EncounterStatus.ARRIVED: frozenset({EncounterStatus.IN_PROGRESS, EncounterStatus.CANCELLED}),
    EncounterStatus.IN_PROGRESS: frozenset({EncounterStatus.BILLING}),
    EncounterStatus.BILLING: frozenset({EncounterStatus.FINISHED}),
    EncounterStatus.FINISHED: frozenset(),
    EncounterStatus.CANCELLED: frozenset(),
    EncounterStatus.ENTERED_IN_ERROR: frozenset(),
}


class VisitType(enum.StrEnum):
    FIRST = "first"  # 初診
    RETURN = "return"  # 再診
    ONLINE = "online"  # オンライン診療
    PHONE = "phone"  # 電話再診
    HOME = "home"  # 往診


class Encounter(PatientRecord, Base):
    __tablename__ = "encounter"
    __record_type__ = "Encounter"
    __access__ = RecordAccess(
        Permission.ENCOUNTER_READ, Permission.ENCOUNTER_WRITE, demographic=True
    )
    __content_fields__ = (
        "patient_id",
        "visit_date",
        "visit_type",
        "department",
        "attending_id",
        "coverage_id",
        "arrived_at",
        "started_at",
        "ended_at",
        "status",
        "scheduled_at",
        "purpose",
    )
    __added_fields__ = ("scheduled_at", "purpose")  # 予約 (a visit booked ahead)
    __table_args__ = (
        Index("ix_encounter_clinic_date", "clinic_id", "visit_date"),
        Index("ix_encounter_patient_date", "patient_id", "visit_date"),
    )

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"))
    visit_date: Mapped[dt.date] = mapped_column(Date)
    visit_type: Mapped[str] = mapped_column(String(10))
    department = sealed_str("内科")  # 心療内科 and the like describe the patient
    attending_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff_user.id"), nullable=True
    )
    coverage_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("coverage.id"), nullable=True)
    arrived_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # a booking's time and purpose (予約時刻・目的): sealed, ordered after opening (a day's
    # bookings are few); a walk-in has neither
    scheduled_at = sealed_opt_datetime()
    purpose = sealed_str()


class NoteKind(enum.StrEnum):
    SOAP = "soap"  # 医師の経過記録
    NURSING = "nursing"  # 看護記録


class NoteStatus(enum.StrEnum):
    DRAFT = "draft"  # 下書き (代行入力は確定待ち)
    FINAL = "final"  # 確定
    AMENDED = "amended"  # 確定後に修正 (原本は版履歴に残る)
    ENTERED_IN_ERROR = "entered-in-error"


class ProgressNote(PatientRecord, Base):
    """A SOAP or nursing note. Final (確定) notes change only by amendment (ES-A2, ES-A3);
    a proxy entry (代行入力) records the person who typed it and the physician who confirms it
    separately (ES-A4)."""

    __tablename__ = "progress_note"
    __record_type__ = "ProgressNote"
    __access__ = RecordAccess(Permission.NOTE_READ, Permission.NOTE_WRITE)
    __content_fields__ = (
        "patient_id",
        "encounter_id",
        "kind",
        "subjective",
        "objective",
        "assessment",
        "plan",
        "author_id",
        "entered_by_id",
        "is_proxy_entry",
        "finalised_by_id",
        "finalised_at",
        "status",
        "care_at",
        "downtime_number",
        "paper_ref",
    )
    # 事後入力: a note written on paper during downtime, entered after recovery
    __added_fields__ = ("care_at", "downtime_number", "paper_ref")
    __table_args__ = (Index("ix_progress_note_patient_created", "patient_id", "created_at"),)

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"))
    encounter_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("encounter.id"), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(10))
    subjective = sealed_str()
    objective = sealed_str()
    assessment = sealed_str()
    plan = sealed_str()
    author_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))  # responsible
    entered_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))  # typist
    is_proxy_entry: Mapped[bool] = mapped_column(Boolean, default=False)  # 代行入力
    finalised_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff_user.id"), nullable=True
    )
    finalised_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # 事後入力: the time of care (the paper's), its downtime number and where the paper is;
    # the entry's own time is created_at
    care_at = sealed_opt_datetime()
    downtime_number = sealed_opt_int()
    paper_ref = sealed_str()


class ConditionOutcome(enum.StrEnum):
    CONTINUING = "continuing"  # 継続
    CURED = "cured"  # 治癒
    DIED = "died"  # 死亡
    STOPPED = "stopped"  # 中止
    TRANSFERRED = "transferred"  # 転医


OUTCOME_JA = {
    ConditionOutcome.CONTINUING: "継続",
    ConditionOutcome.CURED: "治癒",
    ConditionOutcome.DIED: "死亡",
    ConditionOutcome.STOPPED: "中止",
    ConditionOutcome.TRANSFERRED: "転医",
}


class Condition(PatientRecord, Base):
    """傷病名 with 主病, 疑い, 転帰, 未告知 and 長期保存 flags."""

    __tablename__ = "condition"
    __record_type__ = "Condition"
    __access__ = RecordAccess(Permission.CONDITION_READ, Permission.CONDITION_WRITE)
    __content_fields__ = (
        "patient_id",
        "encounter_id",
        "display_name",
        "code",
        "code_system",
        "icd10",
        "is_primary",
        "is_suspected",
        "is_undisclosed",
        "is_long_term",
        "is_billing_only",
        "onset_date",
        "outcome",
        "outcome_date",
        "status",
    )

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), index=True)
    encounter_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("encounter.id"), nullable=True
    )
    display_name = sealed_str()
    code = sealed_str()
    code_system = sealed_str()
    icd10 = sealed_str()
    is_primary = sealed_bool()  # 主病
    is_suspected = sealed_bool()  # 疑い
    is_undisclosed = sealed_bool()  # 未告知
    is_long_term = sealed_bool()  # 長期保存
    is_billing_only = sealed_bool()  # レセプト病名
    onset_date = sealed_opt_date()
    outcome = sealed_str(ConditionOutcome.CONTINUING.value)
    outcome_date = sealed_opt_date()


class MedicationRequestStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"  # 発行済
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"


class MedicationRequest(PatientRecord, Base):
    """One prescription (処方箋) holding RP groups.

    ``rp_groups`` is a list of ``{"rp": 1, "usage": "1日1回朝食後", "days": 28,
    "items": [{"drug_name", "drug_code", "code_system", "dose", "unit", "generic", …}]}``;
    each RP has one 用法 and 日数 and one or more drugs (clinic-domain.md §1.7).
    """

    __tablename__ = "medication_request"
    __record_type__ = "MedicationRequest"
    __access__ = RecordAccess(Permission.PRESCRIPTION_READ, Permission.PRESCRIPTION_WRITE)
    __content_fields__ = (
        "patient_id",
        "encounter_id",
        "prescriber_id",
        "issued_on",
        "dispensing",
        "refill_count",
        "rp_groups",
        "status",
    )
    __table_args__ = (Index("ix_medication_request_patient_issued", "patient_id", "issued_on"),)

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"))
    encounter_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("encounter.id"), nullable=True
    )
    prescriber_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    issued_on: Mapped[dt.date] = mapped_column(Date)
    dispensing = sealed_str("outside")  # 院外 / inside 院内
    refill_count = sealed_int()  # リフィル
    rp_groups: SealedField[list[dict[str, Any]]] = sealed_json()

    @property
    def max_days(self) -> int:
        return max((int(g.get("days") or 0) for g in self.rp_groups), default=0)


class AllergyIntolerance(PatientRecord, Base):
    __tablename__ = "allergy_intolerance"
    __record_type__ = "AllergyIntolerance"
    __access__ = RecordAccess(Permission.ALLERGY_READ, Permission.ALLERGY_WRITE)
    __content_fields__ = (
        "patient_id",
        "category",
        "substance",
        "substance_code",
        "code_system",
        "reaction",
        "severity",
        "is_contraindication",
        "verification",
        "onset_date",
        "status",
    )

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), index=True)
    category = sealed_str()  # medication|food|environment|biologic
    substance = sealed_str()
    substance_code = sealed_str()
    code_system = sealed_str()
    reaction = sealed_str()
    severity = sealed_str()  # mild|moderate|severe
    is_contraindication = sealed_bool()  # 薬剤禁忌
    verification = sealed_str("unconfirmed")
    onset_date = sealed_opt_date()


class Observation(PatientRecord, Base):
    """Vitals and lab values. Values are decimal strings (never floats: hashes must be exact)."""

    __tablename__ = "observation"
    __record_type__ = "Observation"
    __access__ = RecordAccess(Permission.OBSERVATION_READ, Permission.OBSERVATION_WRITE)
    __content_fields__ = (
        "patient_id",
        "encounter_id",
        "category",
        "code",
        "code_system",
        "name",
        "value",
        "value_text",
        "unit",
        "ref_low",
        "ref_high",
        "abnormal_flag",
        "effective_at",
        "status",
    )
    __table_args__ = (Index("ix_observation_patient_effective", "patient_id", "effective_at"),)

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"))
    encounter_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("encounter.id"), nullable=True
    )
    category: Mapped[str] = mapped_column(String(12))  # vital-signs | laboratory
    code = sealed_str()  # a test's code says what was looked for (HIV, hCG…)
    code_system = sealed_str()
    name = sealed_str()
    value = sealed_str()
    value_text = sealed_str()
    unit = sealed_str()
    ref_low = sealed_str()
    ref_high = sealed_str()
    abnormal_flag = sealed_str()  # H | L | ""
    effective_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Document(PatientRecord, Base):
    """A referral letter, scan or photo. The bytes live encrypted in the document store."""

    __tablename__ = "document"
    __record_type__ = "Document"
    __access__ = RecordAccess(
        Permission.DOCUMENT_READ, Permission.DOCUMENT_WRITE, aliases=("DocumentReference",)
    )
    __content_fields__ = (
        "patient_id",
        "encounter_id",
        "doc_type",
        "direction",
        "title",
        "document_date",
        "mime_type",
        "size_bytes",
        "sha256",
        "status",
    )

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), index=True)
    encounter_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("encounter.id"), nullable=True
    )
    doc_type = sealed_str()
    direction: Mapped[str] = mapped_column(String(10), default="in")
    title = sealed_str()
    document_date: Mapped[dt.date] = mapped_column(Date)
    mime_type = sealed_str()
    size_bytes = sealed_int()
    sha256 = sealed_str()  # of the plaintext; the stored file is named by a keyed hash
