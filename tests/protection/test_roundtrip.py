"""Backup then restore is bit-exact and sparse, and unchanged data is not stored twice."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stasis.protection.backup import back_up_images
from stasis.recovery.restore import restore_disk
from stasis.repository import Repository
from stasis.repository.stats import repo_info
from tests.conftest import MiB, allocated, images_equal, mixed_image, to_qcow2, write_image


@pytest.fixture
def mixed_raw(tmp_path: Path) -> Path:
    return mixed_image(tmp_path / "mixed.raw")


@pytest.mark.parametrize("src_fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("out_fmt", ["raw", "qcow2"])
def test_roundtrip_is_bit_exact_and_sparse(
    repo: Repository, mixed_raw: Path, tmp_path: Path, src_fmt: str, out_fmt: str
) -> None:
    src = mixed_raw if src_fmt == "raw" else to_qcow2(mixed_raw, tmp_path / "mixed.qcow2")
    point = back_up_images(repo, [src], name="mixed")
    (disk,) = point.vms[0].disks
    assert disk.format == src_fmt
    assert disk.virtual_size == os.path.getsize(mixed_raw)
    # Holes are not read: far less than the virtual size.
    assert disk.bytes_read < disk.virtual_size // 2
    out = tmp_path / f"out.{out_fmt}"
    restore_disk(repo, point, target=out, fmt=out_fmt)
    assert images_equal(src, out)
    info = subprocess.run(["qemu-img", "info", str(out)], capture_output=True, text=True).stdout
    assert f"file format: {out_fmt}" in info
    # What was a hole stays one: allocation close to the source's data.
    assert allocated(out) <= allocated(mixed_raw) + 2 * MiB


def test_explicit_zeros_are_not_stored(repo: Repository, tmp_path: Path) -> None:
    src = write_image(tmp_path / "zeros.raw", 8 * MiB, [(0, bytes(8 * MiB))])
    assert allocated(src) >= 8 * MiB  # really written, not a hole
    point = back_up_images(repo, [src])
    assert list(repo.chunk_objects()) == []
    assert point.vms[0].disks[0].stored_new == 0
    out = tmp_path / "zeros.out"
    restore_disk(repo, point, target=out, fmt="raw")
    assert images_equal(src, out)
    assert allocated(out) < MiB


def test_second_backup_is_child_and_stores_only_changes(
    repo: Repository, mixed_raw: Path, tmp_path: Path
) -> None:
    first = back_up_images(repo, [mixed_raw], name="vm1")
    chunks_before = len(list(repo.chunk_objects()))
    second = back_up_images(repo, [mixed_raw], name="vm1")
    assert second.parent == first.id
    assert second.vms[0].disks[0].stored_new == 0
    assert second.vms[0].disks[0].index == first.vms[0].disks[0].index
    assert len(list(repo.chunk_objects())) == chunks_before

    with open(mixed_raw, "r+b") as f:  # change 4 KiB inside one chunk
        f.seek(5 * MiB)
        f.write(random.Random(7).randbytes(4096))
    third = back_up_images(repo, [mixed_raw], name="vm1")
    assert third.parent == second.id
    assert third.vms[0].disks[0].chunks_new == 1
    assert len(list(repo.chunk_objects())) == chunks_before + 1
    # Old and new points both restore exactly what they captured.
    out_new, out_old = tmp_path / "new.raw", tmp_path / "old.raw"
    restore_disk(repo, third, target=out_new, fmt="raw")
    restore_disk(repo, first, target=out_old, fmt="raw")
    assert images_equal(mixed_raw, out_new)
    assert not images_equal(mixed_raw, out_old)
    info = repo_info(repo)
    assert info.points == 3
    assert info.dedup_ratio > 2.5


def test_several_disks_in_one_point(repo: Repository, tmp_path: Path) -> None:
    a = mixed_image(tmp_path / "a.raw", seed=1)
    b = to_qcow2(mixed_image(tmp_path / "b.raw", 12 * MiB, seed=2), tmp_path / "b.qcow2")
    point = back_up_images(repo, [a, b], name="two")
    assert [d.name for d in point.vms[0].disks] == ["a.raw", "b.qcow2"]
    for src, name in ((a, "a.raw"), (b, "b.qcow2")):
        out = tmp_path / f"restored-{name}"
        restore_disk(repo, point, target=out, disk=name)
        assert images_equal(src, out)


def test_unencrypted_repository_roundtrip(plain_repo: Repository, mixed_raw: Path,
                                          tmp_path: Path) -> None:
    point = back_up_images(plain_repo, [mixed_raw])
    out = tmp_path / "out.raw"
    restore_disk(plain_repo, point, target=out)
    assert images_equal(mixed_raw, out)


def test_qcow2_options_survive(repo: Repository, mixed_raw: Path, tmp_path: Path) -> None:
    src = to_qcow2(mixed_raw, tmp_path / "c.qcow2", "-o", "cluster_size=128k")
    point = back_up_images(repo, [src])
    assert point.vms[0].disks[0].format_options["cluster_size"] == 128 << 10
    out = tmp_path / "c-out.qcow2"
    restore_disk(repo, point, target=out)
    info = subprocess.run(["qemu-img", "info", str(out)], capture_output=True, text=True).stdout
    assert "cluster_size: 131072" in info


@pytest.fixture
def loop_devices(tmp_path: Path) -> Iterator[list[Path]]:
    devices: list[Path] = []
    for n in range(2):
        backing = tmp_path / f"loop{n}.img"
        write_image(backing, 16 * MiB, [])
        proc = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"no loop devices here (needs root): {proc.stderr.strip()}")
        devices.append(Path(proc.stdout.strip()))
    try:
        yield devices
    finally:
        for dev in devices:
            subprocess.run(["losetup", "-d", str(dev)], check=False)


@pytest.mark.root
def test_block_device_source_and_target(repo: Repository, tmp_path: Path,
                                        loop_devices: list[Path]) -> None:
    src_dev, dst_dev = loop_devices
    data = mixed_image(tmp_path / "content.raw", 16 * MiB)
    subprocess.run(["dd", f"if={data}", f"of={src_dev}", "bs=1M", "conv=fsync", "status=none"],
                   check=True)
    subprocess.run(["dd", "if=/dev/urandom", f"of={dst_dev}", "bs=1M", "count=16",
                    "conv=fsync", "status=none"], check=True)  # old data must go
    point = back_up_images(repo, [src_dev], name="dev")
    assert point.vms[0].disks[0].virtual_size == 16 * MiB
    restore_disk(repo, point, target=dst_dev, fmt="raw", force=True)
    assert images_equal(data, dst_dev)


@pytest.mark.root
def test_restore_to_an_lvm_logical_volume(repo: Repository, tmp_path: Path,
                                          loop_devices: list[Path]) -> None:
    """An LV is a block device: restored raw, in place of what it held."""
    pv = loop_devices[0]
    vg = f"stasis{os.getpid()}"
    made = subprocess.run(["vgcreate", "-q", vg, str(pv)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a volume group here: {made.stderr.strip()}")
    try:
        lv = subprocess.run(["lvcreate", "-q", "-y", "-L", "8M", "-n", "disk", vg],
                            capture_output=True, text=True)
        if lv.returncode != 0:
            # This container's kernel has no device-mapper, so no LV can be activated.
            pytest.skip(f"cannot activate a logical volume here: {lv.stderr.strip()}")
        dev = Path(f"/dev/{vg}/disk")
        data = mixed_image(tmp_path / "content.raw", 8 * MiB)
        point = back_up_images(repo, [data], name="lv")
        restore_disk(repo, point, target=dev, fmt="raw", force=True)
        assert images_equal(data, dev)
    finally:
        subprocess.run(["vgremove", "-q", "-f", vg], capture_output=True, check=False)
