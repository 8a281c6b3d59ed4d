"""Patient (患者) and insurance coverage (保険). There is deliberately no field for the
マイナンバー (個人番号): clinics must not hold it (clinic-domain.md §1.4)."""

from __future__ import annotations

import datetime as dt
import enum
import re
import unicodedata
import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mamori.authz.permissions import Permission, RecordAccess
from mamori.crypto.keyring import BlindIndex
from mamori.crypto.sealed import (
    Getter,
    IndexSpec,
    sealed_date,
    sealed_int,
    sealed_opt_date,
    sealed_opt_int,
    sealed_str,
)
from mamori.db import Base
from mamori.patients.kana import search_key
from mamori.records.versioning import PatientRecord, Versioned

# Blind indexes (HMAC under the index key, per clinic). Exact 患者番号: 62 bits, so it can
# also be unique per clinic. Kana prefixes of the search key (family + given, normalised),
# whole kana and birth date: few bits on purpose, so each value stands for many patients;
# candidates are decrypted and tested exactly. What they leak: docs/architecture.md.
NUMBER = BlindIndex("patient-number", 62)
KANA2 = BlindIndex("kana-prefix-2", 8)
KANA4 = BlindIndex("kana-prefix-4", 14)
KANA = BlindIndex("kana", 16)
BIRTH = BlindIndex("birth-date", 12)
INSURANCE = BlindIndex("insurance", 16)
# searched as a whole (few bits: each value stands for many; candidates decrypted and tested)
NAME = BlindIndex("name-part", 16)  # family or given name as written (kanji), either one
GIVEN_KANA = BlindIndex("given-kana", 16)  # メイ alone
PHONE = BlindIndex("phone", 16)  # the digits of the number


def name_key(text: str) -> str:
    """A name as written, for whole-name search: NFKC, no spaces ("佐藤" / "佐 藤" alike)."""
    return re.sub(r"\s", "", unicodedata.normalize("NFKC", text or ""))


def phone_key(text: str) -> str:
    """The digits of a phone number ("03-3812-0000" and "0338120000" alike)."""
    return re.sub(r"\D", "", unicodedata.normalize("NFKC", text or ""))


def _kana(get: Getter) -> str:
    return search_key(str(get("family_kana") or "")) + search_key(str(get("given_kana") or ""))


def _kana4(get: Getter) -> str | None:
    key = _kana(get)
    return key[:4] if len(key) >= 4 else None


def _iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, dt.date) else None


def insurance_key(insurer_number: str, number: str) -> str:
    """保険者番号 + 被保険者番号 (記号は表記揺れが多いので照合に使わない)."""
    return f"{insurer_number.strip()}|{search_key(number) or number.strip()}"


class Sex(enum.StrEnum):
    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


# how a printed page writes the sex (the chart summary, the 処方箋, letters, the day sheet)
SEX_JA: dict[str, str] = {
    Sex.MALE.value: "男",
    Sex.FEMALE.value: "女",
    Sex.OTHER.value: "その他",
    Sex.UNKNOWN.value: "不明",
}


class PatientStatus(enum.StrEnum):
    ACTIVE = "active"
    MERGED = "merged"  # a duplicate registration folded into merged_into_id
    DECEASED = "deceased"
    ENTERED_IN_ERROR = "entered-in-error"


