"""What the resource routes share: the context of the request, the served repository
a request chooses (``?repository=NAME``), and a ``KEY=VALUE`` label filter."""

from __future__ import annotations

from fastapi import Query, Request

from stasis.api.context import ApiContext
from stasis.errors import UsageError
from stasis.repository import Repository


def context(request: Request) -> ApiContext:
    """The :class:`ApiContext` the application was built for."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


def repository(request: Request, repository: str | None = Query(
        None, description="a served repository (GET /repositories); default: the "
                          "server's default one")) -> Repository:
    """The served repository the request names (404 for one not served)."""
    return context(request).repository(repository)


def label_filter(texts: list[str], what: str = "label") -> dict[str, str]:
    """``KEY=VALUE`` filters as a mapping; a malformed one is a usage error naming it."""
    out: dict[str, str] = {}
    for t in texts:
        key, sep, value = t.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} filter {t!r} is not KEY=VALUE. Nothing was done.")
        out[key] = value
    return out
