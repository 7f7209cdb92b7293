"""File systems read with dissect's modules, pure Python, no mount and no root.

:func:`open_filesystem` recognises ext2/3/4 (:mod:`dissect.extfs`), XFS
(:mod:`dissect.xfs`), FAT (:mod:`dissect.fat`) and NTFS (:mod:`dissect.ntfs`) in a
binary stream and returns its root as a :class:`Node`, one shape for every type.
"""

from __future__ import annotations

import calendar
import logging
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol, cast

# dissect logs every oddity it meets at warning level; a user reads our errors instead.
for _name in ("dissect", "dissect.volume", "dissect.extfs", "dissect.xfs", "dissect.fat",
              "dissect.ntfs"):
    logging.getLogger(_name).setLevel(logging.ERROR)


MAX_DEPTH = 256  # deeper than any real tree: a loop in a damaged file system stops here

KINDS = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
}


class Node(Protocol):
    """One entry of a file system, whatever its type."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...  # a value of KINDS
    @property
    def size(self) -> int: ...
    @property
    def mode(self) -> int: ...  # permission bits (S_IMODE)
    @property
    def mtime_ns(self) -> int: ...
    def link(self) -> str: ...
    def children(self) -> Iterator[Node]: ...
    def open(self) -> BinaryIO: ...


class _InodeNode:
    """An ext2/3/4 or XFS inode: both dissect modules share this shape."""

    def __init__(self, inode: Any, name: str, mode_of: Callable[[Any], int]) -> None:
        self._inode = inode
        self._name = name
        self._mode_of = mode_of

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return KINDS.get(stat.S_IFMT(self._mode_of(self._inode)), "other")

    @property
    def size(self) -> int:
        return int(self._inode.size)

    @property
    def mode(self) -> int:
        return stat.S_IMODE(self._mode_of(self._inode))

    @property
    def mtime_ns(self) -> int:
        return int(self._inode.mtime_ns)

    def link(self) -> str:
        return str(self._inode.link)

    def children(self) -> Iterator[Node]:
        for child in self._inode.iterdir():
            if child.filename not in (".", ".."):
                yield _InodeNode(child, child.filename, self._mode_of)

    def open(self) -> BinaryIO:
        return cast(BinaryIO, self._inode.open())


def _fat_time(value: datetime) -> int:
    # FAT keeps local wall-clock time without a zone; it is read as UTC.
    return calendar.timegm(value.timetuple()) * 1_000_000_000


def _fat_name(entry: Any) -> str:
    """The entry's name; a short name keeps the lower case that Windows and Linux record
    in the reserved byte (0x08 base, 0x10 extension) instead of a long name."""
    if entry.ldirents:
        return str(entry.name)
    flags = int(entry.dirent.DIR_NTRes)
    base, dot, ext = str(entry.short_name).partition(".")
    if flags & 0x08:
        base = base.lower()
    if flags & 0x10:
        ext = ext.lower()
    return base + dot + ext


class _FatNode:
    def __init__(self, entry: Any, name: str) -> None:
        self._entry = entry
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return "dir" if self._entry.is_directory() else "file"

    @property
    def size(self) -> int:
        return 0 if self._entry.is_directory() else int(self._entry.size)

    @property
    def mode(self) -> int:
        if self._entry.is_directory():
            return 0o755
        return 0o444 if self._entry.is_readonly() else 0o644

    @property
    def mtime_ns(self) -> int:
        return _fat_time(self._entry.mtime)

    def link(self) -> str:
        raise OSError("FAT has no symlinks")

    def children(self) -> Iterator[Node]:
        for child in self._entry.iterdir():
            if child.is_volume_id() or child.name in (".", ".."):
                continue
            yield _FatNode(child, _fat_name(child))

    def open(self) -> BinaryIO:
        return cast(BinaryIO, self._entry.open())


class _NtfsNode:
    def __init__(self, record: Any, name: str) -> None:
        self._record = record
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        if self._record.is_symlink():
            return "symlink"
        return "dir" if self._record.is_dir() else "file"

    @property
    def size(self) -> int:
        if self.kind != "file":
            return 0
        try:
            return int(self._record.size())
        except FileNotFoundError:
            return 0

    @property
    def mode(self) -> int:
        return 0o755 if self.kind == "dir" else 0o644

    @property
    def mtime_ns(self) -> int:
        info = self._record.attributes.STANDARD_INFORMATION
        return int(info[0].last_modification_time_ns) if info else 0

    def link(self) -> str:
        return str(self._record.reparse_point_substitute_name).replace("\\", "/")

    def children(self) -> Iterator[Node]:
        root = self._record.segment == 5
        for entry in self._record.iterdir(ignore_dos=True):
            name = entry.attribute.file_name
            if name == "." or (root and name.startswith("$")):
                continue
            yield _NtfsNode(entry.dereference(), name)

    def open(self) -> BinaryIO:
        return cast(BinaryIO, self._record.open())


@dataclass
class Filesystem:
    type: str  # ext2, ext3, ext4, xfs, fat, ntfs
    label: str
    root: Node


def _ext_type(fs: Any) -> str:
    sb = fs.sb
    if sb.s_feature_incompat & 0x40 or sb.s_feature_incompat & 0x200:  # extents, flex_bg
        return "ext4"
    return "ext3" if sb.s_feature_compat & 0x4 else "ext2"  # has_journal


def _ext_mode(i: Any) -> int:
    return int(i.inode.i_mode)


def _xfs_mode(i: Any) -> int:
    return int(i.inode.di_mode)


def open_filesystem(fh: BinaryIO) -> Filesystem | None:
    """The file system in ``fh``, or None when none that we read is there."""
    # dissect's modules compile their C structures at import (tenths of a second):
    # imported here, only the file system met is paid for, and no other command pays.
    fh.seek(0)
    head = fh.read(4096)
    if head[1080:1082] == b"\x53\xef":
        from dissect.extfs import ExtFS

        ext = ExtFS(fh)
        return Filesystem(_ext_type(ext), str(ext.sb.s_volume_name.split(b"\0")[0].decode(
            errors="replace")), _InodeNode(ext.root, "", _ext_mode))
    if head[:4] == b"XFSB":
        from dissect.xfs import XFS

        xfs = XFS(fh)
        return Filesystem("xfs", xfs.name, _InodeNode(xfs.root, "", _xfs_mode))
    if head[3:11] == b"NTFS    ":
        from dissect.ntfs import NTFS

        ntfs = NTFS(fh)
        return Filesystem("ntfs", ntfs.volume_name or "", _NtfsNode(ntfs.mft.root, ""))
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        from dissect.fat import FATFS
        from dissect.fat.fat import validate_bpb

        try:
            validate_bpb(head[:512])
        except Exception:
            return None
        try:
            fat = FATFS(fh)
        except Exception:
            return None
        return Filesystem(str(fat.type.name).lower(), fat.volume_label, _FatNode(fat.root, ""))
    return None
