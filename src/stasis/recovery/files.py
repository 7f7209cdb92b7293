"""Files from a point, read straight from the repository without restoring the disk.

A disk of a point is read through :class:`~stasis.recovery.diskread.DiskReader`
(chunk by chunk, through a bounded cache). Its layout is found with dissect's
modules, pure Python, no mount and no root: a file system on the whole disk, or a
partition table (GPT, MBR; :mod:`dissect.volume`) whose partitions hold file
systems or LVM physical volumes, whose logical volumes hold file systems. The file
systems read are ext2/3/4 (:mod:`dissect.extfs`), XFS (:mod:`dissect.xfs`), FAT
(:mod:`dissect.fat`) and NTFS (:mod:`dissect.ntfs`).

Names. A disk holding one file system has plain paths (``/etc/hosts``). Otherwise
each volume has a name, partitions ``p1``, ``p2`` … by their number, logical
volumes ``VG/LV``, and a path names its volume: ``p2:/etc/hosts``,
``vg0/root:/etc``. A volume's prefix is accepted on a single-file-system disk too.

Extraction (:func:`extract`) writes only below its target directory, whatever the
names in the file system: every directory is entered through a file descriptor
with ``O_NOFOLLOW``, every file and symlink is created relative to it, and a name
that is empty, ``.``, ``..`` or holds ``/`` or NUL is skipped and reported. Files
keep their permission bits (not set-user/group-ID: ownership is not restored) and
modification times; symlinks stay symlinks, never followed. Nothing existing is
replaced without ``force``: conflicts are found before anything is written.
"""

from __future__ import annotations

import calendar
import contextlib
import fnmatch
import logging
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, cast

from stasis.errors import (
    AmbiguousVolume,
    FileNotInPoint,
    FilesystemUnknown,
    FileTargetExists,
    TargetError,
)
from stasis.recovery.diskread import DEFAULT_CACHE_BYTES, DiskReader
from stasis.recovery.restore import select_disk
from stasis.repository import DiskRecord, Manifest, Repository, VmRecord

# dissect logs every oddity it meets at warning level; a user reads our errors instead.
for _name in ("dissect", "dissect.volume", "dissect.extfs", "dissect.xfs", "dissect.fat",
              "dissect.ntfs"):
    logging.getLogger(_name).setLevel(logging.ERROR)

COPY_BLOCK = 1 << 20
MAX_DEPTH = 256  # deeper than any real tree: a loop in a damaged file system stops here
_EXTENDED_MBR = {0x05, 0x0F, 0x85}
_UNSAFE_NAMES = {"", ".", ".."}

KINDS = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
}
_KIND_BITS = {v: k for k, v in KINDS.items()}


# ---------------------------------------------------------------- file systems


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


# --------------------------------------------------------------------- volumes


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


# --------------------------------------------------------------------- entries


@dataclass(frozen=True)
class Entry:
    """What a listing shows of one file."""

    name: str
    path: str  # as the user names it again: "/etc/hosts" or "p2:/etc/hosts"
    type: str
    size: int
    mode: int
    mtime_ns: int
    link: str | None = None

    @classmethod
    def of(cls, node: Node, path: str) -> Entry:
        link = None
        if node.kind == "symlink":
            try:
                link = node.link()
            except Exception:
                link = "?"
        return cls(node.name, path, node.kind, node.size if node.kind == "file" else 0,
                   node.mode, node.mtime_ns, link)

    @property
    def mode_text(self) -> str:
        return stat.filemode(_KIND_BITS.get(self.type, 0) | self.mode)

    @property
    def mtime(self) -> str:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, UTC).isoformat()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "type": self.type, "size": self.size,
                "mode": f"{self.mode:04o}", "mtime": self.mtime, "mtime_ns": self.mtime_ns,
                "link": self.link}


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


# ----------------------------------------------------------------- disk files


