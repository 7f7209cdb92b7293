"""Real test guests: boot, commands, disk writes seen on the host, workload, destroy.

One guest serves the module (a boot costs ~3 s under TCG); the destroy test boots
its own.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stasis_testkit import (
    READY_MARKER,
    SAMPLE,
    DiskSpec,
    Guest,
    GuestCommandTimeout,
    GuestKit,
    MiB,
    SeqLog,
    SeqLogWorkload,
    check_seqlog,
    read_regions,
    tree_manifest,
)

pytestmark = pytest.mark.vm

DISKS = [
    DiskSpec("vda", "qcow2", 64 * MiB),
    DiskSpec("vdb", "raw", 32 * MiB),
    DiskSpec("vdc", "qcow2", 128 * MiB, ext4_from=SAMPLE),
]



@pytest.fixture(scope="module")
def guest(kit: GuestKit) -> Iterator[Guest]:
    g = kit.create(disks=DISKS)
    try:
        g.wait_ready(90)
        yield g
    finally:
        g.destroy()


def test_boot_marker_and_disks(guest: Guest) -> None:
    assert f"{READY_MARKER} {guest.name}" in guest.console_log.read_text(errors="replace")
    assert guest.boot_seconds is not None and guest.boot_seconds < 60
    assert guest.run("hostname").output.strip() == guest.name
    sizes = {line.split()[3]: int(line.split()[2]) * 1024
             for line in guest.run("cat /proc/partitions", check=True).output.splitlines()[2:]}
    assert sizes == {"vda": 64 * MiB, "vdb": 32 * MiB, "vdc": 128 * MiB}


def test_another_process_finds_the_guest(guest: Guest, kit: GuestKit) -> None:
    with GuestKit(kit.conn, kit.kit_dir) as other:  # closing destroys nothing it did not create
        found = other.get(guest.name)
        assert found.disks == guest.disks and found.control_socket == guest.control_socket
        assert found.run("echo again") == (0, "again\n")
        assert guest.name in [g.name for g in other.guests()]
    assert guest.run("echo still here") == (0, "still here\n")


def test_commands_return_output_and_status(guest: Guest) -> None:
    assert guest.run("echo out; echo err >&2") == (0, "out\nerr\n")
    assert guest.run("exit 7").status == 7
    assert guest.run("false").status == 1
    script = 'x=1\nif [ $x = 1 ]; then\n  printf "%s|%s|%s\\n" "$HOME" \'$HOME\' "a\\"b"\nfi'
    assert guest.run(script) == (0, '/|$HOME|a"b\n')
    status, raw = guest.run_bytes("printf '\\000\\377__STASIS_END__ x 0\\n'")
    assert (status, raw) == (0, b"\x00\xff__STASIS_END__ x 0\n")  # framing cannot be fooled
    assert guest.run_bytes("cat /run/ctl/data", data=bytes(range(256)) * 8) == \
        (0, bytes(range(256)) * 8)


def test_a_timed_out_command_does_not_confuse_the_next(guest: Guest) -> None:
    with pytest.raises(GuestCommandTimeout):
        guest.run("sleep 1; echo late", timeout=0.3)
    assert guest.run("echo next", timeout=10) == (0, "next\n")


def test_guest_writes_are_in_the_host_images(guest: Guest) -> None:
    raw = guest.write_pattern("vdb", 3 * MiB + 512, 100_000, byte=0xA5)
    assert guest.read_image("vdb", 3 * MiB + 512, 100_000) == raw
    with open(guest.disks["vdb"].path, "rb") as f:  # raw: the file itself
        f.seek(3 * MiB + 512)
        assert f.read(100_000) == raw
    data = guest.write_pattern("vda", 5 * MiB + 4096, 64 * 1024, seed=11)
    assert guest.read_image("vda", 5 * MiB + 4096, 64 * 1024) == data  # qcow2, via qemu-nbd
    assert guest.read_bytes("vda", 5 * MiB + 4096, 64 * 1024) == data
    assert guest.read_image("vda", 5 * MiB, 4096) == bytes(4096)  # around it: untouched


def test_ext4_disk_holds_the_sample_tree(guest: Guest, kit: GuestKit) -> None:
    manifest = tree_manifest(kit.sample_tree())
    out = guest.run("mkdir -p /mnt/c && mount -o ro -t ext4 /dev/vdc /mnt/c && "
                    "cd /mnt/c && find . -type f -exec sha256sum {} +; "
                    "cd / && umount /mnt/c", check=True).output
    seen = {line.split(None, 1)[1].removeprefix("./"): line.split(None, 1)[0]
            for line in out.splitlines()}
    assert seen == {k: v for k, v in manifest.items() if not v.startswith("->")}
    assert manifest["data/log.txt"] == hashlib.sha256(
        (kit.sample_tree() / "data/log.txt").read_bytes()).hexdigest()


def test_sequential_log_in_a_real_guest(guest: Guest) -> None:
    log = SeqLog.on("vda", "vdb", blocks=16, offset=8 * MiB)
    work = SeqLogWorkload(guest, log)
    work.start(limit=50)
    assert work.wait(timeout=60) == 50
    assert check_seqlog(log, read_regions(log, guest.read_image)) == 50  # wrapped around

    # The content of one instant, taken while it runs: the guest paused, the images read.
    work.start()
    work.wait_count(20)
    before = work.count()
    guest.domain.suspend()
    try:
        regions = read_regions(log, guest.read_image)
    finally:
        guest.domain.resume()
    after = work.count()
    n = check_seqlog(log, regions)
    assert before <= n <= after + 1
    final = work.stop()
    assert final >= after
    assert check_seqlog(log, read_regions(log, guest.read_image)) == final


def test_checkpoint_and_pull_backup_of_a_busy_guest(guest: Guest, kit: GuestKit) -> None:
    """The kit's disks work with libvirt checkpoints and pull-mode backups under TCG."""
    nbd = pytest.importorskip("nbd")
    log = SeqLog.on("vda", "vdb", blocks=16, offset=16 * MiB)
    work = SeqLogWorkload(guest, log, tag="backup")
    sock = kit.socket_dir / f"{guest.name}.bk"
    backup = f"""<domainbackup mode='pull'>
      <server transport='unix' socket='{sock}'/>
      <disks>
        <disk name='vda' backup='yes' type='file'><scratch file='{guest.dir}/vda.scratch'/></disk>
        <disk name='vdb' backup='yes' type='file'><scratch file='{guest.dir}/vdb.scratch'/></disk>
        <disk name='vdc' backup='no'/>
      </disks>
    </domainbackup>"""
    checkpoint = """<domaincheckpoint><name>testkit-1</name><disks>
      <disk name='vda' checkpoint='bitmap'/><disk name='vdb' checkpoint='no'/>
      <disk name='vdc' checkpoint='bitmap'/></disks></domaincheckpoint>"""
    work.start()
    try:
        work.wait_count(10)
        before = work.count()
        guest.domain.backupBegin(backup, checkpoint, 0)
        try:
            after = work.count()
            work.wait_count(after + 10)  # the guest keeps writing over the exported instant
            regions = {}
            for target in log.targets:
                h = nbd.NBD()
                h.set_export_name(target.disk)
                h.connect_unix(str(sock))
                regions[target.disk] = bytes(h.pread(target.size, target.offset))
                h.shutdown()
        finally:
            guest.domain.abortJob()
    finally:
        work.stop()
    n = check_seqlog(log, regions)
    assert before <= n <= after + 1
    assert [c.getName() for c in guest.domain.listAllCheckpoints()] == ["testkit-1"]


