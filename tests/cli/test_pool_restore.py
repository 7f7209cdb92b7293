"""Restore targets in a libvirt storage pool (``--pool``), on one real guest and one
point shared by the module: a VM, a group, a disk, a full clone and an instant VM's
finalize put their disks in volumes made through a ``dir`` pool (``virsh vol-list``
shows them, in the disk's format and size); the restored VM boots and is backed up.
Refusals (an unknown or inactive pool, a volume name taken, --pool with --storage)
leave no volume and no domain; a missing --storage directory is made."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stasis.catalog.db import CATALOG_FILE
from stasis_testkit import READY_MARKER, DiskSpec, Guest, GuestKit, MiB, read_image
from tests.conftest import (
    PASSPHRASE,
    Cli,
    define_pool,
    init_repo,
    remove_domain,
    remove_pool,
    seed_catalog,
)

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

PATTERN_AT = 2 * MiB


@dataclass
class Setup:
    kit: GuestKit
    guest: Guest
    pattern: bytes
    point: dict[str, Any]
    pool: Any  # the libvirt pool
    pool_name: str
    cli: Cli
    root: Path

    @property
    def conn(self) -> Any:
        return self.kit.conn

    def volumes(self) -> dict[str, tuple[str, int]]:
        """Volume name -> (format, capacity), as libvirt knows them."""
        self.pool.refresh(0)
        found = {}
        for vol in self.pool.listAllVolumes(0):
            xml = ET.fromstring(vol.XMLDesc(0))
            fmt = xml.find("target/format")
            found[vol.name()] = (fmt.get("type", "") if fmt is not None else "",
                                 int(xml.findtext("capacity") or 0))
        return found

    def clean(self, *domains: str) -> None:
        for name in domains:
            try:
                dom = self.conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            for chk in dom.listAllCheckpoints(0):  # a backup of it made one
                chk.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
            remove_domain(self.conn, name)
        for vol in self.pool.listAllVolumes(0):
            vol.delete(0)


@pytest.fixture(scope="module")
def setup(kit: GuestKit, tmp_path_factory: pytest.TempPathFactory,
          catalog_template: Path) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("pool")
    tag = f"{os.getpid() % 100000}"
    pool_name = f"stasis-test-pool-{tag}"
    pool = define_pool(kit.conn, pool_name, root / "pool", start=True)
    guest = kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB),
                              DiskSpec("vdb", "raw", 16 * MiB)])
    try:
        guest.wait_ready(90)
        pattern = guest.write_pattern("vdb", PATTERN_AT, 64 * 1024, seed=17)
        guest.sync()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STASIS_")}
        (root / "scratch").mkdir(mode=0o711)
        env.update(STASIS_REPO=str(root / "repo"), STASIS_PASSPHRASE=PASSPHRASE,
                   STASIS_STATE_DIR=str(root / "state"),
                   STASIS_SCRATCH_DIR=str(root / "scratch"), COLUMNS="200")
        init_repo(root / "repo")
        seed_catalog(catalog_template, root / "state" / CATALOG_FILE)
        cli = Cli(root / "repo", env)
        point = cli.ok("backup", "vm", guest.name, "--json").json()
        assert isinstance(point, dict)
        yield Setup(kit, guest, pattern, point, pool, pool_name, cli, root)
    finally:
        guest.destroy()
        remove_pool(pool)


def _disks(xml: str) -> dict[str, tuple[str, dict[str, str], str]]:
    """target -> (disk type, source attributes, driver type)."""
    found = {}
    for disk in ET.fromstring(xml).iterfind("devices/disk"):
        target, src, drv = disk.find("target"), disk.find("source"), disk.find("driver")
        assert target is not None and src is not None and drv is not None
        found[target.get("dev", "")] = (disk.get("type", ""), dict(src.attrib),
                                        drv.get("type", ""))
    return found


def _console_log(conn: Any, name: str) -> Path:
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    for serial in root.iterfind("devices/serial"):
        if serial.get("type") == "file":
            return Path(serial.find("source").get("path"))  # type: ignore[union-attr]
    raise AssertionError("no console log")


def _wait_booted(log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while READY_MARKER not in (log.read_text(errors="replace") if log.exists() else ""):
        assert time.monotonic() < deadline, f"no boot marker in {log}"
        time.sleep(0.2)


def _domains(conn: Any) -> set[str]:
    return {d.name() for d in conn.listAllDomains(0)}


def test_restore_vm_into_a_pool_boots_and_is_backed_up(setup: Setup) -> None:
    s, name = setup, f"{setup.guest.name}-pool"
    try:
        r = s.cli.ok("restore", "vm", s.point["id"], "--name", name, "--pool", s.pool_name,
                     "--start", "--json").json()
        assert isinstance(r, dict) and r["pool"] == s.pool_name and r["storage"] == ""
        vols = s.volumes()
        assert vols[f"{name}-vda.qcow2"] == ("qcow2", 32 * MiB)
        assert vols[f"{name}-vdb.img"] == ("raw", 16 * MiB)
        assert r["volumes"]["vda"] == f"{name}-vda.qcow2"
        # Every file the VM needs (kernel, initrd) is a volume of the pool too.
        assert set(vols) == {*r["volumes"].values()}
        assert {d["disk"]: d["volume"] for d in r["disks"]} == {
            "vda": f"{name}-vda.qcow2", "vdb": f"{name}-vdb.img"}
        dom = s.conn.lookupByName(name)
        persistent = _disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert persistent == {
            "vda": ("volume", {"pool": s.pool_name, "volume": f"{name}-vda.qcow2"}, "qcow2"),
            "vdb": ("volume", {"pool": s.pool_name, "volume": f"{name}-vdb.img"}, "raw")}
        _wait_booted(_console_log(s.conn, name))
        path = s.pool.storageVolLookupByName(f"{name}-vdb.img").path()
        assert read_image(Path(path), "raw", PATTERN_AT, len(s.pattern)) == s.pattern
        # A backup of the restored VM reads its volume disks (their paths resolved).
        b = s.cli.ok("backup", "vm", name, "--json").json()
        assert isinstance(b, dict)
        (vm,) = b["vms"]
        assert sorted(d["target"] for d in vm["disks"]) == ["vda", "vdb"]
        rows = s.cli.ok("vms", "--json").json()
        assert isinstance(rows, list)
        row = next(x for x in rows if x["name"] == name)
        assert {d["target"]: d["source"] for d in row["disks"]}["vdb"] == path
    finally:
        s.clean(name)


def test_restore_group_disk_and_clone_into_a_pool(setup: Setup, tmp_path: Path) -> None:
    s = setup
    group_name, clone = f"{s.guest.name}-gp", f"{s.guest.name}-cl"
    try:
        g = s.cli.ok("restore", "group", s.point["id"], "--suffix", "-gp", "--pool",
                     s.pool_name, "--json").json()
        assert isinstance(g, dict) and g["pool"] == s.pool_name
        assert {f"{group_name}-vda.qcow2", f"{group_name}-vdb.img"} <= set(s.volumes())
        assert _disks(s.conn.lookupByName(group_name).XMLDesc(0))["vda"][0] == "volume"
        # One disk: a default volume name, or the one --to gives.
        d = s.cli.ok("restore", "disk", s.point["id"], "--disk", "vdb", "--pool",
                     s.pool_name, "--json").json()
        assert isinstance(d, dict)
        default = f"{s.guest.name}-restored-vdb.img"
        assert (d["pool"], d["volume"], d["format"]) == (s.pool_name, default, "raw")
        named = s.cli.ok("restore", "disk", s.point["id"], "--disk", "vda", "--pool",
                         s.pool_name, "--to", "one.qcow2", "--json").json()
        assert isinstance(named, dict) and named["volume"] == "one.qcow2"
        vols = s.volumes()
        assert vols[default] == ("raw", 16 * MiB) and vols["one.qcow2"] == ("qcow2", 32 * MiB)
        as_file = tmp_path / "vda.qcow2"
        s.cli.ok("restore", "disk", s.point["id"], "--disk", "vda", "--to", str(as_file))
        assert subprocess.run(["qemu-img", "compare", "-q", str(as_file),
                               named["target"]]).returncode == 0
        # A full clone; a linked one cannot go to a pool.
        c = s.cli.ok("clone", s.point["id"], "--name", clone, "--pool", s.pool_name,
                     "--json").json()
        assert isinstance(c, dict) and c["pool"] == s.pool_name
        assert c["volumes"]["vda"] == f"{clone}-vda.qcow2" in s.volumes()
        r = s.cli("clone", s.point["id"], "--name", f"{clone}2", "--linked", "--pool",
                  s.pool_name)
        assert r.code == 2 and "linked clone" in r.err
        assert f"{clone}2" not in _domains(s.conn)
    finally:
        s.clean(group_name, clone)


def test_instant_finalize_into_a_pool(setup: Setup, tmp_path: Path) -> None:
    s, name = setup, f"{setup.guest.name}-ip"
    storage = tmp_path / "overlays"
    storage.mkdir()
    try:
        s.cli.ok("instant", s.point["id"], "--name", name, "--storage", str(storage))
        fin = s.cli.ok("instant", "finalize", name, "--pool", s.pool_name, "--json").json()
        assert isinstance(fin, dict) and fin["pool"] == s.pool_name
        assert fin["volumes"] == {"vda": f"{name}-vda.qcow2", "vdb": f"{name}-vdb.img"}
        vols = s.volumes()
        assert vols[f"{name}-vda.qcow2"] == ("qcow2", 32 * MiB)
        assert vols[f"{name}-vdb.img"] == ("raw", 16 * MiB)
        dom = s.conn.lookupByName(name)
        assert dom.isActive()
        persistent = _disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert persistent["vdb"] == (
            "volume", {"pool": s.pool_name, "volume": f"{name}-vdb.img"}, "raw")
        assert "nbd" not in dom.XMLDesc(0)
        path = s.pool.storageVolLookupByName(f"{name}-vdb.img").path()
        assert read_image(Path(path), "raw", PATTERN_AT, len(s.pattern)) == s.pattern
    finally:
        s.clean(name)
        s.cli("instant", "discard", name)


def test_refusals_leave_no_volume_and_no_domain(setup: Setup, tmp_path: Path) -> None:
    s, name = setup, f"{setup.guest.name}-no"
    idle_name = f"{s.pool_name}-idle"
    idle = define_pool(s.conn, idle_name, s.root / "idle", start=False)
    try:
        cases = [
            (["--pool", "stasis-no-such-pool"], 2, "no libvirt storage pool named"),
            (["--pool", idle_name], 2, f"'{idle_name}' is inactive"),
            (["--pool", s.pool_name, "--storage", str(tmp_path)], 2, "--pool"),
        ]
        for extra, code, text in cases:
            r = s.cli("restore", "vm", s.point["id"], "--name", name, *extra)
            assert r.code == code and text in r.err, (extra, r.code, r.err)
            r = s.cli("restore", "group", s.point["id"], "--suffix", "-no", *extra)
            assert r.code == code and text in r.err, (extra, r.code, r.err)
        r = s.cli("restore", "disk", s.point["id"], "--disk", "vda", "--pool", idle_name)
        assert r.code == 2 and "inactive" in r.err
        r = s.cli("instant", "finalize", "no-such-instant", "--pool", s.pool_name)
        assert r.code != 0
        # A name taken in the pool: refused before anything is written (code 17).
        taken = f"{name}-vdb.img"
        s.pool.createXML(f"<volume><name>{taken}</name><capacity>1048576</capacity>"
                         "<target><format type='raw'/></target></volume>", 0)
        r = s.cli("restore", "vm", s.point["id"], "--name", name, "--pool", s.pool_name)
        assert r.code == 17 and f"volume {taken} of the storage pool" in r.err, r.err
        r = s.cli("restore", "disk", s.point["id"], "--disk", "vdb", "--pool", s.pool_name,
                  "--to", taken)
        assert r.code == 17
        assert set(s.volumes()) == {taken}  # the one made here, nothing else
        assert not {name, f"{s.guest.name}-no"} & _domains(s.conn)
        assert list((s.root / "idle").iterdir()) == []
    finally:
        s.clean(name)
        remove_pool(idle)
        shutil.rmtree(s.root / "idle", ignore_errors=True)


def test_a_missing_storage_directory_is_made(setup: Setup, tmp_path: Path) -> None:
    s, name = setup, f"{setup.guest.name}-dir"
    storage = tmp_path / "not" / "yet"
    try:
        r = s.cli.ok("restore", "vm", s.point["id"], "--name", name, "--storage", str(storage))
        assert f"(made the directory {storage})" in r.out
        assert (storage / f"{name}-vda.qcow2").is_file()
        # A restore refused later (its name is taken now) makes no directory.
        other = tmp_path / "other"
        r = s.cli("restore", "vm", s.point["id"], "--name", name, "--storage", str(other))
        assert r.code == 2 and not other.exists()
    finally:
        remove_domain(s.conn, name)