class DiskFiles:
    """The volumes and files of one disk of a point."""

    def __init__(self, reader: DiskReader, *, label: str) -> None:
        self.reader = reader
        self.label = label  # "VM/disk of point ID", for messages
        self.volumes = find_volumes(cast(BinaryIO, reader), reader.size)
        self.filesystems = [v for v in self.volumes if v.fs is not None]

    @classmethod
    def open(
        cls, repo: Repository, point: Manifest, *, vm: str | None = None,
        disk: str | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> DiskFiles:
        vm_rec, disk_rec = select_disk(point, vm, disk)
        return cls.of_disk(repo, point, vm_rec, disk_rec, cache_bytes=cache_bytes)

    @classmethod
    def of_disk(
        cls, repo: Repository, point: Manifest, vm: VmRecord, disk: DiskRecord, *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> DiskFiles:
        reader = DiskReader.open(repo, point, vm, disk, cache_bytes=cache_bytes)
        return cls(reader, label=f"{vm.name}/{disk.name} of point {point.id[:12]}")

    @property
    def single(self) -> bool:
        """One file system: paths need no volume name."""
        return len(self.filesystems) == 1

    def _prefix(self, vol: Volume) -> str:
        return "" if self.single or not vol.name else f"{vol.name}:"

    def _volume_names(self) -> str:
        return ", ".join(f"{v.name or 'whole disk'} ({v.fs.type if v.fs else 'no file system'})"
                         for v in self.volumes) or "none"

    def split(self, path: str) -> tuple[Volume | None, str]:
        """(volume, path inside it); volume None for the top of a multi-volume disk."""
        if not self.filesystems:
            found = "; ".join(f"{v.name or 'whole disk'}: {v.description}"
                              + (f" ({v.error})" if v.error else "") for v in self.volumes)
            raise FilesystemUnknown(
                f"{self.label} holds no file system that Stasis reads (ext2/3/4, XFS, FAT, "
                f"NTFS): {found or 'a partition table without partitions'}.")
        names = {v.name: v for v in self.volumes if v.name}
        vol_name, sep, rest = path.partition(":")
        if sep and not path.startswith("/") and vol_name in names:
            vol, inner = names[vol_name], rest or "/"
        elif not sep and path.strip("/") in names and not self.single:
            vol, inner = names[path.strip("/")], "/"
        elif self.single:
            vol, inner = self.filesystems[0], path
        elif path.strip("/") == "":
            return None, "/"
        elif sep and not path.startswith("/"):
            raise FileNotInPoint(f"{self.label} has no volume '{vol_name}' (it has: "
                                 f"{self._volume_names()}).")
        else:
            example = max(self.filesystems or self.volumes, key=lambda v: v.size).name
            absolute = path if path.startswith("/") else "/" + path
            raise AmbiguousVolume(
                f"'{path}' does not say which volume of {self.label} it is on: the disk holds "
                f"{len(self.filesystems)} file systems ({self._volume_names()}). Name one, "
                f"e.g. '{example}:{absolute}'.")
        if not inner.startswith("/"):
            inner = "/" + inner
        return vol, inner

    def lookup(self, path: str) -> tuple[Volume, Node, str]:
        """The node at ``path``: (volume, node, the path as shown)."""
        vol, inner = self.split(path)
        if vol is None:
            raise AmbiguousVolume(f"the top of {self.label} lists volumes, not files: name "
                                  f"one ({self._volume_names()})")
        if vol.fs is None:
            raise FilesystemUnknown(
                f"volume {vol.name or 'whole disk'} of {self.label} ({vol.description}) holds no "
                "file system that Stasis reads (ext2/3/4, XFS, FAT, NTFS)"
                + (f": {vol.error}" if vol.error else "") + ".")
        node: Node = vol.fs.root
        shown = "/"
        for part in [p for p in inner.split("/") if p not in ("", ".")]:
            if part == "..":
                raise FileNotInPoint(f"'{path}': '..' is not allowed in paths of a point.")
            if node.kind != "dir":
                raise FileNotInPoint(f"No '{path}' in {self.label}: {shown} is not a directory.")
            match = self._child(vol, node, part)
            if match is None:
                raise FileNotInPoint(
                    f"No '{path}' in {self.label}: {self._prefix(vol)}{shown} has no entry "
                    f"'{part}'. 'stasis files ls' shows what is there.")
            node = match
            shown = _join(shown, match.name)
        return vol, node, self._prefix(vol) + shown

    @staticmethod
    def _child(vol: Volume, node: Node, part: str) -> Node | None:
        # FAT and NTFS names are case-insensitive
        fold = vol.fs is not None and vol.fs.type.startswith(("fat", "ntfs"))
        for child in node.children():
            if child.name == part or (fold and child.name.lower() == part.lower()):
                return child
        return None

    def ls(self, path: str = "/") -> list[Entry] | list[Volume]:
        """A directory's entries by name, one entry for a file, or the volumes at the top."""
        vol, _inner = self.split(path)
        if vol is None:
            return list(self.volumes)
        _vol, node, shown = self.lookup(path)
        if node.kind != "dir":
            return [Entry.of(node, shown)]
        return sorted((Entry.of(c, _join(shown, c.name)) for c in node.children()),
                      key=lambda e: e.name)

    def walk(self, path: str = "/") -> Iterator[Entry]:
        """Every entry below ``path`` (pre-order), or of every file system from the top."""
        vol, _inner = self.split(path)
        if vol is None:
            for v in self.filesystems:
                yield from self.walk(f"{v.name}:/")
            return
        _vol, node, shown = self.lookup(path)
        yield from _walk(node, shown, 0)

    def find(self, pattern: str) -> Iterator[Entry]:
        """Entries whose name (or, for a pattern with '/', path) matches the glob."""
        on_path = "/" in pattern
        for entry in self.walk("/"):
            inner = entry.path.partition(":")[2] if ":" in entry.path.split("/", 1)[0] \
                else entry.path
            if fnmatch.fnmatchcase(inner if on_path else entry.name, pattern):
                yield entry


def _walk(node: Node, shown: str, depth: int) -> Iterator[Entry]:
    if depth > MAX_DEPTH or node.kind != "dir":
        return
    for child in sorted(node.children(), key=lambda c: c.name):
        path = _join(shown, child.name)
        yield Entry.of(child, path)
        if child.kind == "dir":
            yield from _walk(child, path, depth + 1)


# ------------------------------------------------------------------ extraction


@dataclass
class _Plan:
    name: str
    node: Node
    kind: str
    children: list[_Plan] = field(default_factory=list)


@dataclass
class ExtractResult:
    target: str
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    loads: int = 0  # chunks read from the repository by this disk's reader, opening included
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _safe(name: str) -> bool:
    return name not in _UNSAFE_NAMES and "/" not in name and "\0" not in name


def _plan(node: Node, name: str, shown: str, depth: int, skipped: list[dict[str, str]]) -> \
        _Plan | None:
    if node.kind not in ("file", "dir", "symlink"):
        skipped.append({"path": shown, "reason": f"a {node.kind} is not extracted"})
        return None
    plan = _Plan(name, node, node.kind)
    if node.kind == "dir":
        if depth > MAX_DEPTH:
            skipped.append({"path": shown, "reason": "nested too deep (a loop?)"})
            return plan
        for child in sorted(node.children(), key=lambda c: c.name):
            child_shown = _join(shown, child.name)
            if not _safe(child.name):
                skipped.append({"path": child_shown, "reason": "unsafe name"})
                continue
            sub = _plan(child, child.name, child_shown, depth + 1, skipped)
            if sub is not None:
                plan.children.append(sub)
    return plan


def _conflicts(plan: _Plan, at: Path, out: list[str]) -> None:
    """Existing things the plan would replace (an existing directory is merged into)."""
    try:
        st = os.lstat(at)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        return  # a parent is a file: reported at that parent
    if plan.kind == "dir" and stat.S_ISDIR(st.st_mode):
        for child in plan.children:
            _conflicts(child, at / child.name, out)
        return
    out.append(str(at))


def extract(
    files: DiskFiles, paths: list[str], target: str | Path, *, force: bool = False,
    now: Callable[[], float] | None = None,
) -> ExtractResult:
    """Copy ``paths`` (files, directories recursively, symlinks) into directory ``target``.

    Each path lands under its own name in ``target``; a volume's root (``/``) puts its
    contents straight into ``target``. Every path is looked up and every conflict found
    before anything is written.
    """
    import time

    clock = now or time.monotonic
    started = clock()
    dest = Path(target)
    if not dest.is_dir():
        raise TargetError(dest, "it is not a directory", "Nothing was extracted; create it "
                          "first.")
    result = ExtractResult(str(dest))
    plans: list[_Plan] = []
    for path in paths:
        _vol, node, shown = files.lookup(path)
        name = shown.rsplit("/", 1)[1]
        if name == "":  # a root: its entries go into the target itself
            root = _plan(node, "", shown, 0, result.skipped)
            assert root is not None
            plans.extend(root.children)
            continue
        plan = _plan(node, name, shown, 0, result.skipped)
        if plan is not None:
            plans.append(plan)
    if not force:
        found: list[str] = []
        for plan in plans:
            _conflicts(plan, dest / plan.name, found)
        if found:
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise FileTargetExists(", ".join(found[:5]) + more)
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for plan in plans:
            _write(fd, plan, force, result)
    except OSError as e:
        raise TargetError(dest, e.strerror or str(e), "What was written so far was left in "
                          "place.") from e
    finally:
        os.close(fd)
    result.loads = files.reader.loads
    result.duration_s = round(clock() - started, 3)
    return result


_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_KEEP_MODE = 0o1777  # set-user/group-ID dropped: the owner is the extracting user


def _remove(dir_fd: int, name: str) -> None:
    """Make room for ``name`` in ``dir_fd`` (only with --force): a file, link or empty dir."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _write(dir_fd: int, plan: _Plan, force: bool, result: ExtractResult) -> None:
    name = plan.name
    node = plan.node
    mtime = node.mtime_ns
    if plan.kind == "dir":
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                if not force:
                    raise
                _remove(dir_fd, name)
                os.mkdir(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, _NOFOLLOW_DIR, dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o700 | stat.S_IMODE(os.fstat(fd).st_mode))
            for child in plan.children:
                _write(fd, child, force, result)
            os.fchmod(fd, node.mode & _KEEP_MODE)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)
        result.dirs += 1
        return
    if plan.kind == "symlink":
        target = node.link()
        try:
            os.symlink(target, name, dir_fd=dir_fd)
        except FileExistsError:
            if not force:
                raise
            _remove(dir_fd, name)
            os.symlink(target, name, dir_fd=dir_fd)
        os.utime(name, ns=(mtime, mtime), dir_fd=dir_fd, follow_symlinks=False)
        result.symlinks += 1
        return
    # A file is written under a temporary name, then put in place whole.
    tmp = f".{name[:200]}.stasis-tmp-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            written = _copy(node.open(), out, node.size)
        os.fchmod(fd, node.mode & (_KEEP_MODE & ~stat.S_ISVTX))
        os.utime(fd, ns=(mtime, mtime))
        os.close(fd)
        fd = -1
        if force:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    _remove(dir_fd, name)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            os.unlink(tmp, dir_fd=dir_fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    result.files += 1
    result.bytes += written


def _copy(src: BinaryIO, out: IO[bytes], size: int) -> int:
    written = 0
    while written < size:
        block = src.read(min(COPY_BLOCK, size - written))
        if not block:
            break
        out.write(block)
        written += len(block)
    return written


def read_file(files: DiskFiles, path: str) -> bytes:
    """The whole content of one regular file."""
    _vol, node, shown = files.lookup(path)
    if node.kind != "file":
        raise FileNotInPoint(f"'{shown}' in {files.label} is a {node.kind}, not a file.")
    return node.open().read(node.size)
