"""Files of a point streamed as an archive (zip or tar.zst) while they are read.

:func:`archive` yields the archive piece by piece: each piece is what one block
(:data:`BLOCK`) of one file, or one directory or symlink, adds to it. Nothing is
written to disk and nothing larger than a block and the compressor's window is held,
whatever the size of the files: the zip is written as to an unseekable stream (local
headers with data descriptors, ZIP64 where a size or an offset needs it), the tar in
POSIX.1-2001 (pax) format through a zstd stream. Stopping the iteration stops the
reading at once.

Names are chosen as :func:`~.extraction.extract` chooses them: each path under its
own name, a volume's root by its contents; names that are empty, ``.``, ``..`` or
hold ``/`` or NUL, and entries that are neither files, directories nor symlinks,
are left out (as extraction skips them).
"""

from __future__ import annotations

import stat
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from stasis.recovery.files.diskfiles import DiskFiles
from stasis.recovery.files.filesystems import MAX_DEPTH, Node

BLOCK = 1 << 20
FORMATS = ("zip", "tar.zst")
Format = Literal["zip", "tar.zst"]
_UNSAFE = {"", ".", ".."}
_KINDS = ("file", "dir", "symlink")


@dataclass(frozen=True)
class Member:
    """One entry of the archive: its name in it and the node it is read from."""

    name: str
    node: Node


def _safe(name: str) -> bool:
    return name not in _UNSAFE and "/" not in name and "\0" not in name


def _below(node: Node, prefix: str, depth: int) -> Iterator[Member]:
    if depth > MAX_DEPTH:
        return
    for child in sorted(node.children(), key=lambda c: c.name):
        if not _safe(child.name) or child.kind not in _KINDS:
            continue
        name = f"{prefix}/{child.name}" if prefix else child.name
        yield Member(name, child)
        if child.kind == "dir":
            yield from _below(child, name, depth + 1)


def resolve(files: DiskFiles, paths: list[str]) -> list[tuple[Node, str]]:
    """Every path looked up (before a byte is sent): (node, its name in the archive, ""
    for a root whose contents go at the top)."""
    found = []
    for path in paths:
        _vol, node, shown = files.lookup(path)
        found.append((node, shown.rsplit("/", 1)[1]))
    return found


def members(roots: list[tuple[Node, str]]) -> Iterator[Member]:
    """The entries of the archive of ``roots``, directories before their contents."""
    for node, name in roots:
        if name == "":
            yield from _below(node, "", 0)
        elif node.kind in _KINDS:
            yield Member(name, node)
            if node.kind == "dir":
                yield from _below(node, name, 0)


def blocks(node: Node, size: int, *, start: int = 0) -> Iterator[bytes]:
    """The content of a file from byte ``start`` up to byte ``size``, block by block
    (shorter when the file system holds less than its size says)."""
    fh = node.open()
    if start:
        fh.seek(start)
    left = size - start
    while left > 0:
        block = fh.read(min(BLOCK, left))
        if not block:
            return
        left -= len(block)
        yield block


class _Sink:
    """What the writers wrote since it was last taken (an unseekable stream)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _dos_time(mtime_ns: int) -> tuple[int, int, int, int, int, int]:
    # A zip's DOS time spans 1980-2107 (UTC here, as FAT's times are read).
    t = time.gmtime(mtime_ns // 1_000_000_000)
    if t.tm_year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    if t.tm_year > 2107:
        return (2107, 12, 31, 23, 59, 58)
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def _zip(entries: Iterator[Member]) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as zf:
        for m in entries:
            node = m.node
            kind = node.kind
            info = zipfile.ZipInfo(m.name + ("/" if kind == "dir" else ""),
                                   date_time=_dos_time(node.mtime_ns))
            info.create_system = 3  # Unix: the mode bits below are read
            if kind == "dir":
                info.external_attr = (stat.S_IFDIR | node.mode) << 16 | 0x10
                zf.writestr(info, b"")
            elif kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, node.link().encode("utf-8", "surrogateescape"))
            else:
                info.external_attr = (stat.S_IFREG | node.mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                # A download: speed over the last percent of size (the attribute is
                # _compresslevel before Python 3.13, compress_level since).
                level = "compress_level" if hasattr(info, "compress_level") \
                    else "_compresslevel"
                setattr(info, level, 1)
                info.file_size = node.size  # decides ZIP64 for this entry
                with zf.open(info, "w") as w:
                    for block in blocks(node, node.size):
                        w.write(block)
                        piece = sink.take()
                        if piece:
                            yield piece
            piece = sink.take()
            if piece:
                yield piece
    yield sink.take()  # the central directory


def _tar_zst(entries: Iterator[Member], level: int = 3) -> Iterator[bytes]:
    import zstandard

    z = zstandard.ZstdCompressor(level=level).compressobj()
    written = 0

    def out(data: bytes) -> bytes:
        nonlocal written
        written += len(data)
        return z.compress(data)

    for m in entries:
        node = m.node
        info = tarfile.TarInfo(m.name)
        info.mtime = node.mtime_ns / 1e9  # pax keeps the fraction
        info.mode = node.mode
        if node.kind == "dir":
            info.type = tarfile.DIRTYPE
        elif node.kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = node.link()
        else:
            info.size = node.size
        piece = out(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if info.size:
            sent = 0
            for block in blocks(node, node.size):
                sent += len(block)
                piece += out(block)
                if piece:
                    yield piece
                piece = b""
            # The header promised the size: a short read (a damaged file system) is
            # padded with zeros, so the archive stays readable.
            pad = (info.size - sent) + (-info.size % tarfile.BLOCKSIZE)
            piece += out(bytes(pad))
        if piece:
            yield piece
    end = bytes(2 * tarfile.BLOCKSIZE)
    end += bytes(-(written + len(end)) % tarfile.RECORDSIZE)
    yield out(end) + z.flush()


def archive(roots: list[tuple[Node, str]], fmt: Format) -> Iterator[bytes]:
    """The archive of ``roots`` (from :func:`resolve`) in ``fmt``, piece by piece."""
    if fmt == "zip":
        return _zip(members(roots))
    return _tar_zst(members(roots))
