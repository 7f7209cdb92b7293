"""Job history and the job queue: jobs, their log lines, and the running services.

A job is written when it is queued (or started at once), updated when it starts
and when it ends; its log lines are added as they come. Nothing here decides what
a job does: :mod:`stasis.service.jobs` runs them. The runner of a job is named by
host, pid and the process's start time (``/proc/PID/stat``), so that a job left
``running`` by a process that died is told apart from one still running, even
after its pid was reused.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from stasis.catalog.db import Catalog
from stasis.catalog.models import JobLogRow, JobRow, ServiceRow
from stasis.catalog.records import (
    FINAL_STATES,
    JOB_KINDS,
    JOB_STATES,
    LOG_LEVELS,
    Job,
    LogLine,
    Service,
)
from stasis.errors import JobNotFound, UsageError

__all__ = ["FINAL_STATES", "Job", "JobStore", "LogLine", "Service"]

def _job(r: JobRow) -> Job:
    return Job(r.id, r.kind, r.name, r.policy, list(r.vms), r.repo, r.state, r.queued,
               r.started, r.ended, r.bytes_read, r.bytes_written, dict(r.result), r.error,
               r.exit_code, dict(r.params), r.host, r.pid, r.pid_start,
               bool(r.cancel_requested), r.tenant, r.by)


class JobStore:
    """The jobs of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # ------------------------------------------------------------ writing

    def create(self, kind: str, name: str, *, vms: list[str] | None = None,
               policy: str | None = None, repo: str | None = None,
               params: dict[str, Any] | None = None, state: str = "queued",
               runner: tuple[str, int, int] | None = None, tenant: str | None = None,
               by: str | None = None) -> Job:
        """A new job, ``queued`` (for a runner to take) or ``running`` (by ``runner``:
        host, pid, process start time); ``tenant`` owns it, ``by`` started it."""
        if kind not in JOB_KINDS:
            raise UsageError(f"'{kind}' is not a job kind ({', '.join(JOB_KINDS)})")
        if state not in ("queued", "running"):
            raise UsageError(f"a new job is queued or running, not {state}")
        now = self.catalog.clock.now()
        row = JobRow(kind=kind, name=name, policy=policy, vms=list(vms or []), repo=repo,
                     state=state, queued=now, bytes_read=0, bytes_written=0, result={},
                     params=dict(params or {}), cancel_requested=False, tenant=tenant,
                     by=by)
        if state == "running":
            row.started = now
            if runner is not None:
                row.host, row.pid, row.pid_start = runner
        with self.catalog.session() as session:
            session.add(row)
            session.flush()
        return _job(row)

    def start(self, job_id: int, runner: tuple[str, int, int],
              vms: list[str] | None = None) -> bool:
        """Mark a queued job running by ``runner``; False if it is no longer queued
        (another runner took it, or it was cancelled)."""
        host, pid, pid_start = runner
        values: dict[str, Any] = {"state": "running", "started": self.catalog.clock.now(),
                                  "host": host, "pid": pid, "pid_start": pid_start}
        if vms is not None:
            values["vms"] = list(vms)
        with self.catalog.session() as session:
            done = session.execute(update(JobRow).where(
                JobRow.id == job_id, JobRow.state == "queued").values(**values))
        return bool(getattr(done, "rowcount", 0))

    def cancel_queued(self, job_id: int, why: str) -> bool:
        """End a queued job ``interrupted`` before it starts; False if it is no longer
        queued (a runner took it meanwhile)."""
        now = self.catalog.clock.now()
        with self.catalog.session() as session:
            done = session.execute(update(JobRow).where(
                JobRow.id == job_id, JobRow.state == "queued").values(
                state="interrupted", ended=now, error=why, exit_code=143))
        return bool(getattr(done, "rowcount", 0))

    def request_cancel(self, job_id: int) -> bool:
        """Ask the runner of a running job to interrupt it; False if it is not running."""
        with self.catalog.session() as session:
            done = session.execute(update(JobRow).where(
                JobRow.id == job_id, JobRow.state == "running").values(cancel_requested=True))
        return bool(getattr(done, "rowcount", 0))

    def cancels_requested(self, job_ids: builtins.list[int]) -> set[int]:
        """Which of ``job_ids`` were asked to stop."""
        if not job_ids:
            return set()
        with self.catalog.session(write=False) as session:
            return set(session.scalars(select(JobRow.id).where(
                JobRow.id.in_(job_ids), JobRow.cancel_requested.is_(True))))

    def set_progress(self, job_id: int, *, bytes_read: int, bytes_written: int) -> None:
        """The bytes a running job has read and written so far (its end writes the
        final figures)."""
        with self.catalog.session() as session:
            session.execute(update(JobRow).where(
                JobRow.id == job_id, JobRow.state == "running").values(
                bytes_read=bytes_read, bytes_written=bytes_written))

    def set_vms(self, job_id: int, vms: list[str]) -> None:
        with self.catalog.session() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(vms=list(vms)))

    def finish(self, job_id: int, state: str, *, result: dict[str, Any] | None = None,
               error: str | None = None, exit_code: int | None = None,
               bytes_read: int | None = 0, bytes_written: int | None = 0) -> None:
        """End the job in ``state``; a byte count None keeps the one its progress wrote."""
        if state not in FINAL_STATES:
            raise UsageError(f"a job ends {', '.join(FINAL_STATES)}, not {state}")
        counts = {k: v for k, v in (("bytes_read", bytes_read),
                                    ("bytes_written", bytes_written)) if v is not None}
        with self.catalog.session() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(
                state=state, ended=self.catalog.clock.now(), result=dict(result or {}),
                error=error, exit_code=exit_code, **counts))

    def log(self, job_id: int, level: str, text: str, time: datetime | None = None) -> None:
        self.log_many(job_id, [(time or self.catalog.clock.now(), level, text)])

    def log_many(self, job_id: int, lines: list[tuple[datetime, str, str]]) -> None:
        if not lines:
            return
        with self.catalog.session() as session:
            session.add_all(JobLogRow(job=job_id, time=t,
                                      level=lv if lv in LOG_LEVELS else "info", text=text)
                            for t, lv, text in lines)

    def expire_logs(self, older_than: datetime) -> int:
        """Delete the log lines written before ``older_than``; return how many."""
        with self.catalog.session() as session:
            done = session.execute(delete(JobLogRow).where(JobLogRow.time < older_than))
        return int(getattr(done, "rowcount", 0) or 0)

    # ------------------------------------------------------------ reading

    def get(self, job_id: int) -> Job:
        with self.catalog.session(write=False) as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(job_id)
            return _job(row)

    def list(self, *, state: str | None = None, kind: str | None = None,
             policy: str | None = None, limit: int | None = None,
             newest_first: bool = True, since: datetime | None = None,
             states: tuple[str, ...] | None = None) -> list[Job]:
        """Jobs by ``state`` (or any of ``states``), ``kind``, ``policy``, queued at or
        after ``since``."""
        if state is not None and state not in JOB_STATES:
            raise UsageError(f"'{state}' is not a job state ({', '.join(JOB_STATES)})")
        query = select(JobRow)
        if state is not None:
            query = query.where(JobRow.state == state)
        if states is not None:
            query = query.where(JobRow.state.in_(states))
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        if since is not None:
            query = query.where(JobRow.queued >= since)
        if policy is not None:
            query = query.where(JobRow.policy == policy)
        query = query.order_by(JobRow.id.desc() if newest_first else JobRow.id)
        if limit is not None:
            query = query.limit(limit)
        with self.catalog.session(write=False) as session:
            return [_job(r) for r in session.scalars(query)]

    def logs(self, job_id: int, offset: int = 0) -> builtins.list[LogLine]:
        """The job's log lines, oldest first, from the ``offset``-th on."""
        with self.catalog.session(write=False) as session:
            rows = session.scalars(select(JobLogRow).where(JobLogRow.job == job_id)
                                   .order_by(JobLogRow.time, JobLogRow.id).offset(offset))
            return [LogLine(r.time, r.level, r.text) for r in rows]

    def log_count(self) -> int:
        with self.catalog.session(write=False) as session:
            return int(session.scalar(select(func.count()).select_from(JobLogRow)) or 0)

    # ------------------------------------------------------------ services

    def register_service(self, runner: tuple[str, int, int], repo: str | None) -> int:
        host, pid, pid_start = runner
        with self.catalog.session() as session:
            row = ServiceRow(host=host, pid=pid, pid_start=pid_start,
                             started=self.catalog.clock.now(), repo=repo)
            session.add(row)
            session.flush()
            return row.id

    def unregister_service(self, service_id: int) -> None:
        with self.catalog.session() as session:
            session.execute(delete(ServiceRow).where(ServiceRow.id == service_id))

    def services(self) -> builtins.list[Service]:
        with self.catalog.session(write=False) as session:
            return [Service(r.id, r.host, r.pid, r.pid_start, r.started, r.repo)
                    for r in session.scalars(select(ServiceRow).order_by(ServiceRow.id))]
