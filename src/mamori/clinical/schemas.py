"""Input and output shapes for clinical records."""

from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mamori.clinic.calendar import JST, clinic_today
from mamori.clinical.models import (
    ConditionOutcome,
    EncounterStatus,
    NoteKind,
    VisitType,
)
from mamori.db import utcnow
from mamori.inputs import (
    InputModel,
    LongText,
    OutputModel,
    Reason,
    ShortText,
    Text10,
    Text20,
    Text40,
    Text100,
    Text500,
    bad,
)


def _decimal_text(value: str) -> str:
    if value == "":
        return ""
    try:
        d = decimal.Decimal(value)
    except decimal.InvalidOperation:
        raise bad("数値を入力してください。", "Enter a number.") from None
    if not d.is_finite():
        raise bad("数値を入力してください。", "Enter a finite number.")
    return str(d)


class Versioned_(OutputModel):  # noqa: N801 - base of every versioned output shape
    id: uuid.UUID
    status: str
    version: int
    content_hash: str
    created_at: dt.datetime
    created_by_id: uuid.UUID
    updated_at: dt.datetime
    updated_by_id: uuid.UUID


class EncounterIn(InputModel):
    visit_date: dt.date | None = None
    # None: 初診 when the patient has no earlier visit, else 再診
    visit_type: VisitType | None = None
    # a second open visit the same day is refused unless the person confirms it is meant
    again: bool = False
    department: Text40 = "内科"
    attending_id: uuid.UUID | None = None
    coverage_id: uuid.UUID | None = None


class EncounterTransitionIn(InputModel):
    status: EncounterStatus
    expected_version: int = Field(ge=1)


class EncounterOut(Versioned_):
    patient_id: uuid.UUID
    visit_date: dt.date
    visit_type: str
    department: str
    attending_id: uuid.UUID | None
    coverage_id: uuid.UUID | None
    arrived_at: dt.datetime | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    scheduled_at: dt.datetime | None  # 予約: the booked time
    purpose: str


class NoteSections(InputModel):
    subjective: LongText = ""
    objective: LongText = ""
    assessment: LongText = ""
    plan: LongText = ""

    @model_validator(mode="after")
    def _not_empty(self) -> NoteSections:
        if not (self.subjective or self.objective or self.assessment or self.plan):
            raise bad("記録の本文が空です。", "The note is empty.")
        return self


