"""An archive of a point's files (tar.zst, as :func:`.archive.archive` writes it) from
elsewhere, unpacked into a directory as it arrives: :func:`unpack`.

The archive comes from a server and is treated as possibly hostile or cut short:

- Staged: every member is written into a new directory inside the target,
  ``.stasis-get-XXXXXXXX.partial``, and moved into place only once the whole archive
  has arrived (its zstd frame complete) and every member was accepted. A download cut
  off or refused removes that directory and moves nothing; a process killed outright
  leaves it, under its ``.partial`` name, and never a file at its final name.
- Checked: a member whose name is absolute, holds an empty, ``.`` or ``..`` part or
  NUL, appears twice or before its directory, or that is neither a file, a directory
  nor a symlink (hard links, devices, FIFOs) refuses the whole archive
  (:class:`~stasis.errors.ArchiveRefused`).
- Never through a link: every directory is entered by a descriptor opened with
  ``O_NOFOLLOW`` and every entry is created relative to one, so nothing is written
  outside the target whatever the members before say. Symlinks are kept as the
  archive gives them (a link to ``/usr/share/zoneinfo/UTC`` is data of the point, and
  :func:`~.extraction.extract` keeps it too); none is ever followed.

The result is :func:`~.extraction.extract`'s: modes (without set-user/group-ID; a
directory keeps its sticky bit), modification times (to the microsecond the tar's
pax header carries), nothing existing replaced without ``force`` (every conflict is
found before anything is moved; an existing directory is merged into).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from stasis.errors import ArchiveRefused, FileTargetExists, TargetError
from stasis.recovery.files.extraction import COPY_BLOCK, ExtractResult

STAGE_PREFIX = ".stasis-get-"
STAGE_SUFFIX = ".partial"
_UNSAFE = {"", ".", ".."}
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_KEEP_MODE = 0o1777  # set-user/group-ID dropped: the owner is the extracting user


class _Refused(Exception):
    """Why the archive is refused (raised as ArchiveRefused with its source)."""


class _Decompressed(io.RawIOBase):
    """The plaintext of a zstd stream arriving in ``pieces``; its end before the end of
    the frame is an archive cut short."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        import zstandard

        self._pieces = pieces
        self._z = zstandard.ZstdDecompressor().decompressobj()
        self._buf = b""
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        import zstandard

        while self._at >= len(self._buf):
            if self._z.eof:
                return 0
            piece = next(self._pieces, None)
            if piece is None:
                raise _Refused("it ends before its end (the download was cut short)")
            try:
                self._buf, self._at = self._z.decompress(piece), 0
            except zstandard.ZstdError as e:
                raise _Refused(f"it is not a zstd stream ({e})") from None
        n = min(len(b), len(self._buf) - self._at)
        b[:n] = self._buf[self._at:self._at + n]
        self._at += n
        return n


class _Dirs:
    """Descriptors of the directories of a path below a root, entered with O_NOFOLLOW;
    kept open along the current branch (members come directories first)."""

    def __init__(self, root_fd: int) -> None:
        self._stack: list[tuple[str, int]] = [("", root_fd)]

    def fd_of(self, parent: str) -> int:
        while len(self._stack) > 1:
            top = self._stack[-1][0]
            if parent == top or parent.startswith(top + "/"):
                break
            os.close(self._stack.pop()[1])
        top = self._stack[-1][0]
        rest = parent[len(top):].strip("/")
        for part in rest.split("/") if rest else []:
            fd = os.open(part, _NOFOLLOW_DIR, dir_fd=self._stack[-1][1])
            self._stack.append((f"{self._stack[-1][0]}/{part}".lstrip("/"), fd))
        return self._stack[-1][1]

    def close(self) -> None:
        while len(self._stack) > 1:
            os.close(self._stack.pop()[1])


