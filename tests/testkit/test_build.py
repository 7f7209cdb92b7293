"""Boot files, disks and domain XML of the test kit (no VM booted)."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stasis_testkit import SAMPLE, DiskSpec, MiB, image_info, read_image, tree_manifest
from stasis_testkit.__main__ import main
from stasis_testkit.boot import (
    CORE_MODULES,
    QEMU_GA,
    build_boot_files,
    find_kernel,
    shared_libraries,
)
from stasis_testkit.cpio import Entry, read_newc, write_newc
from stasis_testkit.disks import create_disk, sample_tree
from stasis_testkit.domain import (
    DomainConfig,
    DomainDisk,
    disk_targets,
    domain_xml,
    guest_metadata,
)
from stasis_testkit.errors import DiskSpecError


def _kernel_or_skip() -> tuple[Path, str]:
    try:
        return find_kernel()
    except Exception as e:
        pytest.skip(f"no cloud kernel here: {e}")


def test_cpio_round_trip() -> None:
    import io

    out = io.BytesIO()
    write_newc(out, [Entry.directory("dev"), Entry.char_device("dev/console", 5, 1),
                     Entry.file("init", b"#!/bin/sh\n", 0o755), Entry.symlink("sh", "init")])
    got = read_newc(out.getvalue())
    assert sorted(got) == ["dev", "dev/console", "init", "sh"]
    assert got["init"].data == b"#!/bin/sh\n" and stat.S_IMODE(got["init"].mode) == 0o755
    assert stat.S_ISCHR(got["dev/console"].mode) and got["dev/console"].rdev == (5, 1)
    assert got["sh"].data == b"init" and stat.S_ISLNK(got["sh"].mode)


def test_boot_files_are_built_once_and_hold_what_init_needs(tmp_path: Path) -> None:
    _kernel_or_skip()
    first = build_boot_files(tmp_path)
    assert first.built and first.kernel.is_file()
    again = build_boot_files(tmp_path)
    assert not again.built
    assert (again.kernel, again.initrd, again.key) == (first.kernel, first.initrd, first.key)
    archive = read_newc(gzip.decompress(first.initrd.read_bytes()))
    assert {"init", "bin/busybox", "bin/stasis-ctl", "bin/stasis-seqlog"} <= set(archive)
    order = archive["lib/modules/order"].data.decode().split()
    assert order[:len(CORE_MODULES)] == list(CORE_MODULES)
    for module in order:
        assert archive[f"lib/modules/{module}.ko"].data[:4] == b"\x7fELF"  # decompressed
    assert stat.S_ISCHR(archive["dev/console"].mode)
    init = archive["init"].data.decode()
    assert "STASIS-GUEST-READY" in init and "/dev/ttyS1" in init
    assert [p.name for p in (tmp_path / "boot").iterdir()] == [first.key]  # no temp debris


def test_boot_files_hold_qemu_ga_and_its_libraries(tmp_path: Path) -> None:
    _kernel_or_skip()
    if not QEMU_GA.is_file():
        pytest.skip("qemu-guest-agent is not installed (./scripts/setup installs it)")
    libs = shared_libraries(QEMU_GA)
    assert any(p.name.startswith("ld-linux") for p in libs)
    assert any(p.name == "libglib-2.0.so.0" for p in libs)
    boot = build_boot_files(tmp_path)
    assert boot.agent
    archive = read_newc(gzip.decompress(boot.initrd.read_bytes()))
    for path in (QEMU_GA, *libs):  # at the paths the loader looks for, symlinks resolved
        entry = archive[str(path.relative_to("/"))]
        assert stat.S_ISREG(entry.mode) and entry.data == path.read_bytes()
    assert "usr/sbin" in archive and "lib64" in archive
    init = archive["init"].data.decode()
    assert "qemu-ga -m virtio-serial" in init and "org.qemu.guest_agent.0" in init

    without = build_boot_files(tmp_path, qemu_ga=tmp_path / "no-such-qemu-ga")
    assert without.built and not without.agent and without.key != boot.key
    assert "usr/sbin/qemu-ga" not in read_newc(gzip.decompress(without.initrd.read_bytes()))
    assert build_boot_files(tmp_path, qemu_ga=None).key == without.key


def test_boot_files_rebuild_when_an_input_changes(tmp_path: Path) -> None:
    kernel, version = _kernel_or_skip()
    fake = tmp_path / "kernels" / f"vmlinuz-{version}"
    fake.parent.mkdir()
    shutil.copyfile(kernel, fake)
    first = build_boot_files(tmp_path / "kit", kernel=fake)
    os.utime(fake, (1, 1))
    second = build_boot_files(tmp_path / "kit", kernel=fake)
    assert second.built and second.key != first.key
    forced = build_boot_files(tmp_path / "kit", kernel=fake, force=True)
    assert forced.built and forced.key == second.key


@pytest.mark.parametrize(("text", "want"), [
    ("vda:qcow2:64M", DiskSpec("vda", "qcow2", 64 * MiB)),
    ("vdb:raw:1G", DiskSpec("vdb", "raw", 1024 * MiB)),
    ("vdc:qcow2:128M:ext4", DiskSpec("vdc", "qcow2", 128 * MiB, SAMPLE)),
])
def test_disk_spec_parse(text: str, want: DiskSpec) -> None:
    assert DiskSpec.parse(text) == want


@pytest.mark.parametrize("text", [
    "vda", "sda:qcow2:64M", "vda:vmdk:64M", "vda:raw:lots", "vda:raw:100K",
    "vda:raw:64M:xfs", "vda:raw:64M:ext4=/does/not/exist",
])
def test_disk_spec_rejects(text: str) -> None:
    with pytest.raises(DiskSpecError):
        DiskSpec.parse(text)


def test_disks_are_sparse_and_qcow2_v3(tmp_path: Path) -> None:
    raw = create_disk(DiskSpec("vdb", "raw", 32 * MiB), tmp_path / "b.raw",
                      sample_dir=tmp_path / "sample")
    assert raw.stat().st_size == 32 * MiB and raw.stat().st_blocks * 512 < MiB
    q = create_disk(DiskSpec("vda", "qcow2", 64 * MiB), tmp_path / "a.qcow2",
                    sample_dir=tmp_path / "sample")
    info = image_info(q)
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 * MiB
    assert info["format-specific"]["data"]["compat"] == "1.1"  # type: ignore[index]
    assert read_image(q, "qcow2", 0, 4096) == bytes(4096)


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_ext4_disk_holds_the_sample_tree(tmp_path: Path, fmt: str) -> None:
    if shutil.which("debugfs") is None:
        pytest.skip("no debugfs")
    image = create_disk(DiskSpec("vdc", "raw" if fmt == "raw" else "qcow2", 64 * MiB, SAMPLE),
                        tmp_path / f"c.{fmt}", sample_dir=tmp_path / "sample")
    tree = sample_tree(tmp_path / "sample")
    manifest = tree_manifest(tree)
    assert any(p.startswith("licenses/") for p in manifest)  # real files from base-files
    assert (tree / "data/random-5m.bin").stat().st_size > 5 * MiB  # spans 4 MiB chunks
    raw = image
    if fmt == "qcow2":
        assert image_info(image)["format-specific"]["data"]["compat"] == "1.1"  # type: ignore[index]
        raw = tmp_path / "c.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    out = subprocess.run(["debugfs", "-R", "cat /deep/a/b/c/d/leaf.txt", str(raw)],
                         capture_output=True, check=True).stdout
    assert out == b"the bottom of the tree\n"


def test_domain_xml(tmp_path: Path) -> None:
    cfg = DomainConfig(
        name="stasis-test-x", kernel=Path("/k/vmlinuz"), initrd=Path("/k/initrd.img"),
        disks=(DomainDisk("vda", tmp_path / "vda.qcow2", "qcow2"),
               DomainDisk("vdb", tmp_path / "vdb.raw", "raw", None)),
        console_log=tmp_path / "console.log", control_socket=Path("/run/x.ctl"),
        guest_dir=tmp_path,
    )
    xml = domain_xml(cfg)
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu"
    assert root.find("os/type").get("machine") == "pc"  # type: ignore[union-attr]
    cmdline = root.findtext("os/cmdline") or ""
    assert "console=ttyS0" in cmdline and "stasis.name=stasis-test-x" in cmdline
    assert root.findtext("memory") == "256" and root.findtext("vcpu") == "1"
    drivers = [(d.get("type"), d.get("cache")) for d in root.iter("driver")]
    assert drivers == [("qcow2", "none"), ("raw", None)]
    serials = root.findall("devices/serial")
    assert [s.get("type") for s in serials] == ["file", "unix"]
    assert root.find("devices/interface") is None and root.find("devices/channel") is None
    assert guest_metadata(xml) == {"dir": str(tmp_path), "control": "/run/x.ctl"}
    assert disk_targets(xml) == {"vda": (tmp_path / "vda.qcow2", "qcow2"),
                                 "vdb": (tmp_path / "vdb.raw", "raw")}
    with_options = ET.fromstring(domain_xml(DomainConfig(
        **{**cfg.__dict__, "agent_socket": Path("/run/x.qga"), "network": "default"})))
    chan = with_options.find("devices/channel/target")
    assert chan is not None and chan.get("name") == "org.qemu.guest_agent.0"
    nic = with_options.find("devices/interface/source")
    assert nic is not None and nic.get("network") == "default"


def test_cli_build_and_bad_disk_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _kernel_or_skip()
    assert main(["--kit-dir", str(tmp_path), "build"]) == 0
    assert main(["--kit-dir", str(tmp_path), "build"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["built"] * 3 + ["cached"] * 3
    assert out[0].startswith("built: kernel ") and out[3].startswith("cached: kernel ")
    assert out[2] == "built: guest agent " + ("qemu-ga" if QEMU_GA.is_file() else
                                              "none (install qemu-guest-agent)")
    assert main(["--kit-dir", str(tmp_path), "create", "x", "--disks", "vda:vmdk:1M"]) != 0
    assert "Bad test disk specification" in capsys.readouterr().err
