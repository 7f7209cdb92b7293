"""Running a unit of work as a job: recorded, logged, and ended in a definite state.

:func:`recorded` wraps work (a backup of some VMs, a prune, ...) so that the catalog
holds one job for it: ``running`` with its runner (host, pid, process start time)
while it runs, then ``succeeded``, ``failed`` (with the error and its exit code) or
``interrupted`` (SIGTERM, Ctrl-C, or the service cancelling it). Everything the work
logs through the ``stasis`` loggers from the job's threads becomes the job's log.

The catalog must never be what stops a backup: with ``on_catalog_error`` given,
a catalog failure is reported to it once and the work goes on unrecorded.

A runner's identity is checked with :func:`runner_alive`: a job left ``running`` by
a process that no longer exists (or whose pid now belongs to another process) was
interrupted by a crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from stasis.catalog.quick import QuickCatalog
from stasis.errors import CatalogError, Interrupted, StasisError
from stasis.parallel import Cancelled
from stasis.progress import NoProgress, Progress
from stasis.repository import Manifest, Repository
from stasis.repository.process import start_time
from stasis.signals import Terminated

if TYPE_CHECKING:  # the catalog (SQLAlchemy) is imported when a job is recorded
    from stasis.catalog import Catalog, Job, JobStore

log = logging.getLogger("stasis.job")

Runner = tuple[str, int, int]  # host, pid, process start time (clock ticks since boot)


def this_runner() -> Runner:
    pid = os.getpid()
    return socket.gethostname(), pid, start_time(pid) or 0


def runner_alive(host: str | None, pid: int | None, pid_start: int | None) -> bool | None:
    """Whether the runner still runs: None when it is on another host (cannot tell)."""
    if host != socket.gethostname():
        return None
    if pid is None:
        return False
    started = start_time(pid)
    return started is not None and (not pid_start or started == pid_start)


@dataclass
class JobRun:
    """A job while it runs: what the work reports goes here and into the catalog."""

    store: JobStore | QuickCatalog | None  # QuickCatalog: a command's, on SQLite
    job: Job | None
    result: dict[str, Any] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0
    failure: StasisError | None = None  # a part failed; the work itself went on
    cancel: threading.Event = field(default_factory=threading.Event)
    threads: set[int] = field(default_factory=set)
    on_catalog_error: Callable[[CatalogError], None] | None = None

    # While the catalog is still being opened (in a thread of its own, so that the
    # work does not wait for SQLAlchemy to load), what the work reports waits here.
    _ready: bool = True
    _pending: list[Callable[[], object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> int | None:
        return self.job.id if self.job is not None else None

    def _catalog(self, fn: Callable[[], object]) -> None:
        with self._lock:
            if not self._ready:
                self._pending.append(fn)
                return
        self._now(fn)

    def _now(self, fn: Callable[[], object]) -> None:
        if self.store is None:
            return
        try:
            fn()
        except CatalogError as e:
            if self.on_catalog_error is None:
                raise
            self.on_catalog_error(e)
            self.store = None  # warned once; the work goes on unrecorded

    def _ready_now(self) -> None:
        """The catalog is open (or will not be): what waited is written, in order."""
        with self._lock:
            for fn in self._pending:
                self._now(fn)
            self._pending.clear()
            self._ready = True

    def log(self, level: str, text: str) -> None:
        def write() -> None:
            if self.job is not None and self.store is not None:
                self.store.log(self.job.id, level, text)
        self._catalog(write)

    def set_vms(self, vms: list[str]) -> None:
        def write() -> None:
            if self.job is not None and self.store is not None:
                self.job.vms = list(vms)
                self.store.set_vms(self.job.id, vms)
        self._catalog(write)

    def point(self, m: Manifest, repo: Repository | None = None) -> None:
        """A point this job committed: its VMs' results, bytes, and the points index."""
        stored = sum(d.stored_new for _, d in m.disks())
        for vm in m.vms:
            self.result[vm.name] = {
                "point": m.id, "point_name": m.name, "consistency": vm.consistency,
                "bytes_read": sum(d.bytes_read for d in vm.disks),
                "bytes_written": sum(d.stored_new for d in vm.disks),
                "modes": {d.name: d.mode for d in vm.disks}, "error": None,
                "warnings": [w.to_dict() for w in m.run_warnings],
            }
        self.bytes_read += m.bytes_read
        self.bytes_written += stored
        log.info("point %s '%s' committed: %s, read %d bytes, stored %d new", m.id[:12],
                 m.name, ", ".join(f"{vm.name} {vm.consistency}" for vm in m.vms),
                 m.bytes_read, stored)
        for warning in m.run_warnings:
            log.warning("%s", warning.message)

        def index() -> None:
            store = self.store
            if repo is None or store is None:
                return
            if isinstance(store, QuickCatalog):
                store.add_point(repo, m)
            else:
                from stasis.catalog import PointIndex

                PointIndex(store.catalog).add(repo, m)
        self._catalog(index)

    def failed_part(self, name: str, error: StasisError) -> None:
        """One part (a VM) failed while the others went on: the job fails."""
        self.result[name] = {"point": None, "error": error.message,
                             "exit_code": error.exit_code}
        log.error("%s: %s", name, error.message)
        if self.failure is None:
            self.failure = error


