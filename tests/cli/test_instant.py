"""Points served over NBD, instant recovery and disks attached from a point, on real guests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stasis_testkit import READY_MARKER, DiskSpec, Guest, GuestDisk, GuestKit, MiB, read_image
from tests.conftest import BIN, Cli, make_cli_repo, remove_domain

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

VDB_PATTERN_AT = 5 * MiB
POINT_VDB: list[bytes] = []  # vdb's 64 KiB at VDB_PATTERN_AT in the point, once written


# One guest, repository and point for the module (a guest and a backup per test cost
# CI about 40 s): each test removes what it made, and checks that itself.
@pytest.fixture(scope="module")
def vm_cli(tmp_path_factory: pytest.TempPathFactory, catalog_template: Path) -> Cli:
    cli = make_cli_repo(tmp_path_factory.mktemp("instant-cli"), catalog_template)
    scratch = cli.repo.parent / "scratch"
    scratch.mkdir(mode=0o711)
    cli.env["STASIS_SCRATCH_DIR"] = str(scratch)
    return cli


@pytest.fixture(scope="module")
def source(kit: GuestKit) -> Iterator[Guest]:
    """A running guest with data on both disks (vda qcow2, vdb raw)."""
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 64 * MiB), DiskSpec("vdb", "raw", 32 * MiB)])
    try:
        g.wait_ready(90)
        # Data over the serial port is slow: a byte pattern made in the guest, and a
        # little random data sent from the host.
        g.write_pattern("vda", 3 * MiB, 1 * MiB, byte=0x3C)
        POINT_VDB.append(g.write_pattern("vdb", VDB_PATTERN_AT, 64 * 1024, seed=12))
        yield g
    finally:
        g.destroy()


@pytest.fixture(scope="module")
def point(source: Guest, vm_cli: Cli) -> dict[str, Any]:
    p = vm_cli.ok("backup", "vm", source.name, "--json").json()
    assert isinstance(p, dict)
    return p


def _restored(cli: Cli, point: dict[str, Any], disk: str, dest: Path) -> Path:
    cli.ok("restore", "disk", point["id"], "--disk", disk, "--to", str(dest), "--format", "raw")
    return dest


def _processes(word: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and cmd.split(" ", 1)[0].endswith(word):
            found.append(cmd)
    return found


def _ours(procs: list[str], tag: str) -> list[str]:
    return [p for p in procs if tag in p]


def _start_export(cli: Cli, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen([str(BIN), "export", *args, "--json"], env=cli.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the JSON object, printed once it serves
        lines.append(line)
        if line.startswith("}"):
            break
    if not lines:
        raise AssertionError(f"export did not start: {proc.wait()} {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc, json.loads("".join(lines))


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def test_export_read_only_equals_the_restored_disk(point: dict[str, Any], vm_cli: Cli,
                                                   tmp_path: Path) -> None:
    ref = _restored(vm_cli, point, "vdb", tmp_path / "vdb.raw")
    sock = tmp_path / "vdb.sock"
    proc, info = _start_export(vm_cli, point["id"], "--disk", "vdb", "--socket", str(sock))
    try:
        assert info["uri"] == f"nbd+unix:///vdb?socket={sock}" and not info["writable"]
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(ref),
                              info["uri"]], capture_output=True, text=True)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        # nbdinfo: the size, read-only, and the unwritten ranges as holes.
        nbdinfo = json.loads(subprocess.run(["nbdinfo", "--json", info["uri"]], check=True,
                                            capture_output=True, text=True).stdout)
        (exp,) = nbdinfo["exports"]
        assert exp["export-size"] == 32 * MiB and exp["is_read_only"] is True
        extents = json.loads(subprocess.run(["nbdinfo", "--map", "--json", info["uri"]],
                                            check=True, capture_output=True, text=True).stdout)
        data = [(e["offset"], e["length"]) for e in extents if not e["type"] & 2]
        assert sum(n for _o, n in data) <= 1 * MiB  # one chunk of 256 KiB data, 256 KiB grid
        assert any(o <= VDB_PATTERN_AT < o + n for o, n in data)
        assert any(e["type"] == 3 for e in extents)
        # A write is refused.
        w = subprocess.run(["qemu-io", "-f", "raw", "-c", "write 0 4096", info["uri"]],
                           capture_output=True, text=True)
        assert "write failed" in w.stdout + w.stderr or w.returncode != 0
        assert len(_ours(_processes("nbdkit"), point["id"])) == 1
    finally:
        code = _stop(proc)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert not sock.exists()
    assert _ours(_processes("nbdkit"), point["id"]) == []
    assert list((Path(vm_cli.env["STASIS_STATE_DIR"]) / "run").iterdir()) == []


def test_export_writable_keeps_the_point_and_the_overlay_as_asked(
    point: dict[str, Any], vm_cli: Cli, tmp_path: Path
) -> None:
    ref = _restored(vm_cli, point, "vda", tmp_path / "vda.raw")
    overlay = tmp_path / "kept.qcow2"
    sock = tmp_path / "rw.sock"
    proc, info = _start_export(vm_cli, point["id"], "--disk", "vda", "--socket", str(sock),
                               "--writable", "--overlay", str(overlay), "--keep-overlay")
    try:
        assert info["writable"] and info["overlay"] == str(overlay)
        subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 64k", info["uri"]],
                       check=True, capture_output=True)
        got = subprocess.run(["nbdcopy", info["uri"], "-"], check=True,
                             capture_output=True).stdout
        assert got[1 * MiB:1 * MiB + 65536] == b"\x5a" * 65536
        expect = bytearray(ref.read_bytes())
        expect[1 * MiB:1 * MiB + 65536] = b"\x5a" * 65536
        assert got == bytes(expect)
    finally:
        assert _stop(proc) == 0
    assert not sock.exists() and _ours(_processes("nbdkit"), point["id"]) == []
    assert _processes("qemu-nbd") == [] or all(str(overlay) not in p
                                               for p in _processes("qemu-nbd"))
    info_img = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                         check=True, capture_output=True, text=True).stdout)
    assert info_img["format"] == "qcow2" and info_img["backing-filename"].startswith("nbd+unix")
    # The point did not change: a new read-only export still equals the restored disk.
    proc, info = _start_export(vm_cli, point["id"], "--disk", "vda", "--socket", str(sock))
    try:
        assert subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", str(ref),
                               info["uri"]]).returncode == 0
    finally:
        assert _stop(proc) == 0
    # Without --keep-overlay, the overlay (given or temporary) is gone at the end.
    second = tmp_path / "dropped.qcow2"
    proc, info = _start_export(vm_cli, point["id"], "--disk", "vda", "--port", "10839",
                               "--writable", "--overlay", str(second))
    try:
        assert info["uri"] == "nbd://127.0.0.1:10839/vda" and second.exists()
        subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 4k", info["uri"]],
                       check=True, capture_output=True)
    finally:
        assert _stop(proc) == 0
    assert not second.exists()
    assert list((Path(vm_cli.env["STASIS_STATE_DIR"]) / "run").iterdir()) == []


# ------------------------------------------------------------ instant recovery


def _live(conn: Any, name: str) -> ET.Element:
    return ET.fromstring(conn.lookupByName(name).XMLDesc(0))


def _instant_guest(kit: GuestKit, source: Guest, name: str) -> Guest:
    """A Guest handle on the instant VM: its own console log and command socket."""
    dom = kit.conn.lookupByName(name)
    root = _live(kit.conn, name)
    console = control = None
    for serial in root.iterfind("devices/serial"):
        src = serial.find("source")
        assert src is not None
        if serial.get("type") == "file":
            console = Path(src.get("path", ""))
        elif serial.get("type") == "unix":
            control = Path(src.get("path", ""))
    assert console is not None and control is not None
    g = Guest(kit, source.name, dom, guest_dir=console.parent,
              disks={t: GuestDisk(t, Path("/nonexistent"), "raw") for t in source.disks},
              control_socket=control, agent_socket=None)
    g.console_log = console
    return g


def _wait_marker(g: Guest, timeout: float = 120) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while f"{READY_MARKER} {g.name}" not in g.console_text():
        assert time.monotonic() < deadline, f"no boot marker; console: {g.console_text()[-800:]}"
        time.sleep(0.05)
    return time.monotonic() - started


def _disk_sources(root: ET.Element) -> dict[str, tuple[str, str, str]]:
    found = {}
    for disk in root.iterfind("devices/disk"):
        target, src, drv = disk.find("target"), disk.find("source"), disk.find("driver")
        assert target is not None and src is not None and drv is not None
        found[target.get("dev", "")] = (disk.get("type", ""), src.get("file", ""),
                                        drv.get("type", ""))
    return found


def _state_files(cli: Cli) -> list[Path]:
    d = Path(cli.env["STASIS_STATE_DIR"]) / "instant"
    return sorted(d.glob("*")) if d.exists() else []


def test_instant_boots_then_finalize_copies_point_plus_writes(
    kit: GuestKit, source: Guest, point: dict[str, Any], vm_cli: Cli, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    name = f"{source.name}-inst"
    try:
        began = time.monotonic()
        r = vm_cli.ok("instant", point["id"], "--name", name, "--storage", str(storage),
                      "--json").json()
        assert isinstance(r, dict) and r["name"] == name
        g = _instant_guest(kit, source, name)
        _wait_marker(g)
        boot_s = time.monotonic() - began
        assert boot_s < 90
        # Disks are overlays on the export; the export outlived the CLI command.
        srcs = _disk_sources(_live(kit.conn, name))
        assert srcs["vda"][2] == "qcow2" and srcs["vda"][1].endswith(".instant.qcow2")
        (row,) = vm_cli.ok("instant", "list", "--json").json()  # type: ignore[misc]
        assert row["name"] == name and row["state"] == "running" and row["export_alive"]
        assert set(row["overlays"]) == {"vda", "vdb"}
        pid = row["export_pid"]
        assert Path(f"/proc/{pid}").exists()
        # The guest sees the point's data, and writes a pattern of its own.
        assert g.read_bytes("vdb", VDB_PATTERN_AT, 4096) == POINT_VDB[-1][:4096]
        written = g.write_pattern("vdb", 20 * MiB, 64 * 1024, seed=99)
        g.write_pattern("vda", 40 * MiB, 128 * 1024, byte=0x77)
        g.sync()
        fin = vm_cli.ok("instant", "finalize", name, "--json").json()
        assert isinstance(fin, dict)
        # No export left; the VM runs on local files in their original formats.
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        assert _ours(_processes("nbdkit"), point["id"]) == []
        dom = kit.conn.lookupByName(name)
        assert dom.isActive()
        live = _disk_sources(_live(kit.conn, name))
        persistent = _disk_sources(ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        assert live == persistent == {
            "vda": ("file", str(storage / f"{name}-vda.qcow2"), "qcow2"),
            "vdb": ("file", str(storage / f"{name}-vdb.img"), "raw")}
        assert "nbd" not in dom.XMLDesc(0)
        assert not list(storage.glob("*.instant.qcow2"))
        assert _state_files(vm_cli) == []
        assert vm_cli.ok("instant", "list", "--json").json() == []
        # The guest still works, and its disks are the point plus what it wrote.
        assert g.read_bytes("vdb", 20 * MiB, 64 * 1024) == written
        g.sync()
        expect_b = bytearray(_restored(vm_cli, point, "vdb", tmp_path / "b.raw").read_bytes())
        expect_b[20 * MiB:20 * MiB + len(written)] = written
        assert read_image(storage / f"{name}-vdb.img", "raw", 0, 32 * MiB) == bytes(expect_b)
        expect_a = bytearray(_restored(vm_cli, point, "vda", tmp_path / "a.raw").read_bytes())
        expect_a[40 * MiB:40 * MiB + 128 * 1024] = b"\x77" * (128 * 1024)
        assert read_image(storage / f"{name}-vda.qcow2", "qcow2", 0, 64 * MiB) == \
            bytes(expect_a)
    finally:
        remove_domain(kit.conn, name)
        subprocess.run([str(BIN), "instant", "discard", name], env=vm_cli.env,
                       capture_output=True)


def _nothing_left(kit: GuestKit, cli: Cli, name: str, storage: Path, point: str) -> None:
    assert name not in {d.name() for d in kit.conn.listAllDomains(0)}
    assert _ours(_processes("nbdkit"), point) == []
    assert _state_files(cli) == []
    assert list(storage.iterdir()) == []
    run = Path("/run/stasis/instant")
    for d in run.iterdir() if run.exists() else ():
        owner = (d / "entry").read_text() if (d / "entry").exists() else ""
        assert not owner.startswith(cli.env["STASIS_STATE_DIR"]), f"left: {d}"
    assert cli.ok("instant", "list", "--json").json() == []


def test_discard_leaves_nothing(kit: GuestKit, source: Guest, point: dict[str, Any],
                                vm_cli: Cli, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    name = f"{source.name}-disc"
    try:
        vm_cli.ok("instant", point["id"], "--name", name, "--storage", str(storage))
        g = _instant_guest(kit, source, name)
        _wait_marker(g)
        again = vm_cli("instant", point["id"], "--name", name, "--storage", str(storage))
        assert again.code == 2 and "already exists" in again.err
        r = vm_cli.ok("instant", "discard", name, "--json").json()
        assert isinstance(r, dict) and f"domain {name}" in r["removed"]
        _nothing_left(kit, vm_cli, name, storage, point["id"])
        missing = vm_cli("instant", "discard", name)
        assert missing.code == 31 and "No instant VM" in missing.err
    finally:
        remove_domain(kit.conn, name)


def test_dead_export_and_killed_cli_are_cleaned(kit: GuestKit, source: Guest,
                                                point: dict[str, Any], vm_cli: Cli,
                                                tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    name = f"{source.name}-dead"
    try:
        # An export killed under its VM: listed as dead, discard removes everything.
        began = time.monotonic()
        vm_cli.ok("instant", point["id"], "--name", name, "--storage", str(storage))
        took = time.monotonic() - began
        (row,) = vm_cli.ok("instant", "list", "--json").json()  # type: ignore[misc]
        os.kill(row["export_pid"], signal.SIGKILL)
        time.sleep(0.5)
        (row,) = vm_cli.ok("instant", "list", "--json").json()  # type: ignore[misc]
        assert row["state"] == "export dead" and not row["export_alive"]
        found = vm_cli.ok("doctor", "--json").json()
        assert isinstance(found, list) and any(f["kind"] == "instant VM" for f in found)
        fin = vm_cli("instant", "finalize", name)
        assert fin.code == 31 and "not running" in fin.err
        vm_cli.ok("instant", "discard", name)
        _nothing_left(kit, vm_cli, name, storage, point["id"])
        # The CLI killed (-9) early and late in its work: doctor --fix removes what it left.
        for fraction in (0.2, 0.6):
            proc = subprocess.Popen([str(BIN), "instant", point["id"], "--name", name,
                                     "--storage", str(storage)], env=vm_cli.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(took * fraction)
            proc.kill()
            proc.wait()
            fixed = vm_cli.ok("doctor", "--fix", "--json").json()
            assert isinstance(fixed, list)
            left = vm_cli.ok("instant", "list", "--json").json()
            assert isinstance(left, list)
            if left:  # it had finished after all: a running instant VM is no debris
                assert [r["state"] for r in left] == ["running"], left
                vm_cli.ok("instant", "discard", name)
            _nothing_left(kit, vm_cli, name, storage, point["id"])
    finally:
        remove_domain(kit.conn, name)
        subprocess.run([str(BIN), "instant", "discard", name], env=vm_cli.env,
                       capture_output=True)


# ------------------------------------------------------------ attach / detach


def test_attach_shows_the_point_disk_in_the_guest_and_detach_removes_it(
    kit: GuestKit, source: Guest, point: dict[str, Any], vm_cli: Cli
) -> None:
    # The source guest changes its vdb after the point; the attached copy is the point's.
    before = POINT_VDB[-1]
    source.write_pattern("vdb", VDB_PATTERN_AT, 4096, byte=0)
    r = vm_cli.ok("attach", point["id"], "--vm", source.name, "--disk", "vdb", "--to",
                  source.name, "--json").json()
    assert isinstance(r, dict) and r["target"] == "vdc"
    try:
        dev = "vdc"
        deadline = time.monotonic() + 60
        while source.run(f"test -b /dev/{dev}").status != 0:
            assert time.monotonic() < deadline, source.run("cat /proc/partitions").output
            time.sleep(0.2)
        status, got = source.run_bytes(
            f"dd if=/dev/{dev} bs=65536 skip={VDB_PATTERN_AT} count={64 * 1024} "
            "iflag=skip_bytes,count_bytes 2>/dev/null", timeout=60)
        assert status == 0 and got == before
        rw = source.run(f"echo x | dd of=/dev/{dev} conv=fsync 2>&1")
        assert rw.status != 0  # read-only
        (row,) = vm_cli.ok("instant", "list", "--json").json()  # type: ignore[misc]
        assert row["kind"] == "attach" and row["target"] == dev and row["export_alive"]
        vm_cli.ok("detach", source.name, "--target", dev)
        deadline = time.monotonic() + 60
        while source.run(f"test -b /dev/{dev}").status == 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert "nbd" not in source.domain.XMLDesc(0)
        assert _ours(_processes("nbdkit"), point["id"]) == []
        assert vm_cli.ok("instant", "list", "--json").json() == []
        missing = vm_cli("detach", source.name)
        assert missing.code == 31
    finally:
        subprocess.run([str(BIN), "detach", source.name], env=vm_cli.env, capture_output=True)
