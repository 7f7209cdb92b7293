"""``/jobs``: the jobs a principal sees (its tenant's), one job, its log by offset, its
progress and log live as Server-Sent Events, and cancelling it.

The event stream (``GET /jobs/{id}/events``) sends ``progress`` events (state and
bytes) when they change, a ``log`` event per new log line whose ``id`` is the line's
offset (a client that reconnects with ``Last-Event-ID`` gets the lines after it),
comments as heartbeats, and a last ``end`` event with the job as it ended; then the
stream closes. The catalog is polled while a client listens, and no longer once it
went away.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from stasis.api.guard import GuardedRoute, needs, scope
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.api.routes._work import ctx_of
from stasis.app.models import CancelResult, JobLogPage, JobModel, job_model
from stasis.app.scope import Scope

router = APIRouter(route_class=GuardedRoute, tags=["jobs"])
READ = needs("jobs:read")

POLL_S = 0.5  # how often a stream looks at its job
HEARTBEAT_S = 15.0  # a comment at least this often keeps proxies from closing it
State = Literal["queued", "running", "succeeded", "failed", "interrupted"]
JobKind = Literal["backup", "restore", "verify", "prune", "gc", "copy", "drill"]


@router.get("/jobs", openapi_extra=READ, response_model=Page[JobModel])
def list_jobs(request: Request, state: State | None = None, kind: JobKind | None = None,
              vm: str | None = Query(None, description="jobs on this VM"),
              policy: str | None = None,
              since: datetime | None = Query(None, description="queued at or after"),
              q: ListQuery = Depends(list_query),
              where: Scope = Depends(scope)) -> JSONResponse:
    """The jobs the principal sees, newest first unless sorted (``id``, ``queued``)."""
    from stasis.app.jobs import jobs_seen

    found = jobs_seen(ctx_of(request).catalog, where, state=state, kind=kind, vm=vm,
                      policy=policy, since=since)
    page = paginate(found, q, sorts={"id": lambda j: j.id, "queued": lambda j: j.queued},
                    default="-id", ident=lambda j: j.id)
    return JSONResponse({"items": [j.to_json() for j in page.items], "next": page.next})


@router.get("/jobs/{job_id}", openapi_extra=READ, response_model=JobModel)
def get_job(job_id: int, request: Request, where: Scope = Depends(scope)) -> JSONResponse:
    """One job: what ran, its state, its bytes, its result."""
    from stasis.app.jobs import job_seen

    job = job_seen(ctx_of(request).catalog, where, job_id)
    return JSONResponse(job_model(job.to_dict()).to_json())


@router.get("/jobs/{job_id}/log", openapi_extra=READ, response_model=JobLogPage)
def get_job_log(job_id: int, request: Request,
                offset: int = Query(0, ge=0, description="the first line wanted (the "
                                                         "`next` of the previous answer)"),
                where: Scope = Depends(scope)) -> JobLogPage:
    """A job's log lines from ``offset`` (poll again from ``next`` until ``ended``)."""
    from stasis.app.jobs import job_log

    return job_log(ctx_of(request).catalog, where, job_id, offset)


def _event(kind: str, data: Any, ident: int | None = None) -> str:
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/jobs/{job_id}/events", openapi_extra=READ,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "progress, log and end events"}})
def job_events(job_id: int, request: Request, where: Scope = Depends(scope),
               last_event_id: int | None = None) -> StreamingResponse:
    """A job's progress and log, live, as Server-Sent Events, to its ``end``."""
    from stasis.app.jobs import job_log, job_seen

    ctx = ctx_of(request)
    job_seen(ctx.catalog, where, job_id)  # 404 before the stream begins
    header = request.headers.get("last-event-id")
    resume = last_event_id if last_event_id is not None else (
        int(header) if header is not None and header.strip().isdigit() else None)
    start = 0 if resume is None else resume + 1

    async def stream() -> AsyncIterator[str]:
        offset, shown = start, None
        quiet = 0.0
        yield f": stream of job {job_id}\n\n"
        while True:
            if await request.is_disconnected():
                return
            page = await run_in_threadpool(job_log, ctx.catalog, where, job_id, offset)
            for line in page.lines:
                yield _event("log", line.to_json(), line.offset)
            offset = page.next
            job = await run_in_threadpool(job_seen, ctx.catalog, where, job_id)
            progress = {"state": job.state, "bytes_read": job.bytes_read,
                        "bytes_written": job.bytes_written}
            if progress != shown:
                shown = progress
                yield _event("progress", progress)
                quiet = 0.0
            if page.ended:
                # the lines written as it ended, then the end
                last = await run_in_threadpool(job_log, ctx.catalog, where, job_id, offset)
                for line in last.lines:
                    yield _event("log", line.to_json(), line.offset)
                yield _event("end", job_model(job.to_dict()).to_json())
                return
            if quiet >= HEARTBEAT_S:
                yield ": heartbeat\n\n"
                quiet = 0.0
            await anyio.sleep(POLL_S)
            quiet += POLL_S

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})


@router.post("/jobs/{job_id}/cancel", openapi_extra=needs("jobs:cancel"),
             response_model=CancelResult)
def cancel(job_id: int, request: Request, where: Scope = Depends(scope)) -> CancelResult:
    """Stop a job, the same clean stop as SIGTERM: a queued one never starts, a running
    one is interrupted with nothing committed."""
    from stasis.app.jobs import cancel_seen

    ctx = ctx_of(request)
    done = cancel_seen(ctx.catalog, where, job_id)
    ctx.wake()
    return done
