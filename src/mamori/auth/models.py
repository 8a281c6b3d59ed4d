"""Sign-in state: second factors, server-side sessions, throttling, password history; vendor
maintenance windows and the security alerts an administrator reviews (restricted patients and
break-the-glass grants: ``authz/models.py``).

Nothing here is ever deleted: factors and sessions are revoked, grants and windows expire, alerts
are reviewed. Secrets are stored only as keyed hashes (session tokens, recovery codes), Argon2id
hashes (passwords) or encrypted (TOTP seeds, under a key derived from the instance's secret).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mamori.db import Base, UTCDateTime, new_id, utcnow


class ApiToken(Base):
    """A bearer token for the JSON/FHIR API. Only a keyed hash is stored (HMAC with the
    instance's ``token_pepper``), so a copy of the database does not yield usable tokens.

    Every token expires and carries a scope (the permissions it may use, a subset of its
    account's role); a token without either is refused (``auth/tokens.py``)."""

    __tablename__ = "api_token"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # JSON list of permission names; tokens issued before scopes existed have none (refused)
    scope: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the director who issued it (None: the operator at the server's console, ``mamori token``)
    issued_by: Mapped[uuid.UUID | None] = mapped_column(nullable=True)


class PasswordHistory(Base):
    """Earlier password hashes of an account, so a password is never reused (CL-2-8)."""

    __tablename__ = "auth_password_history"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuthFactor(Base):
    """A second factor: a TOTP seed, a WebAuthn credential, or one recovery code."""

    __tablename__ = "auth_factor"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # totp | webauthn | recovery
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # TOTP: the seed, AES-GCM encrypted; the last accepted time step (replay protection)
    secret: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # WebAuthn: credential ID, COSE public key, signature counter
    credential_id: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, unique=True)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sign_count: Mapped[int] = mapped_column(Integer, default=0)
    # recovery code: its keyed hash; used at most once
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuthSession(Base):
    """A server-side session. The cookie holds a random token; only its keyed hash is here."""

    __tablename__ = "auth_session"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"), index=True)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"))
    device_id: Mapped[str] = mapped_column(String(64), index=True)  # keyed hash of device cookie
    # password → (enrol) → full: only a "full" session (both factors) reaches any data
    stage: Mapped[str] = mapped_column(String(16))
    second_factor: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    idle_seconds: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    reauth_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    shared_terminal: Mapped[bool] = mapped_column(Boolean, default=False)
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # a pending WebAuthn challenge or TOTP enrolment seed (encrypted), one at a time
    challenge: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    challenge_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    factor_failures: Mapped[int] = mapped_column(Integer, default=0)


class Throttle(Base):
    """Failure counters for sign-in, per account+source, per source and per account."""

    __tablename__ = "auth_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    blocked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)  # until an administrator unlocks


class VendorWindow(Base):
    """A time-boxed maintenance window in which one vendor account may read patient data."""

    __tablename__ = "vendor_window"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    vendor_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"), index=True)
    opened_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    ticket: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(500))
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff_user.id"), nullable=True
    )
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledgement: Mapped[str] = mapped_column(String(1000), default="")


class SecurityAlert(Base):
    """Something the administrator must look at: a break-the-glass, a restricted patient
    opened, an account locked. Reviewed with an outcome, never deleted."""

    __tablename__ = "security_alert"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_user.id"), nullable=True)
    patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patient.id"), nullable=True)
    ref_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    summary: Mapped[str] = mapped_column(String(300))
    reviewed_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff_user.id"), nullable=True
    )
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    finding: Mapped[str] = mapped_column(String(1000), default="")


__all__ = [
    "ApiToken",
    "AuthFactor",
    "AuthSession",
    "PasswordHistory",
    "SecurityAlert",
    "Throttle",
    "VendorWindow",
]
