"""The issue's flow in a real browser on a real guest: ``stasis serve --listen`` started
as a process on loopback, its users made with the CLI, then only the console: sign in,
see the VMs, back up the guest and watch its job end live, open the point, explore its
ext4 disk and download a file (the guest's bytes) and a directory (zip), restore the VM
as a new one and see it running, hold the point, and as a tenant's user see only the
tenant's VM; then release the hold and delete the point after the confirmation. No
request of the browser went anywhere but the server. Everything made is removed.

With $STASIS_CONSOLE_SHOTS set it screenshots each page there (light and dark):
bench/console_screenshots.py."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from stasis.app import passwords
from stasis_testkit import SAMPLE, DiskSpec, Guest, GuestKit, MiB
from tests.api.conftest import CHEAP_PASSWORDS
from tests.cli.test_serve_api import Served, start_serve, stop_serve
from tests.conftest import Cli, remove_domain
from tests.console.conftest import Browsing, shoot, sign_in, sync_api

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

LEAF_DIR = ["deep", "a", "b", "c", "d"]  # in the kit's sample tree
LEAF_TEXT = b"the bottom of the tree\n"
PASSWORD = "a long enough password"
JOB_MS = 180_000  # a backup or restore of the guest under TCG, on a loaded machine


@pytest.fixture(scope="module")
def guest(kit: GuestKit) -> Any:
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB),
                          DiskSpec("vdb", "qcow2", 64 * MiB, ext4_from=SAMPLE)])
    try:
        g.wait_ready(90)
        yield g
    finally:
        g.destroy()


def users(cli: Cli, tmp_path: Path, guest: str) -> None:
    """An admin, and a viewer of a tenant that owns the guest alone."""
    secret = tmp_path / "user.pass"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    env = {passwords.COST_ENV: CHEAP_PASSWORDS}
    cli.ok("user", "add", "alice", "--role", "admin", "--password-file", str(secret), env=env)
    cli.ok("tenant", "add", "shop", "--vm", guest, env=env)
    cli.ok("user", "add", "tess", "--role", "viewer", "--tenant", "shop", "--password-file",
           str(secret), env=env)


def watch_job(page: Any) -> list[str]:
    """Wait on a job's page for its end; the states its badge showed on the way (the
    page changed in place from the event stream, never reloaded)."""
    page.get_by_test_id("job-state").wait_for()
    page.evaluate("""() => {
        const el = document.querySelector('[data-testid=job-state]');
        window.seen = [el.textContent];
        new MutationObserver(() => window.seen.push(el.textContent))
            .observe(el, {childList: true, subtree: true, characterData: true});
    }""")
    sync_api.expect(page.get_by_test_id("job-state")).to_have_text(
        re.compile("succeeded|failed|interrupted"), timeout=JOB_MS)
    seen: list[str] = page.evaluate("window.seen")
    return seen


def test_the_console_backs_up_explores_restores_and_holds_on_a_real_guest(
        guest: Guest, cli_repo: Cli, tmp_path: Path, browse: Any) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o711)
    storage = tmp_path / "restored"
    storage.mkdir()
    new_name = f"{guest.name}-web"
    served: Served | None = None
    conn = libvirt.open("qemu:///system")
    try:
        users(cli_repo, tmp_path, guest.name)
        served = start_serve(cli_repo, tmp_path, "--listen", "127.0.0.1:0",
                             env={"STASIS_SCRATCH_DIR": str(scratch),
                                  passwords.COST_ENV: CHEAP_PASSWORDS})
        admin: Browsing = browse(served.url)
        page = admin.page()
        sign_in(page, "alice", PASSWORD)
        page.get_by_role("heading", name="Dashboard").wait_for()

        # The VMs, the guest among them; back it up now and watch the job end live.
        page.get_by_role("navigation", name="Main").get_by_role("link", name="VMs").click()
        row = page.locator(f"tr[data-vm='{guest.name}']")
        row.wait_for()
        assert "running" in row.inner_text()
        shoot(page, "vms")
        row.get_by_role("button", name=f"Back up {guest.name} now").click()
        page.wait_for_url("**/#/jobs/*")
        seen = watch_job(page)
        assert seen[-1] == "succeeded", (seen, page.get_by_test_id("job-log").inner_text(),
                                         served.text())
        assert page.get_by_test_id("job-log").inner_text().strip(), "no log line arrived"
        shoot(page, "job")

        # The point, from the job's result.
        page.get_by_test_id("job-result").get_by_role("link").first.click()
        page.get_by_role("heading", level=1, name="Point").wait_for()
        point_url = page.url
        consistency = page.get_by_role("region", name="Consistency").inner_text()
        assert guest.name in consistency
        shoot(page, "point")

        # Explore vdb (ext4): walk down to the leaf, find it by name, download it and
        # the directory above it as a zip.
        page.get_by_role("link", name=f"Explore files of {guest.name} vdb").click()
        page.get_by_role("heading", name=f"Files of {guest.name} vdb").wait_for()
        for part in LEAF_DIR:
            page.locator(f"tr[data-path$='/{part}']").get_by_role(
                "link", name=part, exact=True).click()
            page.get_by_role("navigation", name="Path").get_by_role(
                "link", name=part, exact=True).wait_for()
        page.locator("tr[data-path$='/leaf.txt']").wait_for()
        shoot(page, "explore")
        with page.expect_download() as got:
            page.get_by_role("link", name="Download leaf.txt").click()
        assert Path(got.value.path()).read_bytes() == LEAF_TEXT
        with page.expect_download() as got:
            page.get_by_role("link", name="Download d as zip").click()
        with zipfile.ZipFile(io.BytesIO(Path(got.value.path()).read_bytes())) as z:
            (leaf,) = [n for n in z.namelist() if n.endswith("leaf.txt")]
            assert z.read(leaf) == LEAF_TEXT
        page.get_by_label("Find by name").fill("leaf")
        page.get_by_role("button", name="Find").click()
        page.get_by_text("1 found for *leaf*").wait_for()

        # Restore the VM as a new one, started; its page shows it running.
        page.goto(point_url)
        page.get_by_label("New VM's name").fill(new_name)
        page.get_by_label("Storage").fill(str(storage))
        page.get_by_role("button", name="Restore as new VM").click()
        page.wait_for_url("**/#/jobs/*")
        seen = watch_job(page)
        assert seen[-1] == "succeeded", (seen, page.get_by_test_id("job-log").inner_text(),
                                         served.text())
        page.get_by_test_id("job-result").get_by_role("link", name=new_name).click()
        page.get_by_role("heading", name=new_name).wait_for()
        assert "running" in page.get_by_role("region", name="Machine").inner_text()
        assert conn.lookupByName(new_name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
        shoot(page, "vm-restored")

        # Hold the point; a held point cannot be deleted.
        page.goto(point_url)
        page.get_by_label("Reason").fill("audit 2026")
        page.get_by_label("Until").fill("30d")
        page.get_by_role("button", name="Hold point").click()
        page.get_by_test_id("hold-state").get_by_text("held", exact=True).wait_for()
        assert "audit 2026" in page.get_by_test_id("hold-made").inner_text()
        assert page.get_by_role("button", name="Delete point…").is_disabled()
        shoot(page, "point-held")
        page.set_viewport_size({"width": 768, "height": 860})  # it reflows, nothing cut
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        page.set_viewport_size({"width": 1280, "height": 860})

        # The guest's own page: its point and its backup job.
        page.goto(f"{served.url}/#/vms/{guest.name}")
        page.get_by_role("heading", name=guest.name, exact=True).wait_for()
        points = page.get_by_role("region", name="Points").inner_text()
        assert "full" in points and ("crash" in points or "filesystem" in points), points
        shoot(page, "vm")
        page.goto(f"{served.url}/#/")
        page.get_by_test_id("tile-ok").wait_for()
        shoot(page, "dashboard")

        # A tenant's user sees the tenant's VM alone, and may not back it up.
        tenant: Browsing = browse(served.url)
        tpage = tenant.page()
        sign_in(tpage, "tess", PASSWORD)
        tpage.goto(f"{served.url}/#/vms")
        tpage.locator(f"tr[data-vm='{guest.name}']").wait_for()
        assert tpage.locator("tr[data-vm]").count() == 1
        assert tpage.get_by_role("button", name=f"Back up {guest.name} now").count() == 0
        page.goto(f"{served.url}/#/vms")
        page.locator(f"tr[data-vm='{new_name}']").wait_for()  # the admin sees both

        # Release, then delete after the confirmation that says what is lost.
        page.goto(point_url)
        page.get_by_role("button", name="Release hold").click()
        page.get_by_test_id("hold-state").get_by_text("not held").wait_for()
        page.get_by_role("button", name="Delete point…").click()
        dialog = page.get_by_role("dialog", name="Delete this point?")
        said = dialog.inner_text()
        assert guest.name in said and "2 disks" in said and "gc" in said, said
        shoot(page, "point-delete", full=False)
        dialog.get_by_role("button", name="Delete the point").click()
        page.get_by_role("heading", name=guest.name, exact=True).wait_for()
        page.get_by_text("No points yet.").wait_for()

        assert admin.requests and not admin.foreign(), admin.foreign()
        assert tenant.requests and not tenant.foreign(), tenant.foreign()
        assert stop_serve(served) == 0, served.text()
    finally:
        if served is not None and served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
        remove_domain(conn, new_name)
        conn.close()
    assert not list(scratch.iterdir()), list(scratch.iterdir())