class LateEntry(InputModel):
    """事後入力: the paper form a note is typed from after downtime."""

    downtime_number: int = Field(ge=1, le=999_999)  # DT-000123 printed on the form
    care_at: dt.datetime  # when the care happened (what the paper says), not the typing
    paper_ref: Text100 = ""  # where the paper is kept (綴り・箱)

    @field_validator("care_at")
    @classmethod
    def _past(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            v = v.replace(tzinfo=JST)  # a time typed at the clinic is the clinic's time
        if v > utcnow() + dt.timedelta(minutes=5):
            raise bad("診療日時が未来になっています。", "The time of care is in the future.")
        return v


class NoteIn(NoteSections):
    kind: NoteKind = NoteKind.SOAP
    encounter_id: uuid.UUID | None = None
    proxy_for_id: uuid.UUID | None = None  # 代行入力: the physician who must confirm
    late: LateEntry | None = None  # 事後入力 from a paper form


class NoteEdit(NoteSections):
    expected_version: int = Field(ge=1)


class NoteAmend(NoteSections):
    expected_version: int = Field(ge=1)
    reason: Reason


class VersionedAction(InputModel):
    expected_version: int = Field(ge=1)


class EnteredInErrorIn(InputModel):
    expected_version: int = Field(ge=1)
    reason: Reason


class NoteOut(Versioned_):
    patient_id: uuid.UUID
    encounter_id: uuid.UUID | None
    kind: str
    subjective: str
    objective: str
    assessment: str
    plan: str
    author_id: uuid.UUID
    entered_by_id: uuid.UUID
    is_proxy_entry: bool
    finalised_by_id: uuid.UUID | None
    finalised_at: dt.datetime | None
    care_at: dt.datetime | None  # 事後入力: the time of care
    downtime_number: int | None
    paper_ref: str


# a letter, two digits, optionally a dot and up to four more (E11, E11.9, S72.001, U07.1)
ICD10 = re.compile(r"[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?")


class ConditionIn(InputModel):
    display_name: ShortText = Field(min_length=1)
    encounter_id: uuid.UUID | None = None
    code: Text20 = ""
    code_system: ShortText = ""
    icd10: Text10 = ""
    is_primary: bool = False
    is_suspected: bool = False
    is_undisclosed: bool = False
    is_long_term: bool = False
    is_billing_only: bool = False
    onset_date: dt.date | None = None
    outcome: ConditionOutcome = ConditionOutcome.CONTINUING
    outcome_date: dt.date | None = None

    @model_validator(mode="after")
    def _dates(self) -> ConditionIn:
        self.icd10 = self.icd10.strip().upper()
        if self.icd10 and not ICD10.fullmatch(self.icd10):
            raise bad(
                "ICD-10 コードの形式が正しくありません（例: E11, E11.9, I10）。",
                "Not an ICD-10 code (e.g. E11, E11.9, I10).",
            )
        if self.onset_date and self.onset_date > clinic_today():
            raise bad("発症日が未来の日付です。", "Onset date is in the future.")
        if self.outcome_date and self.onset_date and self.outcome_date < self.onset_date:
            raise bad("転帰日が発症日より前です。", "Outcome date is before the onset date.")
        if self.outcome is not ConditionOutcome.CONTINUING and self.outcome_date is None:
            raise bad(
                "転帰を入力するときは転帰日も入力してください。",
                "An outcome needs an outcome date.",
            )
        return self


class ConditionUpdate(ConditionIn):
    expected_version: int = Field(ge=1)


class ConditionOut(Versioned_):
    patient_id: uuid.UUID
    encounter_id: uuid.UUID | None
    display_name: str
    code: str
    code_system: str
    icd10: str
    is_primary: bool
    is_suspected: bool
    is_undisclosed: bool
    is_long_term: bool
    is_billing_only: bool
    onset_date: dt.date | None
    outcome: str
    outcome_date: dt.date | None


class DrugIn(InputModel):
    drug_name: ShortText = Field(min_length=1)
    drug_code: Text20 = ""
    code_system: ShortText = ""
    dose: str
    unit: Text20 = Field(min_length=1)
    per: Literal["dose", "day"] = "day"  # 1回量 or 1日量
    generic: bool = False  # 一般名処方
    no_substitution: bool = False  # 後発品変更不可
    comment: ShortText = ""

    @field_validator("dose")
    @classmethod
    def _dose(cls, v: str) -> str:
        v = _decimal_text(v.strip())
        if not v or decimal.Decimal(v) <= 0:
            raise bad("用量は正の数で入力してください。", "The dose must be a positive number.")
        return v


class RpGroupIn(InputModel):
    usage: Text100 = Field(min_length=1)  # 用法
    days: int = Field(ge=1, le=365)  # 日数 (or 回数)
    items: list[DrugIn] = Field(min_length=1, max_length=20)


class MedicationRequestIn(InputModel):
    encounter_id: uuid.UUID | None = None
    issued_on: dt.date | None = None
    dispensing: Literal["outside", "inside"] = "outside"
    refill_count: int = Field(default=0, ge=0, le=3)
    rp_groups: list[RpGroupIn] = Field(min_length=1, max_length=30)
    allergy_override_reason: Text500 = ""  # needed to prescribe against a 薬剤禁忌

    def groups_as_json(self) -> list[dict[str, Any]]:
        return [
            {"rp": i, "usage": g.usage, "days": g.days, "items": [d.model_dump() for d in g.items]}
            for i, g in enumerate(self.rp_groups, start=1)
        ]


class MedicationRequestOut(Versioned_):
    patient_id: uuid.UUID
    encounter_id: uuid.UUID | None
    prescriber_id: uuid.UUID
    issued_on: dt.date
    dispensing: str
    refill_count: int
    rp_groups: list[dict[str, Any]]


class PrescriptionResult(OutputModel):
    medication_request: MedicationRequestOut
    warnings: list[dict[str, str]]


class AllergyIn(InputModel):
    category: Literal["medication", "food", "environment", "biologic"]
    substance: ShortText = Field(min_length=1)
    substance_code: Text20 = ""
    code_system: ShortText = ""
    reaction: Text500 = ""
    severity: Literal["", "mild", "moderate", "severe"] = ""
    is_contraindication: bool = False  # 薬剤禁忌
    verification: Literal["unconfirmed", "confirmed", "refuted"] = "unconfirmed"
    onset_date: dt.date | None = None


class AllergyOut(Versioned_):
    patient_id: uuid.UUID
    category: str
    substance: str
    substance_code: str
    code_system: str
    reaction: str
    severity: str
    is_contraindication: bool
    verification: str
    onset_date: dt.date | None


class ObservationIn(InputModel):
    encounter_id: uuid.UUID | None = None
    category: Literal["vital-signs", "laboratory"]
    code: Text20 = Field(min_length=1)
    code_system: ShortText = ""
    name: Text100 = Field(min_length=1)
    value: str = ""
    value_text: ShortText = ""
    unit: Text20 = ""
    ref_low: str = ""
    ref_high: str = ""
    effective_at: dt.datetime | None = None

    @field_validator("value", "ref_low", "ref_high")
    @classmethod
    def _num(cls, v: str) -> str:
        return _decimal_text(v.strip())

    @field_validator("effective_at")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise bad(
                "日時にはタイムゾーン（例: +09:00）を付けてください。",
                "Date-times need a time zone offset (e.g. +09:00).",
            )
        return v

    @model_validator(mode="after")
    def _value(self) -> ObservationIn:
        if not self.value and not self.value_text:
            raise bad("結果の値を入力してください。", "Enter a result value.")
        if self.value and not self.unit:
            raise bad("数値の結果には単位が必要です。", "Numeric results need a unit.")
        return self


class ObservationOut(Versioned_):
    patient_id: uuid.UUID
    encounter_id: uuid.UUID | None
    category: str
    code: str
    code_system: str
    name: str
    value: str
    value_text: str
    unit: str
    ref_low: str
    ref_high: str
    abnormal_flag: str
    effective_at: dt.datetime


DOC_TYPES = ("referral", "reply", "certificate", "report", "consent", "photo", "scan", "other")


class DocumentOut(Versioned_):
    patient_id: uuid.UUID
    encounter_id: uuid.UUID | None
    doc_type: str
    direction: str
    title: str
    document_date: dt.date
    mime_type: str
    size_bytes: int
    sha256: str


class VersionOut(OutputModel):
    version: int
    change: str
    status: str
    content: dict[str, Any]
    changed_by_id: uuid.UUID
    changed_at: dt.datetime
    reason: str
    prev_hash: str | None
    content_hash: str


class DocumentMeta(InputModel):
    doc_type: Literal[
        "referral", "reply", "certificate", "report", "consent", "photo", "scan", "other"
    ]
    direction: Literal["in", "out", "internal"] = "in"
    title: ShortText = Field(min_length=1)
    document_date: dt.date | None = None
    encounter_id: uuid.UUID | None = None