def _checked_name(m: tarfile.TarInfo, seen: set[str], dirs: set[str]) -> list[str]:
    name = m.name
    if name.startswith("/") or "\0" in name:
        raise _Refused(f"it holds the absolute or malformed name {name!r}")
    parts = name.split("/")
    if any(p in _UNSAFE for p in parts):
        raise _Refused(f"it holds the name {name!r}, which leaves its place")
    if name in seen:
        raise _Refused(f"it holds {name!r} twice")
    parent = "/".join(parts[:-1])
    if parent and parent not in dirs:
        raise _Refused(f"it holds {name!r} before (or without) its directory {parent!r}")
    if not (m.type in (tarfile.REGTYPE, tarfile.AREGTYPE) or m.isdir() or m.issym()):
        kind = "hard link" if m.islnk() else "device" if m.isdev() else f"type {m.type!r}"
        raise _Refused(f"{name!r} is a {kind}, which is never extracted")
    return parts


def _ns(m: tarfile.TarInfo) -> int:
    return round(float(m.mtime) * 1e6) * 1000


def _receive(pieces: Iterator[bytes], stage_fd: int, result: ExtractResult
             ) -> tuple[list[str], list[tuple[str, int, int]]]:
    """Every member written below ``stage_fd``: the names at the top (in order) and each
    directory's (path, mode, mtime in ns), to set once its contents are in place."""
    seen: set[str] = set()
    dirs: set[str] = set()
    tops: list[str] = []
    attrs: list[tuple[str, int, int]] = []
    walk = _Dirs(stage_fd)
    try:
        raw = io.BufferedReader(_Decompressed(pieces), COPY_BLOCK)
        try:
            tar = tarfile.open(fileobj=raw, mode="r|", encoding="utf-8",  # noqa: SIM115
                               errors="surrogateescape")  # (closed by the with below)
        except tarfile.TarError as e:
            raise _Refused(f"it is not a tar archive ({e})") from None
        with tar:
            while True:
                try:
                    m = tar.next()
                except tarfile.TarError as e:
                    raise _Refused(f"it is broken ({e})") from None
                if m is None:
                    break
                parts = _checked_name(m, seen, dirs)
                seen.add(m.name)
                if len(parts) == 1:
                    tops.append(m.name)
                fd = walk.fd_of("/".join(parts[:-1]))
                last = parts[-1]
                if m.isdir():
                    os.mkdir(last, 0o700, dir_fd=fd)
                    dirs.add(m.name)
                    attrs.append((m.name, m.mode & _KEEP_MODE, _ns(m)))
                    result.dirs += 1
                elif m.issym():
                    os.symlink(m.linkname, last, dir_fd=fd)
                    os.utime(last, ns=(_ns(m),) * 2, dir_fd=fd, follow_symlinks=False)
                    result.symlinks += 1
                else:
                    result.bytes += _write_file(tar, m, last, fd)
                    result.files += 1
    finally:
        walk.close()
    return tops, attrs


def _write_file(tar: tarfile.TarFile, m: tarfile.TarInfo, name: str, dir_fd: int) -> int:
    src = tar.extractfile(m)
    assert src is not None
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                 dir_fd=dir_fd)
    written = 0
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            while True:
                try:
                    block = src.read(COPY_BLOCK)
                except tarfile.TarError as e:
                    raise _Refused(f"it is broken in {m.name!r} ({e})") from None
                if not block:
                    break
                out.write(block)
                written += len(block)
        if written != m.size:
            raise _Refused(f"{m.name!r} is shorter than its header says")
        os.fchmod(fd, m.mode & (_KEEP_MODE & ~stat.S_ISVTX))
        os.utime(fd, ns=(_ns(m),) * 2)
    finally:
        os.close(fd)
    return written


