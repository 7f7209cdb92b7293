"""Files of a point copied into a directory: :func:`extract`.

Extraction writes only below its target directory, whatever the names in the file
system: every directory is entered through a file descriptor with ``O_NOFOLLOW``,
every file and symlink is created relative to it, and a name that is empty, ``.``,
``..`` or holds ``/`` or NUL is skipped and reported. Files keep their permission
bits (not set-user/group-ID: ownership is not restored) and modification times;
symlinks stay symlinks, never followed. Nothing existing is replaced without
``force``: conflicts are found before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from stasis.errors import FileTargetExists, TargetError
from stasis.recovery.files.diskfiles import DiskFiles
from stasis.recovery.files.entry import join_path
from stasis.recovery.files.filesystems import MAX_DEPTH, Node

COPY_BLOCK = 1 << 20
_UNSAFE_NAMES = {"", ".", ".."}


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
            child_shown = join_path(shown, child.name)
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
