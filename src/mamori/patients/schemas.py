"""Input and output shapes for patients and coverage."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mamori.clinic.calendar import clinic_today
from mamori.inputs import (
    InputModel,
    Name,
    OutputModel,
    Reason,
    ShortText,
    Text2,
    Text10,
    Text20,
    Text40,
    bad,
)
from mamori.patients import insurance
from mamori.patients.kana import is_katakana, to_katakana
from mamori.patients.models import CoverageKind, Relationship, Sex

_PHONE = re.compile(r"^0\d{9,10}$")
_POSTAL = re.compile(r"^\d{3}-?\d{4}$")
EARLIEST_BIRTH = dt.date(1890, 1, 1)


def _kana(value: str) -> str:
    kata = to_katakana(value)
    if not kata or not is_katakana(kata):
        raise bad(
            "カナ氏名は全角カタカナ（またはひらがな）で入力してください。",
            "Kana names must be katakana (or hiragana).",
        )
    return kata


def _phone(value: str) -> str:
    if not value:
        return ""
    digits = re.sub(r"[\s\-‐－()（）]", "", to_katakana(value))
    if not _PHONE.match(digits):
        raise bad(
            "電話番号は0から始まる10桁または11桁で入力してください。",
            "Phone numbers start with 0 and have 10 or 11 digits.",
        )
    return value.strip()


def _postal(value: str) -> str:
    if not value:
        return ""
    value = to_katakana(value)  # NFKC: full-width digits → ASCII
    if not _POSTAL.match(value):
        raise bad(
            "郵便番号は NNN-NNNN の形式で入力してください。", "Postal codes look like NNN-NNNN."
        )
    digits = value.replace("-", "")
    return f"{digits[:3]}-{digits[3:]}"


def _birth(value: dt.date) -> dt.date:
    if value > clinic_today() or value < EARLIEST_BIRTH:
        raise bad(
            "生年月日が正しくありません（未来や1890年より前の日付は入力できません）。",
            "Impossible birth date (in the future or before 1890).",
        )
    return value


class PatientIn(InputModel):
    family_name: Name = Field(min_length=1)
    given_name: Name = Field(min_length=1)
    family_kana: Name = Field(min_length=1)
    given_kana: Name = Field(min_length=1)
    birth_date: dt.date
    sex: Sex
    postal_code: ShortText = ""
    prefecture: Text10 = ""
    city: Name = ""
    address_line: ShortText = ""
    phone: Text20 = ""

    @field_validator("family_kana", "given_kana")
    @classmethod
    def _v_kana(cls, v: str) -> str:
        return _kana(v)

    @field_validator("phone")
    @classmethod
    def _v_phone(cls, v: str) -> str:
        return _phone(v)

    @field_validator("postal_code")
    @classmethod
    def _v_postal(cls, v: str) -> str:
        return _postal(v)

    @field_validator("birth_date")
    @classmethod
    def _v_birth(cls, v: dt.date) -> dt.date:
        return _birth(v)


class PatientNew(PatientIn):
    # registered although a patient with the same kana and birth date exists (同姓同名):
    # the person has looked at the existing record(s) and decided this is someone else
    register_anyway: bool = False
    # 事後入力: registered from a paper 新患登録票 (its pre-printed downtime number)
    downtime_number: int | None = Field(default=None, ge=1, le=999_999)


class PatientUpdate(PatientIn):
    expected_version: int = Field(ge=1)
    reason: ShortText = ""


class MergeIn(InputModel):
    duplicate_id: uuid.UUID
    reason: Reason


class PatientOut(OutputModel):
    id: uuid.UUID
    patient_number: int
    family_name: str
    given_name: str
    family_kana: str
    given_kana: str
    birth_date: dt.date
    sex: str
    postal_code: str
    prefecture: str
    city: str
    address_line: str
    phone: str
    status: str
    merged_into_id: uuid.UUID | None
    version: int
    content_hash: str
    updated_at: dt.datetime


# field → (Japanese label, English label, allowed lengths); all end in a mod-10 check digit
_NUMBERS = {
    "insurer_number": ("保険者番号", "insurer number", insurance.INSURER_LENGTHS),
    "public_payer_number": (
        "公費負担者番号",
        "public payer number",
        insurance.PUBLIC_PAYER_LENGTHS,
    ),
    "recipient_number": ("公費受給者番号", "recipient number", insurance.RECIPIENT_LENGTHS),
}


class CoverageIn(InputModel):
    kind: CoverageKind
    insurer_number: ShortText = ""
    symbol: Text40 = ""
    number: Text40 = ""
    branch: Text2 = ""
    relationship: Relationship = Relationship.SELF
    copay_percent: int | None = Field(default=None, ge=0, le=100)
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None
    public_payer_number: ShortText = ""
    recipient_number: ShortText = ""
    priority: int = Field(default=1, ge=1, le=9)

    @field_validator("insurer_number", "public_payer_number", "recipient_number")
    @classmethod
    def _checked_number(cls, v: str, info: ValidationInfo) -> str:
        if not v:
            return ""
        n = insurance.normalise_number(v)
        label_ja, label_en, lengths = _NUMBERS[info.field_name or ""]
        if not insurance.is_valid(n, lengths):
            digits = "または".join(str(x) for x in lengths)
            raise bad(
                f"{label_ja}が正しくありません（{digits}桁、検証番号を確認してください）。",
                f"Invalid {label_en} ({' or '.join(map(str, lengths))} digits with a valid "
                "check digit).",
            )
        return n

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        v = insurance.normalise_number(v)
        if v and not (v.isascii() and v.isdigit() and len(v) == 2):
            raise bad("枝番は2桁の数字です。", "The branch number (枝番) has two digits.")
        return v

    @model_validator(mode="after")
    def _by_kind(self) -> Self:
        insured = (CoverageKind.SHAHO, CoverageKind.KOKUHO, CoverageKind.KOUKI)
        if self.kind in insured and not self.insurer_number:
            raise bad(
                "この保険種別には保険者番号が必要です。",
                "This kind of coverage needs an insurer number.",
            )
        if self.kind is CoverageKind.KOUKI and not (
            len(self.insurer_number) == 8 and self.insurer_number.startswith("39")
        ):
            raise bad(
                "後期高齢者の保険者番号は法別番号39で始まる8桁です。",
                "後期高齢者 insurer numbers have 8 digits starting with 法別番号 39.",
            )
        if self.kind is CoverageKind.KOUHI and not self.public_payer_number:
            raise bad(
                "公費には公費負担者番号が必要です。", "公費 coverage needs a public payer number."
            )
        if self.valid_from and self.valid_to and self.valid_to < self.valid_from:
            raise bad("有効期限が開始日より前です。", "valid_to is before valid_from.")
        return self


class CoverageOut(OutputModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    kind: str
    insurer_number: str
    symbol: str
    number: str
    branch: str
    relationship: str
    copay_percent: int | None
    valid_from: dt.date | None
    valid_to: dt.date | None
    public_payer_number: str
    recipient_number: str
    priority: int
    status: str
    version: int
    content_hash: str
