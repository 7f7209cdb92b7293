"""The editors, wizards and admin pages in a real browser over a real server on
loopback (the API's real catalog and repository, libvirt's test:///default driver, and
for the jobs ``stasis serve``'s service in a thread): a policy edited with a wrong
value whose message shows next to its field, then fixed, previewed (which points its
retention keeps and removes) and saved; a group made; a disk of a point restored to a
path by a job followed to its end (the bytes equal the disk's); repositories verified;
a point verified deeply and copied to a second repository from its page (offered to
maintainers alone), a pool given with a directory refused next to the pool field, a
tenant's pools offered; held points released; a user made, a token made and revoked;
the audit log shown to an auditor and hidden from a viewer (the API refuses it too)."""

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
from tests.conftest import init_repo, mixed_image, reopen
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
    """``stasis serve``'s service in a thread on the API's catalog, woken by the API,
    opening the repositories the API serves."""
    for d in ("run", "scratch"):
        (tmp_path / d).mkdir(exist_ok=True)

    def no_libvirt() -> Any:
        raise HypervisorError("libvirt is not used by these jobs")

    served = {n: (lambda r=r: reopen(r)) for n, r in api_ctx.repositories.items()}
    s = Service(api_ctx.catalog, [], repositories=served,
                connect=no_libvirt, run_dir=tmp_path / "run", scratch_dir=tmp_path / "scratch")
    with serving(api_ctx, s):
        yield s


@pytest.fixture
def offsite(api_ctx: ApiContext, tmp_path: Path) -> Repository:
    """A second repository the API serves, as "offsite" (asked for before ``service``,
    which then opens it too)."""
    r = init_repo(tmp_path / "offsite")
    served = api_ctx.repositories
    assert isinstance(served, dict)
    served["offsite"] = r
    return r


def user(ctx: ApiContext, name: str, role: str, tenant: str | None = None) -> str:
    acc.add_user(ctx.catalog, name, role=role, password=PASSWORD, tenant=tenant)
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
    page.get_by_label("Time zone", exact=True).fill("America/New_York")
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


def test_a_disk_is_restored_to_a_path_and_repositories_and_holds_are_shown(
        api_ctx: ApiContext, server: str, service: Service, tmp_path: Path,
        browse: Callable[..., Browsing]) -> None:
    img = mixed_image(tmp_path / "disk.raw", size=2 << 20)
    m = back_up_images(api_ctx.repository(), [img], name="disk", run_dir=tmp_path)
    user(api_ctx, "otto", "operator")
    b, page = signed_in(browse, server, "otto")
    page.goto(f"{server}/#/points/{m.id}")
    page.get_by_role("link", name="Recover: a disk").click()
    page.get_by_role("heading", name="Recover from point disk").wait_for()
    shoot(page, "recover")
    wizard = page.get_by_role("region", name="A disk")
    # no VM runs on the test driver's host but "test": attaching is offered for it
    out = tmp_path / "restored" / "disk.raw"
    out.parent.mkdir()
    wizard.get_by_label("Image to write").fill(str(out))
    wizard.get_by_label("Format").select_option("raw")
    wizard.get_by_role("button", name="Restore disk").click()
    page.wait_for_url("**/#/jobs/*")
    sync_api.expect(page.get_by_test_id("job-state")).to_have_text("succeeded", timeout=JOB_MS)
    got, want = out.read_bytes(), img.read_bytes()
    # the disk's bytes, to its whole last sector (a raw image is sectors)
    assert got[:len(want)] == want and not got[len(want):].strip(b"\0"), (len(got), len(want))
    shoot(page, "job-restore-disk")
    # the same again is refused (the image exists), with what was kept safe
    page.goto(f"{server}/#/points/{m.id}/recover?what=disk")
    page.get_by_label("Image to write").fill(str(out))
    page.get_by_role("button", name="Restore disk").click()
    page.wait_for_url("**/#/jobs/*")
    sync_api.expect(page.get_by_test_id("job-state")).to_have_text("failed", timeout=JOB_MS)
    assert out.read_bytes() == got

    # A restore in place is offered only for a VM that is shut off: this point's VM is
    # not on the host, and the page says so plainly.
    page.goto(f"{server}/#/points/{m.id}/recover?what=in-place")
    warning = page.get_by_test_id("in-place-warning")
    sync_api.expect(warning).to_contain_text("not defined on this host")
    assert page.get_by_role("button", name="Restore in place").is_disabled()

    # Repositories: sizes and a verify job.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Repositories").click()
    region = page.get_by_role("region", name="main (default)")
    sync_api.expect(region).to_contain_text("Deduplication")
    shoot(page, "repositories")
    region.get_by_role("button", name="Verify main").click()
    page.wait_for_url("**/#/jobs/*")
    sync_api.expect(page.get_by_test_id("job-state")).to_have_text("succeeded", timeout=JOB_MS)

    # Holds: the held point listed, released from the list.
    page.goto(f"{server}/#/points/{m.id}")
    page.get_by_label("Reason").fill("audit 2026")
    page.get_by_role("button", name="Hold point").click()
    page.get_by_test_id("hold-state").get_by_text("held", exact=True).wait_for()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Holds").click()
    held = page.locator(f"tr[data-point='{m.id}']")
    held.wait_for()
    shoot(page, "holds")
    held.get_by_role("button", name=f"Release the hold of disk {m.id[:12]}").click()
    page.get_by_text("No point is held.").wait_for()
    assert not b.foreign(), b.foreign()


