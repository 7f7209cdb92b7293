"""Jobs: work recorded as a job while the caller waits for it (a CLI command, say),
and the job history of the catalog.

A catalog that cannot be used is reported to ``warn`` once and the work goes on
unrecorded: the catalog is never a reason not to back up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stasis.app.models import CancelResult, JobLogLine, JobLogPage, JobModel, job_model
from stasis.errors import CatalogError, StasisError, UsageError

if TYPE_CHECKING:
    from stasis.app.scope import Scope
    from stasis.catalog import Catalog, Job
    from stasis.catalog.quick import QuickCatalog
    from stasis.service.jobs import JobRun

Warn = Callable[[CatalogError], None]


@contextmanager
def foreground_job(catalog: str | None, kind: str, name: str, *, warn: Warn,
                   vms: list[str] | None = None, repo: str | None = None,
                   params: dict[str, Any] | None = None) -> Iterator[JobRun]:
    """Record the block as a job of ``kind`` in ``catalog`` (a URL, a file or None for
    the default), or warn and run it unrecorded.

    A SQLite catalog at the newest revision is written with sqlite3 alone
    (:mod:`stasis.catalog.quick`); any other is opened with SQLAlchemy (and migrated).
    """
    from stasis.catalog.quick import QuickCatalog
    from stasis.service.jobs import open_catalog_or_warn, recorded

    opened: list[Catalog | QuickCatalog] = []

    def open_catalog() -> Catalog | QuickCatalog | None:
        c = QuickCatalog.open(catalog) or open_catalog_or_warn(catalog, warn)
        if c is not None:
            opened.append(c)
        return c

    try:
        with recorded(None, kind, name, vms=vms, repo=repo, params=params,
                      on_catalog_error=warn, open_catalog=open_catalog) as run:
            yield run
    finally:
        for c in opened:
            c.close()


def list_jobs(catalog: str | None, *, state: str | None = None, kind: str | None = None,
              policy: str | None = None, limit: int = 50) -> list[JobModel]:
    """Jobs of the catalog, newest first."""
    from stasis.catalog import Catalog, JobStore

    with Catalog.open(catalog) as c:
        found = JobStore(c).list(state=state, kind=kind, policy=policy, limit=limit)
    return [job_model(j.to_dict()) for j in found]


def show_job(catalog: str | None, job_id: int, *, with_log: bool = True) -> JobModel:
    """One job, with its log lines when ``with_log``."""
    from stasis.catalog import Catalog, JobStore

    with Catalog.open(catalog) as c:
        store = JobStore(c)
        data = store.get(job_id).to_dict()
        if with_log:
            data["log"] = [line.to_dict() for line in store.logs(job_id)]
    return job_model(data)


def jobs_seen(c: Catalog, where: Scope, *, state: str | None = None,
              kind: str | None = None, vm: str | None = None, policy: str | None = None,
              since: datetime | None = None) -> list[JobModel]:
    """The jobs of the open catalog ``c`` that ``where`` sees, by the filters given."""
    from stasis.catalog import JobStore

    found = JobStore(c).list(state=state, kind=kind, policy=policy, since=since)
    return [job_model(j.to_dict()) for j in found
            if (vm is None or vm in j.vms) and where.owns_job(j.tenant, j.vms)]


def job_seen(c: Catalog, where: Scope, job_id: int) -> Job:
    """Job ``job_id`` if ``where`` sees it; else JobNotFound, as for a missing one."""
    from stasis.catalog import JobStore

    job = JobStore(c).get(job_id)
    where.check_job(job.id, job.tenant, job.vms)
    return job


def job_log(c: Catalog, where: Scope, job_id: int, offset: int = 0) -> JobLogPage:
    """Job ``job_id``'s log lines from the ``offset``-th (the polling form of
    following a job: ask again from ``next``)."""
    from stasis.catalog import JobStore
    from stasis.catalog.records import FINAL_STATES

    if offset < 0:
        raise UsageError("offset counts log lines from 0; nothing was read")
    job = job_seen(c, where, job_id)
    lines = JobStore(c).logs(job_id, offset)
    return JobLogPage(job=job_id, offset=offset, next=offset + len(lines), state=job.state,
                      ended=job.state in FINAL_STATES,
                      lines=[JobLogLine(offset=offset + i, **line.to_dict())
                             for i, line in enumerate(lines)])


def cancel_seen(c: Catalog, where: Scope, job_id: int) -> CancelResult:
    """Cancel job ``job_id`` for ``where``'s principal (as ``stasis job cancel``),
    audited."""
    from stasis.app.audit import record
    from stasis.app.submit import cancel_job

    job_seen(c, where, job_id)
    try:
        done = cancel_job(c, job_id)
    except StasisError as e:
        record(c, where.principal, "job.cancel", f"job:{job_id}", result="failed",
               detail={"error": e.message})
        raise
    record(c, where.principal, "job.cancel", f"job:{job_id}",
           detail={"was": done.was, "action": done.action})
    return done
