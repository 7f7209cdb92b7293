"""Instant recovery from the console on a real guest: ``stasis serve --listen`` on
loopback, a point of the guest made with the CLI, then only the browser: the point's
recovery page starts the VM from the repository, the page of what runs from a
repository lists it running with its export, and Discard (after a dialog that says
what is lost) stops and undefines it, its export and overlays gone (a finalize into a
pool the host lacks fails first, the VM running on). Then clones of the same point: a
linked one from the point's page (made at once, its VM's page next), removed from the
page of what runs from a repository; a full one from the VM's page ("Clone the newest
point") into a libvirt pool, a job followed to its end. No request of the browser went
anywhere but the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stasis.app import passwords
from stasis_testkit import DiskSpec, Guest, GuestKit, MiB
from tests.api.conftest import CHEAP_PASSWORDS
from tests.cli.test_serve_api import Served, start_serve, stop_serve
from tests.conftest import Cli, define_pool, remove_domain, remove_pool
from tests.console.conftest import Browsing, shoot, sign_in, sync_api

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

PASSWORD = "a long enough password"
START_MS = 120_000  # an instant VM defined and started under TCG, on a loaded machine


@pytest.fixture(scope="module")
def guest(kit: GuestKit) -> Any:
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB)])
    try:
        g.wait_ready(90)
        yield g
    finally:
        g.destroy()


def test_an_instant_recovery_is_started_and_discarded_and_the_point_cloned_from_the_console(
        guest: Guest, cli_repo: Cli, tmp_path: Path, browse: Any) -> None:
    env = {passwords.COST_ENV: CHEAP_PASSWORDS}
    secret = tmp_path / "user.pass"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    cli_repo.ok("user", "add", "rita", "--role", "restore", "--password-file", str(secret),
                env=env)
    cli_repo.ok("backup", "vm", guest.name, env=env)
    listed = cli_repo.ok("list", "--json").json()
    assert isinstance(listed, list)
    point = listed[-1]["id"]
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o711)
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    name, twin = f"{guest.name}-now", f"{guest.name}-twin"
    served: Served | None = None
    conn = libvirt.open("qemu:///system")
    pool = define_pool(conn, f"{guest.name}-pool", tmp_path / "pool", start=True)
    try:
        served = start_serve(cli_repo, tmp_path, "--listen", "127.0.0.1:0",
                             env={"STASIS_SCRATCH_DIR": str(scratch), **env})
        b: Browsing = browse(served.url)
        page = b.page()
        sign_in(page, "rita", PASSWORD)
        page.goto(f"{served.url}/#/points/{point}/recover?what=instant")
        wizard = page.get_by_role("region", name="Instant recovery")
        wizard.get_by_label("New VM's name").fill(name)
        wizard.get_by_label("Storage").fill(str(overlays))
        wizard.get_by_role("button", name="Start instant recovery").click()
        page.get_by_test_id("instant-started").wait_for(timeout=START_MS)
        row = page.locator(f"tr[data-name='{name}']")
        sync_api.expect(row).to_contain_text("serving")
        assert "running" in row.inner_text()
        assert conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert list(overlays.iterdir())  # its writes go beside, in the storage given
        shoot(page, "instant")
        # Finalize into a pool the host lacks: the job fails saying so, and the VM runs
        # on from the repository.
        row.get_by_label("Pool").fill("stasis-no-such-pool")
        row.get_by_role("button", name=f"Finalize {name}").click()
        page.wait_for_url("**/#/jobs/*")
        sync_api.expect(page.get_by_test_id("job-state")).to_have_text("failed",
                                                                       timeout=START_MS)
        sync_api.expect(page.get_by_role("main")).to_contain_text("stasis-no-such-pool")
        assert conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
        page.goto(f"{served.url}/#/instant")
        row = page.locator(f"tr[data-name='{name}']")
        sync_api.expect(row).to_contain_text("serving")

        row.get_by_role("button", name=f"Discard {name}").click()
        dialog = page.get_by_role("dialog", name="Discard this instant VM?")
        assert "overlays" in dialog.inner_text() and name in dialog.inner_text()
        shoot(page, "instant-discard", full=False)
        dialog.get_by_role("button", name="Discard the VM").click()
        page.get_by_text("Nothing runs from a repository.").wait_for(timeout=START_MS)
        assert name not in conn.listDefinedDomains() + [
            d.name() for d in conn.listAllDomains()]
        assert not list(overlays.iterdir()), list(overlays.iterdir())

        # A linked clone from the point's page: made at once (201), its VM's page next;
        # listed with what runs from a repository, and removed there.
        page.goto(f"{served.url}/#/points/{point}")
        page.get_by_role("link", name="Clone…").click()
        wizard = page.get_by_role("region", name="A clone")
        wizard.get_by_label("New VM's name").fill(twin)
        wizard.locator("#c-linked").check()
        wizard.get_by_label("Storage").fill(str(overlays))
        wizard.get_by_role("button", name="Make the clone").click()
        page.wait_for_url(f"**/#/vms/{twin}?cloned=*", timeout=START_MS)
        sync_api.expect(page.get_by_test_id("cloned")).to_contain_text("linked clone")
        assert conn.lookupByName(twin).UUIDString() != guest.domain.UUIDString()
        assert list(overlays.iterdir())
        shoot(page, "vm-cloned")
        page.get_by_test_id("cloned").get_by_role("link", name="Remove it").click()
        row = page.locator(f"tr[data-name='{twin}']")
        sync_api.expect(row).to_contain_text("clone")
        shoot(page, "instant-clone")
        row.get_by_role("button", name=f"Remove {twin}").click()
        dialog = page.get_by_role("dialog", name="Remove this linked clone?")
        assert twin in dialog.inner_text()
        dialog.get_by_role("button", name="Remove the clone").click()
        page.get_by_text("Nothing runs from a repository.").wait_for(timeout=START_MS)
        assert twin not in conn.listDefinedDomains()
        assert not list(overlays.iterdir()), list(overlays.iterdir())

        # A full clone of the VM's newest point from its page, into a libvirt pool: a
        # job, followed to its end; the clone's disk a new volume of the pool.
        page.goto(f"{served.url}/#/vms/{guest.name}")
        page.get_by_role("link", name="Clone the newest point…").click()
        wizard = page.get_by_role("region", name="A clone")
        sync_api.expect(wizard.get_by_label("New VM's name")).to_have_value(f"{guest.name}-clone")
        wizard.get_by_label("Pool").fill(pool.name())
        wizard.get_by_role("button", name="Make the clone").click()
        page.wait_for_url("**/#/jobs/*")
        sync_api.expect(page.get_by_test_id("job-state")).to_have_text("succeeded",
                                                                       timeout=START_MS)
        full = conn.lookupByName(f"{guest.name}-clone")
        pool.refresh(0)
        assert f"{guest.name}-clone-vda.qcow2" in [v.name() for v in pool.listAllVolumes(0)]
        assert f"pool='{pool.name()}'" in full.XMLDesc()
        assert b.requests and not b.foreign(), b.foreign()
        assert stop_serve(served) == 0, served.text()
    finally:
        if served is not None and served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
        for made in (name, twin, f"{guest.name}-clone"):
            remove_domain(conn, made)
        remove_pool(pool)
        conn.close()
    assert not list(scratch.iterdir()), list(scratch.iterdir())