class Patient(Versioned, Base):
    __tablename__ = "patient"
    __record_type__ = "Patient"
    __access__ = RecordAccess(Permission.PATIENT_READ, Permission.PATIENT_WRITE, demographic=True)
    __clinic_index__ = False  # every index below starts with clinic_id
    __content_fields__ = (
        "patient_number",
        "family_name",
        "given_name",
        "family_kana",
        "given_kana",
        "birth_date",
        "sex",
        "postal_code",
        "prefecture",
        "city",
        "address_line",
        "phone",
        "status",
        "merged_into_id",
        "deceased_date",
        "downtime_number",
    )
    # registered from a paper 新患登録票 during downtime (its pre-printed number)
    __added_fields__ = ("downtime_number",)
    __table_args__ = (
        UniqueConstraint("clinic_id", "bi_number"),
        Index("ix_patient_clinic_kana2", "clinic_id", "bi_kana2"),
        Index("ix_patient_clinic_kana4", "clinic_id", "bi_kana4"),
        Index("ix_patient_clinic_kana", "clinic_id", "bi_kana"),
        Index("ix_patient_clinic_birth", "clinic_id", "bi_birth"),
        Index("ix_patient_clinic_family", "clinic_id", "bi_family"),
        Index("ix_patient_clinic_given", "clinic_id", "bi_given"),
        Index("ix_patient_clinic_given_kana", "clinic_id", "bi_given_kana"),
        Index("ix_patient_clinic_phone", "clinic_id", "bi_phone"),
    )
    __blind_indexes__ = (
        IndexSpec("bi_number", NUMBER, lambda g: str(g("patient_number"))),
        IndexSpec("bi_kana2", KANA2, lambda g: _kana(g)[:2] or None),
        IndexSpec("bi_kana4", KANA4, lambda g: _kana4(g)),
        IndexSpec("bi_kana", KANA, lambda g: _kana(g) or None),
        IndexSpec("bi_birth", BIRTH, lambda g: _iso(g("birth_date"))),
        IndexSpec("bi_family", NAME, lambda g: name_key(str(g("family_name") or "")) or None),
        IndexSpec("bi_given", NAME, lambda g: name_key(str(g("given_name") or "")) or None),
        IndexSpec(
            "bi_given_kana", GIVEN_KANA, lambda g: search_key(str(g("given_kana") or "")) or None
        ),
        IndexSpec("bi_phone", PHONE, lambda g: phone_key(str(g("phone") or "")) or None),
    )

    patient_number = sealed_int()  # 患者番号 (診察券), per clinic
    family_name = sealed_str()  # 姓 (漢字)
    given_name = sealed_str()  # 名 (漢字)
    family_kana = sealed_str()  # セイ (全角カタカナ)
    given_kana = sealed_str()  # メイ
    birth_date = sealed_date()
    sex = sealed_str()
    postal_code = sealed_str()
    prefecture = sealed_str()
    city = sealed_str()
    address_line = sealed_str()
    phone = sealed_str()
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("patient.id"), nullable=True
    )
    deceased_date = sealed_opt_date()
    downtime_number = sealed_opt_int()  # 新患登録票 filled in on paper during downtime
    bi_number: Mapped[int] = mapped_column(BigInteger)
    bi_kana2: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bi_kana4: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bi_kana: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bi_birth: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # 0010: filled for rows written before by ``patients.indexes.backfill`` at start-up
    bi_family: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bi_given: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bi_given_kana: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bi_phone: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @property
    def kana_key(self) -> str:
        """The normalised search key: family + given kana."""
        return search_key(self.family_kana) + search_key(self.given_kana)

    @property
    def patient_id(self) -> uuid.UUID:
        """A patient is in its own scope (lets the gate treat every record alike)."""
        return self.id

    @property
    def full_name(self) -> str:
        return f"{self.family_name} {self.given_name}"

    @property
    def full_kana(self) -> str:
        return f"{self.family_kana} {self.given_kana}"


class CoverageKind(enum.StrEnum):
    SHAHO = "shaho"  # 社保 (協会けんぽ・組合・共済・船員)
    KOKUHO = "kokuho"  # 国保
    KOUKI = "kouki"  # 後期高齢者
    KOUHI = "kouhi"  # 公費
    JIHI = "jihi"  # 自費
    ROUSAI = "rousai"  # 労災
    OTHER = "other"


class Relationship(enum.StrEnum):
    SELF = "self"  # 本人
    FAMILY = "family"  # 家族


class Coverage(PatientRecord, Base):
    __tablename__ = "coverage"
    __record_type__ = "Coverage"
    __access__ = RecordAccess(
        Permission.INSURANCE_READ, Permission.INSURANCE_WRITE, demographic=True
    )
    __content_fields__ = (
        "patient_id",
        "kind",
        "insurer_number",
        "symbol",
        "number",
        "branch",
        "relationship",
        "copay_percent",
        "valid_from",
        "valid_to",
        "public_payer_number",
        "recipient_number",
        "priority",
        "status",
    )

    __blind_indexes__ = (
        IndexSpec(
            "bi_insurance",
            INSURANCE,
            lambda g: (
                insurance_key(str(g("insurer_number") or ""), str(g("number") or ""))
                if g("number")
                else None
            ),
        ),
    )

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), index=True)
    kind = sealed_str()  # 公費 kinds can themselves be sensitive (生活保護, 難病…)
    insurer_number = sealed_str()  # 保険者番号
    symbol = sealed_str()  # 記号 (text: kanji, kana…)
    number = sealed_str()  # 番号 (text)
    branch = sealed_str()  # 枝番
    relationship = sealed_str(Relationship.SELF.value)
    copay_percent = sealed_opt_int()  # 負担割合 10/20/30
    valid_from = sealed_opt_date()
    valid_to = sealed_opt_date()
    public_payer_number = sealed_str()  # 公費負担者番号
    recipient_number = sealed_str()  # 公費受給者番号
    priority: Mapped[int] = mapped_column(Integer, default=1)
    bi_insurance: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
