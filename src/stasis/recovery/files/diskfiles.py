"""The volumes and files of one disk of a point: :class:`DiskFiles`.

Names. A disk holding one file system has plain paths (``/etc/hosts``). Otherwise
each volume has a name, partitions ``p1``, ``p2`` … by their number, logical
volumes ``VG/LV``, and a path names its volume: ``p2:/etc/hosts``,
``vg0/root:/etc``. A volume's prefix is accepted on a single-file-system disk too.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import BinaryIO, cast

from stasis.errors import AmbiguousVolume, FileNotInPoint, FilesystemUnknown
from stasis.recovery.diskread import DEFAULT_CACHE_BYTES, DiskReader
from stasis.recovery.files.entry import Entry, join_path
from stasis.recovery.files.filesystems import MAX_DEPTH, Node
from stasis.recovery.files.volumes import Volume, find_volumes
from stasis.recovery.restore import select_disk
from stasis.repository import DiskRecord, Manifest, Repository, VmRecord


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
            shown = join_path(shown, match.name)
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
        return sorted((Entry.of(c, join_path(shown, c.name)) for c in node.children()),
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
        path = join_path(shown, child.name)
        yield Entry.of(child, path)
        if child.kind == "dir":
            yield from _walk(child, path, depth + 1)


def read_file(files: DiskFiles, path: str) -> bytes:
    """The whole content of one regular file."""
    _vol, node, shown = files.lookup(path)
    if node.kind != "file":
        raise FileNotInPoint(f"'{shown}' in {files.label} is a {node.kind}, not a file.")
    return node.open().read(node.size)
