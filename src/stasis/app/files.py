"""Files of a point, read straight from the repository: list, find, extract, and
download (one file, or an archive streamed as it is read); and such an archive from a
server unpacked into a directory (``stasis --server URL files get``).

Every operation holds a shared lock of the repository while it reads, so gc cannot
sweep the chunks it reads meanwhile; a :class:`Download` holds it until it is closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from stasis.app.models import ExtractReport, FileEntry, VolumeRow
from stasis.errors import (
    AmbiguousPoint,
    DiskNotFound,
    FileNotInPoint,
    FilesystemUnknown,
    PointNotFound,
    RangeNotSatisfiable,
)
from stasis.recovery.files import DiskFiles, Entry, Volume, extract
from stasis.recovery.files import archive as archive_mod
from stasis.repository import Manifest, Repository

if TYPE_CHECKING:
    from stasis.app.scope import Scope


def _entry(e: Entry, *, vm: str | None = None, disk: str | None = None) -> FileEntry:
    entry = FileEntry.model_validate({**e.to_dict(), "mode_text": e.mode_text})
    if vm is not None:  # set only where known, so that a listing's dump leaves them out
        entry.vm, entry.disk = vm, disk
    return entry


def _row(x: Entry | Volume) -> FileEntry | VolumeRow:
    return VolumeRow.model_validate(x.to_dict()) if isinstance(x, Volume) else _entry(x)


def list_files(repo: Repository, point: str, path: str = "/", *, vm: str | None = None,
               disk: str | None = None) -> list[FileEntry | VolumeRow]:
    """A directory (or one file) of a disk of ``point``; the volumes at the top of a
    disk of several (``VOLUME:/PATH`` then names one)."""
    m = repo.resolve(point)
    with repo.shared_lock(f"files ls {m.id[:12]}"):
        return [_row(x) for x in DiskFiles.open(repo, m, vm=vm, disk=disk).ls(path)]


def extract_files(repo: Repository, point: str, paths: list[str], to: Path, *,
                  vm: str | None = None, disk: str | None = None,
                  force: bool = False) -> ExtractReport:
    """Extract files, directories and symlinks of ``point`` into the directory ``to``
    (nothing written outside it, nothing there replaced without ``force``)."""
    m = repo.resolve(point)
    with repo.shared_lock(f"files get {m.id[:12]}"):
        files = DiskFiles.open(repo, m, vm=vm, disk=disk)
        result = extract(files, paths, to, force=force)
    return ExtractReport.model_validate({"point": m.id, **result.to_dict()})


def unpack_archive(pieces: Iterable[bytes], point: str, to: Path, *, source: str,
                   force: bool = False) -> ExtractReport:
    """The tar.zst archive of ``point``'s files arriving in ``pieces`` (from ``source``)
    unpacked into the directory ``to`` as :func:`extract_files` writes them (staged,
    checked, nothing outside ``to``; see :mod:`stasis.recovery.files.unarchive`). The
    report's ``loads`` is 0 and ``skipped`` empty: the archive's maker read the chunks
    and left out what it could not send."""
    from stasis.recovery.files.unarchive import unpack

    result = unpack(pieces, to, source=source, force=force)
    return ExtractReport.model_validate({"point": point, **result.to_dict()})


def find_files(repo: Repository, point: str, pattern: str, *, vm: str | None = None,
               disk: str | None = None, on_found: Callable[[FileEntry, bool], None] | None = None,
               ) -> list[FileEntry]:
    """Files of ``point`` whose name (or whole path, when ``pattern`` holds a '/') matches,
    on every disk unless ``vm``/``disk`` narrow it. ``on_found`` hears each at once (and
    whether the search spans several disks)."""
    m = repo.resolve(point)
    pairs = [(v, d) for v, d in m.disks()
             if (vm is None or v.name == vm) and (disk is None or d.name == disk)]
    if not pairs:
        listing = ", ".join(f"{v.name}/{d.name}" for v, d in m.disks())
        raise DiskNotFound(f"point {m.id[:12]} has no disk matching --vm {vm} --disk {disk} "
                           f"(it has: {listing})")
    found: list[FileEntry] = []
    unreadable: list[FilesystemUnknown] = []
    with repo.shared_lock(f"files find {m.id[:12]}"):
        for v, d in pairs:
            try:
                for e in DiskFiles.of_disk(repo, m, v, d).find(pattern):
                    entry = _entry(e, vm=v.name, disk=d.name)
                    found.append(entry)
                    if on_found is not None:
                        on_found(entry, len(pairs) > 1)
            except FilesystemUnknown as e:
                # A search over several disks passes a disk with no file system it
                # reads (a blank disk, swap): the others are still searched.
                if len(pairs) == 1:
                    raise
                unreadable.append(e)
    if len(unreadable) == len(pairs):
        raise unreadable[0]
    return found


# ------------------------------------------------------------------ for a principal


def point_for(repo: Repository, ref: str, where: Scope) -> Manifest:
    """The point ``ref`` (id, unique prefix, NAME@latest) as ``where`` sees it: another
    tenant's point is not found, exactly like a missing one, and a prefix is unique
    among the points the principal may see (so an ambiguity names none of the others)."""
    try:
        m = repo.resolve(ref)
    except AmbiguousPoint:
        if where.everything:
            raise
        spec = ref.strip().lower()
        mine = [m for m in (repo.load_manifest(i) for i in repo.point_ids()
                            if i.startswith(spec))
                if where.owns_vms(v.name for v in m.vms)]
        if len(mine) != 1:
            raise PointNotFound(ref) from None
        return mine[0]
    where.check_point(ref, [v.name for v in m.vms])
    return m


# ------------------------------------------------------------------ downloads


class Download:
    """A download being read: its pieces, and the repository's shared lock held until
    :meth:`close` (which stops the reading: call it however the download ends)."""

    def __init__(self, lock: contextlib.AbstractContextManager[object],
                 pieces: Iterator[bytes], *, filename: str, size: int | None,
                 media_type: str, etag: str) -> None:
        self._lock = lock
        self._pieces = pieces
        self._closed = False
        self._guard = threading.Lock()
        self.filename = filename
        self.size = size
        self.media_type = media_type
        self.etag = etag
        self.range: tuple[int, int] | None = None  # the bytes sent (inclusive), if a range
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        with self._guard:
            if self._closed:
                raise StopIteration
            piece = next(self._pieces)
            self.sent += len(piece)
            return piece

    def close(self) -> None:
        with self._guard:
            if self._closed:
                return
            self._closed = True
            try:
                close = getattr(self._pieces, "close", None)
                if close is not None:
                    close()
            finally:
                self._lock.__exit__(None, None, None)


def _etag(point: str, *parts: str) -> str:
    digest = hashlib.sha256("\0".join((point, *parts)).encode("utf-8", "surrogateescape"))
    return f'"{digest.hexdigest()[:32]}"'


def _opened(repo: Repository, m: Manifest, purpose: str) -> \
        contextlib.AbstractContextManager[object]:
    lock = repo.shared_lock(f"{purpose} {m.id[:12]}")
    lock.__enter__()
    return lock


def download_file(repo: Repository, point: str, path: str, *, vm: str | None = None,
                  disk: str | None = None, first: int | None = None,
                  last: int | None = None) -> Download:
    """One regular file of ``point``, read as it is sent; with a byte range as HTTP
    names one (``first``-``last`` inclusive, ``last`` None: to the end; ``first`` None:
    the last ``last`` bytes), only those (:attr:`Download.range`). It is looked up
    before this returns, so a missing file raises here, not half-way through."""
    m = repo.resolve(point)
    lock = _opened(repo, m, "files download")
    try:
        files = DiskFiles.open(repo, m, vm=vm, disk=disk)
        _vol, node, shown = files.lookup(path)
        if node.kind != "file":
            raise FileNotInPoint(f"'{shown}' in {files.label} is a {node.kind}, not a file.")
        size = node.size
        start, stop = 0, size
        ranged = first is not None or last is not None
        if first is None and last is not None:
            start = max(0, size - last)
        elif first is not None:
            start, stop = first, size if last is None else min(last + 1, size)
        if ranged and (start >= stop or (first is None and last == 0)):
            raise RangeNotSatisfiable(f"bytes {first if first is not None else ''}-"
                                      f"{last if last is not None else ''} of '{shown}', "
                                      f"which has {size} bytes")
        download = Download(lock, archive_mod.blocks(node, stop, start=start),
                            filename=shown.rsplit("/", 1)[1], size=size,
                            media_type="application/octet-stream", etag=_etag(m.id, shown))
        if ranged:
            download.range = (start, stop - 1)
        return download
    except BaseException:
        lock.__exit__(None, None, None)
        raise


MEDIA_TYPES = {"zip": "application/zip", "tar.zst": "application/zstd"}


def download_archive(repo: Repository, point: str, paths: list[str],
                     fmt: archive_mod.Format, *, vm: str | None = None,
                     disk: str | None = None) -> Download:
    """Files and directories (recursively) of ``point`` as one archive in ``fmt``,
    streamed as they are read. Every path is looked up before this returns."""
    m = repo.resolve(point)
    lock = _opened(repo, m, "files archive")
    try:
        files = DiskFiles.open(repo, m, vm=vm, disk=disk)
        roots = archive_mod.resolve(files, paths)
        names = [n for _node, n in roots if n]
        stem = names[0] if len(names) == 1 and len(roots) == 1 else f"point-{m.id[:12]}"
        return Download(lock, archive_mod.archive(roots, fmt), filename=f"{stem}.{fmt}",
                        size=None, media_type=MEDIA_TYPES[fmt],
                        etag=_etag(m.id, fmt, *paths))
    except BaseException:
        lock.__exit__(None, None, None)
        raise
