"""A fault-injecting backend: any :class:`~stasis.backends.base.Backend` wrapped so that
chosen calls fail the way storage fails in the field, seeded so that a failing run can
be repeated exactly. Used by the fault tests and by ``bench/bench_faults.py``.

A :class:`Fault` names a kind, the calls it applies to (``put``, ``get``, ``delete``,
``list``, ...), optionally a key prefix (``chunks/``, ``manifests/``), and when it fires:
at the N-th matching call, with a probability per call (drawn from the backend's seeded
generator), or both; ``times`` bounds how often it fires.

The kinds, as the repository sees them (above the backend's own retries):

- ``enospc``, ``edquot``, ``eio``: the ``OSError`` a full or failing disk raises;
- ``slowdown``, ``server-error``, ``timeout``, ``reset``: throttling (503 SlowDown),
  500s, timeouts and connection resets that went on through every retry of a network
  backend (:class:`RetriesExhausted`); ``unreachable``: nothing answers
  (:class:`Unreachable`). A transient fault that a retry cures is only latency to the
  repository: ``latency`` sleeps ``delay_s`` and then makes the call;
- ``torn``: a put that dies part-way: the contract's atomicity allows no prefix under the
  key, so the object is not written; where the inner backend is a local directory, a
  partial temporary file is left beside it, as a killed writer leaves one (what gc and
  doctor clean); the put raises ``EIO``;
- ``lost``: a put that returns but whose object is lost if the host crashes before the
  next ``sync`` (the contract promises durability only after ``sync``);
  :meth:`FaultyBackend.crash` drops every such object, as a power cut would.
- ``crash``: the process dies at this call: :meth:`FaultyBackend.crash` runs (unsynced
  lost puts vanish) and :class:`Crashed` is raised, which no code of Stasis catches as a
  storage error (it is a ``BaseException``, like the interrupt a ``kill -9`` gives no
  chance to handle). After it, the test opens the repository anew, as the next process.
- ``kill``: the process is killed for real at this call: SIGKILL to its process group
  when it leads one (a ``stasis`` run by :mod:`stasis_testkit.callkill`, with whatever
  it started), else to itself. Nothing runs after it (no ``finally``, no flush): what
  a ``kill -9`` placed at a storage call leaves, for the crash matrix.
"""

from __future__ import annotations

import errno
import os
import random
import secrets
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stasis.backends.base import (
    Backend,
    Leftover,
    ObjectInfo,
    Retention,
    RetriesExhausted,
    Unreachable,
)
from stasis.backends.local import TMP_MARK, LocalBackend

CALLS = ("get", "put", "put_if_absent", "sync", "exists", "size", "delete", "list")
KINDS = ("enospc", "edquot", "eio", "slowdown", "server-error", "timeout", "reset",
         "unreachable", "latency", "torn", "lost", "crash", "kill")
PUT_ONLY = ("torn", "lost")


class Crashed(BaseException):  # an event (the process died), not an error to handle
    """The injected death of the process at a storage call."""


@dataclass
class Fault:
    kind: str
    calls: tuple[str, ...] = ("put",)
    prefix: str = ""
    at: int | None = None  # fire at the N-th matching call (1-based)
    probability: float = 0.0  # else fire with this probability per matching call
    times: int | None = None  # fire at most this often (None: no bound; ``at`` fires once)
    delay_s: float = 0.02  # for ``latency``
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (kinds: {', '.join(KINDS)})")
        unknown = [c for c in self.calls if c not in CALLS]
        if unknown:
            raise ValueError(f"unknown backend calls {unknown} (calls: {', '.join(CALLS)})")
        if self.kind in PUT_ONLY and set(self.calls) - {"put", "put_if_absent"}:
            raise ValueError(f"a {self.kind} fault applies to puts only")
        if self.at is None and not self.probability:
            raise ValueError("a fault fires at the N-th call (at=) or with a probability")

    def fires(self, call: str, key: str, draw: float) -> bool:
        if call not in self.calls or not key.startswith(self.prefix):
            return False
        self.seen += 1
        if self.times is not None and self.fired >= self.times:
            return False
        hit = self.seen == self.at if self.at is not None else draw < self.probability
        if hit:
            self.fired += 1
        return hit


@dataclass(frozen=True)
class Fired:
    call: str
    key: str
    kind: str


def _error(kind: str, call: str, key: str) -> BaseException:
    what = f"injected {kind} at {call} {key}"
    if kind in ("enospc", "edquot", "eio"):
        code = {"enospc": errno.ENOSPC, "edquot": errno.EDQUOT, "eio": errno.EIO}[kind]
        return OSError(code, f"{os.strerror(code)} ({what})")
    if kind == "unreachable":
        return Unreachable(f"nothing answered ({what})")
    return RetriesExhausted(f"{kind} through every retry ({what})")


def _kill_this_process() -> None:
    if os.getpgrp() == os.getpid():  # a group of its own: its children die with it
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


