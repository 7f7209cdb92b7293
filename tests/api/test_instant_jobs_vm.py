"""An instant VM's finalize and a full clone as jobs through the API, on a real guest
over real HTTP, run by a real ``Service`` (the fixtures of
tests/api/test_jobs_vm.py): a finalize cancelled while its disks copy leaves the VM
running from the repository with no copy, and finalized again it runs to its ``end``
(followed over SSE) on local disks; a full clone boots; a full clone cancelled
midway leaves no domain and no image."""

# The fixtures imported below are the tests' arguments by the same names.
# ruff: noqa: F811

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from stasis.api.context import ApiContext
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Credentials
from stasis.service.runner import Service
from stasis_testkit import Guest, GuestKit, MiB
from tests.api.test_jobs_vm import (  # noqa: F401  (fixtures)
    DATA_AT,
    DATA_LEN,
    URI,
    Event,
    Gate,
    api_ctx,
    back_up,
    follow,
    gate,
    guest,
    http,
    running_with_bytes,
    scratch,
    service,
)
from tests.cli.test_instant import _instant_guest, _wait_marker
from tests.conftest import PASSPHRASE, remove_domain

# The catalog's own tests and the API's other tests run on SQLite and PostgreSQL; these
# boot guests, and run on SQLite alone to keep the suite's time (nothing here depends on
# which database the catalog is).
pytestmark = [pytest.mark.vm,
              pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)]
libvirt = pytest.importorskip("libvirt")


def _sources(conn: Any, name: str, flags: int = 0) -> dict[str, str]:
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(flags))
    found = {}
    for disk in root.iterfind("devices/disk"):
        target, src = disk.find("target"), disk.find("source")
        if target is not None and src is not None:
            found[target.get("dev", "")] = src.get("file", "") or src.get("name", "")
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_finalize_cancelled_runs_on_from_the_repository_and_then_finalizes(
        guest: Guest, kit: GuestKit, http: Callable[[str], httpx.Client], gate: Gate,
        api_ctx: ApiContext, tmp_path: Path) -> None:
    api_ctx.credentials = {"main": Credentials(passphrase=PASSPHRASE.encode())}
    c = http("restore")
    guest.write_pattern("vda", DATA_AT, DATA_LEN, byte=0x5A)
    point = back_up(http("backup"), guest.name)["result"][guest.name]["point"]
    storage = tmp_path / "storage"
    storage.mkdir()
    name = f"{guest.name}-fin"
    conn = lv.connect(URI)
    try:
        r = c.post("/api/v1/instant", json={"point": point, "name": name,
                                            "storage": str(storage)})
        assert r.status_code == 201, r.text
        export_pid = r.json()["export_pid"]
        _wait_marker(_instant_guest(kit, guest, name))
        overlays = _sources(conn, name)
        assert overlays["vda"].endswith(".instant.qcow2")
        files = sorted(storage.iterdir())  # the overlays, kernel, initrd, console log

        # Cancelled while its disks copy: held at its first piece, cancelled there.
        gate.shut(1)
        r = c.post(f"/api/v1/instant/{name}/finalize")
        assert r.status_code == 202, r.text
        job = r.json()["job"]["id"]
        assert r.headers["location"] == f"/api/v1/jobs/{job}"
        assert r.json()["job"]["kind"] == "restore"
        asked: list[int] = []

        def cancel_midway(e: Event) -> None:
            if not asked and e["event"] == "progress" and e["data"]["state"] == "running":
                assert c.post(f"/api/v1/jobs/{job}/cancel").status_code == 200
                asked.append(job)

        end = follow(c, job, cancel_midway)[-1]["data"]
        gate.open()
        assert asked == [job]
        assert end["state"] == "interrupted", end
        # As before: running from its overlays on the export, no copy left.
        dom = conn.lookupByName(name)
        assert dom.isActive() and _sources(conn, name) == overlays
        assert dom.blockJobInfo("vda", 0) == {}
        assert sorted(storage.iterdir()) == files
        assert _alive(export_pid)
        (row,) = c.get("/api/v1/instant").json()["items"]
        assert (row["name"], row["state"]) == (name, "running")

        # Finalized: followed to its end, the VM runs on local disks, no export left.
        gate.shut()
        gate.open()
        r = c.post(f"/api/v1/instant/{name}/finalize")
        assert r.status_code == 202, r.text
        events = follow(c, r.json()["job"]["id"])
        end = events[-1]["data"]
        assert end["state"] == "succeeded", end
        assert [e for e in events if e["event"] == "progress"]
        local = str(storage / f"{name}-vda.qcow2")
        assert end["result"][name]["disks"] == {"vda": local}
        dom = conn.lookupByName(name)
        assert dom.isActive()
        assert _sources(conn, name) == _sources(conn, name, libvirt.VIR_DOMAIN_XML_INACTIVE) \
            == {"vda": local}
        assert not _alive(export_pid)
        assert not list(storage.glob("*.instant.qcow2"))
        assert c.get("/api/v1/instant").json()["items"] == []
        assert c.post(f"/api/v1/instant/{name}/finalize").status_code == 404
    finally:
        gate.open()
        remove_domain(conn, name)
        http("restore").post(f"/api/v1/instant/{name}/discard")
        conn.close()


def test_a_full_clone_is_a_job_that_boots_and_a_cancelled_one_leaves_nothing(
        guest: Guest, kit: GuestKit, http: Callable[[str], httpx.Client], gate: Gate,
        service: Service, tmp_path: Path) -> None:
    c = http("restore")
    guest.write_pattern("vda", DATA_AT, DATA_LEN, byte=0x5A)
    point = back_up(http("backup"), guest.name)["result"][guest.name]["point"]
    storage = tmp_path / "clones"
    storage.mkdir()
    name, cancelled = f"{guest.name}-clone", f"{guest.name}-cut"
    conn = lv.connect(URI)
    try:
        gate.shut()
        r = c.post("/api/v1/clones", json={"point": point, "name": cancelled,
                                           "storage": str(storage)})
        assert r.status_code == 202, r.text
        job = r.json()["job"]["id"]
        asked: list[int] = []

        def cancel_midway(e: Event) -> None:
            if not asked and running_with_bytes(e, "bytes_written"):
                assert c.post(f"/api/v1/jobs/{job}/cancel").status_code == 200
                asked.append(job)

        end = follow(c, job, cancel_midway)[-1]["data"]
        gate.open()
        assert asked == [job]
        assert end["state"] == "interrupted" and end["kind"] == "restore", end
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByName(cancelled)
        assert list(storage.iterdir()) == []

        r = c.post("/api/v1/clones", json={"point": point, "name": name,
                                           "storage": str(storage), "start": True})
        assert r.status_code == 202, r.text
        end = follow(c, r.json()["job"]["id"])[-1]["data"]
        assert end["state"] == "succeeded", end
        part = end["result"][guest.name]
        assert (part["cloned_as"], part["started"], part["point"]) == (name, True, point)
        assert end["bytes_written"] == part["bytes_written"] > 0
        assert conn.lookupByName(name).UUIDString() != guest.domain.UUIDString()
        _wait_marker(_instant_guest(kit, guest, name))
        assert guest.is_running
        assert guest.read_image("vda", DATA_AT, MiB) == b"\x5a" * MiB
    finally:
        service.stop()  # nothing still running defines a domain after this
        remove_domain(conn, name)
        remove_domain(conn, cancelled)
        conn.close()
