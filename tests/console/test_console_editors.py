"""The editors, wizards and admin pages in a real browser over a real server on
loopback (the API's real catalog and repository, libvirt's test:///default driver, and
for the jobs ``stasis serve``'s service in a thread): a policy edited with a wrong
value whose message shows next to its field, then fixed, previewed (which points its
retention keeps and removes) and saved; a group made; a disk of a point restored to a
path by a job followed to its end (the bytes equal the disk's); repositories verified;
held points released; a user made, a token made and revoked; the audit log shown to
an auditor and hidden from a viewer (the API refuses it too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stasis.api.app import create_app
from stasis.api.context import ApiContext
from stasis.api.server import ApiServer
from stasis.app import accounts as acc
from stasis.app import catalog_policies as ops
from stasis.app.listen import Listen
from stasis.catalog import GroupStore, PolicyStore
from stasis.errors import HypervisorError
from stasis.protection.backup import back_up_images
from stasis.repository import Repository
from stasis.service.runner import Service
from tests.api.conftest import PASSWORD, api_ctx, real_ctx, serving
from tests.api.resources import commit
from tests.conftest import mixed_image, reopen
from tests.console.conftest import Browsing, shoot, sign_in, sync_api

__all__ = ["api_ctx", "real_ctx"]  # the API's fixtures, used here too

pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)

USER_PASSWORD = PASSWORD.decode()
JOB_MS = 60_000


@pytest.fixture
def server(api_ctx: ApiContext) -> Iterator[str]:
    s = ApiServer(create_app(api_ctx), Listen("127.0.0.1", 0))
    s.start()
    try:
        yield s.url
    finally:
        s.stop()


@pytest.fixture
def service(api_ctx: ApiContext, tmp_path: Path) -> Iterator[Service]:
    """``stasis serve``'s service in a thread on the API's catalog, woken by the API."""
    for d in ("run", "scratch"):
        (tmp_path / d).mkdir(exist_ok=True)
    repo: Repository = api_ctx.repository()

    def no_libvirt() -> Any:
        raise HypervisorError("libvirt is not used by these jobs")

    s = Service(api_ctx.catalog, [], repositories={"main": lambda: reopen(repo)},
                connect=no_libvirt, run_dir=tmp_path / "run", scratch_dir=tmp_path / "scratch")
    with serving(api_ctx, s):
        yield s


def user(ctx: ApiContext, name: str, role: str) -> str:
    acc.add_user(ctx.catalog, name, role=role, password=PASSWORD)
    return name


def signed_in(browse: Callable[..., Browsing], server: str, name: str) -> tuple[Browsing, Any]:
    b = browse(server)
    page = b.page()
    sign_in(page, name, USER_PASSWORD)
    return b, page


def test_a_policy_is_edited_with_an_error_shown_then_fixed_previewed_and_saved(
        api_ctx: ApiContext, server: str, browse: Callable[..., Browsing]) -> None:
    repo = api_ctx.repository()
    rules = ops.Rules(repositories={"main"}, default_repository="main")
    ops.create_policies(api_ctx.catalog, ops.policy_toml({
        "name": "web", "vms": ["test"], "cron": "0 2 * * *", "timezone": "Europe/Paris",
        "retention": {"keep_last": 3}}), rules=rules)
    for n in (1, 2, 3):
        commit(repo, n, ["test"], name="test", tags={"policy": "web"})
    user(api_ctx, "olga", "operator")
    b, page = signed_in(browse, server, "olga")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Policies").click()
    row = page.get_by_role("table", name="Policies").get_by_role("row").nth(1)
    assert "cron 0 2 * * * (Europe/Paris)" in row.inner_text()
    assert "+01:00" in row.inner_text() or "+02:00" in row.inner_text()  # its own zone
    shoot(page, "policies")
    page.get_by_role("link", name="web", exact=True).click()
    page.get_by_role("heading", name="Policy web").wait_for()
    # the saved policy's preview: all three kept
    sync_api.expect(page.get_by_test_id("preview-summary")).to_contain_text("3 kept, 0 would")
    # a wrong value: the API's message shows next to the field, and nothing is saved
    page.get_by_label("Keep last").fill("two")
    page.get_by_role("button", name="Save changes").click()
    error = page.locator("[data-error-for='pf-keep_last']")
    sync_api.expect(error).to_contain_text("retention.keep_last must be a whole number")
    assert page.get_by_label("Keep last").get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "pf-keep_last"
    assert "keep_last = 3" in PolicyStore(api_ctx.catalog).get("web").source  # unchanged
    shoot(page, "policy-error")
    # fixed: the preview of the edit (unsaved) says which points go and why
    page.get_by_label("Keep last").fill("1")
    page.locator("#pf-timezone").fill("America/New_York")
    page.get_by_role("button", name="Preview retention and runs").click()
    sync_api.expect(page.get_by_test_id("preview-summary")).to_contain_text(
        "1 kept, 2 would be removed")
    assert error.is_hidden()
    kept = page.locator("tr[data-keep='true']")
    assert kept.count() == 1 and kept.get_attribute("data-point") == f"{3:032x}"
    assert page.locator("tr[data-keep='false']").count() == 2
    assert "keep" in kept.inner_text().lower()
    runs = page.get_by_test_id("next-runs").inner_text()
    assert "02:00 -05:00" in runs or "02:00 -04:00" in runs, runs  # in the new zone
    assert len(repo.points()) == 3 and "keep_last = 3" in PolicyStore(
        api_ctx.catalog).get("web").source  # a preview stores and removes nothing
    shoot(page, "policy")
    page.get_by_role("button", name="Save changes").click()
    page.get_by_test_id("saved").wait_for()
    source = PolicyStore(api_ctx.catalog).get("web").source
    assert "keep_last = 1" in source and "America/New_York" in source, source
    assert len(repo.points()) == 3  # saving prunes nothing either

    # A new group, from the console.
    page.goto(f"{server}/#/groups")
    page.get_by_role("link", name="New group").click()
    page.get_by_label("Name", exact=True).fill("front")
    page.get_by_label("VMs").fill("test")
    page.get_by_role("button", name="Create group").click()
    page.get_by_role("heading", name="Group front").wait_for()
    assert GroupStore(api_ctx.catalog).get("front") is not None
    shoot(page, "group")
    page.goto(f"{server}/#/groups")
    page.get_by_role("link", name="front").wait_for()
    shoot(page, "groups")
    assert not b.foreign(), b.foreign()
