"""Patient (患者) and insurance coverage (保険). There is deliberately no field for the
マイナンバー (個人番号): clinics must not hold it (clinic-domain.md §1.4)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mamori.db import Base
from mamori.records.versioning import PatientRecord, Versioned


class Sex(enum.StrEnum):
    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


class PatientStatus(enum.StrEnum):
    ACTIVE = "active"
    MERGED = "merged"  # a duplicate registration folded into merged_into_id
    DECEASED = "deceased"
    ENTERED_IN_ERROR = "entered-in-error"


class Patient(Versioned, Base):
    __tablename__ = "patient"
    __record_type__ = "Patient"
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
    )
    __table_args__ = (
        UniqueConstraint("clinic_id", "patient_number"),
        Index("ix_patient_clinic_kana", "clinic_id", "kana_key"),
        Index("ix_patient_clinic_birth", "clinic_id", "birth_date"),
    )

    patient_number: Mapped[int] = mapped_column(Integer)  # 患者番号 (診察券), per clinic
    family_name: Mapped[str] = mapped_column(String(60))  # 姓 (漢字)
    given_name: Mapped[str] = mapped_column(String(60))  # 名 (漢字)
    family_kana: Mapped[str] = mapped_column(String(60))  # セイ (全角カタカナ)
    given_kana: Mapped[str] = mapped_column(String(60))  # メイ
    kana_key: Mapped[str] = mapped_column(String(130))  # search key, derived, not content
    birth_date: Mapped[dt.date] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(8))
    postal_code: Mapped[str] = mapped_column(String(8), default="")
    prefecture: Mapped[str] = mapped_column(String(10), default="")
    city: Mapped[str] = mapped_column(String(60), default="")
    address_line: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[str] = mapped_column(String(20), default="")
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("patient.id"), nullable=True
    )
    deceased_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)

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

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    insurer_number: Mapped[str] = mapped_column(String(8), default="")  # 保険者番号
    symbol: Mapped[str] = mapped_column(String(40), default="")  # 記号 (text: kanji, kana…)
    number: Mapped[str] = mapped_column(String(40), default="")  # 番号 (text)
    branch: Mapped[str] = mapped_column(String(2), default="")  # 枝番
    relationship: Mapped[str] = mapped_column(String(8), default=Relationship.SELF.value)
    copay_percent: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 負担割合 10/20/30
    valid_from: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    valid_to: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    public_payer_number: Mapped[str] = mapped_column(String(8), default="")  # 公費負担者番号
    recipient_number: Mapped[str] = mapped_column(String(7), default="")  # 公費受給者番号
    priority: Mapped[int] = mapped_column(Integer, default=1)
