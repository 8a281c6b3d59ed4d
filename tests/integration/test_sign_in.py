"""Sign-in with two factors, sessions, throttling and web hygiene — attacked the way an intruder
would: guessing, replaying codes, planting session cookies, forging cross-site requests, using
expired, revoked or disabled accounts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from typing import Any

import pyotp
import pytest
from sqlalchemy import select, text, update
from starlette.testclient import TestClient
from tests.conftest import SAMPLE_PATIENT, World
from tests.support.authenticator import SoftAuthenticator

from mamori.audit.models import AuditEvent
from mamori.auth import admin, throttle
from mamori.auth import service as auth
from mamori.auth.models import AuthSession, SecurityAlert
from mamori.authz.roles import Role
from mamori.clinic.models import StaffUser
from mamori.db import utcnow
from mamori.errors import InvalidInput, NotAllowed

NAME = "__Host-mamori_session"
PASSWORD = "sakura-tsubaki-kamome 2026"
ORIGIN = "https://localhost:8000"  # the instance's [auth] origins (port 8000)


def give_password(world: World, login: str, password: str = PASSWORD) -> None:
    with world.db.session(write=True) as s:
        user = s.scalar(select(StaffUser).where(StaffUser.login_id == login))
        assert user is not None
        auth.set_password(s, user, password)
        s.commit()


class Browser:
    """A browser at one address: cookies, and the CSRF token the last sign-in step returned."""

    def __init__(self, world: World, ip: str = "192.168.1.20") -> None:
        self.world = world
        self.http = TestClient(world.http.app, base_url="https://testserver", client=(ip, 50000))
        self.csrf = ""

    def post(self, url: str, **kw: Any) -> Any:
        headers = {"x-csrf-token": self.csrf, **kw.pop("headers", {})}
        return self.http.post(url, headers=headers, **kw)

    def step(self, url: str, body: dict[str, Any] | None = None) -> Any:
        r = self.post(url, json=body or {})
        if r.status_code == 200 and "csrf_token" in r.json():
            self.csrf = r.json()["csrf_token"]
        return r

    def login(self, login: str, password: str = PASSWORD, **extra: Any) -> Any:
        return self.step("/api/v1/auth/login", {"login_id": login, "password": password, **extra})

    def enrol_totp(self) -> tuple[str, list[str]]:
        start = self.post("/api/v1/auth/enrol/totp")
        assert start.status_code == 200, start.text
        seed = start.json()["secret"]
        assert start.json()["qr_svg"].startswith("<svg")
        assert start.json()["otpauth_uri"].startswith("otpauth://totp/")
        r = self.step("/api/v1/auth/enrol/totp/confirm", {"code": pyotp.TOTP(seed).now()})
        assert r.status_code == 200 and r.json()["stage"] == "full", r.text
        return seed, r.json()["recovery_codes"]


def code_at(seed: str, offset_steps: int) -> str:
    return pyotp.TOTP(seed).at(time.time() + 30 * offset_steps)


def _tags(world: World) -> list[str]:
    with world.db.session(write=False) as s:
        return list(s.scalars(select(AuditEvent.tag).order_by(AuditEvent.seq)))


def _events(world: World, tag: str) -> list[dict[str, Any]]:
    with world.db.session(write=False) as s:
        bodies = s.scalars(select(AuditEvent.body).where(AuditEvent.tag == tag))
        return [json.loads(bytes(b)) for b in bodies]


@pytest.fixture
def dr(world: World) -> tuple[Browser, str]:
    """dr_aiko, signed in with a freshly enrolled authenticator app."""
    give_password(world, "dr_aiko")
    b = Browser(world)
    r = b.login("dr_aiko")
    assert r.status_code == 200 and r.json()["stage"] == "enrol", r.text
    seed, codes = b.enrol_totp()
    assert len(codes) == 10
    return b, seed


def test_first_sign_in_enrols_a_second_factor_before_any_data(world: World) -> None:
    give_password(world, "nurse_ben")
    b = Browser(world)
    r = b.login("nurse_ben")
    assert r.status_code == 200 and r.json()["stage"] == "enrol"
    # password alone reaches nothing
    assert b.http.get("/api/v1/me").status_code == 401
    assert b.http.get("/api/v1/patients").status_code == 401
    seed, codes = b.enrol_totp()
    me = b.http.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["auth"] == "totp"
    assert "note:sign" not in me.json()["permissions"]
    # recovery codes are stored hashed only
    with world.db.session(write=False) as s:
        stored = s.execute(text("SELECT code_hash, secret FROM auth_factor")).all()
    assert all(codes[0].replace("-", "") not in str(row) for row in stored)
    assert all(seed.encode() not in (row[1] or b"") for row in stored)
    assert "auth:factor:enrolled" in _tags(world) and "auth:login:succeeded" in _tags(world)


def test_signed_in_work_needs_the_csrf_token(world: World, dr: tuple[Browser, str]) -> None:
    b, _ = dr
    r = b.http.post("/api/v1/patients", json=SAMPLE_PATIENT)  # no X-CSRF-Token
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = b.http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers={"x-csrf-token": "x" * 64})
    assert r.status_code == 403
    r = b.post("/api/v1/patients", json=SAMPLE_PATIENT, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = b.post("/api/v1/patients", json=SAMPLE_PATIENT)
    assert r.status_code == 201, r.text
    events = _events(world, "record:created")
    assert events[-1]["actor"]["auth"] == "totp" and events[-1]["actor"]["session"]


def test_cookies_are_httponly_secure_samesite(world: World) -> None:
    give_password(world, "dr_aiko")
    b = Browser(world)
    r = b.login("dr_aiko")
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("__Host-mamori_session="))
    for attr in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert attr.lower() in session.lower(), session
    assert "domain=" not in session.lower()
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none'


def test_replayed_and_wrong_totp_codes_are_refused(world: World, dr: tuple[Browser, str]) -> None:
    b, seed = dr
    used = pyotp.TOTP(seed).now()  # the code enrolment consumed
    assert b.post("/api/v1/auth/logout").status_code == 204
    assert b.http.get("/api/v1/me").status_code == 401
    b.login("dr_aiko")
    r = b.step("/api/v1/auth/totp", {"code": used})
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_second_factor"
    r = b.step("/api/v1/auth/totp", {"code": code_at(seed, 5)})  # outside the skew window
    assert r.status_code == 401
    r = b.step("/api/v1/auth/totp", {"code": code_at(seed, 1)})  # next step: within skew
    assert r.status_code == 200 and r.json()["stage"] == "full"
    assert len(_events(world, "auth:factor:failed")) == 2


def test_five_wrong_codes_end_the_half_finished_session(
    world: World, dr: tuple[Browser, str]
) -> None:
    b, seed = dr
    b.post("/api/v1/auth/logout")
    b.login("dr_aiko")
    for _ in range(auth.MAX_FACTOR_FAILURES):
        assert b.step("/api/v1/auth/totp", {"code": "000000"}).status_code == 401
    r = b.step("/api/v1/auth/totp", {"code": code_at(seed, 1)})
    assert r.status_code == 401  # the session is gone; start again with the password


def test_recovery_codes_work_once(world: World) -> None:
    give_password(world, "dr_kenji")
    b = Browser(world)
    b.login("dr_kenji")
    _, codes = b.enrol_totp()
    b.post("/api/v1/auth/logout")
    b.login("dr_kenji")
    assert b.step("/api/v1/auth/recovery", {"code": codes[3].upper()}).status_code == 200
    b.post("/api/v1/auth/logout")
    b.login("dr_kenji")
    assert b.step("/api/v1/auth/recovery", {"code": codes[3]}).status_code == 401


def test_session_fixation_a_planted_cookie_is_worthless(
    world: World, dr: tuple[Browser, str]
) -> None:
    _, seed = dr
    victim = Browser(world, ip="192.168.1.30")
    attacker_token = "planted-by-the-attacker-0123456789"
    victim.http.cookies.set(NAME, attacker_token, domain="testserver.local")
    victim.login("dr_aiko")
    assert victim.http.cookies.get(NAME) != attacker_token
    pending = victim.http.cookies.get(NAME)
    victim.step("/api/v1/auth/totp", {"code": code_at(seed, 1)})
    full = victim.http.cookies.get(NAME)
    assert full != pending  # a new token once both factors are in
    # neither the planted nor the half-way token reaches data
    for token in (attacker_token, pending):
        thief = TestClient(world.http.app, base_url="https://testserver")
        thief.cookies.set(NAME, token or "", domain="testserver.local")
        assert thief.get("/api/v1/me").status_code == 401


def test_wrong_passwords_are_answered_alike_and_throttled(world: World) -> None:
    give_password(world, "clerk_chika")
    b = Browser(world, ip="203.0.113.9")
    unknown = b.login("no_such_user", "whatever-password-1")
    wrong = b.login("clerk_chika", "whatever-password-1")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
    for _ in range(throttle.ACCT_SRC_FREE - 1):
        assert b.login("clerk_chika", "still-wrong-password").status_code == 401
    r = b.login("clerk_chika")  # even the right password waits now
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # another terminal is not held up by the attacker's address
    assert Browser(world, ip="192.168.1.21").login("clerk_chika").status_code == 200
    failed = _events(world, "auth:login:failed")
    assert {e["detail"]["reason"] for e in failed} == {"unknown-login", "password"}
    assert all("whatever" not in json.dumps(e) for e in failed)  # never the password
    assert _events(world, "auth:login:throttled")


def test_account_lock_spares_known_devices_and_an_admin_unlocks(
    world: World, dr: tuple[Browser, str]
) -> None:
    b, _ = dr  # this browser has signed in fully: a known device
    b.post("/api/v1/auth/logout")
    uid = str(world.actors["dr_aiko"].user_id)
    with world.db.session(write=True) as s:  # guesses spread over many addresses
        for i in range(throttle.ACCT_LOCK_AT):
            throttle.fail(s, throttle.keys_for(uid, "dr_aiko", f"198.51.100.{i}"), utcnow())
        s.commit()
    stranger = Browser(world, ip="192.168.1.99")
    r = stranger.login("dr_aiko")
    assert r.status_code == 401 and r.json()["error"]["code"] == "account_locked"
    assert b.login("dr_aiko").status_code == 200  # the doctor's own terminal still works
    admin = world.http.post(
        f"/api/v1/admin/staff/{uid}/unlock", headers=world.h("sec_sae")
    )  # the security officer unlocks
    assert admin.status_code == 200 and admin.json()["unlocked"]
    assert stranger.login("dr_aiko").status_code == 200
    assert "auth:account:unlocked" in _tags(world)


def test_lockout_raises_an_alert(world: World) -> None:
    give_password(world, "nurse_ben")
    uid = str(world.actors["nurse_ben"].user_id)
    with world.db.session(write=True) as s:
        for i in range(throttle.ACCT_LOCK_AT - 1):
            throttle.fail(s, throttle.keys_for(uid, "nurse_ben", f"198.51.100.{i}"), utcnow())
        s.commit()
    Browser(world, ip="198.51.100.250").login("nurse_ben", "one-more-wrong-guess")
    assert "auth:account:locked" in _tags(world)
    with world.db.session(write=False) as s:
        assert s.scalar(select(SecurityAlert.kind)) == "lockout"


def _age_session(world: World, **values: Any) -> None:
    with world.db.session(write=True) as s:
        s.execute(update(AuthSession).values(**values))
        s.commit()


def test_idle_logoff_and_shared_terminals(world: World, dr: tuple[Browser, str]) -> None:
    b, seed = dr
    _age_session(world, last_seen_at=utcnow() - dt.timedelta(minutes=10))
    assert b.http.get("/api/v1/me").status_code == 200  # 10 min < 15
    _age_session(world, last_seen_at=utcnow() - dt.timedelta(minutes=16))
    r = b.http.get("/api/v1/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired"
    assert _events(world, "auth:session:expired")[-1]["detail"]["reason"] == "idle"
    # a shared reception terminal logs off sooner
    b.login("dr_aiko", shared_terminal=True)
    b.step("/api/v1/auth/totp", {"code": code_at(seed, 1)})
    _age_session(world, last_seen_at=utcnow() - dt.timedelta(minutes=6))
    assert b.http.get("/api/v1/me").status_code == 401


def test_absolute_lifetime(world: World, dr: tuple[Browser, str]) -> None:
    b, _ = dr
    _age_session(world, expires_at=utcnow() - dt.timedelta(seconds=1))
    assert b.http.get("/api/v1/me").status_code == 401
    assert _events(world, "auth:session:expired")[-1]["detail"]["reason"] == "absolute"


def test_lost_tablet_revokes_every_session_on_it(world: World, dr: tuple[Browser, str]) -> None:
    tablet, seed = dr
    desk = Browser(world, ip="192.168.1.40")
    desk.login("dr_aiko")
    assert desk.step("/api/v1/auth/totp", {"code": code_at(seed, 1)}).status_code == 200
    sessions = desk.http.get("/api/v1/auth/sessions").json()
    assert len(sessions) == 2
    tablet_device = next(s["device_id"] for s in sessions if not s["current"])
    r = desk.post("/api/v1/auth/sessions/revoke", json={"device_id": tablet_device})
    assert r.status_code == 200 and r.json()["revoked"] == 1
    assert tablet.http.get("/api/v1/me").status_code == 401
    assert desk.http.get("/api/v1/me").status_code == 200
    # and an administrator can end all of someone's sessions
    uid = world.actors["dr_aiko"].user_id
    r = world.http.post(
        f"/api/v1/admin/staff/{uid}/sessions/revoke", json={}, headers=world.h("sec_sae")
    )
    assert r.status_code == 200 and r.json()["revoked"] == 1
    assert desk.http.get("/api/v1/me").status_code == 401


def test_disabled_and_expired_accounts(world: World, dr: tuple[Browser, str]) -> None:
    b, _ = dr
    with world.db.session(write=True) as s:
        s.execute(
            update(StaffUser)
            .where(StaffUser.login_id == "dr_aiko")
            .values(expires_at=utcnow() - dt.timedelta(minutes=1))
        )
        s.commit()
    assert b.http.get("/api/v1/me").status_code == 401  # live session ends with the account
    assert b.login("dr_aiko").status_code == 401
    r = world.http.get("/api/v1/me", headers=world.h("dr_aiko"))  # API tokens too
    assert r.status_code == 401


def test_password_policy(world: World) -> None:
    with world.db.session(write=True) as s:
        user = s.scalar(select(StaffUser).where(StaffUser.login_id == "clerk_chika"))
        assert user is not None
        user.display_kana = "タナカ チカ"
        for bad, why in (
            ("short-pw-1", "13"),
            ("password12345", "推測"),
            ("qwertyuiop1234", "推測"),
            ("tanaka-chika-1990", "推測"),  # built from the person's own name
            ("clerk_chika2026", "推測"),
        ):
            with pytest.raises(InvalidInput) as err:
                auth.set_password(s, user, bad)
            assert why in err.value.ja, bad
        auth.set_password(s, user, PASSWORD)
        auth.set_password(s, user, "an0ther long passphrase!")
        with pytest.raises(InvalidInput, match="reuse"):
            auth.set_password(s, user, PASSWORD)  # one of the last five
        assert user.password_hash and user.password_hash.startswith("$argon2id$")


def test_passkey_enrolment_and_sign_in(world: World) -> None:
    give_password(world, "director")
    b = Browser(world)
    b.login("director")
    key = SoftAuthenticator(origin=ORIGIN)
    options = b.post("/api/v1/auth/enrol/webauthn/options").json()
    assert options["rp"]["id"] == "localhost" and options["challenge"]
    r = b.step(
        "/api/v1/auth/enrol/webauthn",
        {"credential": key.register(options), "label": "受付PCのパスキー"},
    )
    assert r.status_code == 200 and r.json()["stage"] == "full", r.text
    assert len(r.json()["recovery_codes"]) == 10
    b.post("/api/v1/auth/logout")

    b.login("director")
    options = b.post("/api/v1/auth/webauthn/options").json()
    r = b.step("/api/v1/auth/webauthn", {"credential": key.sign(options)})
    assert r.status_code == 200 and r.json()["stage"] == "full", r.text
    assert b.http.get("/api/v1/me").json()["auth"] == "webauthn"
    b.post("/api/v1/auth/logout")

    # a phishing site's origin, a replayed challenge, a cloned authenticator: all refused
    b.login("director")
    options = b.post("/api/v1/auth/webauthn/options").json()
    phished = key.sign(options, origin="https://mamori-login.example")
    assert b.step("/api/v1/auth/webauthn", {"credential": phished}).status_code == 401
    replay = key.sign(options)
    assert b.step("/api/v1/auth/webauthn", {"credential": replay}).status_code == 401
    options = b.post("/api/v1/auth/webauthn/options").json()
    cloned = key.sign(options, counter=1)  # counter went backwards
    assert b.step("/api/v1/auth/webauthn", {"credential": cloned}).status_code == 401
    options = b.post("/api/v1/auth/webauthn/options").json()
    other_key = SoftAuthenticator(origin=ORIGIN, credential_id=key.credential_id)
    forged = other_key.sign(options, counter=50)
    assert b.step("/api/v1/auth/webauthn", {"credential": forged}).status_code == 401
    options = b.post("/api/v1/auth/webauthn/options").json()
    assert b.step("/api/v1/auth/webauthn", {"credential": key.sign(options)}).status_code == 200


def test_break_the_glass_needs_reauthentication_and_a_reason(
    world: World, dr: tuple[Browser, str]
) -> None:
    b, seed = dr
    pid = world.http.post(
        "/api/v1/patients", json=SAMPLE_PATIENT, headers=world.h("clerk_chika")
    ).json()["id"]
    r = world.http.put(
        f"/api/v1/patients/{pid}/restriction",
        json={"vip": True, "sensitive": False},
        headers=world.h("director"),
    )
    assert r.status_code == 200
    r = b.http.get(f"/api/v1/patients/{pid}/chart")
    assert r.status_code == 403 and r.json()["error"]["code"] == "break_glass_required"
    assert b.http.get(f"/api/v1/patients/{pid}").status_code == 200  # demographics: alerted
    body = {"reason_code": "emergency", "reason_text": "救急外来で意識レベル低下のため"}
    _age_session(world, reauth_at=utcnow() - dt.timedelta(minutes=10))
    r = b.post(f"/api/v1/patients/{pid}/break-glass", json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "reauth_required"
    r = b.post("/api/v1/auth/reauth", json={"password": PASSWORD, "code": code_at(seed, -1)})
    assert r.status_code == 401  # the enrolment's own step, or older: never again
    r = b.post("/api/v1/auth/reauth", json={"password": PASSWORD, "code": code_at(seed, 1)})
    assert r.status_code == 204, r.text
    r = b.post(f"/api/v1/patients/{pid}/break-glass", json={**body, "reason_text": ""})
    assert r.status_code == 422
    r = b.post(f"/api/v1/patients/{pid}/break-glass", json=body)
    assert r.status_code == 200, r.text
    assert b.http.get(f"/api/v1/patients/{pid}/chart").status_code == 200
    granted = _events(world, "access:break-glass:granted")
    assert granted[-1]["detail"]["reason"] == "emergency"
    assert "救急" not in json.dumps(granted)  # the free text stays in the grant, not the log
    alerts = world.http.get("/api/v1/admin/alerts", headers=world.h("director")).json()
    assert alerts[0]["kind"] == "break-glass" and alerts[0]["patient_id"] == pid
    viewed = _events(world, "audit:log:viewed")[-1]  # reading the alert list is logged
    assert viewed["detail"]["scope"] == "alerts" and viewed["patients"] == [pid]
    r = world.http.post(
        f"/api/v1/admin/alerts/{alerts[0]['id']}/review",
        json={"outcome": "no-issue", "finding": "救急対応として妥当"},
        headers=world.h("director"),
    )
    assert r.status_code == 200 and r.json()["reviewed_by"]
    # others still need their own break-the-glass; the grant expires
    assert (
        world.http.get(f"/api/v1/patients/{pid}/chart", headers=world.h("dr_kenji")).status_code
        == 403
    )
    with world.db.session(write=True) as s:
        s.execute(
            text("UPDATE break_glass_grant SET expires_at = :t"),
            {"t": utcnow() - dt.timedelta(seconds=1)},
        )
        s.commit()
    assert b.http.get(f"/api/v1/patients/{pid}/chart").status_code == 403


def test_staff_registered_as_patients_are_restricted_automatically(world: World) -> None:
    # the director creates staff through the CLI channel (counts as re-authenticated)
    director = dataclasses.replace(world.actors["director"], channel="cli")
    with world.db.session(write=True) as s:
        admin.create_staff(
            s,
            director,
            login_id="ns_yamada",
            display_name="山田 花子",
            display_kana="ヤマダ ハナコ",
            role=Role.NURSE,
            password=PASSWORD,
            expires_at=None,
            birth_date=dt.date(1948, 4, 3),
            reauth_minutes=5,
        )
        s.commit()
    pid = world.http.post(
        "/api/v1/patients", json=SAMPLE_PATIENT, headers=world.h("clerk_chika")
    ).json()["id"]  # same kana name and birth date as the new nurse
    r = world.http.get(f"/api/v1/patients/{pid}/notes", headers=world.h("dr_aiko"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "break_glass_required"
    other = {**SAMPLE_PATIENT, "birth_date": "1950-01-01"}
    pid2 = world.http.post("/api/v1/patients", json=other, headers=world.h("clerk_chika")).json()[
        "id"
    ]
    assert (
        world.http.get(f"/api/v1/patients/{pid2}/notes", headers=world.h("dr_aiko")).status_code
        == 200
    )


def test_vendor_sees_patients_only_inside_a_window(world: World) -> None:
    pid = world.http.post(
        "/api/v1/patients", json=SAMPLE_PATIENT, headers=world.h("clerk_chika")
    ).json()["id"]
    vendor = world.h("vendor_vic")
    r = world.http.get(f"/api/v1/patients/{pid}", headers=vendor)
    assert r.status_code == 401 and r.json()["error"]["code"] == "outside_maintenance_window"
    give_password(world, "vendor_vic")
    r = Browser(world).login("vendor_vic")  # the right password, the wrong time
    assert r.status_code == 401 and r.json()["error"]["code"] == "outside_maintenance_window"
    officer = dataclasses.replace(world.actors["sec_sae"], channel="cli")
    with world.db.session(write=True) as s:
        window = admin.open_vendor_window(
            s,
            officer,
            vendor_user_id=world.actors["vendor_vic"].user_id,
            ticket="MNT-2026-118",
            reason="データ移行の検証",
            starts_at=None,
            minutes=30,
            reauth_minutes=5,
        )
        wid = window.id
        s.commit()
    assert world.http.get(f"/api/v1/patients/{pid}", headers=vendor).status_code == 200
    desk = Browser(world)  # signed in through the browser flow, inside the window
    assert desk.login("vendor_vic").status_code == 200
    desk.enrol_totp()
    assert desk.http.get(f"/api/v1/patients/{pid}").status_code == 200
    r = world.http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=vendor)
    assert r.status_code == 403  # read-only even inside the window
    early = world.http.post(
        f"/api/v1/admin/vendor-windows/{wid}/acknowledge", json={}, headers=world.h("director")
    )
    assert early.status_code == 409
    r = world.http.post(f"/api/v1/admin/vendor-windows/{wid}/close", headers=world.h("sec_sae"))
    assert r.status_code == 200
    assert world.http.get(f"/api/v1/patients/{pid}", headers=vendor).status_code == 401
    gone = desk.http.get("/api/v1/me")  # the session ends with the window, and says why
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "outside_maintenance_window"
    assert desk.http.get("/api/v1/me").json()["error"]["code"] == "unauthenticated"
    report = world.http.get(
        f"/api/v1/admin/vendor-windows/{wid}/report", headers=world.h("director")
    ).json()
    assert [p["patient_id"] for p in report["patients"]] == [pid]
    r = world.http.post(
        f"/api/v1/admin/vendor-windows/{wid}/acknowledge",
        json={"note": "作業範囲内"},
        headers=world.h("director"),
    )
    assert r.status_code == 200 and r.json()["acknowledged_by"]


def test_no_escalation_of_privilege(world: World) -> None:
    me = world.actors["nurse_ben"].user_id
    r = world.http.put(
        f"/api/v1/admin/staff/{me}", json={"role": "director"}, headers=world.h("nurse_ben")
    )
    assert r.status_code == 403
    assert _events(world, "access:permission:denied")[-1]["detail"]["permission"] == "staff:admin"
    director = dataclasses.replace(world.actors["director"], channel="cli")
    with world.db.session(write=True) as s, pytest.raises(NotAllowed):
        admin.update_staff(s, director, director.user_id, role=Role.AUDITOR, reauth_minutes=5)
    # the API token of a director is not a re-authentication
    kenji = world.actors["dr_kenji"].user_id
    r = world.http.put(
        f"/api/v1/admin/staff/{kenji}", json={"role": "director"}, headers=world.h("director")
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "reauth_required"
    with world.db.session(write=True) as s:
        admin.update_staff(s, director, kenji, role=Role.NURSE, reauth_minutes=5)
        s.commit()
    r = world.http.post("/api/v1/patients/x/notes", headers=world.h("dr_kenji"))
    assert r.status_code == 401  # a role change ends every session and token at once


def test_a_disabled_account_is_out_at_once_and_stays_attributable(
    world: World, dr: tuple[Browser, str]
) -> None:
    b, _ = dr
    director = dataclasses.replace(world.actors["director"], channel="cli")
    with world.db.session(write=True) as s:
        admin.update_staff(
            s, director, world.actors["dr_aiko"].user_id, active=False, reauth_minutes=5
        )
        s.commit()
    assert b.http.get("/api/v1/me").status_code == 401
    assert b.login("dr_aiko").status_code == 401
    assert world.http.get("/api/v1/me", headers=world.h("dr_aiko")).status_code == 401
    staff = world.http.get("/api/v1/admin/staff", headers=world.h("director")).json()
    aiko = next(u for u in staff if u["login_id"] == "dr_aiko")  # still listed, never deleted
    assert aiko["active"] is False and aiko["factors"] == ["totp"]
    assert _events(world, "admin:staff:disabled")


def test_passkey_reauthentication(world: World) -> None:
    give_password(world, "director")
    b = Browser(world)
    b.login("director")
    key = SoftAuthenticator(origin=ORIGIN)
    options = b.post("/api/v1/auth/enrol/webauthn/options").json()
    b.step("/api/v1/auth/enrol/webauthn", {"credential": key.register(options)})
    _age_session(world, reauth_at=utcnow() - dt.timedelta(minutes=30))
    options = b.post("/api/v1/auth/reauth/webauthn/options").json()
    wrong = {"password": "not-the-password-at-all", "credential": key.sign(options)}
    assert b.post("/api/v1/auth/reauth", json=wrong).status_code == 401
    options = b.post("/api/v1/auth/reauth/webauthn/options").json()
    r = b.post("/api/v1/auth/reauth", json={"password": PASSWORD, "credential": key.sign(options)})
    assert r.status_code == 204, r.text
    assert _events(world, "auth:reauth:succeeded")


def test_changing_a_password(world: World, dr: tuple[Browser, str]) -> None:
    b, _ = dr
    new = "hidamari-no-naka-de 77"
    r = b.post("/api/v1/auth/password", json={"current": "wrong-current-pw", "new": new})
    assert r.status_code == 401
    r = b.post("/api/v1/auth/password", json={"current": PASSWORD, "new": "short"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "password"
    assert (
        b.post("/api/v1/auth/password", json={"current": PASSWORD, "new": new}).status_code == 204
    )
    b.post("/api/v1/auth/logout")
    assert b.login("dr_aiko").status_code == 401
    assert b.login("dr_aiko", new).status_code == 200
    assert _events(world, "auth:password:changed")


def _director_session(world: World) -> tuple[Browser, str]:
    give_password(world, "director")
    b = Browser(world, ip="192.168.1.30")
    r = b.login("director")
    assert r.status_code == 200 and r.json()["stage"] == "enrol", r.text
    seed, _codes = b.enrol_totp()
    return b, seed


def _sensitive_actions(world: World, b: Browser) -> dict[str, Any]:
    """Every action that needs password and second factor entered within [auth]
    reauth_minutes (the route matrix's REAUTH set, and adding a factor to a full session)."""
    kenji = world.actors["dr_kenji"].user_id
    vendor = world.actors["vendor_vic"].user_id
    patient = world.http.post(
        "/api/v1/patients", json=SAMPLE_PATIENT, headers=world.h("clerk_chika")
    ).json()["id"]
    return {
        "add staff": lambda: b.post(
            "/api/v1/admin/staff",
            json={
                "login_id": "new_nurse",
                "display_name": "新人 看護",
                "role": "nurse",
                "password": "渡すための初期の合言葉-2026",
            },
        ),
        "change a role": lambda: b.http.put(
            f"/api/v1/admin/staff/{kenji}", json={"role": "nurse"}, headers={"x-csrf-token": b.csrf}
        ),
        "reset factors": lambda: b.post(f"/api/v1/admin/staff/{kenji}/reset-factors"),
        "open a vendor window": lambda: b.post(
            "/api/v1/admin/vendor-windows",
            json={
                "vendor_user_id": str(vendor),
                "ticket": "T-1",
                "reason": "定期保守",
                "minutes": 30,
            },
        ),
        "break the glass": lambda: b.post(
            f"/api/v1/patients/{patient}/break-glass",
            json={"reason_code": "emergency", "reason_text": "救急外来で意識レベル低下のため"},
        ),
        "add a second factor": lambda: b.post("/api/v1/auth/enrol/totp"),
    }


@pytest.mark.parametrize(
    "action",
    [
        "add staff",
        "change a role",
        "reset factors",
        "open a vendor window",
        "break the glass",
        "add a second factor",
    ],
)
def test_every_sensitive_action_needs_both_factors_within_the_same_minutes(
    world: World, action: str
) -> None:
    """One rule, API and pages alike: password and second factor entered within [auth]
    reauth_minutes — at sign-in or at a re-authentication. Older: 401 reauth_required."""
    b, _seed = _director_session(world)
    minutes = world.settings.auth.reauth_minutes
    do = _sensitive_actions(world, b)[action]
    _age_session(world, reauth_at=utcnow() - dt.timedelta(minutes=minutes, seconds=5))
    r = do()
    assert r.status_code == 401 and r.json()["error"]["code"] == "reauth_required", r.text
    _age_session(world, reauth_at=utcnow() - dt.timedelta(minutes=minutes, seconds=-30))
    r = do()
    assert r.status_code in (200, 201, 204), r.text
