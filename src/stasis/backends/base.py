"""The backend contract: what the repository may ask of any object store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@dataclass(frozen=True)
class Leftover:
    """What a writer that died mid-put left behind (a temporary file, an unfinished
    upload): never a committed object. ``name`` is shown to a person and given back
    to :meth:`Backend.discard`; ``mtime`` is when it was last written (seconds since
    the epoch, the store's clock)."""

    name: str
    size: int
    mtime: float


@dataclass(frozen=True)
class Retention:
    """An S3 Object Lock retention: until ``until`` (aware, UTC) no version of the
    object can be deleted or have its retention shortened; in ``COMPLIANCE`` mode by
    nobody, in ``GOVERNANCE`` mode by nobody without the bypass permission."""

    mode: str  # "COMPLIANCE" | "GOVERNANCE"
    until: datetime


class PermanentError(OSError):
    """A failure that retrying will not fix, raised at once. The subclasses say
    which, so that the repository can tell the person what to check; their text
    names the store (endpoint and bucket) and what was being done."""


class AccessDenied(PermanentError):
    """The credentials are valid but may not do this (an append-only key deleting,
    a bucket of someone else)."""


class CredentialsRejected(PermanentError):
    """The store does not accept the credentials (unknown key id, wrong secret,
    expired token), or there are none."""


class ClockSkew(PermanentError):
    """The store refused the request because this host's clock is too far off."""


class StoreMissing(PermanentError):
    """The store itself (the bucket) does not exist."""


class LockUnsupported(PermanentError):
    """The store has no Object Lock: a local directory, a bucket created without it
    (it can only be enabled when a bucket is created)."""


class ObjectLocked(PermanentError):
    """A version of the object is under a retention that has not ended: it cannot be
    removed before ``until``."""

    def __init__(self, key: str, until: datetime | None) -> None:
        when = until.isoformat(timespec="seconds") if until else "an unknown date"
        super().__init__(13, f"{key} is locked until {when}")
        self.key = key
        self.until = until


class Unreachable(OSError):
    """Nothing answered at the store's address, after the retries."""


class RetriesExhausted(OSError):
    """A transient failure (throttling, 5xx, resets, timeouts) went on through
    every retry."""


@runtime_checkable
class Backend(Protocol):
    """An object store.

    Keys are relative, slash-separated, made of ``[A-Za-z0-9._-]`` segments.

    Contract, which the conformance suite checks:

    - ``put`` is atomic: a reader sees the whole old object, the whole new one, or
      nothing; never a prefix. It may be repeated (same key, same data) safely.
    - ``put_if_absent`` is a put that raises ``FileExistsError`` (writing nothing)
      when the key exists. Where the store can, the check and the write are one step,
      so of writers racing on one key exactly one succeeds (locally a hard link; on
      S3 ``If-None-Match: *``). A store that cannot (Swift's s3api answers 501) checks
      then puts, and two racers can both pass: the repository uses it for the one
      write where a race matters, ``config`` at init, so that two ``repo init`` on one
      store do not both succeed. Locks do not need it: a lock's key is random, its
      taker writes it then lists all locks, which is correct wherever a listing shows
      every put that returned before it (local directories, and S3, whose listing is
      strongly consistent on AWS, RGW, Swift and SeaweedFS).
    - ``sync`` makes durable (it survives a crash of the host) every object this
      instance put or deleted before it, and every object it found (``exists``,
      ``get`` or ``size`` answered), even one another process put and has not
      synced yet: a manifest may name a chunk this process only found. The
      repository calls it before writing a manifest, and again after. Its cost
      follows what the instance touched, not the size of the store. (A backend
      whose put is durable on return makes it a no-op.)
    - ``get`` of a missing key raises :class:`stasis.errors.ObjectNotFound`
      (permanent). Any other failure raises ``OSError``.
    - Transient failures (throttling such as 503 SlowDown or 429, other 5xx,
      connection resets, timeouts) are retried inside the backend, with exponential
      backoff and full jitter, up to a bounded number of attempts and a deadline;
      then :class:`RetriesExhausted` (or :class:`Unreachable` when nothing answers at
      the address) is raised. Permanent failures are raised at once, as a
      :class:`PermanentError` subclass where the backend can tell which:
      :class:`AccessDenied`, :class:`CredentialsRejected`, :class:`ClockSkew`,
      :class:`StoreMissing`. Callers never retry a backend call: there is one retry
      layer. (``ENOSPC`` is permanent until space is freed.)
    - Any number of threads may call one instance at once; a network backend bounds
      the requests in flight itself (the callers above do not).
    - ``delete`` of a missing key is not an error (deletes may repeat).
    - ``list`` yields every committed object under a prefix, in no set order, never
      a partial upload or a temporary file, however many there are (a network
      backend pages through them).
    - ``exists`` and ``size`` are cheap metadata calls.
    - ``leftovers`` yields what writers that died mid-put left behind, which
      ``list`` never shows, with its age; ``discard`` removes one (one already gone
      is not an error). A put in flight has a leftover too: the caller judges by
      age (gc and doctor keep those younger than an hour). A store that cannot
      leave partial writes yields nothing.
    - ``store_exists`` says whether the store itself (directory, bucket and
      prefix) is there, without creating it; ``create`` makes it ready for a new
      repository, creating it when missing, and raises ``FileExistsError`` when it
      holds anything already (nothing is written then).
    - ``parallel_requests`` is how many requests at once the store serves best:
      callers that can overlap their calls (a backup's puts, a restore's reads) keep
      about that many in flight. A hint for throughput, not a limit.
    - ``release_reserve`` frees the space a filesystem store sets aside for jobs that
      free space (prune and gc must be able to take their lock on a full disk) and
      says whether there was any; ``keep_reserve`` sets it aside again when it is
      missing and there is room (never an error). A store that cannot fill up that
      way (S3) has none: False, and nothing to do.
    - ``url`` is the location the store was opened from, in the form that
      :func:`stasis.backends.registry.open_backend` opens again (a local backend:
      its absolute path); it never holds a secret.

    Object Lock (the immutability of docs/format.md), where the store has it; a
    store without it raises :class:`LockUnsupported` from every call below but
    ``object_lock`` (which says False):

    - ``object_lock`` says whether the store has Object Lock enabled (a bucket's
      lock configuration); it does not prove that the store enforces it (Swift's
      s3api accepts the headers and ignores them): ``probe_lock`` does.
    - ``put_locked`` is ``put`` with a retention on the version it writes.
    - ``retention`` is the current version's retention (None when it has none),
      from one metadata call; :class:`ObjectNotFound` when the key is missing.
    - ``extend_retention`` sets the current version's retention to ``retention``
      unless it already ends later (a retention is never shortened), and returns the
      one in force.
    - ``remove`` deletes the key and every version of it (``delete`` on a versioned
      bucket only hides it behind a delete marker); :class:`ObjectLocked` when a
      version is still locked (then nothing is hidden either). A missing key is not
      an error.
    - ``probe_lock`` writes ``key`` with ``retention`` and tries, with the store's
      own credentials, to delete that version; it returns None when the store refused
      (the lock holds), else what it could do. A refused probe stays until its lock
      ends: callers name it so that it is recognised, and remove it later.
    - ``create(object_lock=True)`` creates a missing bucket with Object Lock
      enabled; an existing store is used as it is.

    Errors are the backend's (``OSError`` and the classes above,
    :class:`ObjectNotFound`); the repository translates them once, into
    :class:`stasis.errors.BackendError` and its subclasses (one per class above,
    :class:`stasis.errors.RepositoryFull`), and nothing above it sees an ``OSError``
    from a backend.
    """

    url: str
    parallel_requests: int

    def get(self, key: str) -> bytes: ...

    def put(self, key: str, data: bytes | memoryview) -> None: ...

    def put_if_absent(self, key: str, data: bytes | memoryview) -> None: ...

    def sync(self) -> None: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def leftovers(self) -> Iterator[Leftover]: ...

    def release_reserve(self) -> bool: ...

    def keep_reserve(self) -> None: ...

    def discard(self, leftover: Leftover) -> None: ...

    def store_exists(self) -> bool: ...

    def create(self, *, object_lock: bool = False) -> None: ...

    def object_lock(self) -> bool: ...

    def put_locked(self, key: str, data: bytes | memoryview, retention: Retention) -> None: ...

    def retention(self, key: str) -> Retention | None: ...

    def extend_retention(self, key: str, retention: Retention) -> Retention: ...

    def remove(self, key: str) -> None: ...

    def probe_lock(self, key: str, retention: Retention) -> str | None: ...
