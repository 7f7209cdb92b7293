"""The web console in a real browser: Debian's ``chromium`` driven by Playwright
(through ``executable_path``: Playwright's own browser builds cannot be downloaded
here), one browser per session, a new context (cookies, storage) per test.

Chromium is told to resolve no host but loopback, so nothing it does can leave the
machine; every request a page makes is intercepted and recorded (``Browsing.requests``)
so that a test can show each went to the server under test (one to elsewhere is
aborted).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api  # a dev extra; ./scripts/setup installs it

FLAGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]
WIDTH, HEIGHT = 1280, 860
TIMEOUT_MS = 20_000  # what a page waits for an element (a job's end waits longer)
SHOTS_ENV = "STASIS_CONSOLE_SHOTS"  # a directory: the tests screenshot each page there


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Debian's chromium is not installed: ./scripts/setup installs it")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Browsing:
    """A browser context on the server at ``base``: its pages and every request made."""

    context: Any
    base: str
    requests: list[str] = field(default_factory=list)

    def page(self) -> Any:
        page = self.context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        return page

    def foreign(self) -> list[str]:
        """The requests that went anywhere but the server under test."""
        return [u for u in self.requests if not u.startswith(self.base + "/")]


@pytest.fixture
def browse(browser: Any) -> Iterator[Callable[..., Browsing]]:
    """``browse(base_url, color_scheme="light")``: a fresh context on the server."""
    made: list[Browsing] = []

    def make(base: str, color_scheme: str = "light", width: int = WIDTH) -> Browsing:
        ctx = browser.new_context(base_url=base, viewport={"width": width, "height": HEIGHT},
                                  color_scheme=color_scheme, accept_downloads=True)
        b = Browsing(ctx, base)

        def record(route: Any) -> None:
            # every request is recorded before it goes; one to elsewhere never goes
            url = route.request.url
            b.requests.append(url)
            if url.startswith(base + "/"):
                route.continue_()
            else:
                route.abort("blockedbyclient")

        ctx.route("**/*", record)
        made.append(b)
        return b

    yield make
    for b in made:
        b.context.close()


def sign_in(page: Any, user: str, password: str) -> None:
    page.goto("/")
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("whoami").wait_for()


def shoot(page: Any, name: str, full: bool = True) -> None:
    """With $STASIS_CONSOLE_SHOTS set: the page as it is now, in the light and the dark
    theme, as NAME-light.png and NAME-dark.png there (bench/console_screenshots.py);
    the whole page, or (``full=False``: a modal dialog) the window."""
    where = os.environ.get(SHOTS_ENV)
    if not where:
        return
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state("networkidle")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.screenshot(path=str(out / f"{name}-{scheme}.png"), full_page=full)
    page.emulate_media(color_scheme="light")
