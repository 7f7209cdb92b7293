"""``stasis restore group`` on real guests: a group point of two running VMs comes back
as two new domains on an isolated network, started in the order asked, beside the
untouched originals; bad requests change nothing, and a failure mid-way is undone."""

from __future__ import annotations

import os
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stasis.backends import open_backend
from stasis.protection.capture import back_up_members
from stasis.repository import Credentials, Manifest, Repository
from stasis.repository.repo import chunk_key
from stasis_testkit import READY_MARKER, DiskSpec, Guest, GuestKit, MiB, read_image
from tests.conftest import CHEAP_KDF, PASSPHRASE, Cli, remove_domain

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

PATTERN_AT = 1 * MiB
PATTERN_LEN = 64 * 1024


@dataclass
class Group:
    kit: GuestKit
    a: Guest
    b: Guest
    patterns: dict[str, bytes]  # by original VM name
    prod: str  # the network the originals are on
    drill: str  # an isolated network for the copies
    repo_path: Path
    point: Manifest
    cli: Cli

    @property
    def conn(self) -> Any:
        return self.kit.conn


def _isolated_network(conn: Any, name: str, bridge: str) -> Any:
    # No <forward> and no <ip>: nothing leaves it, and the host has no address on it.
    return conn.networkCreateXML(f"<network><name>{name}</name><bridge name='{bridge}'/>"
                                 "</network>")


@pytest.fixture(scope="module")
def group(kit: GuestKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    """Two running guests on a 'production' network, a pattern on each disk, and one
    group point of both, in a repository the CLI opens."""
    tag = f"{os.getpid() % 100000}"
    prod, drill = f"stasis-grp-prod-{tag}", f"stasis-grp-drill-{tag}"
    nets = [_isolated_network(kit.conn, prod, f"stgp{tag}"),
            _isolated_network(kit.conn, drill, f"stgd{tag}")]
    guests: list[Guest] = []
    root = tmp_path_factory.mktemp("group-restore")
    try:
        guests = [kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB)], network=prod)
                  for _ in range(2)]
        patterns = {}
        for n, g in enumerate(guests):
            g.wait_ready(90)
            patterns[g.name] = g.write_pattern("vda", PATTERN_AT, PATTERN_LEN, seed=700 + n)
        repo = Repository.init(open_backend(root / "repo"), passphrase=PASSPHRASE.encode(),
                               chunk_size=256 << 10, kdf=CHEAP_KDF)
        for d in ("run", "scratch"):
            (root / d).mkdir()
        (root / "scratch").chmod(0o711)
        point = back_up_members(kit.conn, repo, [g.name for g in guests], point_name="app",
                                kind="group", run_dir=root / "run",
                                scratch_dir=root / "scratch")
        env = {k: v for k, v in os.environ.items() if not k.startswith("STASIS_")}
        env.update(STASIS_REPO=str(root / "repo"), STASIS_PASSPHRASE=PASSPHRASE,
                   STASIS_STATE_DIR=str(root / "state"),
                   STASIS_SCRATCH_DIR=str(root / "scratch"), COLUMNS="200")
        a, b = guests
        yield Group(kit, a, b, patterns, prod, drill, root / "repo", point,
                    Cli(root / "repo", env))
    finally:
        for g in guests:
            g.destroy()
        for net in nets:
            net.destroy()


def _storage(tmp_path: Path) -> Path:
    storage = tmp_path / "storage"
    storage.mkdir()
    return storage


def _defined(conn: Any, names: list[str]) -> list[str]:
    have = {d.name() for d in conn.listAllDomains(0)}
    return [n for n in names if n in have]


def _console_log(xml: ET.Element) -> Path:
    for serial in xml.iterfind("devices/serial"):
        if serial.get("type") == "file":
            return Path(serial.find("source").get("path"))  # type: ignore[union-attr]
    raise AssertionError("no console log")


