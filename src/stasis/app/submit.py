"""Jobs handed to the service: submitted to the catalog's queue, and cancelled.

:func:`submit` validates a job's parameters (:mod:`stasis.app.kinds`) and queues
it; ``stasis serve`` takes it from the queue and runs it with its own repository
and credentials. :func:`queue` is what a command's ``--queue`` calls: it refuses
when no service runs on the catalog, since nothing would take the job, and wakes
the services of this host so that one takes it at once, not at its next tick.
:func:`cancel_job` stops a job wherever it is: a queued one at once, one that a
service runs through a flag the service polls, one that a command runs on this
host with SIGTERM.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from stasis.app.kinds import KINDS, Params, PolicyParams, parse_params
from stasis.app.models import CancelResult, Queued
from stasis.errors import JobStateError, UsageError

if TYPE_CHECKING:
    from stasis.catalog import Catalog, JobStore
    from stasis.catalog.jobs import Service
    from stasis.catalog.quick import QuickCatalog


def repository_id(location: str) -> str:
    """The id of the repository at ``location`` (read from its config: no key needed)."""
    from stasis.backends import open_backend
    from stasis.repository import Repository

    return str(Repository.read_config(open_backend(location))["id"])


@contextmanager
def _jobs(catalog: str | Catalog | None) -> Iterator[tuple[JobStore | QuickCatalog, str]]:
    """The catalog's jobs to queue in, and the catalog as shown: an open catalog as
    it is; else with sqlite3 alone where it can (:mod:`stasis.catalog.quick`), else
    with SQLAlchemy (migrated)."""
    from stasis.catalog.quick import QuickCatalog

    if catalog is not None and not isinstance(catalog, str):
        from stasis.catalog import JobStore

        yield JobStore(catalog), catalog.shown
        return

    quick = QuickCatalog.open(catalog)
    if quick is not None:
        with quick:
            yield quick, quick.shown
        return
    from stasis.catalog import Catalog, JobStore

    with Catalog.open(catalog) as c:
        yield JobStore(c), c.shown


def live_services(store: JobStore | QuickCatalog) -> list[Service]:
    """The services of the catalog that run on this host (a process still alive)."""
    from stasis.service.jobs import runner_alive

    return [s for s in store.services() if runner_alive(s.host, s.pid, s.pid_start)]


def submit(catalog: str | Catalog | None, kind: str, params: dict[str, Any] | Params, *,
           by: str = "submit", tenant: str | None = None, repo_id: str | None = None) -> int:
    """Queue a job of ``kind`` (a key of :data:`~stasis.app.kinds.KINDS`) with
    ``params``, validated first: bad parameters are refused (UsageError) before
    anything is queued. ``params["repo"]`` names the repository (a path or URL; its
    id is read from it unless ``repo_id`` gives it). ``by`` is who queued it and
    ``tenant`` whose job it is (None: the system's), both kept in the job.
    ``catalog`` is a URL (None: the default) or an open catalog. Returns the job's id."""
    data = params.model_dump(mode="json") if isinstance(params, Params) else dict(params)
    if data.setdefault("op", kind) != kind:
        raise UsageError(f"the parameters are of a {data['op']} job, not of a {kind} job")
    p = parse_params(data)
    k = KINDS[p.op]
    k.check(p)
    if p.repo is None:
        raise UsageError("a queued job names its repository (a path or URL); nothing was "
                         "queued")
    repo_id = repo_id or repository_id(p.repo)
    with _jobs(catalog) as (store, _shown):
        job = store.create(k.job_kind, k.title(p), repo=repo_id, vms=named_vms(p),
                           policy=p.policy if isinstance(p, PolicyParams) else None,
                           params=p.model_dump(mode="json"), tenant=tenant, by=by)
        store.log(job.id, "info", f"queued by {by}")
    return job.id


def named_vms(p: Params) -> list[str]:
    """The VMs a job's parameters name (its plan may find more: a group's members)."""
    from stasis.app.kinds import (
        BackupVmsParams,
        CloneParams,
        FinalizeParams,
        RestoreDiskParams,
        RestoreVmParams,
    )

    if isinstance(p, BackupVmsParams):
        return list(dict.fromkeys(p.vms))
    if isinstance(p, FinalizeParams):
        return [p.name]
    if isinstance(p, CloneParams):
        return list(dict.fromkeys([*([p.vm] if p.vm else []), p.name]))
    if isinstance(p, RestoreVmParams | RestoreDiskParams) and p.vm is not None:
        return [p.vm]
    return []


def queue(catalog: str | None, kind: str, params: dict[str, Any] | Params, *,
          by: str) -> Queued:
    """Submit a job for the service running on ``catalog``; refused (JobStateError)
    when none runs, as nothing would take it. ``by`` says who queued it (the log)."""
    with _jobs(catalog) as (store, shown):
        live = live_services(store)
    if not live:
        raise JobStateError(f"no service runs on the catalog {shown}: a queued job would "
                            "wait for one. Nothing was queued.",
                            hint="Start 'stasis serve', or run the command without --queue.")
    job = submit(catalog, kind, params, by=by)
    _wake(live)
    return Queued(job=job, service_pid=live[0].pid)


def _wake(services: list[Service]) -> None:
    """Tell the services of this host to look at the queue now, not at their next tick."""
    from stasis.service.wake import wake

    for s in services:
        wake(s.pid, s.pid_start)


@contextmanager
def _open(catalog: str | Catalog | None) -> Iterator[Catalog]:
    if catalog is not None and not isinstance(catalog, str):
        yield catalog
        return
    from stasis.catalog import Catalog

    with Catalog.open(catalog) as c:
        yield c


def cancel_job(catalog: str | Catalog | None, job_id: int) -> CancelResult:
    """Stop job ``job_id``: a queued job ends interrupted at once (never started); a
    job that a service runs is flagged, and the service interrupts it at its next
    tick; a job that a command runs on this host gets SIGTERM. A job that ended, or
    runs on another host outside a service, is refused (JobStateError)."""
    from stasis.catalog import JobStore
    from stasis.service.jobs import runner_alive

    with _open(catalog) as c:
        store = JobStore(c)
        job = store.get(job_id)
        if job.state == "queued" and store.cancel_queued(job_id, "cancelled before it "
                                                                 "started"):
            store.log(job_id, "warning", "cancelled while queued: never started")
            return CancelResult(job=job_id, was="queued", action="interrupted",
                                state="interrupted")
        job = store.get(job_id)  # it may have started meanwhile
        if job.state != "running":
            raise JobStateError(f"job {job_id} is {job.state}: there is nothing to cancel.")
        by_service = any((s.host, s.pid, s.pid_start) == (job.host, job.pid, job.pid_start)
                         for s in store.services())
        if by_service:
            store.request_cancel(job_id)
            store.log(job_id, "warning", "cancel requested")
            _wake([s for s in live_services(store)
                   if (s.host, s.pid, s.pid_start) == (job.host, job.pid, job.pid_start)])
            return CancelResult(job=job_id, was="running", action="cancel requested",
                                state="running")
        alive = runner_alive(job.host, job.pid, job.pid_start)
        if alive is None:
            raise JobStateError(f"job {job_id} runs on {job.host} (pid {job.pid}), not in a "
                                "service: it can only be stopped there. Nothing was changed.")
        if not alive or job.pid is None:
            raise JobStateError(f"job {job_id} is marked running, but its process (pid "
                                f"{job.pid}) is gone: the service marks it failed at its "
                                "next check. Nothing was changed.")
        store.log(job_id, "warning", "cancel requested: SIGTERM sent to its process")
    os.kill(job.pid, signal.SIGTERM)
    return CancelResult(job=job_id, was="running", action="terminated", state="running")
