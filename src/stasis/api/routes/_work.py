"""What the routes that start work share: the served repository a request names, the
body fields every such route takes, and starting the job (202, or the existing one)."""

from __future__ import annotations

from typing import Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stasis.api.context import ApiContext
from stasis.api.started import answer_started
from stasis.app.scope import Scope
from stasis.errors import UsageError
from stasis.repository import Repository

REPOSITORY_QUERY = Query(None, description="a served repository's name (the default one "
                                           "when not given; a body field may name it too)")


class WorkBody(BaseModel):
    """Fields every body that starts work takes."""

    model_config = ConfigDict(extra="forbid")

    repository: str | None = Field(None, description="the served repository to work on")


def ctx_of(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def served(ctx: ApiContext, body: WorkBody, query: str | None) -> Repository:
    """The served repository the request names (body or ``?repository=``)."""
    if body.repository is not None and query is not None and body.repository != query:
        raise UsageError(f"the body names the repository {body.repository!r} and the query "
                         f"{query!r}: give one; nothing was started")
    return ctx.repository(body.repository or query)


def start(request: Request, where: Scope, body: WorkBody, op: str, params: dict[str, Any],
          repository: str | None) -> JSONResponse:
    """Start a job of ``op`` with ``params`` on the repository the request names."""
    from stasis.app.start import start_job

    ctx = ctx_of(request)
    repo = served(ctx, body, repository)
    return answer_started(request, where.principal, body, lambda: start_job(
        ctx.catalog, where, op, params, repo=repo, wake=ctx.wake))


def given(body: BaseModel, *fields: str) -> dict[str, Any]:
    """The fields of ``body`` named, as the job's parameters (None ones left out, so
    the kind's defaults hold)."""
    data = body.model_dump(mode="json", include=set(fields))
    return {k: v for k, v in data.items() if v is not None}


STARTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "The job, queued (Location: its URL)"},
    200: {"description": "The job of the same work, queued or running already "
                         "(existing: true)"},
}
