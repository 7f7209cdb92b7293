"""Test disks with real file systems and partition tables, for file-level recovery.

Each builder writes a sparse raw image and returns what a test needs to check it:
the volumes it holds and the directory tree each was filled from.

- :func:`debian_root_disk`: GPT, an EFI system partition (FAT) and a Debian root
  (ext4, ``mkfs.ext4 -d`` straight into the partition with ``-E offset``) from
  ``debootstrap --variant=minbase``; the tree is made once (about a minute, needs
  root and the Debian mirror) and kept in the kit's cache directory.
- :func:`ext4_disk`: a whole-disk ext4 of any size (mkfs on a sparse file is cheap,
  so a multi-GiB disk costs megabytes).
- :func:`xfs_disk`: a whole-disk XFS filled through a loop mount (root): xfsprogs
  6.1's protofiles cannot keep modification times nor names with spaces.
- :func:`fat_disk`: MBR with one FAT32 partition, filled by mtools (no mount).
- :func:`lvm_disk`: GPT with one LVM physical volume holding logical volumes with
  ext4 file systems (root: ``pvcreate`` needs a loop device). LVM runs with
  activation disabled, so no device-mapper is needed: the extents of each linear
  volume are read from LVM's report and ``mkfs.ext4 -E offset`` writes there. The
  loop device is detached again whatever happens.

Times are fixed (:data:`~stasis_testkit.disks.FIXED_TIME`) where the tools allow.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stasis_testkit.disks import FIXED_TIME, GiB, MiB
from stasis_testkit.errors import GuestKitError

SECTOR = 512
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
LVM_TYPE = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


@dataclass
class TestDisk:
    """A built image: its path, size, and for each volume name the tree it holds."""

    path: Path
    size: int
    volumes: dict[str, Path] = field(default_factory=dict)  # "" whole disk, "p2", "vg/lv"
    extra: dict[str, str] = field(default_factory=dict)


def cache_dir() -> Path:
    """Where built trees are kept between runs: ``$STASIS_TESTKIT_DIR``, else
    ``$XDG_CACHE_HOME/stasis/testkit`` (``~/.cache/stasis/testkit``)."""
    explicit = os.environ.get("STASIS_TESTKIT_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stasis" / "testkit"


def _run(argv: list[str], *, env: dict[str, str] | None = None, input: str | None = None,
         timeout: float = 600) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise GuestKitError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout


def _sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def _sfdisk(path: Path, script: str) -> list[dict[str, int]]:
    """Write a partition table; return each partition's start and size in bytes."""
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path)], input=script)
    table = json.loads(_run(["sfdisk", "--json", str(path)]))["partitiontable"]
    sector = int(table.get("sectorsize", SECTOR))
    return [{"start": p["start"] * sector, "size": p["size"] * sector}
            for p in table["partitions"]]


def _mkfs_ext4(image: Path, source: Path, *, offset: int, size: int, label: str) -> None:
    blocks = size // 4096
    _run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", label[:16],
          "-E", f"offset={offset},root_owner=0:0", "-d", str(source), str(image), str(blocks)],
         env={"E2FSPROGS_FAKE_TIME": str(FIXED_TIME)})


