"""The clinic (tenant) and its staff accounts (roles: ``mamori.authz.roles``)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from mamori.authz.roles import Role
from mamori.db import Base, UTCDateTime, new_id, utcnow


class Clinic(Base):
    __tablename__ = "clinic"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    # 医療機関コード: 10 digits (都道府県 2 + 点数表 1 + 7 with check digit).
    institution_code: Mapped[str] = mapped_column(String(10), unique=True)
    postal_code: Mapped[str] = mapped_column(String(8), default="")
    address: Mapped[str] = mapped_column(String(300), default="")
    phone: Mapped[str] = mapped_column(String(20), default="")
    # Patient numbers (患者番号) are per clinic and handed out from this counter inside the
    # registering transaction; the row lock serialises concurrent registrations on PostgreSQL.
    next_patient_number: Mapped[int] = mapped_column(Integer, default=1)
    is_synthetic: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StaffUser(Base):
    """A person's account. Never deleted: disabled instead, so history stays attributable."""

    __tablename__ = "staff_user"
    __table_args__ = (UniqueConstraint("clinic_id", "login_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    login_id: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(100))
    display_kana: Mapped[str] = mapped_column(String(100), default="")
    role: Mapped[Role] = mapped_column(String(32))
    # person | integration: an integration account (a レセコン link, a lab interface) has no
    # password and never signs in; it acts only through API tokens scoped by the director
    kind: Mapped[str] = mapped_column(String(16), default="person", server_default="person")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Argon2id; None until the account's first password is set
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # set with an initial password someone else handed over: the first sign-in replaces it
    password_must_change: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # temporary staff and vendors: the account stops working after this moment
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # lets mamori recognise the staff member when they register as a patient
    birth_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)

    def usable(self, now: dt.datetime) -> bool:
        return self.active and (self.expires_at is None or now < self.expires_at)
