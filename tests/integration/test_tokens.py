"""API tokens are for integrations and never a way around the second factor (issue 25).

A token exists only for an integration account, or for a person who has enrolled a second
factor; it always expires, its scope is within its account's role and never includes a person's
own acts (signing, break-the-glass) or administration; the director issues it with a fresh
re-authentication, sees it on the staff screen, revokes it; the 2FA report counts what is."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select, update
from tests.conftest import World
from tests.integration.test_sign_in import Browser, give_password

from mamori.audit.models import AuditEvent
from mamori.auth import tokens
from mamori.auth.models import ApiToken
from mamori.clinic.models import StaffUser
from mamori.db import utcnow


def _retire_harness_tokens(world: World) -> None:
    """The harness gives every persona a token with no second factor behind it (a state the
    rules here never allow): the 2FA report must see them, and then they are revoked."""
    with world.db.session(write=True) as s:
        s.execute(
            update(ApiToken).where(ApiToken.label == "test harness").values(revoked_at=utcnow())
        )
        s.commit()


def _director(world: World) -> Browser:
    """The director, signed in with password and a freshly enrolled app: a fresh re-auth."""
    give_password(world, "director")
    b = Browser(world)
    assert b.login("director").json()["stage"] == "enrol"
    b.enrol_totp()
    return b


def _tags(world: World) -> list[dict[str, Any]]:
    with world.db.session(write=False) as s:
        rows = s.scalars(select(AuditEvent.body).order_by(AuditEvent.seq))
        return [json.loads(bytes(b)) for b in rows]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_integration_gets_a_scoped_expiring_token_from_a_reauthenticated_director(
    world: World, patient: dict[str, Any]
) -> None:
    b = _director(world)
    r = b.post(
        "/api/v1/admin/integrations",
        json={"login_id": "lab-link", "display_name": "検査会社連携", "role": "physician"},
    )
    assert r.status_code == 201 and r.json()["kind"] == "integration", r.text
    link = r.json()["id"]
    # the integration never signs in: it has no password
    assert b.login("lab-link", "anything at all 123").status_code == 401
    # a person's acts and administration are never by token, whatever the role holds
    for scope in (["note:sign"], ["break-glass:use", "patient:read"], ["self:manage"]):
        r = b.post("/api/v1/admin/tokens", json={"user_id": link, "scope": scope, "days": 30})
        assert r.status_code == 403, (scope, r.text)
    # beyond the role, unknown, too long, no scope: refused with a reason
    for body, code in (
        ({"scope": ["audit:read"], "days": 30}, 422),
        ({"scope": ["patient:fly"], "days": 30}, 422),
        ({"scope": ["patient:read"], "days": 366}, 422),
        ({"scope": [], "days": 30}, 422),
    ):
        r = b.post("/api/v1/admin/tokens", json={"user_id": link, **body})
        assert r.status_code == code and r.json()["error"]["message_ja"], (body, r.text)
    r = b.post(
        "/api/v1/admin/tokens",
        json={
            "user_id": link,
            "scope": ["patient:read", "observation:write"],
            "days": 90,
            "label": "検査結果の取り込み",
        },
    )
    assert r.status_code == 201, r.text
    token, details = r.json()["token"], r.json()["details"]
    assert details["scope"] == ["observation:write", "patient:read"] and details["live"]
    expires = dt.datetime.fromisoformat(details["expires_at"])
    assert dt.timedelta(days=89) < expires - utcnow() <= dt.timedelta(days=90)
    h, pid = _bearer(token), patient["id"]
    assert world.http.get(f"/api/v1/patients/{pid}", headers=h).status_code == 200
    r = world.http.post(
        f"/api/v1/patients/{pid}/observations",
        json={
            "category": "laboratory",
            "code": "HBA1C",
            "name": "HbA1c",
            "value": "6.1",
            "unit": "%",
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    # the physician role reads charts and notes; this token was not given them
    assert world.http.get(f"/api/v1/patients/{pid}/chart", headers=h).status_code == 403
    assert world.http.get(f"/api/v1/patients/{pid}/notes", headers=h).status_code == 403
    # the staff screen's list and the 2FA report count what is
    listed = b.http.get("/api/v1/admin/tokens").json()
    mine = next(t for t in listed if t["id"] == details["id"])
    assert mine["login_id"] == "lab-link" and mine["account_kind"] == "integration"
    cov = b.http.get("/api/v1/admin/two-factor").json()
    assert cov["tokens_without_2fa"] == 8  # the harness's tokens: every persona but the director
    _retire_harness_tokens(world)
    cov = b.http.get("/api/v1/admin/two-factor").json()
    assert cov["integrations"] == 1 and cov["tokens_without_2fa"] == 0
    assert cov["active"] == 9 and cov["with_2fa"] == 1  # lab-link is not a person
    page = b.http.get("/admin/staff")
    assert "検査結果の取り込み" in page.text and "lab-link" in page.text
    # revoked: out at once, and both acts are in the audit trail
    r = b.post(f"/api/v1/admin/tokens/{details['id']}/revoke")
    assert r.status_code == 200 and not r.json()["live"]
    assert world.http.get(f"/api/v1/patients/{pid}", headers=h).status_code == 401
    events = {e["tag"]: e for e in _tags(world)}
    assert events["auth:token:issued"]["detail"]["scope"] == details["scope"]
    assert events["auth:token:revoked"]["detail"]["token"] == details["id"]


def test_a_person_gets_a_token_only_with_a_second_factor_and_loses_it_with_the_factor(
    world: World,
) -> None:
    b = _director(world)
    ben = str(world.actors["nurse_ben"].user_id)
    r = b.post("/api/v1/admin/tokens", json={"user_id": ben, "scope": ["patient:read"], "days": 7})
    assert r.status_code == 403 and "二要素" in r.json()["error"]["message_ja"]
    # dr_aiko enrols; then a short-lived token within her role is possible
    give_password(world, "dr_aiko")
    aiko = Browser(world, ip="192.168.1.21")
    assert aiko.login("dr_aiko").json()["stage"] == "enrol"
    aiko.enrol_totp()
    uid = str(world.actors["dr_aiko"].user_id)
    _retire_harness_tokens(world)
    r = b.post("/api/v1/admin/tokens", json={"user_id": uid, "scope": ["patient:read"], "days": 31})
    assert r.status_code == 422  # a person's token lives at most 30 days
    r = b.post("/api/v1/admin/tokens", json={"user_id": uid, "scope": ["patient:read"], "days": 14})
    assert r.status_code == 201, r.text
    h = _bearer(r.json()["token"])
    assert world.http.get("/api/v1/patients", params={"kana": "ヤマ"}, headers=h).status_code == 200
    cov = b.http.get("/api/v1/admin/two-factor").json()
    assert cov["people_with_tokens"] == 1 and cov["tokens_without_2fa"] == 0
    # her phone is lost: resetting her factors ends the token with them
    assert b.post(f"/api/v1/admin/staff/{uid}/reset-factors").status_code == 200
    assert world.http.get("/api/v1/patients", params={"kana": "ヤマ"}, headers=h).status_code == 401


def test_who_may_issue_and_revoke(world: World) -> None:
    link_body = {"login_id": "recept-link", "display_name": "レセコン", "role": "reception"}
    # the director's bearer credential is not a re-authentication; a nurse is not an admin
    r = world.http.post("/api/v1/admin/integrations", json=link_body, headers=world.h("director"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "reauth_required"
    r = world.http.post("/api/v1/admin/integrations", json=link_body, headers=world.h("nurse_ben"))
    assert r.status_code == 403
    assert world.http.get("/api/v1/admin/tokens", headers=world.h("nurse_ben")).status_code == 403
    b = _director(world)
    # an integration acts as reception, nurse, physician or auditor — never as an administrator
    r = b.post("/api/v1/admin/integrations", json={**link_body, "role": "director"})
    assert r.status_code == 422
    # another clinic's account or token answers exactly like a missing one
    chen = str(world.actors["dr_chen"].user_id)
    r = b.post("/api/v1/admin/tokens", json={"user_id": chen, "scope": ["patient:read"], "days": 7})
    assert r.status_code == 404
    with world.db.session(write=True) as s:
        user = s.get(StaffUser, world.actors["dr_chen"].user_id)
        assert user is not None
        row, _ = tokens.store_token(
            s,
            world.settings.token_pepper,
            user,
            scope=frozenset(),
            expires_at=utcnow() + dt.timedelta(days=1),
        )
        s.commit()
    assert b.post(f"/api/v1/admin/tokens/{row.id}/revoke").status_code == 404
    assert all(t["id"] != str(row.id) for t in b.http.get("/api/v1/admin/tokens").json())


def test_a_token_without_expiry_or_scope_or_past_its_expiry_is_refused(world: World) -> None:
    """What ``mamori init`` used to hand out (no expiry, no scope) reads nothing now."""
    with world.db.session(write=True) as s:
        user = s.get(StaffUser, world.actors["dr_aiko"].user_id)
        assert user is not None
        made = {}
        for name, expires, scope in (
            ("no-expiry", None, '["patient:read"]'),
            ("no-scope", utcnow() + dt.timedelta(days=1), None),
            ("expired", utcnow() - dt.timedelta(seconds=1), '["patient:read"]'),
        ):
            row, token = tokens.store_token(
                s,
                world.settings.token_pepper,
                user,
                scope=frozenset(),
                expires_at=utcnow() + dt.timedelta(days=1),
            )
            row.expires_at, row.scope = expires, scope
            made[name] = token
        s.commit()
    for name, token in made.items():
        r = world.http.get("/api/v1/patients", params={"kana": "ヤマ"}, headers=_bearer(token))
        assert r.status_code == 401, name