class FaultyBackend:
    """``inner`` with ``faults`` injected; every call is otherwise passed through."""

    def __init__(self, inner: Backend, faults: Sequence[Fault] = (), *, seed: int = 0) -> None:
        self.inner = inner
        self.faults = list(faults)
        self.rng = random.Random(seed)
        self.log: list[Fired] = []
        self.unsynced: set[str] = set()  # keys of ``lost`` puts since the last sync
        self.dead = False  # crashed: every later call dies too (the process is gone)
        self._lock = threading.Lock()

    # The contract's attributes are the inner backend's.
    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def parallel_requests(self) -> int:
        return self.inner.parallel_requests

    def heal(self) -> None:
        """No more faults (space freed, the server back): the next calls pass."""
        with self._lock:
            self.faults.clear()

    def crash(self) -> None:
        """The host loses power: every ``lost`` put since the last sync is gone, and
        this backend answers nothing more (:class:`Crashed`); a new one is the next
        process."""
        with self._lock:
            self.dead = True
            gone, self.unsynced = sorted(self.unsynced), set()
        for key in gone:
            self.inner.delete(key)

    def _written(self, key: str, kind: str | None) -> None:
        """After the inner put of ``key``: remember a lost one; one that finished after
        the crash was never written."""
        with self._lock:
            if not self.dead:
                if kind == "lost":
                    self.unsynced.add(key)
                return
        if kind == "lost":
            self.inner.delete(key)
        raise Crashed(f"the process had died before put {key} returned")

    def _inject(self, call: str, key: str = "") -> str | None:
        """Raise or delay for a fault that fires now; answer the put-only kind that fired."""
        with self._lock:
            if self.dead:
                raise Crashed(f"the process is dead ({call} {key})")
            kinds = [f.kind for f in self.faults if f.fires(call, key, self.rng.random())]
            for kind in kinds:
                self.log.append(Fired(call, key, kind))
        for kind in kinds:
            if kind == "latency":
                time.sleep(next(f.delay_s for f in self.faults if f.kind == "latency"))
            elif kind == "kill":
                _kill_this_process()
            elif kind == "crash":
                self.crash()
                raise Crashed(f"the process died at {call} {key}")
            elif kind not in PUT_ONLY:
                raise _error(kind, call, key)
        return next((k for k in kinds if k in PUT_ONLY), None)

    def _torn(self, key: str, data: bytes | memoryview) -> None:
        if isinstance(self.inner, LocalBackend):  # what a writer killed mid-put leaves
            path = Path(self.inner.root) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.name}{TMP_MARK}{secrets.token_hex(6)}"
            tmp.write_bytes(bytes(data[: len(data) // 2]))
        raise OSError(errno.EIO, f"{os.strerror(errno.EIO)} (injected torn put {key})")

    def get(self, key: str) -> bytes:
        self._inject("get", key)
        return self.inner.get(key)

    def put(self, key: str, data: bytes | memoryview) -> None:
        kind = self._inject("put", key)
        if kind == "torn":
            self._torn(key, data)
        self.inner.put(key, data)
        self._written(key, kind)

    def put_if_absent(self, key: str, data: bytes | memoryview) -> None:
        kind = self._inject("put_if_absent", key)
        if kind == "torn":
            self._torn(key, data)
        self.inner.put_if_absent(key, data)
        self._written(key, kind)

    def sync(self) -> None:
        self._inject("sync")
        self.inner.sync()
        with self._lock:
            self.unsynced.clear()

    def exists(self, key: str) -> bool:
        self._inject("exists", key)
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        self._inject("size", key)
        return self.inner.size(key)

    def delete(self, key: str) -> None:
        self._inject("delete", key)
        self.inner.delete(key)
        with self._lock:
            self.unsynced.discard(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._inject("list", prefix)
        yield from self.inner.list(prefix)

    # Neither leftovers nor Object Lock are faulted: they pass straight through.
    def leftovers(self) -> Iterator[Leftover]:
        yield from self.inner.leftovers()

    def discard(self, leftover: Leftover) -> None:
        self.inner.discard(leftover)

    def release_reserve(self) -> bool:
        return self.inner.release_reserve()

    def keep_reserve(self) -> None:
        self.inner.keep_reserve()

    def store_exists(self) -> bool:
        return self.inner.store_exists()

    def create(self, *, object_lock: bool = False) -> None:
        self.inner.create(object_lock=object_lock)

    def object_lock(self) -> bool:
        return self.inner.object_lock()

    def put_locked(self, key: str, data: bytes | memoryview, retention: Retention) -> None:
        self._inject("put", key)
        self.inner.put_locked(key, data, retention)

    def retention(self, key: str) -> Retention | None:
        return self.inner.retention(key)

    def extend_retention(self, key: str, retention: Retention) -> Retention:
        return self.inner.extend_retention(key, retention)

    def remove(self, key: str) -> None:
        self._inject("delete", key)
        self.inner.remove(key)

    def probe_lock(self, key: str, retention: Retention) -> str | None:
        return self.inner.probe_lock(key, retention)

    def __getattr__(self, name: str) -> Any:  # anything else a backend offers
        return getattr(self.inner, name)