def _conflicts(src_fd: int, dst_fd: int, name: str, at: Path, out: list[str]) -> None:
    """Existing things in ``dst_fd`` that staged ``name`` would replace (an existing
    directory is merged into, so only what is below it counts)."""
    try:
        there = os.stat(name, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    here = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
    if not (stat.S_ISDIR(here.st_mode) and stat.S_ISDIR(there.st_mode)):
        out.append(str(at))
        return
    with _opened(name, src_fd) as sub_src, _opened(name, dst_fd) as sub_dst:
        for child in sorted(os.listdir(sub_src)):
            _conflicts(sub_src, sub_dst, child, at / child, out)


@contextlib.contextmanager
def _opened(name: str, dir_fd: int) -> Iterator[int]:
    fd = os.open(name, _NOFOLLOW_DIR, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _place(src_fd: int, dst_fd: int, name: str, force: bool) -> None:
    """Move staged ``name`` into ``dst_fd``: merged into an existing directory, put in
    place where nothing is, replacing what is there only with ``force``."""
    here = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
    try:
        there: os.stat_result | None = os.stat(name, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        there = None
    is_dir = stat.S_ISDIR(here.st_mode)
    if there is not None and is_dir and stat.S_ISDIR(there.st_mode):
        with _opened(name, src_fd) as sub_src, _opened(name, dst_fd) as sub_dst:
            for child in sorted(os.listdir(sub_src)):
                _place(sub_src, sub_dst, child, force)
        return
    if there is None and not is_dir:
        # A link cannot replace anything: what appeared since the check is not lost.
        os.link(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        os.unlink(name, dir_fd=src_fd)
        return
    if there is not None:
        if not force:
            raise FileExistsError(f"{name} appeared in the target meanwhile")
        if stat.S_ISDIR(there.st_mode):
            os.rmdir(name, dir_fd=dst_fd)  # an empty one only, as extract replaces
        elif is_dir:
            os.unlink(name, dir_fd=dst_fd)
    os.replace(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def _set_dir(root_fd: int, path: str, mode: int, mtime_ns: int) -> None:
    parts = path.split("/")
    walk = _Dirs(root_fd)
    try:
        with _opened(parts[-1], walk.fd_of("/".join(parts[:-1]))) as fd:
            os.fchmod(fd, mode)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        walk.close()


def unpack(pieces: Iterable[bytes], target: str | Path, *, source: str,
           force: bool = False, now: Callable[[], float] | None = None) -> ExtractResult:
    """Unpack the tar.zst arriving in ``pieces`` (from ``source``, as error messages name
    it) into the directory ``target``, as :func:`~.extraction.extract` writes the same
    files (``loads`` stays 0: the chunks were read by whoever made the archive)."""
    import time

    clock = now or time.monotonic
    started = clock()
    dest = Path(target)
    if not dest.is_dir():
        raise TargetError(dest, "it is not a directory", "Nothing was extracted; create it "
                          "first.")
    result = ExtractResult(str(dest))
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    stage = f"{STAGE_PREFIX}{secrets.token_hex(4)}{STAGE_SUFFIX}"
    placing = False
    try:
        os.mkdir(stage, 0o700, dir_fd=dest_fd)
        try:
            with _opened(stage, dest_fd) as stage_fd:
                tops, attrs = _receive(iter(pieces), stage_fd, result)
                if not force:
                    found: list[str] = []
                    for name in tops:
                        _conflicts(stage_fd, dest_fd, name, dest / name, found)
                    if found:
                        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
                        raise FileTargetExists(", ".join(found[:5]) + more)
                placing = True
                for name in tops:
                    _place(stage_fd, dest_fd, name, force)
                for path, mode, mtime_ns in reversed(attrs):  # the deepest first
                    _set_dir(dest_fd, path, mode, mtime_ns)
        finally:
            shutil.rmtree(stage, dir_fd=dest_fd, ignore_errors=True)
    except _Refused as e:
        raise ArchiveRefused(source, str(e)) from None
    except OSError as e:
        left = "What was moved into place so far was left there." if placing else \
            "Nothing was extracted."
        raise TargetError(dest, e.strerror or str(e), left) from e
    finally:
        os.close(dest_fd)
    result.duration_s = round(clock() - started, 3)
    return result
