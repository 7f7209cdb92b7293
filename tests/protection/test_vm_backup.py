"""Live VM backups with real running guests: full and incremental points, the chain's
doubts, shut-off VMs, and restores that equal the disks at each point's instant."""

from __future__ import annotations

import os
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from stasis.hypervisor import libvirt_api as lv
from stasis.protection.vm import back_up_vm
from stasis.recovery.restore import restore_disk
from stasis.recovery.vm import restore_vm
from stasis.repository import Manifest, Repository
from stasis_testkit import (
    READY_MARKER,
    SAMPLE,
    DiskSpec,
    Guest,
    GuestKit,
    MiB,
    SeqLog,
    SeqLogWorkload,
    check_seqlog,
)
from tests.conftest import images_equal, remove_domain

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

THREE_DISKS = [
    DiskSpec("vda", "qcow2", 64 * MiB),
    DiskSpec("vdb", "raw", 32 * MiB),
    DiskSpec("vdc", "qcow2", 128 * MiB, ext4_from=SAMPLE),
]



@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {"run": tmp_path / "run", "scratch": tmp_path / "scratch", "refs": tmp_path / "refs",
         "out": tmp_path / "out"}
    for p in d.values():
        p.mkdir()
    d["scratch"].chmod(0o711)
    return d


@pytest.fixture
def guest(kit: GuestKit) -> Iterator[Guest]:
    g = kit.create(disks=THREE_DISKS)
    try:
        g.wait_ready(90)
        yield g
    finally:
        g.destroy()


def backup(kit: GuestKit, repo: Repository, g: Guest, dirs: dict[str, Path]) -> Manifest:
    return back_up_vm(kit.conn, repo, g.name, run_dir=dirs["run"], scratch_dir=dirs["scratch"])


def modes(point: Manifest) -> dict[str, tuple[str, str]]:
    return {d.name: (d.mode, d.reason) for d in point.vms[0].disks}


def snapshot(g: Guest, dest: Path) -> dict[str, Path]:
    """The guest's disks as they are now (the guest idle), as raw reference files."""
    dest.mkdir(parents=True, exist_ok=True)
    refs = {}
    for target, disk in g.disks.items():
        ref = dest / f"{target}.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-f", disk.fmt, "-O", "raw",
                        str(disk.path), str(ref)], check=True)
        refs[target] = ref
    return refs


def assert_restores(repo: Repository, point: Manifest, refs: dict[str, Path],
                    out: Path) -> None:
    for target, ref in refs.items():
        restored = out / f"{point.id[:8]}-{target}.raw"
        restore_disk(repo, point, target=restored, disk=target, fmt="raw")
        assert images_equal(ref, restored), f"{target} of point {point.id[:12]} differs"
        restored.unlink()


def test_full_then_incremental_three_disks(kit: GuestKit, guest: Guest, repo: Repository,
                                           dirs: dict[str, Path]) -> None:
    guest.write_pattern("vda", 1 * MiB, 200_000, seed=1)
    guest.write_pattern("vdb", 2 * MiB, 100_000, seed=2)
    refs1 = snapshot(guest, dirs["refs"] / "1")
    p1 = backup(kit, repo, guest, dirs)
    assert {k: m for k, (m, _r) in modes(p1).items()} == {
        "vda": "full", "vdb": "full", "vdc": "full"}
    assert "first point" in modes(p1)["vda"][1]
    assert "no dirty bitmap" in modes(p1)["vdb"][1]
    assert p1.vms[0].state == "running" and "<domain" in p1.vms[0].domain_xml
    assert {f.name for f in p1.vms[0].files} == {"kernel", "initrd"}

    guest.write_pattern("vda", 9 * MiB, 64 * 1024, seed=3)
    guest.write_pattern("vdc", 100 * MiB, 64 * 1024, seed=4)
    refs2 = snapshot(guest, dirs["refs"] / "2")
    p2 = backup(kit, repo, guest, dirs)
    m2 = modes(p2)
    assert m2["vda"][0] == m2["vdc"][0] == "incremental"
    assert m2["vdb"][0] == "full"
    disks = {d.name: d for d in p2.vms[0].disks}
    # Only the 64 KiB that changed is read from the VM (one bitmap granule), not the
    # 256 KiB chunk around it: the rest of that chunk comes from the previous point.
    assert disks["vda"].bytes_read == 64 * 1024
    assert disks["vdc"].bytes_read == 64 * 1024
    # Unchanged kernel and initrd are not read again: their indexes are the last point's.
    files1 = {f.name: f for f in p1.vms[0].files}
    for f in p2.vms[0].files:
        assert f.bytes_read == 0 and f.index == files1[f.name].index, f.name
    # One checkpoint: the newest point's.
    chain = lv.checkpoints(guest.domain, lv.chain_prefix(repo.id))
    assert [c.name for c in chain] == [lv.checkpoint_name(repo.id, p2.id)]
    assert guest.domain.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
    assert list(dirs["scratch"].iterdir()) == []
    assert_restores(repo, p1, refs1, dirs["out"])
    assert_restores(repo, p2, refs2, dirs["out"])


