"""The console without a guest: its files and headers, the CSRF token a reloaded page
gets back from /me, and in a real browser over a real server on loopback (uvicorn on
the API's real catalog and repository, libvirt's test:///default driver): a wrong
password shows the error, a signed-in page survives a reload, what a user may do
follows the role, both themes and the 768 px width read, and no request leaves for
anywhere but the server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from stasis.api.app import create_app
from stasis.api.context import ApiContext
from stasis.api.server import ApiServer
from stasis.app import accounts as acc
from stasis.app.listen import Listen
from tests.api.conftest import PASSWORD, api_ctx, client, real_ctx
from tests.console.conftest import Browsing, shoot, sign_in, sync_api

__all__ = ["api_ctx", "client", "real_ctx"]  # the API's fixtures, used here too

# The console is the same over either catalog database (the API's tests cover both).
pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)

V1 = "/api/v1"
USER_PASSWORD = PASSWORD.decode()


@pytest.fixture
def server(api_ctx: ApiContext) -> Iterator[str]:
    """The API and console of ``api_ctx`` served on 127.0.0.1 (a free port)."""
    s = ApiServer(create_app(api_ctx), Listen("127.0.0.1", 0))
    s.start()
    try:
        yield s.url
    finally:
        s.stop()


def user(ctx: ApiContext, name: str, role: str) -> str:
    acc.add_user(ctx.catalog, name, role=role, password=PASSWORD)
    return name


def test_the_page_and_its_files_come_with_their_headers(api_ctx: ApiContext) -> None:
    c = TestClient(create_app(api_ctx))
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/console/js/app.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy
    assert page.headers["cache-control"] == "no-cache"
    js = c.get("/console/js/app.js")
    assert js.status_code == 200, js.text
    assert "javascript" in js.headers["content-type"]
    assert js.headers["cache-control"] == "no-cache" and js.headers["etag"]
    again = c.get("/console/js/app.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert c.get("/console/no-such.js").status_code == 404
    # the API's own answers are as before: a path it lacks is problem+json
    missing = c.get(f"{V1}/no-such-thing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "/" not in create_app(api_ctx).openapi()["paths"]


def test_me_gives_a_session_its_csrf_token_back_and_a_token_none(
        api_ctx: ApiContext, client: Callable[..., TestClient]) -> None:
    by_token = client("viewer", user="tina")
    assert by_token.get(f"{V1}/me").json()["csrf"] is None
    b = TestClient(create_app(api_ctx))
    started = b.post(f"{V1}/session", json={"user": "tina", "password": USER_PASSWORD}).json()
    me = b.get(f"{V1}/me").json()
    assert me["session"] is True and me["csrf"] == started["csrf"]
    # the token /me gives back is the one an unsafe request needs
    assert b.delete(f"{V1}/session", headers={"X-CSRF-Token": me["csrf"]}).status_code == 204
    assert b.get(f"{V1}/me").status_code == 401


def test_a_wrong_password_is_shown_then_a_session_survives_a_reload(
        api_ctx: ApiContext, server: str, browse: Callable[..., Browsing]) -> None:
    user(api_ctx, "olga", "operator")
    b = browse(server)
    page = b.page()
    page.goto("/")
    page.get_by_label("User").fill("olga")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "Wrong user name or password" in alert.inner_text()
    shoot(page, "signin")
    assert page.get_by_test_id("whoami").count() == 0
    page.get_by_label("Password").fill(USER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_test_id("whoami").inner_text() == "olga · operator"
    page.get_by_role("heading", name="Dashboard").wait_for()
    page.reload()
    page.get_by_role("heading", name="Dashboard").wait_for()
    # Signing out is a DELETE: it works after the reload only with the CSRF token /me
    # gave back.
    with page.expect_response(lambda r: r.url.endswith(f"{V1}/session")) as answer:
        page.get_by_role("button", name="Sign out").click()
    assert answer.value.status == 204
    page.get_by_role("button", name="Sign in").wait_for()
    page.reload()
    page.get_by_role("button", name="Sign in").wait_for()
    assert b.requests and not b.foreign(), b.foreign()


def test_what_a_user_sees_follows_the_role(
        api_ctx: ApiContext, server: str, browse: Callable[..., Browsing]) -> None:
    user(api_ctx, "vic", "viewer")
    user(api_ctx, "bob", "backup")
    for name, can_backup in (("vic", False), ("bob", True)):
        page = browse(server).page()
        sign_in(page, name, USER_PASSWORD)
        page.get_by_role("link", name="VMs").click()
        page.get_by_role("heading", name="VMs").wait_for()
        page.locator("tr[data-vm='test']").wait_for()  # the test driver's one VM
        buttons = page.get_by_role("button", name="Back up test now")
        assert buttons.count() == (1 if can_backup else 0), name
        page.get_by_role("link", name="test", exact=True).click()
        page.get_by_role("heading", name="test").wait_for()
        assert page.get_by_role("button", name="Back up now").count() == (
            1 if can_backup else 0), name


def test_keyboard_themes_and_a_narrow_window(
        api_ctx: ApiContext, server: str, browse: Callable[..., Browsing]) -> None:
    user(api_ctx, "ada", "admin")
    b = browse(server, color_scheme="dark", width=768)
    page = b.page()
    page.goto("/")
    # by keyboard alone: the user field has the focus; type, Tab, type, Enter
    page.get_by_label("User").wait_for()
    assert page.evaluate("document.activeElement.id") == "user"
    page.keyboard.type("ada")
    page.keyboard.press("Tab")
    page.keyboard.type(USER_PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Dashboard").wait_for()
    # the skip link comes first, and shows once focused
    assert page.evaluate("document.querySelector('a[href], button, input').className") == "skip"
    page.get_by_role("link", name="Skip to content").focus()
    assert page.get_by_role("link", name="Skip to content").bounding_box()["x"] >= 0
    dark_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    toggle = page.get_by_role("button", name="Light theme")
    assert toggle.get_attribute("aria-pressed") == "true"  # dark, from the system
    toggle.click()
    assert page.get_by_role("button", name="Dark theme").get_attribute("aria-pressed") == "false"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != dark_bg
    for where in ("#/", "#/vms", "#/jobs"):
        page.goto(f"/{where}")
        page.locator("main h1").wait_for()
        width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert width[0] <= width[1], (where, width)  # nothing runs off a 768 px window
    assert not b.foreign(), b.foreign()


def test_a_request_to_elsewhere_would_be_seen(
        api_ctx: ApiContext, server: str, browse: Callable[..., Browsing]) -> None:
    """The recorder the other tests rely on sees what a page asks of another host (and
    the page's own policy refuses a script's request there before it is made)."""
    b = browse(server)
    page = b.page()
    page.goto("/")
    refused = page.evaluate("fetch('http://example.invalid/x').then(() => 'sent', "
                            "(e) => 'refused')")
    assert refused == "refused" and not b.foreign()
    with pytest.raises(sync_api.Error):
        page.goto("http://example.invalid/")
    assert b.foreign() == ["http://example.invalid/"]




def test_a_queued_job_is_followed_live_and_cancelled(
        api_ctx: ApiContext, server: str, browse: Callable[..., Browsing]) -> None:
    """No service runs here, so the backup stays queued: its page follows it by the event
    stream, and Cancel ends it (the stream's end shows without a reload)."""
    user(api_ctx, "otto", "operator")
    b = browse(server)
    page = b.page()
    sign_in(page, "otto", USER_PASSWORD)
    page.goto(f"{server}/#/vms")
    page.get_by_role("button", name="Back up test now").click()
    page.wait_for_url("**/#/jobs/*")
    state = page.get_by_test_id("job-state")
    sync_api.expect(state).to_have_text("queued")
    page.get_by_role("button", name="Cancel job").click()
    sync_api.expect(state).to_have_text("interrupted")
    assert "was queued" in page.get_by_role("main").inner_text()
    assert page.get_by_role("button", name="Cancel job").is_hidden()
    page.get_by_role("link", name="Jobs", exact=True).first.click()
    page.get_by_role("table", name="Jobs").get_by_text("interrupted").wait_for()
    page.get_by_label("State").select_option("queued")  # the filter is the API's
    page.get_by_text("No jobs.").wait_for()
    assert not b.foreign(), b.foreign()
