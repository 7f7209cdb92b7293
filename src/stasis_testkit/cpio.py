"""A writer for the cpio "newc" format the Linux kernel unpacks as an initramfs.

Written here rather than shelling out to cpio(1) so that the archive is reproducible
(fixed owners and times, sorted entries) and can hold device nodes without root.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member. ``mode`` carries the file type bits (``stat.S_IFREG | 0o755``)."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @classmethod
    def directory(cls, name: str, perm: int = 0o755) -> Entry:
        return cls(name, stat.S_IFDIR | perm)

    @classmethod
    def file(cls, name: str, data: bytes, perm: int = 0o644) -> Entry:
        return cls(name, stat.S_IFREG | perm, data)

    @classmethod
    def symlink(cls, name: str, target: str) -> Entry:
        return cls(name, stat.S_IFLNK | 0o777, target.encode())

    @classmethod
    def char_device(cls, name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
        return cls(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _member(out: BinaryIO, ino: int, entry: Entry) -> None:
    name = entry.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0,
        entry.rdev[0], entry.rdev[1], len(name), 0,
    )
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out.write(header + name + _pad(len(header) + len(name)))
    out.write(entry.data + _pad(len(entry.data)))


def write_newc(out: BinaryIO, entries: list[Entry]) -> None:
    """Write ``entries`` (sorted by name, so parents come first) and the trailer."""
    for ino, entry in enumerate(sorted(entries, key=lambda e: e.name), start=1):
        _member(out, ino, entry)
    _member(out, 0, Entry(TRAILER, 0))


def read_newc(data: bytes) -> dict[str, Entry]:
    """Parse an uncompressed newc archive (used by the tests to check what was built)."""
    entries: dict[str, Entry] = {}
    pos = 0
    while True:
        if data[pos:pos + 6] != b"070701":
            raise ValueError(f"not a newc header at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        body = data[pos:pos + size]
        pos += size + (-size % 4)
        if name == TRAILER:
            return entries
        entries[name] = Entry(name, mode, body, (rmaj, rmin))
