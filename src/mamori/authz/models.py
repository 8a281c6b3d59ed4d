"""The tables the gate's restriction check reads: which patients are restricted and who holds
a break-the-glass grant. Setting them is the ``restrictions`` domain's work."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from mamori.db import Base, UTCDateTime, new_id, utcnow


class PatientRestriction(Base):
    """Why a patient is restricted: a member of staff (found automatically), VIP, sensitive."""

    __tablename__ = "patient_restriction"

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), primary_key=True)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    staff: Mapped[bool] = mapped_column(Boolean, default=False)
    vip: Mapped[bool] = mapped_column(Boolean, default=False)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_user.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def active(self) -> bool:
        return self.staff or self.vip or self.sensitive


class BreakGlassGrant(Base):
    """Time-limited access to one restricted patient, with the reason given."""

    __tablename__ = "break_glass_grant"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"), index=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), index=True)
    reason_code: Mapped[str] = mapped_column(String(32))
    reason_text: Mapped[str] = mapped_column(String(500))
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