def test_a_point_is_verified_and_copied_by_maintainers_and_a_pool_refusal_shows_at_its_field(
        api_ctx: ApiContext, offsite: Repository, server: str, service: Service,
        tmp_path: Path, browse: Callable[..., Browsing]) -> None:
    img = mixed_image(tmp_path / "disk.raw", size=2 << 20)
    m = back_up_images(api_ctx.repository(), [img], name="test", run_dir=tmp_path)
    user(api_ctx, "otto", "operator")
    b, page = signed_in(browse, server, "otto")

    # A deep verify of this point alone, and a copy of it to the other repository.
    page.goto(f"{server}/#/points/{m.id}")
    region = page.get_by_role("region", name="Verify and copy")
    shoot(page, "point-actions")
    region.get_by_role("button", name="Verify the point").click()
    page.wait_for_url("**/#/jobs/*")
    sync_api.expect(page.get_by_test_id("job-state")).to_have_text("succeeded", timeout=JOB_MS)
    job = page.request.get(page.url.replace("/#/", "/api/v1/")).json()
    assert (job["kind"], list(job["result"])) == ("verify", [m.id]), job
    assert job["bytes_read"] > 0  # deep: the chunks were read
    page.goto(f"{server}/#/points/{m.id}")
    region.get_by_label("Copy to").select_option("offsite")
    region.get_by_role("button", name="Copy the point").click()
    page.wait_for_url("**/#/jobs/*")
    sync_api.expect(page.get_by_test_id("job-state")).to_have_text("succeeded", timeout=JOB_MS)
    assert [p.id for p in reopen(offsite).points()] == [m.id]

    # A pool and a storage directory at once: the API's 422 shows next to the pool,
    # in the restore as a new VM and in the clone wizard, and no job is queued.
    jobs = len(page.request.get(f"{server}/api/v1/jobs").json()["items"])
    page.goto(f"{server}/#/points/{m.id}")
    restore = page.get_by_role("region", name="Restore as a new VM")
    restore.get_by_label("Storage").fill(str(tmp_path / "new"))
    restore.get_by_label("Pool").fill("default")
    restore.get_by_role("button", name="Restore as new VM").click()
    error = page.locator("[data-error-for='r-pool']")
    sync_api.expect(error).to_contain_text("--pool and --storage are two places")
    assert page.get_by_label("Pool").get_attribute("aria-invalid") == "true"
    page.get_by_role("link", name="Clone…").click()
    clone = page.get_by_role("region", name="A clone")
    clone.get_by_label("Storage").fill(str(tmp_path / "new"))
    clone.get_by_label("Pool").fill("default")
    clone.get_by_role("button", name="Make the clone").click()
    sync_api.expect(page.locator("[data-error-for='c-pool']")).to_contain_text("not both")
    shoot(page, "clone")
    # a disk to a pool's new volume never overwrites: "Overwrite" is refused at its box
    page.goto(f"{server}/#/points/{m.id}/recover?what=disk")
    disk = page.get_by_role("region", name="A disk")
    disk.get_by_label("Image to write").fill("restored.raw")
    disk.get_by_label("Pool").fill("default")
    disk.get_by_label("Overwrite it if it exists").check()
    disk.get_by_role("button", name="Restore disk").click()
    sync_api.expect(page.locator("[data-error-for='d-force']")).to_contain_text(
        "a pool's volume is never overwritten")
    assert len(page.request.get(f"{server}/api/v1/jobs").json()["items"]) == jobs
    # the VMs list clones a VM's newest point (of a VM, not of images), that VM chosen
    of_vm = commit(api_ctx.repository(), 9, ["test"], name="test")
    page.goto(f"{server}/#/vms")
    page.get_by_role("link", name="Clone test's newest point").click()
    sync_api.expect(page.get_by_role("region", name="A clone").get_by_label(
        "New VM's name")).to_have_value("test-clone")
    assert f"/points/{of_vm.id}/recover?what=clone&vm=test" in page.url
    assert not (tmp_path / "new").exists()
    # the point's page and the clone wizard read at 768 px in the dark theme
    page.emulate_media(color_scheme="dark")
    page.set_viewport_size({"width": 768, "height": 860})
    for where in (f"points/{m.id}", f"points/{m.id}/recover?what=clone", "vms"):
        page.goto(f"{server}/#/{where}")
        page.locator("main h1").wait_for()
        width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert width[0] <= width[1], (where, width)

    # A tenant's user is offered the tenant's pools (from GET /me), and neither verify
    # nor copy (the system's); a viewer sees no Verify, Copy or Clone either.
    acc.add_tenant(api_ctx.catalog, "shop", vms=["test"], labels={},
                   restore_pools=["shop-pool", "shop-fast"], restore_networks=[],
                   restore_dirs=["/srv/shop"])
    user(api_ctx, "tess", "operator", tenant="shop")
    _, tenant = signed_in(browse, server, "tess")
    tenant.goto(f"{server}/#/points/{m.id}")
    tenant.get_by_role("region", name="Restore as a new VM").wait_for()
    pools = tenant.get_by_test_id("r-pools").locator("option")
    assert [pools.nth(i).get_attribute("value") for i in range(pools.count())] == [
        "shop-pool", "shop-fast"]
    assert tenant.get_by_role("region", name="Verify and copy").count() == 0
    tenant.get_by_role("link", name="Clone…").click()
    sync_api.expect(tenant.get_by_test_id("c-pools").locator("option")).to_have_count(2)
    user(api_ctx, "vic", "viewer")
    _, viewer = signed_in(browse, server, "vic")
    viewer.goto(f"{server}/#/points/{m.id}")
    viewer.get_by_role("region", name="Point", exact=True).wait_for()
    for hidden in ("Verify and copy", "Restore as a new VM"):
        assert viewer.get_by_role("region", name=hidden).count() == 0, hidden
    assert viewer.get_by_role("link", name="Clone…").count() == 0
    assert not b.foreign(), b.foreign()


