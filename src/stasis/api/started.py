"""How the API answers a POST that starts work: ``202 Accepted`` with the job and its
URL (``Location`` and ``Content-Location``), or ``200`` with the job of the same work
already queued or running (``existing: true``: nothing was queued twice).

A POST that sends ``Idempotency-Key`` is remembered by user and key with a sha256 of
its method, path, query and body: the same key with the same request answers what
the first answered (the same job, the same status) without starting anything; the
same key with another request is refused (422, IdempotencyConflict), nothing done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from stasis.api.context import ApiContext
from stasis.app.auth import Principal
from stasis.app.models import JobStarted
from stasis.errors import IdempotencyConflict, UsageError

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY = 255


def job_url(job_id: int) -> str:
    return f"/api/v1/jobs/{job_id}"


def _digest(request: Request, body: BaseModel | None) -> str:
    text = json.dumps(body.model_dump(mode="json") if body is not None else None,
                      sort_keys=True, separators=(",", ":"))
    seen = f"{request.method}\n{request.url.path}\n{request.url.query}\n{text}"
    return hashlib.sha256(seen.encode()).hexdigest()


def _answer(status: int, content: dict[str, Any]) -> JSONResponse:
    url = job_url(int(content["job"]["id"]))
    return JSONResponse(content, status_code=status,
                        headers={"Location": url, "Content-Location": url})


def answer_started(request: Request, who: Principal, body: BaseModel | None,
                   start: Callable[[], JobStarted]) -> JSONResponse:
    """Run ``start`` (which queues the work) and answer it, once per idempotency key."""
    from stasis.catalog.idempotency import IdempotencyStore

    ctx: ApiContext = request.app.state.ctx
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not (0 < len(key) <= MAX_KEY):
        raise UsageError(f"the {IDEMPOTENCY_HEADER} header takes 1 to {MAX_KEY} "
                         "characters; nothing was started")
    store = IdempotencyStore(ctx.catalog) if key is not None else None
    digest = _digest(request, body)
    if store is not None and key is not None:
        known = store.get(who.user, key)
        if known is not None:
            if known.request != digest:
                raise IdempotencyConflict(
                    f"the {IDEMPOTENCY_HEADER} {key!r} came with another request before "
                    "(another path or body): nothing was started.",
                    hint="Use a new key for a new request.")
            return _answer(known.status, known.response)
    started = start()
    status = 200 if started.existing else 202
    content = {"job": started.job.to_json(), "existing": started.existing}
    if store is not None and key is not None:
        kept = store.remember(who.user, key, digest, status, content)
        if kept.request != digest:
            raise IdempotencyConflict(f"the {IDEMPOTENCY_HEADER} {key!r} came with another "
                                      "request at the same time: this one was started "
                                      f"as job {content['job']['id']}.")
        status, content = kept.status, kept.response
    return _answer(status, content)