def _qemu_start_ticks(name: str) -> int:
    """When the QEMU process of ``name`` started (clock ticks since boot), from /proc."""
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def _wait_booted(log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while READY_MARKER not in (log.read_text(errors="replace") if log.exists() else ""):
        assert time.monotonic() < deadline, f"no boot marker in {log}"
        time.sleep(0.2)


def _interface_network(xml: ET.Element) -> tuple[str | None, str | None]:
    (iface,) = xml.iterfind("devices/interface")
    return (iface.find("source").get("network"),  # type: ignore[union-attr]
            iface.find("mac").get("address"))  # type: ignore[union-attr]


def test_group_restores_and_starts_in_order_beside_the_originals(
    group: Group, tmp_path: Path
) -> None:
    a, b, conn = group.a, group.b, group.conn
    storage = _storage(tmp_path)
    suffix = "-drill"
    names = {a.name: f"{a.name}{suffix}", b.name: f"{b.name}{suffix}"}
    originals = {g.name: ET.fromstring(g.domain.XMLDesc(0)) for g in (a, b)}
    try:
        r = group.cli("restore", "group", group.point.id[:12], "--suffix", suffix,
                      "--storage", str(storage), "--network", group.drill,
                      "--start", "--order", f"{b.name},{a.name}", "--json")
        assert r.code == 0, r.err
        result = r.json()
        assert isinstance(result, dict)
        assert result["point"] == group.point.id and result["suffix"] == suffix
        assert [v["vm"] for v in result["vms"]] == [a.name, b.name]  # point order
        assert {v["vm"]: v["name"] for v in result["vms"]} == names
        assert all(v["started"] and v["storage"] == str(storage) for v in result["vms"])
        # B was started, and running, before A was started.
        assert result["start_order"] == [b.name, a.name]
        assert [s["vm"] for s in result["starts"]] == [b.name, a.name]
        by_vm = {v["vm"]: v for v in result["vms"]}
        assert by_vm[b.name]["started_at"] < by_vm[a.name]["started_at"]
        assert _qemu_start_ticks(names[b.name]) < _qemu_start_ticks(names[a.name])
        for vm, new_name in names.items():
            dom = conn.lookupByName(new_name)
            assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
            xml = ET.fromstring(dom.XMLDesc(0))
            assert xml.findtext("uuid") != originals[vm].findtext("uuid")
            net, mac = _interface_network(xml)
            old_net, old_mac = _interface_network(originals[vm])
            assert (net, old_net) == (group.drill, group.prod) and mac != old_mac
            log = _console_log(xml)
            assert log.parent == storage
            _wait_booted(log)
            # The disk of the copy holds what the original's disk held at the point.
            (disk,) = by_vm[vm]["disks"]
            assert Path(disk["target"]).parent == storage
            assert read_image(Path(disk["target"]), "qcow2", PATTERN_AT, PATTERN_LEN) \
                == group.patterns[vm]
        # The originals were not touched: running, same definition, same disk content.
        for g in (a, b):
            assert g.domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
            now = ET.fromstring(g.domain.XMLDesc(0))
            assert now.findtext("uuid") == originals[g.name].findtext("uuid")
            assert _interface_network(now) == _interface_network(originals[g.name])
            assert [s.get("file") for s in now.iterfind("devices/disk/source")] == \
                [s.get("file") for s in originals[g.name].iterfind("devices/disk/source")]
            assert g.read_bytes("vda", PATTERN_AT, PATTERN_LEN) == group.patterns[g.name]
        # A second restore with the same suffix finds the names taken: exit 2, no change.
        before = sorted(storage.iterdir())
        again = group.cli("restore", "group", group.point.id[:12], "--suffix", suffix,
                          "--storage", str(storage))
        assert again.code == 2 and "already exists" in again.err
        assert sorted(storage.iterdir()) == before
    finally:
        for new_name in names.values():
            remove_domain(conn, new_name)


def test_order_naming_a_vm_not_in_the_point_writes_nothing(group: Group,
                                                           tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    suffix = "-badorder"
    names = [f"{group.a.name}{suffix}", f"{group.b.name}{suffix}"]
    try:
        r = group.cli("restore", "group", group.point.id[:12], "--suffix", suffix,
                      "--storage", str(storage), "--start",
                      "--order", f"{group.b.name},no-such-vm")
        assert r.code == 2, r.err
        assert "no-such-vm" in r.err and "not in the point" in r.err
        assert _defined(group.conn, names) == []
        assert list(storage.iterdir()) == []
        r = group.cli("restore", "group", group.point.id[:12], "--suffix", suffix,
                      "--storage", str(storage), "--order", group.b.name)
        assert r.code == 2 and "needs --start" in r.err
        assert _defined(group.conn, names) == [] and list(storage.iterdir()) == []
    finally:
        for n in names:
            remove_domain(group.conn, n)


def test_a_name_already_taken_changes_nothing(group: Group, tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    suffix = "-taken"
    first, taken = f"{group.a.name}{suffix}", f"{group.b.name}{suffix}"
    # Only the second VM's name is taken: the first must not be restored either.
    group.conn.defineXML(f"<domain type='qemu'><name>{taken}</name><memory unit='MiB'>32"
                         "</memory><os><type>hvm</type></os></domain>")
    try:
        r = group.cli("restore", "group", group.point.id[:12], "--suffix", suffix,
                      "--storage", str(storage), "--start")
        assert r.code == 2, r.err
        assert taken in r.err and "already exists" in r.err and "Nothing was restored" in r.err
        assert _defined(group.conn, [first]) == []
        assert list(storage.iterdir()) == []
        assert not group.conn.lookupByName(taken).isActive()  # the other domain as it was
    finally:
        remove_domain(group.conn, first)
        remove_domain(group.conn, taken)


def test_an_existing_target_file_changes_nothing(group: Group, tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    suffix = "-file"
    names = [f"{group.a.name}{suffix}", f"{group.b.name}{suffix}"]
    there = storage / f"{group.b.name}{suffix}-vda.qcow2"
    there.write_bytes(b"someone else's")
    try:
        r = group.cli("restore", "group", group.point.id[:12], "--suffix", suffix,
                      "--storage", str(storage))
        assert r.code == 17, r.err
        assert str(there) in r.err
        assert _defined(group.conn, names) == []
        assert list(storage.iterdir()) == [there] and there.read_bytes() == b"someone else's"
    finally:
        for n in names:
            remove_domain(group.conn, n)


def test_a_failure_mid_way_removes_what_the_restore_created(group: Group,
                                                            tmp_path: Path) -> None:
    # A copy of the repository in which one chunk of B's disk (and B's alone) is
    # damaged: A restores and is defined, then B fails its integrity check.
    damaged = tmp_path / "damaged-repo"
    shutil.copytree(group.repo_path, damaged)
    repo = Repository.open(open_backend(damaged), Credentials(passphrase=PASSPHRASE.encode()))
    point = repo.resolve(group.point.id)
    assert [v.name for v in point.vms if v.kind == "vm"] == [group.a.name, group.b.name]
    index_of = {v.name: repo.load_index(next(d for d in v.disks if d.name == "vda").index)
                for v in point.vms}
    entry = PATTERN_AT // repo.chunk_size
    name = index_of[group.b.name].name(entry)
    assert name not in set(index_of[group.a.name].names())
    path = damaged / chunk_key(name)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1
    path.write_bytes(bytes(blob))

    storage = _storage(tmp_path)
    suffix = "-midway"
    first, second = f"{group.a.name}{suffix}", f"{group.b.name}{suffix}"
    try:
        r = group.cli("restore", "group", group.point.id[:12], "--suffix", suffix,
                      "--storage", str(storage), "--start",
                      env={"STASIS_REPO": str(damaged)})
        assert r.code == 19, r.err
        assert f"failed at VM {group.b.name}" in r.err
        assert "was undone" in r.err and f"domain {first}" in r.err
        assert _defined(group.conn, [first, second]) == []
        assert list(storage.iterdir()) == []
        assert group.a.is_running and group.b.is_running
    finally:
        remove_domain(group.conn, first)
        remove_domain(group.conn, second)


def test_without_start_the_copies_are_defined_and_shut_off(group: Group,
                                                           tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    names = [f"{group.a.name}-restored", f"{group.b.name}-restored"]  # the default suffix
    try:
        r = group.cli("restore", "group", "app@latest", "--storage", str(storage))
        assert r.code == 0, r.err
        assert f"Restored 2 VMs of point {group.point.id[:12]}" in r.out
        assert all(f"as {n}" in r.out for n in names) and "started" not in r.out
        assert _defined(group.conn, names) == names
        assert not any(group.conn.lookupByName(n).isActive() for n in names)
        assert sorted(p.name for p in storage.iterdir() if p.name.endswith(".qcow2")) == \
            sorted(f"{n}-vda.qcow2" for n in names)
    finally:
        for n in names:
            remove_domain(group.conn, n)
