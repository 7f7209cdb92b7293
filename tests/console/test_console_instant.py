"""Instant recovery from the console on a real guest: ``stasis serve --listen`` on
loopback, a point of the guest made with the CLI, then only the browser: the point's
recovery page starts the VM from the repository, the page of what runs from a
repository lists it running with its export, and Discard (after a dialog that says
what is lost) stops and undefines it, its export and overlays gone. No request of the
browser went anywhere but the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stasis.app import passwords
from stasis_testkit import DiskSpec, Guest, GuestKit, MiB
from tests.api.conftest import CHEAP_PASSWORDS
from tests.cli.test_serve_api import Served, start_serve, stop_serve
from tests.conftest import Cli, remove_domain
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


def test_an_instant_recovery_is_started_and_discarded_from_the_console(
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
    name = f"{guest.name}-now"
    served: Served | None = None
    conn = libvirt.open("qemu:///system")
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
        assert row.get_by_role("button", name=f"Finalize {name}").is_visible()

        row.get_by_role("button", name=f"Discard {name}").click()
        dialog = page.get_by_role("dialog", name="Discard this instant VM?")
        assert "overlays" in dialog.inner_text() and name in dialog.inner_text()
        shoot(page, "instant-discard", full=False)
        dialog.get_by_role("button", name="Discard the VM").click()
        page.get_by_text("Nothing runs from a repository.").wait_for(timeout=START_MS)
        assert name not in conn.listDefinedDomains() + [
            d.name() for d in conn.listAllDomains()]
        assert not list(overlays.iterdir()), list(overlays.iterdir())
        assert b.requests and not b.foreign(), b.foreign()
        assert stop_serve(served) == 0, served.text()
    finally:
        if served is not None and served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
        remove_domain(conn, name)
        conn.close()
    assert not list(scratch.iterdir()), list(scratch.iterdir())