class _JobHandler(logging.Handler):
    """Log records of the job's threads, written to the job's log."""

    def __init__(self, run: JobRun) -> None:
        super().__init__(logging.DEBUG)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread not in self.run.threads:
            return
        level = record.levelname.lower()
        level = {"critical": "error", "warn": "warning"}.get(level, level)
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({record.exc_info[1]})"
        self.run.log(level, text)


class LiveProgress:
    """A running job's progress in its row, as the work advances: the bytes done by
    every sink of the job (:meth:`sink`), written at most every ``every`` seconds so
    that a client following the job sees it move without a write per chunk. A
    restore's bytes are written, any other job's read. A catalog that fails here is
    skipped: progress never stops the work."""

    def __init__(self, store: JobStore, job_id: int, *, written: bool = False,
                 every: float = 0.5, now: Callable[[], float] = time.monotonic) -> None:
        self.store, self.job_id, self.written = store, job_id, written
        self.every, self.now = every, now
        self.done = 0
        self._last: float | None = None
        self._lock = threading.Lock()

    def sink(self, inner: Progress | None = None) -> Progress:
        """A progress sink of the job that counts here, and tells ``inner`` too."""
        return _LiveSink(self, inner or NoProgress())

    def add(self, amount: int) -> None:
        with self._lock:
            self.done += amount
            t = self.now()
            if self._last is not None and t - self._last < self.every:
                return
            self._last = t
            done = self.done
        self._write(done)

    def flush(self) -> None:
        with self._lock:
            done = self.done
        self._write(done)

    def _write(self, done: int) -> None:
        try:
            self.store.set_progress(self.job_id, bytes_read=0 if self.written else done,
                                    bytes_written=done if self.written else 0)
        except StasisError as e:
            log.debug("job %d: progress not written: %s", self.job_id, e.message)


class _LiveSink:
    def __init__(self, live: LiveProgress, inner: Progress) -> None:
        self.live, self.inner = live, inner

    def start(self, description: str, total: int) -> None:
        self.inner.start(description, total)

    def advance(self, amount: int) -> None:
        self.inner.advance(amount)
        self.live.add(amount)

    def finish(self) -> None:
        self.inner.finish()
        self.live.flush()


def _interrupt_reason(e: BaseException, run: JobRun) -> str:
    if isinstance(e, Interrupted):
        return e.message
    if isinstance(e, Terminated):
        return "interrupted by SIGTERM"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted by Ctrl-C"
    if _cancel_asked(run):
        return "interrupted: cancelled on request (job cancel)"
    return "interrupted: the service is stopping"


def _cancel_asked(run: JobRun) -> bool:
    """Whether the job was asked to stop (``stasis job cancel``, the API), not its
    service stopping: both set the same cancel event, the catalog tells them apart."""
    from stasis.catalog import JobStore

    if run.job is None or not isinstance(run.store, JobStore):
        return False
    try:
        return run.job.id in run.store.cancels_requested([run.job.id])
    except CatalogError:
        return False