def test_destroy_leaves_nothing(kit: GuestKit) -> None:
    libvirt = pytest.importorskip("libvirt")
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 16 * MiB), DiskSpec("vdb", "raw", 16 * MiB)],
                   guest_agent=True)
    try:
        started = time.monotonic()
        g.wait_ready(90)
        assert time.monotonic() - started < 60
        assert g.agent_socket is not None and g.agent_socket.exists()
        g.domain.checkpointCreateXML(
            "<domaincheckpoint><name>c1</name><disks><disk name='vda' checkpoint='bitmap'/>"
            "<disk name='vdb' checkpoint='no'/></disks></domaincheckpoint>")
        files: list[Path] = [g.dir, g.control_socket, g.agent_socket]
        assert all(p.exists() for p in files)
        g.poweroff()  # and a restart: the marker of the new boot, a fresh command channel
        g.start()
        g.wait_ready(90)
        assert g.console_text().count(READY_MARKER) == 1
        assert g.run("cat /proc/partitions | grep -c vd").output == "2\n"
    finally:
        g.destroy()
    with pytest.raises(libvirt.libvirtError):
        kit.conn.lookupByName(g.name)
    assert [p for p in files if p.exists()] == []
    assert g.name not in [i.name for i in kit.guests()]
    assert not kit.destroy(g.name)  # a second destroy finds nothing to do


def test_guests_of_a_dead_process_are_stale(kit: GuestKit) -> None:
    script = (
        "import sys; from pathlib import Path; from stasis_testkit import GuestKit\n"
        "kit = GuestKit(kit_dir=Path(sys.argv[1]))\n"
        "g = kit.create(start=False)\n"
        "kit.release(g.name)\n"
        "print(g.name)\n"
    )
    name = subprocess.run([sys.executable, "-c", script, str(kit.kit_dir)], check=True,
                          capture_output=True, text=True).stdout.strip()
    assert name in [g.name for g in kit.guests()]
    assert kit.destroy_stale() == [name]
    assert name not in [g.name for g in kit.guests()]
    assert not (kit.guests_dir / name).exists()
