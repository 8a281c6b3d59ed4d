"""Signing in to the web UI the way a browser does: form posts marked as htmx requests, the
CSRF token taken from the page's ``<meta name="csrf-token">``."""

from __future__ import annotations

import re
from typing import Any

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select

from mamori.auth import service as auth
from mamori.clinic.models import StaffUser
from tests.conftest import World

PASSWORD = "sakura-tsubaki-kamome 2026"
META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def give_password(world: World, login: str, password: str = PASSWORD) -> None:
    with world.db.session(write=True) as s:
        user = s.scalar(select(StaffUser).where(StaffUser.login_id == login))
        assert user is not None
        auth.set_password(s, user, password)
        s.commit()


class Page:
    """One browser: cookies, and the CSRF token of the last page it loaded."""

    def __init__(self, world: World) -> None:
        self.http = TestClient(
            world.http.app, base_url="https://localhost:8000", follow_redirects=False
        )
        self.csrf = ""
        self.seed = ""

    def get(self, url: str, **kw: Any) -> Any:
        r = self.http.get(url, **kw)
        if m := META.search(r.text):
            self.csrf = m.group(1)
        return r

    def post(self, url: str, data: dict[str, str] | None = None, **kw: Any) -> Any:
        headers = {"hx-request": "true", "x-csrf-token": self.csrf, **kw.pop("headers", {})}
        return self.http.post(url, data=data or {}, headers=headers, **kw)

    def sign_in(self, login: str, password: str = PASSWORD) -> None:
        """Password, then enrolment of an authenticator app (first sign-in) or its code."""
        self.get("/login")
        r = self.post("/login", {"login_id": login, "password": password})
        assert r.status_code == 204 and r.headers["hx-redirect"].startswith("/login/second"), r.text
        page = self.get(r.headers["hx-redirect"])
        assert page.status_code == 200, page.text
        if "enrol" in page.text and 'hx-post="/login/enrol/totp"' in page.text:
            start = self.post("/login/enrol/totp")
            assert start.status_code == 200, start.text
            self.seed = re.search(r'data-totp-secret="([A-Z2-7]+)"', start.text).group(1)  # type: ignore[union-attr]
            done = self.post("/login/enrol/totp/confirm", {"code": pyotp.TOTP(self.seed).now()})
            assert done.status_code == 200 and "回復コード" in done.text, done.text
        else:
            r = self.post("/login/totp", {"code": pyotp.TOTP(self.seed).now()})
            assert r.status_code == 204, r.text
        home = self.get("/account")
        assert home.status_code == 200, home.text


def signed_in(world: World, login: str) -> Page:
    give_password(world, login)
    page = Page(world)
    page.sign_in(login)
    return page
