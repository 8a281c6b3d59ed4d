"""API bearer tokens for integrations: issued once, stored only as a keyed hash (HMAC with the
instance's ``token_pepper``), revoked with the account."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.auth.models import ApiToken
from mamori.auth.service import permissions_for
from mamori.authz.actor import Actor
from mamori.clinic.models import StaffUser
from mamori.clinic.service import actor_for
from mamori.db import utcnow
from mamori.errors import Unauthenticated

TOKEN_PREFIX = "mmr_"  # noqa: S105 - a public prefix that makes leaked tokens greppable


def _token_hash(pepper: bytes, token: str) -> str:
    return hmac.new(pepper, token.encode("utf-8"), hashlib.sha256).hexdigest()


def issue_token(session: Session, pepper: bytes, user: StaffUser, label: str = "") -> str:
    """A new bearer token, shown once; only its keyed hash is stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_token_hash(pepper, token), label=label))
    session.flush()
    return token


def authenticate_token(session: Session, pepper: bytes, token: str, channel: str) -> Actor:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthenticated()
    row = session.execute(
        select(ApiToken, StaffUser)
        .join(StaffUser, StaffUser.id == ApiToken.user_id)
        .where(ApiToken.token_hash == _token_hash(pepper, token))
    ).first()
    if row is None:
        raise Unauthenticated()
    tok, user = row
    now = utcnow()
    if (
        tok.revoked_at is not None
        or (tok.expires_at is not None and now >= tok.expires_at)
        or not user.usable(now)
    ):
        raise Unauthenticated()
    actor = actor_for(user, channel)
    perms = permissions_for(session, user, now)
    return dataclasses.replace(actor, permissions=perms) if perms is not None else actor


def revoke_tokens(session: Session, user: StaffUser) -> int:
    now = utcnow()
    tokens = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    ).all()
    for t in tokens:
        t.revoked_at = now
    return len(tokens)
