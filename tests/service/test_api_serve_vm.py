"""The real client flow on a real guest, through HTTP only: ``stasis serve --listen``
started as a process, its first admin and token made with the CLI, then with httpx
alone: a backup of the running guest started (202) and followed by its events to the
end, the new point listed, a file of its ext4 disk downloaded, the VM restored as a
new one and started, followed to the end, and seen booting (its console reaches the
kit's boot marker). Everything made is removed."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stasis_testkit import READY_MARKER, SAMPLE, DiskSpec, Guest, GuestKit, MiB
from tests.cli.test_serve_api import Served, admin_token, events, start_serve, stop_serve
from tests.conftest import Cli, remove_domain

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

LEAF = "deep/a/b/c/d/leaf.txt"  # in the kit's sample tree
LEAF_TEXT = b"the bottom of the tree\n"


@pytest.fixture(scope="module")
def guest(kit: GuestKit) -> Iterator[Guest]:
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB),
                          DiskSpec("vdb", "qcow2", 64 * MiB, ext4_from=SAMPLE)])
    try:
        g.wait_ready(90)
        yield g
    finally:
        g.destroy()


def follow(c: httpx.Client, job: int) -> tuple[list[str], dict[str, Any]]:
    """The kinds of the events of job ``job``'s stream, and the job as it ended."""
    kinds: list[str] = []
    with c.stream("GET", f"/api/v1/jobs/{job}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for kind, data in events(stream):
            kinds.append(kind)
            if kind == "end":
                return kinds, data
    raise AssertionError(f"the stream of job {job} ended without an end event: {kinds}")


def console_log(dom: Any) -> Path:
    for serial in ET.fromstring(dom.XMLDesc(0)).iterfind("devices/serial"):
        if serial.get("type") == "file":
            return Path(serial.find("source").get("path"))  # type: ignore[union-attr]
    raise AssertionError("no console log")


def test_backup_follow_list_download_restore_and_boot_over_http(
        guest: Guest, cli_repo: Cli, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o711)
    storage = tmp_path / "restored"
    storage.mkdir()
    env = {"STASIS_SCRATCH_DIR": str(scratch)}
    new_name = f"{guest.name}-api"
    served: Served | None = None
    conn = libvirt.open("qemu:///system")
    try:
        served = start_serve(cli_repo, tmp_path, "--listen", "127.0.0.1:0", env=env)
        auth = {"Authorization": f"Bearer {admin_token(cli_repo, tmp_path)}"}
        with httpx.Client(base_url=served.url, headers=auth, timeout=120) as c:
            # Back up the running guest, following the job to its end.
            r = c.post("/api/v1/backups", json={"vms": [guest.name]})
            assert r.status_code == 202, r.text
            job = r.json()["job"]
            assert r.headers["location"].endswith(f"/api/v1/jobs/{job['id']}")
            kinds, ended = follow(c, job["id"])
            assert ended["state"] == "succeeded", (ended, served.text())
            assert "progress" in kinds and "log" in kinds and kinds[-1] == "end", kinds
            point = ended["result"][guest.name]["point"]
            # The new point is listed.
            listed = c.get("/api/v1/points", params={"vm": guest.name})
            assert listed.status_code == 200, listed.text
            assert [p["id"] for p in listed.json()["items"]] == [point]
            # A file of its ext4 disk, found, then downloaded (vda holds no file system).
            found = c.get(f"/api/v1/points/{point}/files/find",
                          params={"pattern": "leaf.txt", "vm": guest.name, "disk": "vdb"})
            assert found.status_code == 200, found.text
            (entry,) = found.json()["items"]
            assert entry["path"].lstrip("/") == LEAF
            got = c.get(f"/api/v1/points/{point}/files/content",
                        params={"path": entry["path"], "vm": entry["vm"],
                                "disk": entry["disk"]})
            assert got.status_code == 200, got.text
            assert got.content == LEAF_TEXT
            # Restore it as a new VM, started, following the job to its end.
            r = c.post("/api/v1/restores", json={
                "what": "vm", "point": point, "name": new_name, "storage": str(storage),
                "start": True})
            assert r.status_code == 202, r.text
            kinds, ended = follow(c, r.json()["job"]["id"])
            assert ended["state"] == "succeeded", (ended, served.text())
            assert kinds[-1] == "end"
            assert ended["result"][guest.name]["restored_as"] == new_name
        # The copy runs, beside its original, and boots.
        dom = conn.lookupByName(new_name)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert dom.UUIDString() != guest.domain.UUIDString()
        log = console_log(dom)
        assert log.parent == storage
        deadline = time.monotonic() + 120
        while READY_MARKER not in (log.read_text(errors="replace") if log.exists() else ""):
            assert time.monotonic() < deadline, f"no boot marker in {log}"
            time.sleep(0.2)
        assert guest.domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert stop_serve(served) == 0, served.text()
    finally:
        if served is not None and served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
        remove_domain(conn, new_name)
        conn.close()
    assert not list(scratch.iterdir()), list(scratch.iterdir())