def _mkfs_fat(image: Path, source: Path | None, *, offset: int, size: int, label: str,
              bits: int | None = None) -> None:
    """FAT of ``bits`` (12, 16, 32; default: what mkfs.vfat picks for the size)."""
    _run(["mkfs.vfat", *(["-F", str(bits)] if bits else []), "-n", label[:11].upper(),
          "--offset", str(offset // SECTOR), str(image), str(size // 1024)])
    if source is not None and any(source.iterdir()):
        # mtools writes local time; UTC keeps the source's times as they are.
        _run(["mcopy", "-i", f"{image}@@{offset}", "-s", "-m", "-p", "-Q",
              *[str(p) for p in sorted(source.iterdir())], "::/"],
             env={"TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"})


# ----------------------------------------------------------------- debian root


def debian_tree(kit_dir: Path | None = None, *, suite: str = DEBIAN_SUITE) -> Path:
    """A ``debootstrap --variant=minbase`` tree, made once and kept under ``kit_dir``."""
    root = (kit_dir or cache_dir()) / f"debootstrap-{suite}-minbase"
    if (root / "etc" / "debian_version").is_file():
        return root
    if os.geteuid() != 0:
        raise GuestKitError("debootstrap needs root to build the Debian tree")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _run(["debootstrap", "--variant=minbase", suite, str(tmp), DEBIAN_MIRROR],
             timeout=1800)
        # What a booted system would have; leaves the tree a plain file tree.
        for sub in ("proc", "sys", "dev/pts"):
            with contextlib.suppress(OSError):
                subprocess.run(["umount", "-l", str(tmp / sub)], capture_output=True)
        (tmp / "etc" / "hostname").write_text("stasis-debian\n")
        try:
            tmp.rename(root)
        except OSError:
            if not (root / "etc" / "debian_version").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def debian_root_disk(path: Path, *, size: int = 4 * GiB, tree: Path | None = None,
                     esp_tree: Path | None = None) -> TestDisk:
    """GPT: p1 an EFI system partition (FAT32, 64 MiB), p2 a Debian root (ext4)."""
    source = tree or debian_tree()
    _sparse(path, size)
    parts = _sfdisk(path, "label: gpt\n"
                          f"start=2048, size={64 * MiB // SECTOR}, type={ESP_TYPE}, name=esp\n"
                          f"type={LINUX_TYPE}, name=root\n")
    esp, root = parts
    _mkfs_fat(path, esp_tree, offset=esp["start"], size=esp["size"], label="ESP", bits=16)
    _mkfs_ext4(path, source, offset=root["start"], size=root["size"], label="debian-root")
    volumes = {"p2": source}
    if esp_tree is not None:
        volumes["p1"] = esp_tree
    return TestDisk(path, size, volumes)


# ------------------------------------------------------------ single volumes


def ext4_disk(path: Path, source: Path, *, size: int = 4 * GiB,
              label: str = "stasis-ext4") -> TestDisk:
    """A whole-disk ext4 of ``size`` (sparse) holding ``source``'s files."""
    _sparse(path, size)
    _mkfs_ext4(path, source, offset=0, size=size, label=label)
    return TestDisk(path, size, {"": source})


def xfs_disk(path: Path, source: Path, *, size: int = 512 * MiB) -> TestDisk:
    """A whole-disk XFS holding ``source``'s files (loop mount: needs root)."""
    if os.geteuid() != 0:
        raise GuestKitError("the XFS test disk is filled through a loop mount: needs root")
    _sparse(path, size)
    _run(["mkfs.xfs", "-q", "-f", "-L", "stasis-xfs", str(path)])
    mnt = Path(tempfile.mkdtemp(prefix="stasis-xfs-mnt-"))
    try:
        _run(["mount", "-o", "loop", "-t", "xfs", str(path), str(mnt)])
        try:
            _run(["cp", "-a", "--", *[str(p) for p in sorted(source.iterdir())], str(mnt)])
            os.utime(mnt, (FIXED_TIME, FIXED_TIME))
        finally:
            _run(["umount", str(mnt)])  # a loop set up by mount is freed by umount
    finally:
        with contextlib.suppress(OSError):
            mnt.rmdir()
    return TestDisk(path, size, {"": source})


def fat_disk(path: Path, source: Path, *, size: int = 128 * MiB) -> TestDisk:
    """MBR with one FAT32 partition holding ``source``'s files (mtools: no mount).

    FAT has no symlinks: give a tree without them.
    """
    _sparse(path, size)
    (part,) = _sfdisk(path, "label: dos\nstart=2048, type=c\n")
    _mkfs_fat(path, source, offset=part["start"], size=part["size"], label="STASISFAT", bits=32)
    return TestDisk(path, size, {"p1": source})


# ------------------------------------------------------------------------ LVM


@contextlib.contextmanager
def _loop(path: Path, offset: int, size: int) -> Iterator[str]:
    dev = _run(["losetup", "--find", "--show", "--offset", str(offset),
                "--sizelimit", str(size), str(path)]).strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def lvm_disk(path: Path, volumes: dict[str, tuple[int, Path]], *, size: int = 1 * GiB,
             vg: str | None = None) -> TestDisk:
    """GPT, p1 an LVM PV, a VG ``vg`` with one linear LV per ``volumes`` entry
    (name → (size, tree)), each an ext4 file system holding its tree. Needs root."""
    if os.geteuid() != 0:
        raise GuestKitError("the LVM test disk needs root (pvcreate on a loop device)")
    vg = vg or f"stasis{secrets.token_hex(3)}"
    _sparse(path, size)
    (part,) = _sfdisk(path, f"label: gpt\nstart=2048, type={LVM_TYPE}, name=lvm\n")
    with _loop(path, part["start"], part["size"]) as dev:
        config = (
            f'devices {{ filter=["a|^{dev}$|","r|.*|"] obtain_device_list_from_udev=0 }} '
            "global { activation=0 } activation { udev_sync=0 udev_rules=0 monitoring=0 } "
            "backup { backup=0 archive=0 }"
        )
        env = {"LVM_SUPPRESS_FD_WARNINGS": "1"}

        def lvm(*args: str) -> str:
            return _run(["lvm", args[0], "--config", config, *args[1:]], env=env)

        lvm("pvcreate", "-q", "-y", dev)
        lvm("vgcreate", "-q", vg, dev)
        for name, (lv_size, _tree) in volumes.items():
            lvm("lvcreate", "-q", "-an", "-Zn", "-Wn", "-y", "-L", f"{lv_size}b", "-n", name, vg)
        report = json.loads(lvm("lvs", "--reportformat", "json", "--units", "b", "--nosuffix",
                                "-o", "lv_name,seg_pe_ranges,vg_extent_size,seg_count", vg))
        pe_start = int(json.loads(lvm("pvs", "--reportformat", "json", "--units", "b",
                                      "--nosuffix", "-o", "pe_start", dev))
                       ["report"][0]["pv"][0]["pe_start"])
    offsets: dict[str, int] = {}
    for row in report["report"][0]["lv"]:
        if int(row["seg_count"]) != 1:
            raise GuestKitError(f"LV {row['lv_name']} is not one linear segment")
        first = int(row["seg_pe_ranges"].rsplit(":", 1)[1].split("-")[0])
        offsets[row["lv_name"]] = part["start"] + pe_start + first * int(row["vg_extent_size"])
    for name, (lv_size, tree) in volumes.items():
        _mkfs_ext4(path, tree, offset=offsets[name], size=lv_size, label=name)
    return TestDisk(path, size, {f"{vg}/{name}": tree for name, (_s, tree) in volumes.items()},
                    {"vg": vg})