def test_points_of_a_busy_guest_are_one_instant(kit: GuestKit, guest: Guest,
                                                repo: Repository, dirs: dict[str, Path]) -> None:
    """The guest writes a sequential log over two disks (one qcow2 incremental, one raw
    read in full) while points are taken; each restored point holds exactly the state
    after some number of writes: nothing torn, nothing from after the instant."""
    log = SeqLog.on("vda", "vdb", blocks=32, offset=4 * MiB)
    work = SeqLogWorkload(guest, log)
    work.start()
    try:
        counts = []
        points = []
        for _ in range(3):
            before = work.wait_count((counts[-1][1] if counts else 0) + 8)
            points.append(backup(kit, repo, guest, dirs))
            counts.append((before, work.count()))
    finally:
        work.stop()
    assert [modes(p)["vda"][0] for p in points] == ["full", "incremental", "incremental"]
    found = []
    for point, (before, after) in zip(points, counts, strict=True):
        regions = {}
        for target in log.targets:
            out = dirs["out"] / f"{point.id[:8]}-{target.disk}.raw"
            restore_disk(repo, point, target=out, disk=target.disk, fmt="raw")
            with open(out, "rb") as f:
                f.seek(target.offset)
                regions[target.disk] = f.read(target.size)
        n = check_seqlog(log, regions)
        assert before <= n <= after + 1, (before, n, after)
        found.append(n)
    assert found == sorted(found) and found[0] < found[-1]


def test_chain_doubts_send_only_that_disk_to_a_full_read(
    kit: GuestKit, guest: Guest, repo: Repository, dirs: dict[str, Path], tmp_path: Path
) -> None:
    dom = guest.domain
    backup(kit, repo, guest, dirs)

    def next_point(label: str) -> Manifest:
        guest.write_pattern("vda", 20 * MiB, 4096, seed=len(label))
        refs = snapshot(guest, dirs["refs"] / label)
        point = backup(kit, repo, guest, dirs)
        assert_restores(repo, point, refs, dirs["out"])
        return point

    # A checkpoint deleted behind Stasis's back.
    (chk,) = lv.checkpoints(dom, lv.chain_prefix(repo.id))
    dom.checkpointLookupByName(chk.name).delete(0)
    m = modes(next_point("deleted"))
    assert m["vda"][0] == m["vdc"][0] == "full" and "is gone" in m["vda"][1]

    # A disk resized: only that disk is read in full.
    dom.blockResize("vdc", 160 * MiB, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
    m = modes(next_point("resized"))
    assert m["vdc"][0] == "full" and "resized" in m["vdc"][1]
    assert m["vda"][0] == "incremental"

    # A disk added.
    extra = guest.dir / "vdd.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", str(extra),
                    "16M"], check=True)
    dom.attachDeviceFlags(
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{extra}'/><target dev='vdd' bus='virtio'/></disk>",
        libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    guest.disks["vdd"] = type(guest.disks["vda"])("vdd", extra, "qcow2")
    m = modes(next_point("added"))
    assert m["vdd"][0] == "full" and "added" in m["vdd"][1]
    assert m["vda"][0] == "incremental"

    # The disk removed again: the point says so, the other disks stay incremental.
    dom.detachDeviceFlags(
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{extra}'/><target dev='vdd' bus='virtio'/></disk>",
        libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    deadline = time.monotonic() + 30
    while "vdd" in dom.XMLDesc(0):
        assert time.monotonic() < deadline, "the guest did not release vdd"
        time.sleep(0.2)
    del guest.disks["vdd"]
    removed = next_point("removed")
    assert removed.vms[0].extra["disks_removed"] == ["vdd"]
    assert "vdd" not in modes(removed) and modes(removed)["vda"][0] == "incremental"

    # The VM destroyed and started again.
    guest.domain.destroy()
    time.sleep(0.5)
    guest.start()
    guest.wait_ready(90)
    m = modes(next_point("restarted"))
    assert m["vda"][0] == "full" and "restarted" in m["vda"][1]
    assert modes(next_point("after"))["vda"][0] == "incremental"


def test_shut_off_vm(kit: GuestKit, guest: Guest, repo: Repository,
                     dirs: dict[str, Path]) -> None:
    guest.write_pattern("vda", 3 * MiB, 100_000, seed=5)
    backup(kit, repo, guest, dirs)
    guest.write_pattern("vda", 30 * MiB, 100_000, seed=6)
    guest.poweroff()
    assert not guest.is_running
    refs = snapshot(guest, dirs["refs"] / "off")
    p = backup(kit, repo, guest, dirs)
    m = modes(p)
    assert p.vms[0].state == "shut off"
    assert m["vda"][0] == "incremental" and "persistent bitmap" in m["vda"][1]
    vda = next(d for d in p.vms[0].disks if d.name == "vda")
    assert 0 < vda.bytes_read <= 2 * 64 * 1024  # 100 000 bytes: two 64 KiB granules
    assert_restores(repo, p, refs, dirs["out"])


def test_first_point_of_a_shut_off_vm(kit: GuestKit, repo: Repository,
                                      dirs: dict[str, Path]) -> None:
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB, ext4_from=SAMPLE),
                          DiskSpec("vdb", "raw", 16 * MiB)], start=False)
    try:
        refs = snapshot(g, dirs["refs"] / "cold")
        p = backup(kit, repo, g, dirs)
        assert {k: m for k, (m, _r) in modes(p).items()} == {"vda": "full", "vdb": "full"}
        assert_restores(repo, p, refs, dirs["out"])
    finally:
        g.destroy()