@contextlib.contextmanager
def recorded(
    catalog: Catalog | None,
    kind: str,
    name: str,
    *,
    vms: list[str] | None = None,
    policy: str | None = None,
    repo: str | None = None,
    params: dict[str, Any] | None = None,
    job_id: int | None = None,
    on_catalog_error: Callable[[CatalogError], None] | None = None,
    open_catalog: Callable[[], Catalog | QuickCatalog | None] | None = None,
) -> Iterator[JobRun]:
    """Run the block as a job of ``kind``; the job's end state follows how it ends.

    ``job_id`` is a queued job to take (already marked running by the caller);
    without it a new job is created running. ``catalog`` None runs unrecorded.
    The block's exception is re-raised after the job is ended; a part failure
    recorded with :meth:`JobRun.failed_part` fails the job without one.

    ``open_catalog``, given instead of ``catalog``, opens it in a thread while the
    work begins (a CLI command does not wait for the catalog's libraries to load);
    what the work reports meanwhile is written once it is open. It may open a
    :class:`~stasis.catalog.quick.QuickCatalog`, which writes the same rows.
    """
    run = JobRun(None, None, on_catalog_error=on_catalog_error)
    if catalog is not None:
        from stasis.catalog import JobStore

        run.store = JobStore(catalog)
    run.threads.add(threading.get_ident())

    def begin() -> None:
        store = run.store
        assert store is not None
        if job_id is not None:
            assert not isinstance(store, QuickCatalog)  # a queued job: the service's catalog
            run.job = store.get(job_id)
        else:
            run.job = store.create(kind, name, vms=vms, policy=policy, repo=repo,
                                   params=params, state="running", runner=this_runner())

    opener: threading.Thread | None = None
    if open_catalog is not None:
        run._ready = False

        def open_then_begin() -> None:
            try:
                c = open_catalog()
                if isinstance(c, QuickCatalog):
                    run.store = c
                    run._now(begin)
                elif c is not None:
                    from stasis.catalog import JobStore

                    run.store = JobStore(c)
                    run._now(begin)
            finally:
                run._ready_now()

        opener = threading.Thread(target=open_then_begin, name="catalog", daemon=True)
        opener.start()
    else:
        run._catalog(begin)
    handler = _JobHandler(run)
    logger = logging.getLogger("stasis")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    state, error, code = "succeeded", None, None
    try:
        log.info("%s %s started%s", kind, name, f" (VMs {', '.join(vms)})" if vms else "")
        yield run
        if run.failure is not None:
            state, error, code = "failed", run.failure.message, run.failure.exit_code
    except (KeyboardInterrupt, Cancelled, Interrupted) as e:
        state, error = "interrupted", _interrupt_reason(e, run)
        code = 143 if isinstance(e, Terminated | Cancelled) else 130
        raise
    except StasisError as e:
        state, error, code = "failed", e.message, e.exit_code
        raise
    except BaseException as e:
        state, error, code = "failed", f"{type(e).__name__}: {e}", 1
        raise
    finally:
        if error:
            log.log(logging.WARNING if state == "interrupted" else logging.ERROR, "%s", error)
        log.info("%s %s %s", kind, name, state)
        logger.removeHandler(handler)
        if opener is not None:
            opener.join()
        job, st = run.job, run.store
        if job is not None and st is not None:
            final = state
            # A job that did not succeed and committed nothing keeps the bytes its
            # progress wrote as it ran (None): a client that followed it does not see
            # them fall back to 0.
            kept = None if final != "succeeded" else 0
            run._catalog(lambda: st.finish(
                job.id, final, result=run.result, error=error, exit_code=code,
                bytes_read=run.bytes_read or kept, bytes_written=run.bytes_written or kept))
            job.state = final


def expire_logs(catalog: Catalog, keep: timedelta, now: datetime | None = None) -> int:
    """Delete job log lines older than ``keep`` (at ``now``, else the catalog's clock)."""
    from stasis.catalog import JobStore

    return JobStore(catalog).expire_logs((now or catalog.clock.now()) - keep)


def open_catalog_or_warn(url: str | None,
                         warn: Callable[[CatalogError], None]) -> Catalog | None:
    """The catalog, or None after ``warn`` when it cannot be opened (work goes on)."""
    from stasis.catalog import Catalog

    try:
        return Catalog.open(url)
    except CatalogError as e:
        warn(e)
        return None


def dead_jobs(catalog: Catalog) -> list[Job]:
    """Jobs left ``running`` by a runner of this host that is gone (a crash, kill -9)."""
    from stasis.catalog import JobStore

    return [j for j in JobStore(catalog).list(state="running", newest_first=False)
            if runner_alive(j.host, j.pid, j.pid_start) is False]


def fail_dead_job(catalog: Catalog, job: Job,
                  clean: Callable[[Job], list[str]] | None = None) -> list[str]:
    """Mark a dead job failed, with a log line saying why, and clean its debris.

    ``clean`` removes what the job left (libvirt jobs, checkpoints, scratch files) and
    returns what it found, which is logged too.
    """
    from stasis.catalog import JobStore

    store = JobStore(catalog)
    why = (f"the process running this job (pid {job.pid} on {job.host}) is gone: it was "
           "killed or crashed. Nothing of it was committed; marked failed.")
    store.log(job.id, "error", why)
    found: list[str] = []
    if clean is not None:
        try:
            found = clean(job)
        except StasisError as e:
            store.log(job.id, "warning", f"cleaning its debris failed: {e.message}")
        for what in found:
            store.log(job.id, "info", f"cleaned: {what}")
        if not found:
            store.log(job.id, "info", "it left no debris behind")
    store.finish(job.id, "failed", result=job.result, error=why, exit_code=1,
                 bytes_read=job.bytes_read, bytes_written=job.bytes_written)
    return found
