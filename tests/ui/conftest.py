"""The real browser the web UI tests drive: Debian's Chromium through Playwright, one per test
worker (Playwright's own browser download is never used), and the site it walks: mamori served
by uvicorn on 127.0.0.1 with the personas given passwords."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from mamori.app import create_app
from tests.conftest import World
from tests.ui.support import give_password

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )
    yield b
    b.close()


@dataclasses.dataclass
class Site:
    world: World
    url: str
    seeds: dict[str, str]
    recovery: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def site(world: World) -> Iterator[Site]:
    port = _free_port()
    url = f"http://localhost:{port}"
    s = world.settings
    settings = dataclasses.replace(
        s, auth=dataclasses.replace(s.auth, secure_cookies=False, origins=(url,), rp_id="localhost")
    )
    app = create_app(settings, world.db)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    for login in (
        "clerk_chika",
        "nurse_ben",
        "dr_aiko",
        "director",
        "scribe_dai",
        "sec_sae",
        "audit_aki",
    ):
        give_password(world, login)
    yield Site(world, url, {})
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    context = browser.new_context(base_url=site.url, locale="ja-JP")
    p = context.new_page()
    p.set_default_timeout(10_000)
    yield p
    context.close()