def _console_log(conn: object, name: str) -> Path:
    dom = conn.lookupByName(name)  # type: ignore[attr-defined]
    root = ET.fromstring(dom.XMLDesc(0))
    for serial in root.iterfind("devices/serial"):
        if serial.get("type") == "file":
            return Path(serial.find("source").get("path"))  # type: ignore[union-attr]
    raise AssertionError("no console log")


def test_restored_vm_boots_beside_the_original(kit: GuestKit, guest: Guest,
                                               repo: Repository, dirs: dict[str, Path],
                                               tmp_path: Path) -> None:
    guest.write_pattern("vdb", 1 * MiB, 50_000, seed=9)
    refs = snapshot(guest, dirs["refs"] / "boot")
    p = backup(kit, repo, guest, dirs)
    storage = tmp_path / "storage"
    storage.mkdir()
    name = f"{guest.name}-copy"
    try:
        result = restore_vm(kit.conn, repo, p, name=name, storage=storage)
        assert not result.started and result.name == name
        for target, ref in refs.items():  # before it boots and writes
            disk = next(d for d in result.disks if d.disk == target)
            assert images_equal(ref, Path(disk.target)), target
        new = kit.conn.lookupByName(name)
        new.create()
        assert new.UUIDString() != guest.domain.UUIDString()
        info = ET.fromstring(new.XMLDesc(0))
        sources = [s.get("file") for s in info.iterfind("devices/disk/source")]
        assert sources and all(str(storage) in (s or "") for s in sources)
        log = _console_log(kit.conn, name)
        assert str(storage) in str(log)
        deadline = time.monotonic() + 90
        while READY_MARKER not in (log.read_text(errors="replace") if log.exists() else ""):
            assert time.monotonic() < deadline, "the restored VM did not reach its boot marker"
            time.sleep(0.2)
        assert guest.is_running  # the original was not disturbed
    finally:
        remove_domain(kit.conn, name)


def test_in_place_restore(kit: GuestKit, guest: Guest, repo: Repository,
                          dirs: dict[str, Path]) -> None:
    guest.write_pattern("vda", 5 * MiB, 64 * 1024, seed=21)
    refs = snapshot(guest, dirs["refs"] / "inplace")
    p = backup(kit, repo, guest, dirs)
    from stasis.errors import VmState

    with pytest.raises(VmState, match="shut off"):
        restore_vm(kit.conn, repo, p, in_place=True)
    guest.write_pattern("vda", 5 * MiB, 64 * 1024, seed=22)  # a change to undo
    guest.poweroff()
    result = restore_vm(kit.conn, repo, p, in_place=True)
    assert result.in_place
    for target, ref in refs.items():
        fmt = guest.disks[target].fmt
        converted = dirs["out"] / f"inplace-{target}.raw"
        subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw",
                        str(guest.disks[target].path), str(converted)], check=True)
        assert images_equal(ref, converted), target
    assert lv.checkpoints(guest.domain, "stasis-") == []  # the chain starts again
    guest.start()
    guest.wait_ready(90)
    again = backup(kit, repo, guest, dirs)
    assert modes(again)["vda"][0] == "full"


