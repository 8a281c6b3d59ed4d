"""The director's side of API tokens: integration accounts, issuing scoped and expiring tokens
(with a fresh re-authentication), listing them on the staff screen and revoking them.

The rules a token must satisfy are in ``auth/tokens.py``; this module adds who may ask and the
audit events. A token never carries a person's own acts — signing (確定), break-the-glass,
managing sign-in factors — nor administration (which needs a re-authentication a token cannot
give), whatever its account's role.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record
from mamori.auth import tokens
from mamori.auth.models import ApiToken
from mamori.authz import gate
from mamori.authz.actor import Actor
from mamori.authz.permissions import ROLE_PERMISSIONS, P, Permission
from mamori.authz.restricted import require_recent_auth
from mamori.authz.roles import Role
from mamori.clinic import service as clinic_service
from mamori.clinic.models import StaffUser
from mamori.db import utcnow
from mamori.errors import InvalidInput, NotAllowed, NotFound

# a person's acts and administration: never through a bearer token
NEVER_BY_TOKEN = frozenset(
    {
        P.NOTE_SIGN,
        P.BREAK_GLASS,
        P.SELF,
        P.STAFF_ADMIN,
        P.SESSION_ADMIN,
        P.RESTRICTION_ADMIN,
        P.VENDOR_WINDOW_ADMIN,
    }
)
# the roles an integration may act as (a レセコン link as reception, a lab interface as a
# nurse or physician, a log collector as the auditor)
INTEGRATION_ROLES = (Role.RECEPTION, Role.NURSE, Role.PHYSICIAN, Role.AUDITOR)


def token_permissions(role: Role) -> list[Permission]:
    """What a token of an account with ``role`` may be scoped to, in the table's order."""
    return [p for p in Permission if p in ROLE_PERMISSIONS[role] and p not in NEVER_BY_TOKEN]


@dataclasses.dataclass(frozen=True)
class TokenView:
    id: uuid.UUID
    user_id: uuid.UUID
    login_id: str
    display_name: str
    account_kind: str
    label: str
    scope: list[str]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    issued_by: uuid.UUID | None
    live: bool


def _view(row: ApiToken, user: StaffUser, now: dt.datetime) -> TokenView:
    live = (
        row.revoked_at is None
        and row.expires_at is not None
        and now < row.expires_at
        and bool(row.scope)
        and user.usable(now)
    )
    return TokenView(
        id=row.id,
        user_id=user.id,
        login_id=user.login_id,
        display_name=user.display_name,
        account_kind=user.kind,
        label=row.label,
        scope=sorted(p.value for p in tokens.scope_of(row)),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        issued_by=row.issued_by,
        live=live,
    )


def create_integration(
    session: Session,
    actor: Actor,
    *,
    login_id: str,
    display_name: str,
    role: Role,
    reauth_minutes: int,
) -> StaffUser:
    """An account for an integration: no password, never signs in, acts only by tokens."""
    actor.require(P.STAFF_ADMIN)
    require_recent_auth(actor, reauth_minutes)
    if role not in INTEGRATION_ROLES:
        raise InvalidInput(
            "連携用アカウントの役割は受付・看護師・医師・監査のいずれかです。",
            "An integration acts as reception, nurse, physician or auditor.",
            field="role",
        )
    clinic = clinic_service.clinic_of(session, actor)
    user = clinic_service.add_staff(
        session, clinic, login_id=login_id, display_name=display_name, role=role
    )
    user.kind = tokens.INTEGRATION
    record(
        session,
        actor,
        AuditTag.STAFF_CREATED,
        detail={"user": str(user.id), "role": role.value, "kind": tokens.INTEGRATION},
    )
    return user


def issue(
    session: Session,
    actor: Actor,
    pepper: bytes,
    user_id: uuid.UUID,
    *,
    scope: list[str],
    days: int,
    label: str,
    reauth_minutes: int,
) -> tuple[TokenView, str]:
    """A token for one of the clinic's accounts, shown once."""
    actor.require(P.STAFF_ADMIN)
    require_recent_auth(actor, reauth_minutes)
    user = gate.clinic_row_for(session, actor, StaffUser, user_id, "staff")
    personal = sorted(p for p in scope if p in NEVER_BY_TOKEN)
    if personal:
        raise NotAllowed(
            f"署名・緊急時アクセス・管理の権限はトークンに含められません: {', '.join(personal)}",
            f"Signing, break-the-glass and administration are never by token: "
            f"{', '.join(personal)}",
            field="scope",
        )
    row, token = tokens.issue_token(
        session,
        pepper,
        user,
        scope=scope,
        days=days,
        label=label,
        issued_by=None if actor.channel == "cli" else actor.user_id,
    )
    view = _view(row, user, utcnow())
    record(
        session,
        actor,
        AuditTag.TOKEN_ISSUED,
        detail={
            "user": str(user.id),
            "token": str(row.id),
            "kind": user.kind,
            "scope": view.scope,
            "expires_at": view.expires_at.isoformat() if view.expires_at else None,
        },
    )
    return view, token


def list_tokens(session: Session, actor: Actor) -> list[TokenView]:
    """The clinic's tokens, live ones first, then the most recent revoked or expired."""
    actor.require(P.STAFF_READ)
    now = utcnow()
    rows = session.execute(
        select(ApiToken, StaffUser)
        .join(StaffUser, StaffUser.id == ApiToken.user_id)
        .where(StaffUser.clinic_id == actor.clinic_id)
        .order_by(ApiToken.created_at.desc())
        .limit(500)
    ).all()
    views = [_view(t, u, now) for t, u in rows]
    return sorted(views, key=lambda v: not v.live)


def revoke(session: Session, actor: Actor, token_id: uuid.UUID) -> TokenView:
    """Revoking needs no re-authentication: stopping a credential should never be hard."""
    actor.require(P.STAFF_ADMIN)
    row = session.get(ApiToken, token_id)
    user = gate.clinic_reference(session, actor, StaffUser, row.user_id) if row else None
    if row is None or user is None:  # another clinic's token answers as a missing one
        raise NotFound("token")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        record(
            session,
            actor,
            AuditTag.TOKEN_REVOKED,
            detail={"user": str(user.id), "token": str(row.id)},
        )
    return _view(row, user, utcnow())
