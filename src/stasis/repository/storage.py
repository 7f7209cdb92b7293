"""The repository's side of the backend boundary: backend errors translated, once.

:class:`Storage` wraps the backend a repository was opened on and keeps its
interface. A backend's ``OSError`` becomes :class:`RepositoryFull` (no space or
quota), the :class:`BackendError` subclass of a failure the backend named (access
denied, credentials rejected, clock skew, no such bucket, unreachable), or
:class:`BackendError` naming the store, the operation and the key, so
that no caller above mistakes a failed repository read for a failed write of its
own (a restore target, a source). :class:`ObjectNotFound` passes unchanged.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from stasis.backends.base import (
    AccessDenied,
    Backend,
    ClockSkew,
    CredentialsRejected,
    Leftover,
    ObjectInfo,
    ObjectLocked,
    Retention,
    StoreMissing,
    Unreachable,
)
from stasis.errors import (
    BackendAccessDenied,
    BackendClockSkew,
    BackendCredentialsRejected,
    BackendError,
    BackendStoreMissing,
    BackendUnreachable,
    RepositoryFull,
)

_T = TypeVar("_T")
_FULL = (errno.ENOSPC, errno.EDQUOT)
READ_KEPT = "The repository was not changed."
WRITE_KEPT = ("Nothing was committed by this step; the points committed before are "
              "intact.")
# Each permanent failure a backend can name, and the error that explains it.
_KINDS: tuple[tuple[type[OSError], type[BackendError]], ...] = (
    (AccessDenied, BackendAccessDenied),
    (CredentialsRejected, BackendCredentialsRejected),
    (ClockSkew, BackendClockSkew),
    (StoreMissing, BackendStoreMissing),
    (Unreachable, BackendUnreachable),
)


class Storage:
    """A backend whose failures are :mod:`stasis.errors` errors."""

    def __init__(self, backend: Backend) -> None:
        self.inner = backend
        self.url = backend.url
        self.versioned = False  # set by an immutable repository: deletes remove versions
        self.parallel_requests = backend.parallel_requests

    def __getattr__(self, name: str) -> Any:
        # What one kind of backend has beyond the contract (a local backend's root),
        # for tests and tools that know which backend they made.
        return getattr(self.inner, name)

    def _call(self, doing: str, kept: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except OSError as e:
            raise translate(e, self.url, doing, kept) from e

    def get(self, key: str) -> bytes:
        return self._call(f"reading {key}", READ_KEPT, lambda: self.inner.get(key))

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._call(f"writing {key}", WRITE_KEPT, lambda: self.inner.put(key, data))

    def put_if_absent(self, key: str, data: bytes | memoryview) -> None:
        try:
            self.inner.put_if_absent(key, data)
        except FileExistsError:
            raise  # the caller's answer (the key exists), not a storage failure
        except OSError as e:
            raise translate(e, self.url, f"writing {key}", WRITE_KEPT) from e

    def sync(self) -> None:
        self._call("making its writes durable", WRITE_KEPT, self.inner.sync)

    def exists(self, key: str) -> bool:
        return self._call(f"looking up {key}", READ_KEPT, lambda: self.inner.exists(key))

    def size(self, key: str) -> int:
        return self._call(f"looking up {key}", READ_KEPT, lambda: self.inner.size(key))

    def delete(self, key: str) -> None:
        if self.versioned:
            self.remove(key)
            return
        self._call(f"deleting {key}", WRITE_KEPT, lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._translated(f"listing {prefix or 'the objects'}", READ_KEPT):
            yield from self.inner.list(prefix)

    def leftovers(self) -> Iterator[Leftover]:
        with self._translated("listing temporary objects", READ_KEPT):
            yield from self.inner.leftovers()

    def release_reserve(self) -> bool:
        return self._call("freeing the space set aside", WRITE_KEPT, self.inner.release_reserve)

    def keep_reserve(self) -> None:
        self.inner.keep_reserve()  # never an error: no room now, the next gc tries again

    def discard(self, leftover: Leftover) -> None:
        self._call(f"removing {leftover.name}", WRITE_KEPT,
                   lambda: self.inner.discard(leftover))

    def store_exists(self) -> bool:
        return self._call("looking it up", READ_KEPT, self.inner.store_exists)

    def object_lock(self) -> bool:
        return self._call("reading its Object Lock configuration", READ_KEPT,
                          self.inner.object_lock)

    def put_locked(self, key: str, data: bytes | memoryview, retention: Retention) -> None:
        self._call(f"writing {key}", WRITE_KEPT,
                   lambda: self.inner.put_locked(key, data, retention))

    def retention(self, key: str) -> Retention | None:
        return self._call(f"looking up {key}", READ_KEPT, lambda: self.inner.retention(key))

    def extend_retention(self, key: str, retention: Retention) -> Retention:
        return self._call(f"extending the lock of {key}", WRITE_KEPT,
                          lambda: self.inner.extend_retention(key, retention))

    def remove(self, key: str) -> None:
        try:
            self.inner.remove(key)
        except ObjectLocked:
            raise  # the caller's answer (locked until a date), not a storage failure
        except OSError as e:
            raise translate(e, self.url, f"deleting {key}", WRITE_KEPT) from e

    def probe_lock(self, key: str, retention: Retention) -> str | None:
        return self._call("probing its Object Lock", "Only the probe object was written.",
                          lambda: self.inner.probe_lock(key, retention))

    def create(self, *, object_lock: bool = False) -> None:
        try:
            self.inner.create(object_lock=object_lock)
        except FileExistsError:
            raise  # the caller's answer (the store is in use), not a storage failure
        except OSError as e:
            raise translate(e, self.url, "creating the store", "Nothing was written.") from e

    @contextlib.contextmanager
    def _translated(self, doing: str, kept: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise translate(e, self.url, doing, kept) from e


def translate(err: OSError, url: str, doing: str, kept: str) -> BackendError:
    """The repository's error for a backend's ``OSError``."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno in _FULL:
        return RepositoryFull(reason)
    for kind, error in _KINDS:
        if isinstance(err, kind):
            return error(url, doing, reason, kept)
    return BackendError(url, doing, reason, kept)