def test_a_user_is_made_and_a_token_made_and_revoked_and_audit_is_for_auditors(
        api_ctx: ApiContext, server: str, browse: Callable[..., Browsing]) -> None:
    user(api_ctx, "ada", "admin")
    acc.add_tenant(api_ctx.catalog, "shop", vms=["test"], labels={},
                   restore_pools=[], restore_networks=["isolated"], restore_dirs=["/srv/shop"])
    b, page = signed_in(browse, server, "ada")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    page.get_by_role("heading", name="Users").wait_for()
    page.get_by_label("Name").fill("uma")
    page.get_by_label("Role").select_option("auditor")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Add user").click()
    sync_api.expect(page.locator("[data-error-for='u-password']")).to_contain_text("8")
    page.get_by_label("Password").fill(USER_PASSWORD)
    page.get_by_role("button", name="Add user").click()
    page.locator("tr[data-user='uma']").wait_for()
    assert [u.role for u in acc.list_users(api_ctx.catalog) if u.name == "uma"] == ["auditor"]
    shoot(page, "users")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tenants").click()
    page.locator("tr[data-tenant='shop']").wait_for()
    shoot(page, "tenants")

    # A token: made (its secret shown once), then revoked.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tokens").click()
    page.get_by_label("Name").fill("ci")
    page.get_by_role("button", name="Make token").click()
    secret = page.get_by_label("Secret").input_value()
    assert secret.startswith("stasis_")
    row = page.locator("tr[data-token='ci']")
    sync_api.expect(row).to_contain_text("active")
    shoot(page, "tokens")
    row.get_by_role("button", name="Revoke token ci").click()
    sync_api.expect(row).to_contain_text("revoked")
    (token,) = [t for t in acc.list_tokens(api_ctx.catalog, "ada") if t.name == "ci"]
    assert token.state == "revoked"

    # Every new page reads at 768 px in the dark theme, nothing running off the window,
    # and is reached by keyboard alone from the navigation.
    page.emulate_media(color_scheme="dark")
    page.set_viewport_size({"width": 768, "height": 860})
    for where in ("policies", "policies/new", "groups", "groups/new", "holds", "instant",
                  "repositories", "users", "tokens", "tenants", "audit"):
        page.goto(f"{server}/#/{where}")
        page.locator("main h1").wait_for()
        width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert width[0] <= width[1], (where, width)
    page.set_viewport_size({"width": 1280, "height": 860})
    page.emulate_media(color_scheme="light")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tenants").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Tenants").wait_for()
    page.get_by_label("Name").focus()
    page.keyboard.type("lab")
    for _ in range(6):
        page.keyboard.press("Tab")  # past the five other fields to the button
    assert page.evaluate("document.activeElement.textContent") == "Add tenant"
    page.keyboard.press("Enter")
    page.locator("tr[data-tenant='lab']").wait_for()

    # The audit log: shown to an auditor, who sees what the admin did ...
    _, auditor = signed_in(browse, server, "uma")
    auditor.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    table = auditor.get_by_role("table", name="Audit log")
    sync_api.expect(table).to_contain_text("token.revoke")
    assert "user.add" in table.inner_text() or "user.create" in table.inner_text()
    auditor.get_by_label("Action").fill("token.")
    auditor.get_by_role("button", name="Filter").click()
    auditor.wait_for_url("**/#/audit?action=token.")
    sync_api.expect(table).not_to_contain_text("login")
    shoot(auditor, "audit")
    assert auditor.get_by_role("link", name="Users").count() == 0  # not an admin
    # ... and hidden from a viewer, whom the API refuses anyway.
    user(api_ctx, "vic", "viewer")
    _, viewer = signed_in(browse, server, "vic")
    nav = viewer.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Policies").wait_for()
    for hidden in ("Audit", "Users", "Tenants", "Instant"):
        assert nav.get_by_role("link", name=hidden).count() == 0, hidden
    viewer.goto(f"{server}/#/audit")
    sync_api.expect(viewer.get_by_role("alert")).to_contain_text("audit:read")
    assert not b.foreign(), b.foreign()