@pytest.fixture
def isolated_networks(kit: GuestKit) -> Iterator[list[str]]:
    """Two isolated libvirt networks (no forwarding, no addresses on the host)."""
    names = [f"stasis-net-{os.getpid()}-{n}" for n in range(2)]
    nets = []
    try:
        for n, name in enumerate(names):
            net = kit.conn.networkCreateXML(
                f"<network><name>{name}</name><bridge name='stbr{os.getpid() % 10000}{n}'/>"
                "</network>")
            nets.append(net)
        yield names
    finally:
        for net in nets:
            net.destroy()


def test_restore_maps_interfaces_and_renews_identity(
    kit: GuestKit, repo: Repository, dirs: dict[str, Path], tmp_path: Path,
    isolated_networks: list[str],
) -> None:
    prod, drill = isolated_networks
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 16 * MiB)], network=prod)
    name = f"{g.name}-drill"
    try:
        g.wait_ready(90)
        p = backup(kit, repo, g, dirs)
        storage = tmp_path / "drill"
        storage.mkdir()
        restore_vm(kit.conn, repo, p, name=name, storage=storage, network=drill, start=True)
        old = ET.fromstring(g.domain.XMLDesc(0))
        new = ET.fromstring(kit.conn.lookupByName(name).XMLDesc(0))
        (old_if,) = old.iterfind("devices/interface")
        (new_if,) = new.iterfind("devices/interface")
        assert old_if.find("source").get("network") == prod  # type: ignore[union-attr]
        assert new_if.find("source").get("network") == drill  # type: ignore[union-attr]
        old_mac = old_if.find("mac").get("address")  # type: ignore[union-attr]
        new_mac = new_if.find("mac").get("address")  # type: ignore[union-attr]
        assert old_mac and new_mac and old_mac != new_mac
        assert new.findtext("uuid") != old.findtext("uuid")
    finally:
        remove_domain(kit.conn, name)
        g.destroy()


def test_each_point_restores_alone(kit: GuestKit, guest: Guest, repo: Repository,
                                   dirs: dict[str, Path]) -> None:
    """A point is a full index: removing the older points (as retention will) leaves the
    newest incremental point restorable, bit for bit."""
    backup(kit, repo, guest, dirs)
    guest.write_pattern("vda", 7 * MiB, 64 * 1024, seed=41)
    backup(kit, repo, guest, dirs)
    guest.write_pattern("vdc", 50 * MiB, 64 * 1024, seed=42)
    refs = snapshot(guest, dirs["refs"] / "alone")
    newest = backup(kit, repo, guest, dirs)
    assert modes(newest)["vdc"][0] == "incremental"
    for pid in repo.point_ids():
        if pid != newest.id:
            repo.backend.delete(f"manifests/{pid}")
    assert [p.id for p in repo.points()] == [newest.id]
    assert_restores(repo, newest, refs, dirs["out"])


def test_incremental_over_a_damaged_parent_chunk_reads_it_whole(
    kit: GuestKit, guest: Guest, repo: Repository, dirs: dict[str, Path]
) -> None:
    """The unchanged part of a partly dirty chunk comes from the parent point; when that
    copy is damaged the chunk is read whole from the VM instead, and stays exact."""
    guest.write_pattern("vda", 12 * MiB, 200_000, seed=51)
    first = backup(kit, repo, guest, dirs)
    index = repo.load_index(next(d for d in first.vms[0].disks if d.name == "vda").index)
    entry = (12 * MiB) // repo.chunk_size
    name = index.name(entry)
    from stasis.repository.repo import chunk_key

    path = Path(repo.url) / chunk_key(name)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1
    path.write_bytes(bytes(blob))
    guest.write_pattern("vda", 12 * MiB + 4096 * 16, 4096, seed=52)  # inside that chunk
    refs = snapshot(guest, dirs["refs"] / "damaged-parent")
    second = backup(kit, repo, guest, dirs)
    vda = next(d for d in second.vms[0].disks if d.name == "vda")
    assert vda.mode == "incremental" and vda.bytes_read == repo.chunk_size
    assert not path.exists() and any((Path(repo.url) / "quarantine").iterdir())
    assert_restores(repo, second, refs, dirs["out"])
