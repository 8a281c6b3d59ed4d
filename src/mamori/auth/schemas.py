"""The shapes of what the sign-in, account and administration edges take and give."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mamori.auth import admin, integrations
from mamori.authz.roles import Role
from mamori.inputs import Text100, Text500


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(Strict):
    login_id: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    clinic_code: str | None = Field(default=None, pattern=r"^\d{10}$")
    shared_terminal: bool = False


class CodeIn(Strict):
    code: str = Field(min_length=1, max_length=32)


class CredentialIn(Strict):
    credential: dict[str, Any]
    label: str = Field(default="", max_length=100)


class ReauthIn(Strict):
    password: str = Field(min_length=1, max_length=1024)
    code: str | None = Field(default=None, max_length=32)
    credential: dict[str, Any] | None = None


class InitialPasswordIn(Strict):
    password: str = Field(min_length=1, max_length=1024)


class PasswordIn(Strict):
    current: str = Field(min_length=1, max_length=1024)
    new: str = Field(min_length=1, max_length=1024)


class RevokeIn(Strict):
    session_id: uuid.UUID | None = None
    device_id: str | None = Field(default=None, max_length=64)
    everything: bool = False


class SignInOut(BaseModel):
    stage: str
    factors: list[str] = []
    csrf_token: str
    recovery_codes: list[str] = []


class SessionOut(BaseModel):
    id: uuid.UUID
    device_id: str
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    second_factor: str | None
    shared_terminal: bool
    source_ip: str | None
    user_agent: str
    current: bool


class RevokedOut(BaseModel):
    revoked: int


class BreakGlassIn(Strict):
    reason_code: Literal["emergency", "treatment", "continuity", "patient-request", "other"]
    reason_text: str = Field(min_length=1, max_length=500)


class BreakGlassOut(BaseModel):
    grant_id: uuid.UUID
    expires_at: dt.datetime


class RestrictionIn(Strict):
    vip: bool
    sensitive: bool


class RestrictionOut(BaseModel):
    staff: bool
    vip: bool
    sensitive: bool


class StaffIn(Strict):
    login_id: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    display_name: Text100
    display_kana: str = Field(default="", max_length=100)
    role: Role
    password: str = Field(min_length=1, max_length=1024)
    expires_at: dt.datetime | None = None
    birth_date: dt.date | None = None


class IntegrationIn(Strict):
    login_id: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    display_name: Text100
    role: Role


class TokenIn(Strict):
    user_id: uuid.UUID
    scope: list[str] = Field(min_length=1, max_length=64)
    days: int = Field(ge=1, le=365)
    label: str = Field(default="", max_length=100)


class TokenIssuedOut(BaseModel):
    token: str  # shown once; only its keyed hash is stored
    details: integrations.TokenView


class StaffUpdate(Strict):
    role: Role | None = None
    active: bool | None = None
    expires_at: dt.datetime | None = None
    clear_expiry: bool = False
    display_kana: str | None = Field(default=None, max_length=100)
    birth_date: dt.date | None = None


class UnlockOut(BaseModel):
    unlocked: bool


class WindowIn(Strict):
    vendor_user_id: uuid.UUID
    ticket: Text100
    reason: Text500
    starts_at: dt.datetime | None = None
    minutes: int = Field(ge=1, le=admin.MAX_WINDOW_HOURS * 60)


class WindowOut(BaseModel):
    id: uuid.UUID
    vendor_user_id: uuid.UUID
    opened_by: uuid.UUID
    ticket: str
    reason: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    closed_at: dt.datetime | None
    acknowledged_by: uuid.UUID | None
    acknowledged_at: dt.datetime | None
    acknowledgement: str

    model_config = ConfigDict(from_attributes=True)


class AckIn(Strict):
    note: str = Field(default="", max_length=1000)


class AlertOut(BaseModel):
    id: uuid.UUID
    kind: str
    created_at: dt.datetime
    user_id: uuid.UUID | None
    patient_id: uuid.UUID | None
    ref_id: uuid.UUID | None
    summary: str
    reviewed_by: uuid.UUID | None
    reviewed_at: dt.datetime | None
    outcome: str | None
    finding: str

    model_config = ConfigDict(from_attributes=True)


class AlertReviewIn(Strict):
    outcome: Literal["no-issue", "follow-up"]
    finding: str = Field(default="", max_length=1000)


class CoverageOut(BaseModel):
    active: int
    with_2fa: int
    integrations: int
    live_tokens: int
    people_with_tokens: int
    tokens_without_2fa: int
