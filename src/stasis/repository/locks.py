"""Repository locks: many backups at once, garbage collection alone.

A lock is an object ``locks/<id>`` (JSON: kind, host, pid, process start time,
purpose, created, refreshed). Backups, restores and verifies take *shared* locks;
garbage collection takes an *exclusive* one. Taking a lock is: write ours, list all,
and if a live lock conflicts, delete ours and wait or fail. Two takers racing both
see each other and both back off, then retry after a random pause, so at most one
exclusive holder wins.

A lock is stale, and ignored (and removed), when its process is gone (same host:
the pid no longer runs with the same start time: the process decides, whatever the
clock says, so a clock that jumps forward never makes a live holder's lock look old)
or, for a lock of another host, when it was not refreshed for ``STALE_AFTER`` seconds
by this host's clock (hosts keep their clocks within minutes of each other: an S3 store
refuses requests from a host more than 15 minutes off). Holders refresh every
``REFRESH_EVERY`` seconds from a background thread.

A holder whose release fails (the storage fails the delete) has still finished: its
work stands and the failure is only logged; this process judges that lock stale at
once (a long-running service must not block its own gc for ``STALE_AFTER``), others
when the process is gone or after ``STALE_AFTER``.

A holder whose credentials may not delete (an append-only key) releases its lock by
rewriting it with ``released: true``: a released lock conflicts with nothing, and
the next job whose credentials may delete (prune, gc) removes it. gc's exclusivity
is kept: a lock is released only once its holder has finished, as a deletion would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from stasis.backends.base import Backend
from stasis.errors import (
    BackendAccessDenied,
    BackendError,
    Locked,
    ObjectNotFound,
    RepositoryFull,
)
from stasis.repository.process import start_token

STALE_AFTER = 30 * 60.0
REFRESH_EVERY = 5 * 60.0
PREFIX = "locks/"

log = logging.getLogger(__name__)
_finished_here: set[str] = set()  # ids of this process's locks whose release failed


@dataclass
class LockInfo:
    id: str
    kind: str  # shared | exclusive
    host: str
    pid: int
    start: str
    purpose: str
    created: float
    refreshed: float
    released: bool = False  # its holder finished but could not delete it (append-only)

    def describe(self) -> str:
        return f"{self.purpose} (pid {self.pid} on {self.host}, {self.kind} lock)"


class LockManager:
    def __init__(self, backend: Backend, *, now: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.now = now
        self.host = socket.gethostname()

    def locks(self) -> list[LockInfo]:
        return self._read()[0]

    def _read(self) -> tuple[list[LockInfo], list[str]]:
        """The locks that parse, and the ids of those that do not: a put is atomic, so
        a lock that does not parse is damaged, not half-written; it conflicts with
        nothing (no holder can be known) and the next taker removes it."""
        found, damaged = [], []
        for obj in self.backend.list(PREFIX):
            try:
                found.append(LockInfo(**json.loads(self.backend.get(obj.key))))
            except ObjectNotFound:
                continue  # released meanwhile
            except (ValueError, TypeError):
                damaged.append(obj.key[len(PREFIX):])
        return found, damaged

    def is_stale(self, lock: LockInfo) -> bool:
        if lock.released or lock.id in _finished_here:
            return True
        if lock.host == self.host:
            return start_token(lock.pid) != lock.start
        return self.now() - lock.refreshed > STALE_AFTER

    def remove_stale(self) -> list[LockInfo]:
        found, damaged = self._read()
        stale = [lk for lk in found if self.is_stale(lk)]
        for lock_id in [lk.id for lk in stale] + damaged:
            self._drop(lock_id)
        return stale

    def _drop(self, lock_id: str) -> None:
        """Delete another's stale lock; an append-only key leaves it (it is ignored)."""
        with contextlib.suppress(BackendAccessDenied):
            self.backend.delete(PREFIX + lock_id)

    def _release(self, lock: LockInfo) -> None:
        """Delete our lock, or where these credentials may not delete, mark it released."""
        try:
            try:
                self.backend.delete(PREFIX + lock.id)
            except BackendAccessDenied:
                lock.released = True
                self._write(lock)
        except BackendError:
            _finished_here.add(lock.id)  # no longer held, whatever the store says
            raise

    def _write(self, lock: LockInfo) -> None:
        self.backend.put(PREFIX + lock.id, json.dumps(asdict(lock)).encode())

    def _write_freeing(self, lock: LockInfo) -> None:
        """Write our lock; on a full store, use the space set aside for this (a job
        that frees space must be able to run when nothing else can)."""
        try:
            self._write(lock)
        except RepositoryFull:
            if not self.backend.release_reserve():
                raise
            log.warning("the repository's storage is full: the space set aside was used "
                        "for the lock of %s", lock.purpose)
            self._write(lock)

    @contextlib.contextmanager
    def hold(self, kind: str, purpose: str, *, wait: float = 0.0,
             frees_space: bool = False) -> Iterator[LockInfo]:
        """Hold a lock of ``kind`` for the ``with`` block; wait up to ``wait`` s.
        ``frees_space`` (prune, gc): on a full store, the space set aside is used."""
        pid = os.getpid()
        now = self.now()
        lock = LockInfo(
            id=secrets.token_hex(8),
            kind=kind,
            host=self.host,
            pid=pid,
            start=start_token(pid),
            purpose=purpose,
            created=now,
            refreshed=now,
        )
        deadline = time.monotonic() + wait
        self.remove_stale()  # what killed jobs left: the next job clears it
        while True:
            if frees_space:
                self._write_freeing(lock)
            else:
                self._write(lock)
            conflict = self._conflict(lock)
            if conflict is None:
                break
            self._release(lock)
            lock.released = False  # written again, under the same id, when retried
            while conflict is not None:
                if time.monotonic() >= deadline:
                    expires = time.strftime(
                        "%H:%M:%S", time.localtime(conflict.refreshed + STALE_AFTER)
                    )
                    raise Locked(self.backend.url, conflict.describe(), expires)
                time.sleep(random.uniform(0.05, 0.5))
                # Look before writing again: a waiter rewriting its lock over and over
                # makes every other taker back off too (gc waiting starved backups).
                conflict = self._conflict(lock)
        stop = threading.Event()
        refresher = threading.Thread(
            target=self._refresh_loop, args=(lock, stop), name="lock-refresh", daemon=True
        )
        refresher.start()
        try:
            yield lock
        finally:
            stop.set()
            refresher.join()
            try:
                self._release(lock)
            except BackendError as e:
                log.warning("the %s lock %s stays behind until it is judged stale: %s",
                            kind, lock.id, e.message)

    def _conflict(self, mine: LockInfo) -> LockInfo | None:
        for other in self.locks():
            if other.id == mine.id:
                continue
            if mine.kind == "shared" and other.kind == "shared":
                continue
            if self.is_stale(other):
                self._drop(other.id)
                continue
            return other
        return None

    def _refresh_loop(self, lock: LockInfo, stop: threading.Event) -> None:
        while not stop.wait(REFRESH_EVERY):
            lock.refreshed = self.now()
            with contextlib.suppress(OSError):
                self._write(lock)
