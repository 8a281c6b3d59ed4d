"""API bearer tokens: for integrations, never a way around the second factor.

A token is issued for an **integration account** (``StaffUser.kind == "integration"``: no
password, never signs in), or for a **person** who has enrolled a second factor — and then for
at most :data:`MAX_DAYS` ``["person"]`` days. Every token expires, carries a scope (the
permissions it may use, a subset of its account's role) and is stored only as a keyed hash
(HMAC with the instance's ``token_pepper``). Resetting a person's second factors, changing their
role or disabling the account revokes their tokens. The director issues and revokes tokens
(``auth/integrations.py``, with a fresh re-authentication); the operator at the server's console
can issue one for an integration account (``mamori token issue``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.auth.models import ApiToken, AuthFactor
from mamori.auth.service import permissions_for
from mamori.authz.actor import Actor
from mamori.authz.permissions import ROLE_PERMISSIONS, Permission
from mamori.authz.roles import Role
from mamori.clinic.models import StaffUser
from mamori.clinic.service import actor_for
from mamori.db import utcnow
from mamori.errors import InvalidInput, NotAllowed, Unauthenticated

TOKEN_PREFIX = "mmr_"  # noqa: S105 - a public prefix that makes leaked tokens greppable
PERSON, INTEGRATION = "person", "integration"
# the longest a token may live: a person's is a convenience, an integration's is rotated yearly
MAX_DAYS = {PERSON: 30, INTEGRATION: 365}


def _token_hash(pepper: bytes, token: str) -> str:
    return hmac.new(pepper, token.encode("utf-8"), hashlib.sha256).hexdigest()


def has_second_factor(session: Session, user_id: uuid.UUID) -> bool:
    """An authenticator app or a passkey that is not revoked (recovery codes do not count)."""
    return (
        session.scalar(
            select(AuthFactor.id)
            .where(
                AuthFactor.user_id == user_id,
                AuthFactor.revoked_at.is_(None),
                AuthFactor.kind != "recovery",
            )
            .limit(1)
        )
        is not None
    )


def check_scope(user: StaffUser, scope: Iterable[str]) -> frozenset[Permission]:
    """The scope as permissions, each one the account's role holds; anything else is refused."""
    wanted: set[Permission] = set()
    for name in scope:
        try:
            wanted.add(Permission(name))
        except ValueError:
            raise InvalidInput(
                f"権限 {name} はありません。", f"No permission {name}.", field="scope"
            ) from None
    if not wanted:
        raise InvalidInput(
            "トークンで使える権限を1つ以上選んでください。",
            "Choose at least one permission for the token.",
            field="scope",
        )
    beyond = sorted(p.value for p in wanted - ROLE_PERMISSIONS[Role(user.role)])
    if beyond:
        raise InvalidInput(
            f"この役割にない権限はトークンに含められません: {', '.join(beyond)}",
            f"The account's role does not hold: {', '.join(beyond)}",
            field="scope",
        )
    return frozenset(wanted)


def store_token(
    session: Session,
    pepper: bytes,
    user: StaffUser,
    *,
    scope: frozenset[Permission],
    expires_at: dt.datetime,
    label: str = "",
    issued_by: uuid.UUID | None = None,
) -> tuple[ApiToken, str]:
    """Store a new token's keyed hash and return the row and the token (shown once). No policy:
    :func:`issue_token` decides who may have one; the test harness stands for that decision."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        token_hash=_token_hash(pepper, token),
        label=label[:100],
        scope=json.dumps(sorted(p.value for p in scope)),
        expires_at=expires_at,
        issued_by=issued_by,
    )
    session.add(row)
    session.flush()
    return row, token


def issue_token(
    session: Session,
    pepper: bytes,
    user: StaffUser,
    *,
    scope: Iterable[str],
    days: int,
    label: str = "",
    issued_by: uuid.UUID | None = None,
) -> tuple[ApiToken, str]:
    """A token for an integration account, or for a person with a second factor enrolled;
    always with an expiry (at most ``MAX_DAYS`` of its kind) and a scope within the role."""
    now = utcnow()
    if not user.usable(now):
        raise NotAllowed(
            "無効または期限切れのアカウントにはトークンを発行できません。",
            "The account is disabled or expired.",
        )
    longest = MAX_DAYS[user.kind]
    if not 1 <= days <= longest:
        raise InvalidInput(
            f"有効期間は1〜{longest}日です。",
            f"A token of this kind lives 1 to {longest} days.",
            field="days",
        )
    if user.kind == PERSON and not has_second_factor(session, user.id):
        raise NotAllowed(
            "二要素認証を登録していない職員にはトークンを発行できません"
            "（トークンで二要素認証を迂回させないため）。連携には連携用アカウントを使ってください。",
            "A person gets a token only after enrolling a second factor; use an integration "
            "account for an integration.",
            field="user",
        )
    return store_token(
        session,
        pepper,
        user,
        scope=check_scope(user, scope),
        expires_at=now + dt.timedelta(days=days),
        label=label,
        issued_by=issued_by,
    )


def scope_of(row: ApiToken) -> frozenset[Permission]:
    return frozenset(Permission(p) for p in json.loads(row.scope or "[]"))


def authenticate_token(session: Session, pepper: bytes, token: str, channel: str) -> Actor:
    """The actor a token stands for: its account's role narrowed to the token's scope. A
    revoked, expired, unscoped or unknown token, or one of an unusable account, is refused."""
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
        or tok.expires_at is None
        or now >= tok.expires_at
        or not tok.scope
        or not user.usable(now)
    ):
        raise Unauthenticated()
    actor = actor_for(user, channel)
    ceiling = permissions_for(session, user, now)
    granted = (ceiling if ceiling is not None else actor.granted) & scope_of(tok)
    return dataclasses.replace(actor, permissions=frozenset(granted))


def revoke_tokens(session: Session, user: StaffUser) -> int:
    now = utcnow()
    tokens = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    ).all()
    for t in tokens:
        t.revoked_at = now
    return len(tokens)
