"""A repository in a local directory (or any mounted filesystem)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from stasis.backends.base import Leftover, LockUnsupported, ObjectInfo, Retention
from stasis.errors import ObjectNotFound

TMP_MARK = ".tmp-"
RESERVE = ".stasis-reserve"  # at the root: space set aside for prune and gc on a full disk
RESERVE_BYTES = 256 << 10  # a lock is one block; the rest is room for a catalog journal
_NO_LOCK = ("a local directory has no Object Lock (anyone who can write it can delete "
            "it): immutability needs an S3 bucket with Object Lock enabled")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend:
    """Objects are files under ``root``; a put is temp file + fsync + rename, and
    ``sync`` fsyncs the directories, which makes the renames durable.

    ``sync`` fsyncs only the directories this instance touched since the last one:
    those it put or deleted objects in, those where it found an object (``exists``,
    ``get``, ``size``: another writer's rename may not be durable yet), and their
    ancestors up to ``root`` when first met (a directory another writer just made).
    Its cost follows the work of the run, not the size of the repository.

    Temporary files carry ``.tmp-`` in their name; ``list`` never shows them, and
    garbage collection removes those a crashed writer left behind.
    """

    # Puts in flight: each waits on its fsync, and the filesystem's journal commits
    # those of several writers together; more gained nothing on 2 cores.
    parallel_requests = 4

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(root))  # the same store from any working directory
        self.url = str(self.root)
        self._known_dirs: set[Path] = set()  # made (or found) by this instance
        self._dirty: set[Path] = set()  # to fsync at the next sync
        self._met: set[Path] = set()  # directories whose ancestors were marked once
        self._lock = threading.Lock()

    def _touch(self, directory: Path) -> None:
        """Mark ``directory`` for the next sync (and its ancestors, the first time)."""
        with self._lock:
            self._dirty.add(directory)
            if directory in self._met:
                return
            self._met.add(directory)
            for up in directory.parents:
                if up == self.root or self.root not in up.parents:
                    break
                self._dirty.add(up)
            self._dirty.add(self.root)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid object key {key!r}")
        return self.root / key

    def get(self, key: str) -> bytes:
        try:
            path = self._path(key)
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except (IsADirectoryError, NotADirectoryError):  # a file where a directory should be
            raise ObjectNotFound(key) from None
        self._touch(path.parent)
        return data

    def put(self, key: str, data: bytes | memoryview) -> None:
        path = self._path(key)
        parent = path.parent
        if parent not in self._known_dirs:
            parent.mkdir(parents=True, exist_ok=True)
            self._known_dirs.add(parent)
        tmp = parent / f".{path.name}{TMP_MARK}{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._touch(parent)
        # The rename is durable once the directory is: sync() does that for all of them
        # at once (an fsync of the directory per chunk cost 9% of a backup's time).

    def put_if_absent(self, key: str, data: bytes | memoryview) -> None:
        """A put whose last step is a hard link, which fails when the name exists: of
        writers racing on one key exactly one succeeds (a file system without hard
        links gets a check then a rename)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}{TMP_MARK}{secrets.token_hex(6)}"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, "object exists", key) from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                if path.exists():
                    raise FileExistsError(errno.EEXIST, "object exists", key) from None
                os.rename(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._touch(path.parent)

    def sync(self) -> None:
        """fsync the directories touched since the last sync (deepest first): every
        rename and unlink this instance made, and every object it found, is durable."""
        with self._lock:
            todo, self._dirty = self._dirty, set()
        try:
            for directory in sorted(todo, key=lambda d: len(d.parts), reverse=True):
                with contextlib.suppress(FileNotFoundError):  # an emptied dir removed
                    _fsync_dir(directory)
        except BaseException:
            with self._lock:
                self._dirty |= todo  # not durable yet: the next sync tries again
            raise

    def exists(self, key: str) -> bool:
        path = self._path(key)
        if not path.is_file():
            return False
        self._touch(path.parent)
        return True

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        self._touch(path.parent)
        return size

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise OSError(errno.EISDIR, f"{key} is a directory") from None
        else:
            self._touch(path.parent)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if TMP_MARK in name or name == RESERVE:
                    continue
                full = os.path.join(dirpath, name)
                try:
                    size = os.stat(full).st_size
                except FileNotFoundError:
                    continue
                yield ObjectInfo(os.path.relpath(full, self.root), size)

    def leftovers(self) -> Iterator[Leftover]:
        """Temporary files of puts (of a writer that died, or still in flight)."""
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if TMP_MARK in name:
                    full = os.path.join(dirpath, name)
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:
                        continue  # its writer renamed or removed it meanwhile
                    yield Leftover(os.path.relpath(full, self.root), st.st_size, st.st_mtime)

    def discard(self, leftover: Leftover) -> None:
        if TMP_MARK not in os.path.basename(leftover.name):
            raise ValueError(f"{leftover.name!r} is not a temporary file of this store")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(leftover.name))
            self._touch(self._path(leftover.name).parent)

    def store_exists(self) -> bool:
        return self.root.exists()

    def create(self, *, object_lock: bool = False) -> None:
        if object_lock:
            raise LockUnsupported(errno.EOPNOTSUPP, _NO_LOCK, self.url)
        if self.root.exists() and (not self.root.is_dir() or any(
                p.name != RESERVE for p in self.root.iterdir())):  # the reserve is no object
            raise FileExistsError(errno.EEXIST, "not an empty directory", str(self.root))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_reserve()

    def release_reserve(self) -> bool:
        try:
            os.unlink(self.root / RESERVE)
        except FileNotFoundError:
            return False
        _fsync_dir(self.root)
        return True

    def keep_reserve(self) -> None:
        path = self.root / RESERVE
        if path.exists():
            return
        tmp = self.root / f"{RESERVE}{TMP_MARK}{secrets.token_hex(6)}"
        try:
            with open(tmp, "wb") as f:
                f.write(bytes(RESERVE_BYTES))  # zeros, written: blocks really allocated
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # no room yet: the next gc sets it aside

    # A directory has no Object Lock: the contract's lock calls say so.

    def object_lock(self) -> bool:
        return False

    def put_locked(self, key: str, data: bytes | memoryview, retention: Retention) -> None:
        raise LockUnsupported(errno.EOPNOTSUPP, _NO_LOCK, self.url)

    def retention(self, key: str) -> Retention | None:
        raise LockUnsupported(errno.EOPNOTSUPP, _NO_LOCK, self.url)

    def extend_retention(self, key: str, retention: Retention) -> Retention:
        raise LockUnsupported(errno.EOPNOTSUPP, _NO_LOCK, self.url)

    def remove(self, key: str) -> None:
        self.delete(key)  # no versions: removing is deleting

    def probe_lock(self, key: str, retention: Retention) -> str | None:
        raise LockUnsupported(errno.EOPNOTSUPP, _NO_LOCK, self.url)
