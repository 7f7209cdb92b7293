"""stasis clone: linked and full clones of a point, clones of a running VM, on real guests."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stasis_testkit import DiskSpec, Guest, GuestKit, MiB, read_image
from tests.cli.test_instant import _instant_guest, _ours, _processes, _wait_marker
from tests.conftest import BIN, PASSPHRASE, Cli, init_repo, remove_domain

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

GiB = 1 << 30
VDA_SIZE = 4 * GiB
# Data written by the source guest at a few places of its 4 GiB disk.
AT_START, AT_MIDDLE, AT_END = 1 * MiB, 2 * GiB, VDA_SIZE - 2 * MiB
VDB_AT = 5 * MiB


def _network(conn: Any, tag: str) -> Any:
    """A transient isolated network (a bridge, no addresses, no dnsmasq)."""
    name = f"stasis-cl-{tag}-{secrets.token_hex(2)}"
    return conn.networkCreateXML(
        f"<network><name>{name}</name><bridge name='stc{tag}{secrets.token_hex(2)}'/></network>")


@pytest.fixture(scope="module")
def nets(kit: GuestKit) -> Iterator[tuple[str, str]]:
    made = [_network(kit.conn, "a"), _network(kit.conn, "b")]
    try:
        yield made[0].name(), made[1].name()
    finally:
        for n in made:
            n.destroy()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    base = tmp_path_factory.mktemp("clone")
    scratch = base / "scratch"
    scratch.mkdir(mode=0o711)
    e = {k: v for k, v in os.environ.items() if not k.startswith("STASIS_")}
    e.update(STASIS_REPO=str(base / "repo"), STASIS_PASSPHRASE=PASSPHRASE,
             STASIS_STATE_DIR=str(base / "state"),
             STASIS_SCRATCH_DIR=str(scratch), COLUMNS="200")
    c = Cli(base / "repo", e)
    init_repo(c.repo)
    return c


@pytest.fixture(scope="module")
def source(kit: GuestKit, nets: tuple[str, str]) -> Iterator[Guest]:
    """A running guest with a sparse 4 GiB qcow2 disk written at three places."""
    g = kit.create(disks=[DiskSpec("vda", "qcow2", VDA_SIZE), DiskSpec("vdb", "raw", 32 * MiB)],
                   network=nets[0])
    try:
        g.wait_ready(90)
        g.write_pattern("vda", AT_START, 1 * MiB, byte=0x3C)
        g.write_pattern("vda", AT_MIDDLE, 64 * 1024, seed=7)
        g.write_pattern("vda", AT_END, 1 * MiB, byte=0x5A)
        g.write_pattern("vdb", VDB_AT, 64 * 1024, seed=12)
        yield g
    finally:
        g.destroy()


@pytest.fixture(scope="module")
def point(source: Guest, env: Cli) -> dict[str, Any]:
    p = env.ok("backup", "vm", source.name, "--json").json()
    assert isinstance(p, dict)
    return p


def _identity(conn: Any, name: str) -> tuple[str, list[str], list[str]]:
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    return (root.findtext("uuid", ""),
            [m.get("address", "") for m in root.iterfind("devices/interface/mac")],
            [s.get("network", "") for s in root.iterfind("devices/interface/source")])


def _allocated(d: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in d.rglob("*") if p.is_file())


def _restored(cli: Cli, point: str, disk: str, dest: Path) -> Path:
    cli.ok("restore", "disk", point, "--disk", disk, "--to", str(dest), "--format", "raw")
    return dest


def _state_files(cli: Cli) -> list[Path]:
    d = Path(cli.env["STASIS_STATE_DIR"]) / "instant"
    return sorted(d.glob("*")) if d.exists() else []


def test_linked_clone_copies_nothing_boots_and_never_writes_to_its_source(
    kit: GuestKit, source: Guest, point: dict[str, Any], env: Cli, nets: tuple[str, str],
    tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    name = f"{source.name}-lc"
    try:
        r = env.ok("clone", point["id"], "--name", name, "--linked", "--storage", str(storage),
                   "--network", nets[1], "--start", "--json").json()
        assert isinstance(r, dict) and r["linked"] and r["started"] and not r["point_taken"]
        # No data was copied: a few hundred KiB of qcow2 metadata for 4 GiB + 32 MiB of
        # disks whose point holds several MiB of data. Besides the overlays, the storage
        # holds the guest's kernel and initrd (restored: their size is not the disks').
        files = sum(Path(f).stat().st_blocks * 512 for f in r["files"].values())
        assert set(r["files"]) == {"kernel", "initrd"}
        overlays = sum(Path(f).stat().st_blocks * 512 for f in r["disks"].values())
        assert overlays < 1 * MiB and r["bytes_written"] == overlays + files, r
        assert _allocated(storage) - files < 1 * MiB, sorted(storage.iterdir())
        vda = json.loads(subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", r["disks"]["vda"]],
            check=True, capture_output=True, text=True).stdout)
        assert vda["virtual-size"] == VDA_SIZE and vda["backing-filename"].startswith("nbd+unix")
        assert point["bytes_read"] > 2 * MiB  # the point holds that much data
        # It boots, with an identity and a network of its own.
        g = _instant_guest(kit, source, name)
        _wait_marker(g)
        uuid, macs, networks = _identity(kit.conn, name)
        src_uuid, src_macs, _ = _identity(kit.conn, source.name)
        assert r["uuid"] == uuid != src_uuid
        assert macs and r["macs"] == macs and not set(macs) & set(src_macs)
        assert networks == [nets[1]]
        # It sees the point's data, and writes over it in two places.
        assert g.read_bytes("vda", AT_MIDDLE, 4096) == source.read_image("vda", AT_MIDDLE, 4096)
        g.write_pattern("vda", AT_MIDDLE, 64 * 1024, byte=0xEE)
        g.write_pattern("vdb", VDB_AT, 64 * 1024, byte=0xEE)
        g.sync()
        assert g.read_bytes("vda", AT_MIDDLE, 4096) == b"\xee" * 4096
        # The source's disks (read on the host) and the point did not change.
        assert source.read_image("vda", AT_MIDDLE, 64 * 1024) != b"\xee" * 65536
        assert source.read_image("vdb", VDB_AT, 64 * 1024) != b"\xee" * 65536
        a = _restored(env, point["id"], "vda", tmp_path / "a.raw")
        b = _restored(env, point["id"], "vdb", tmp_path / "b.raw")
        assert read_image(a, "raw", AT_MIDDLE, 65536) == source.read_image("vda", AT_MIDDLE,
                                                                           65536)
        assert read_image(a, "raw", AT_START, 4096) == b"\x3c" * 4096
        assert read_image(b, "raw", 0, 32 * MiB) == source.read_image("vdb", 0, 32 * MiB)
        a.unlink()
        b.unlink()
        # Listed; the point is held, and gc is not kept waiting by the clone's export.
        (row,) = env.ok("clone", "list", "--json").json()  # type: ignore[misc]
        assert row["name"] == name and row["state"] == "linked" and row["export_alive"]
        assert row["vm_state"] == "running" and row["point"] == point["id"]
        holds = env.ok("holds", "--json").json()
        assert isinstance(holds, list)
        assert [h["point"] for h in holds] == [point["id"]] and name in holds[0]["reason"]
        env.ok("gc", "--wait", "5")
        pid = row["export_pid"]
        # Deleted: nothing is left.
        d = env.ok("clone", "delete", name, "--json").json()
        assert isinstance(d, dict) and f"domain {name}" in d["removed"] and d["hold"] is None
        assert name not in {x.name() for x in kit.conn.listAllDomains(0)}
        assert _ours(_processes("nbdkit"), point["id"]) == []
        assert not Path(f"/proc/{pid}/cmdline").exists() or b"nbdkit" not in \
            Path(f"/proc/{pid}/cmdline").read_bytes()
        assert _state_files(env) == [] and list(storage.iterdir()) == []
        run = Path("/run/stasis/instant")
        for x in run.iterdir() if run.exists() else ():
            owner = (x / "entry").read_text() if (x / "entry").exists() else ""
            assert not owner.startswith(env.env["STASIS_STATE_DIR"]), f"left: {x}"
        assert env.ok("clone", "list", "--json").json() == []
        assert env.ok("holds", "--json").json() == []
        again = env("clone", "delete", name)
        assert again.code == 31 and "No linked clone" in again.err
    finally:
        subprocess.run([str(BIN), "clone", "delete", name], env=env.env, capture_output=True)
        remove_domain(kit.conn, name)


def test_full_clone_equals_the_point_with_a_new_identity(
    kit: GuestKit, source: Guest, point: dict[str, Any], env: Cli, tmp_path: Path
) -> None:
    storage = tmp_path / "full"
    storage.mkdir()
    name = f"{source.name}-fc"
    try:
        r = env.ok("clone", point["id"], "--name", name, "--storage", str(storage),
                   "--json").json()
        assert isinstance(r, dict) and not r["linked"] and not r["started"]
        assert r["disks"]["vda"] == str(storage / f"{name}-vda.qcow2")
        b = _restored(env, point["id"], "vdb", tmp_path / "b.raw")
        assert Path(r["disks"]["vdb"]).read_bytes() == b.read_bytes()
        a = _restored(env, point["id"], "vda", tmp_path / "a.raw")
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(a),
                              r["disks"]["vda"]], capture_output=True, text=True)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        # Sparse: the 4 GiB disk takes about what its data does.
        assert Path(r["disks"]["vda"]).stat().st_blocks * 512 < 16 * MiB
        uuid, macs, _ = _identity(kit.conn, name)
        src_uuid, src_macs, _ = _identity(kit.conn, source.name)
        assert uuid == r["uuid"] != src_uuid and macs and not set(macs) & set(src_macs)
        assert env.ok("clone", "list", "--json").json() == []  # an ordinary VM
    finally:
        remove_domain(kit.conn, name)


def test_clone_of_a_running_vm_takes_a_point_first(
    kit: GuestKit, source: Guest, point: dict[str, Any], env: Cli, tmp_path: Path
) -> None:
    storage = tmp_path / "now"
    storage.mkdir()
    name = f"{source.name}-now"
    written = source.write_pattern("vdb", 9 * MiB, 64 * 1024, seed=33)  # after the point
    source.sync()
    try:
        r = env("clone", source.name, "--name", name, "--storage", str(storage))
        assert r.code == 0, r.err
        assert "Took point" in r.out and "its present state" in r.out
        (row,) = [p for p in env.ok("list", "--json").json()  # type: ignore[union-attr]
                  if p["id"] != point["id"]]
        assert row["name"] == source.name
        clone_b = (storage / f"{name}-vdb.img").read_bytes()
        assert clone_b[9 * MiB:9 * MiB + 65536] == written
        assert clone_b == source.read_image("vdb", 0, 32 * MiB)
        assert _identity(kit.conn, name)[0] != _identity(kit.conn, source.name)[0]
    finally:
        remove_domain(kit.conn, name)


def test_bad_input_makes_nothing(kit: GuestKit, source: Guest, point: dict[str, Any],
                                 env: Cli, tmp_path: Path) -> None:
    storage = tmp_path / "bad"
    storage.mkdir()
    points_before = env.ok("list", "--json").json()
    # A missing storage directory is made; one under a file cannot be, and is refused.
    (tmp_path / "afile").write_text("")
    missing = str(tmp_path / "afile" / "missing")
    cases = [
        ((source.name, "--name", source.name, "--storage", str(storage)), 2, "already exists"),
        (("no-such-thing", "--name", "x-clone", "--storage", str(storage)), 14,
         "neither a recovery point"),
        ((point["id"], "--name", "x-clone", "--storage", missing), 2, "does not exist"),
        ((source.name, "--name", "x-clone", "--storage", missing, "--linked"),
         2, "does not exist"),
    ]
    for args, code, words in cases:
        r = env("clone", *args)
        assert r.code == code and words in r.err, (args, r.code, r.err)
    # A VM named like a point's id prefix: the source is ambiguous, and so said.
    prefix = point["id"][:10]
    kit.conn.defineXML(f"<domain type='qemu'><name>{prefix}</name><memory>65536</memory>"
                       "<os><type>hvm</type></os></domain>")
    try:
        r = env("clone", prefix, "--name", "x-clone", "--storage", str(storage))
        assert r.code == 2 and "--from-vm" in r.err and "names both" in r.err, r.err
        r = env("clone", "missing-vm", "--from-vm", "--name", "x-clone")
        assert r.code == 14
    finally:
        remove_domain(kit.conn, prefix)
    assert "x-clone" not in {d.name() for d in kit.conn.listAllDomains(0)}
    assert list(storage.iterdir()) == [] and _state_files(env) == []
    assert env.ok("list", "--json").json() == points_before
    shutil.rmtree(storage)
