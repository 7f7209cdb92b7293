"""The volumes of a disk: the whole disk, its partitions, or LVM logical volumes.

A file system on the whole disk is one volume named ``""``; otherwise a partition
table (GPT, MBR; :mod:`dissect.volume`) has partitions ``p1``, ``p2`` … by their
number, which hold file systems or LVM physical volumes, whose logical volumes
``VG/LV`` hold file systems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, BinaryIO

from stasis.recovery.files.filesystems import Filesystem, open_filesystem

_EXTENDED_MBR = {0x05, 0x0F, 0x85}


@dataclass
class Volume:
    name: str  # "" for the whole disk, "p2", "vg0/root"
    size: int
    description: str
    fs: Filesystem | None = None
    error: str = ""  # why its file system could not be opened

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": "volume", "size": self.size,
                "description": self.description,
                "filesystem": self.fs.type if self.fs else None,
                "label": self.fs.label if self.fs else None,
                **({"error": self.error} if self.error else {})}


def _has_lvm_label(fh: BinaryIO) -> bool:
    fh.seek(0)
    head = fh.read(2048)
    return any(head[i * 512:i * 512 + 8] == b"LABELONE" for i in range(4))


def _try_fs(fh: BinaryIO) -> tuple[Filesystem | None, str]:
    try:
        return open_filesystem(fh), ""
    except Exception as e:  # dissect raises many kinds on damaged or odd data
        return None, f"{type(e).__name__}: {e}"


def find_volumes(fh: BinaryIO, size: int) -> list[Volume]:
    """The volumes of a disk: the whole disk, its partitions, or LVM logical volumes."""
    fs, error = _try_fs(fh)
    if fs is not None:
        return [Volume("", size, "whole disk", fs)]
    if _has_lvm_label(fh):
        return _lvm_volumes([fh], "")
    from dissect.util.stream import RangeStream
    from dissect.volume.disk import Disk

    fh.seek(0)
    try:
        disk = Disk(fh)
    except Exception:
        return [Volume("", size, "whole disk", None, error or "no partition table and no "
                       "file system that Stasis reads (ext2/3/4, XFS, FAT, NTFS)")]
    volumes: list[Volume] = []
    pvs: list[BinaryIO] = []
    for part in disk.partitions:
        if part.size <= 0 or part.type in _EXTENDED_MBR or part.type == 0:
            continue
        stream = RangeStream(fh, part.offset, part.size)
        desc = f"{type(disk.scheme).__name__} partition {part.number}: {part.type_name}"
        if part.name:
            desc += f" '{part.name}'"
        if _has_lvm_label(stream):
            pvs.append(stream)
            continue
        pfs, perr = _try_fs(stream)
        volumes.append(Volume(f"p{part.number}", part.size, desc, pfs, perr))
    if pvs:
        volumes.extend(_lvm_volumes(pvs, "partition "))
    return volumes


def _lvm_volumes(streams: list[BinaryIO], where: str) -> list[Volume]:
    from dissect.volume.lvm import LVM2, LVM2Device

    groups: dict[str, list[LVM2Device]] = {}
    for s in streams:
        try:
            dev = LVM2Device(s)
            vg_names = [k for k, v in dev.metadata.items() if isinstance(v, dict)]
        except Exception:
            continue
        for name in vg_names:
            groups.setdefault(name, []).append(dev)
    volumes: list[Volume] = []
    for vg_name, devices in sorted(groups.items()):
        try:
            lvm = LVM2(list(devices))
        except Exception as e:
            volumes.append(Volume(vg_name, 0, f"LVM volume group {vg_name}", None,
                                  f"cannot read it: {e}"))
            continue
        for lv in lvm.vg.lv:
            if not lv.is_visible:
                continue
            name = f"{vg_name}/{lv.name}"
            try:
                stream = lv.open()
                stream.seek(0, os.SEEK_END)
                lv_size = int(stream.tell())
            except Exception as e:
                volumes.append(Volume(name, 0, f"LVM logical volume ({where}PV)", None,
                                      f"cannot read it (a PV on another disk?): {e}"))
                continue
            lfs, lerr = _try_fs(stream)
            volumes.append(Volume(name, lv_size, "LVM logical volume", lfs, lerr))
    return volumes
