"""``/problems/{kind}``: what the ``type`` of a problem+json answer means.

Every error answers with ``type`` = ``/api/v1/problems/<kind>``; this page says what
that kind of error is, its HTTP status and the CLI's exit code with its meaning, so
that every type resolves. It needs no sign-in: it tells nothing of the server's data.
"""

from __future__ import annotations

import inspect

from fastapi import APIRouter, Path
from starlette.exceptions import HTTPException

from stasis import errors as e
from stasis.api import problems as p
from stasis.api.guard import GuardedRoute, needs
from stasis.app.auth import PUBLIC
from stasis.app.models import ProblemKind

router = APIRouter(route_class=GuardedRoute, tags=["problems"])

# The kinds the API answers that are no error class of Stasis's: (status, code, title,
# what it means).
PROTOCOL_KINDS: dict[str, tuple[int, int, str, str]] = {
    "NotFound": (404, 2, "Not found", "No route answers this path."),
    "MethodNotAllowed": (405, 2, "Method not allowed",
                         "The route exists but not with this HTTP method."),
    "HttpError": (400, 2, "Http error", "The HTTP request itself was refused."),
    "InternalError": (500, 1, "Internal error", "The server failed on the request; its "
                      "log says why. Nothing was committed by the failure."),
}


def _describe(cls: type[e.StasisError]) -> str:
    doc = inspect.cleandoc(cls.__doc__ or "")
    return "" if doc == "{}" else doc


def kinds() -> dict[str, ProblemKind]:
    """Every kind of problem the API may answer, by its slug."""
    out: dict[str, ProblemKind] = {}
    for cls in e.error_classes():
        slug = p.kind_slug(cls)
        out[slug] = ProblemKind(kind=cls.__name__, type=p.type_uri(cls), title=p.title_of(cls),
                                status=p.status_of(cls), code=cls.exit_code,
                                meaning=e.EXIT_MEANINGS.get(cls.exit_code, ""),
                                description=_describe(cls))
    for name, (status, code, title, what) in PROTOCOL_KINDS.items():
        out[p.kind_slug(name)] = ProblemKind(kind=name, type=p.type_uri(name), title=title,
                                             status=status, code=code,
                                             meaning=e.EXIT_MEANINGS.get(code, ""),
                                             description=what)
    return out


@router.get("/problems/{kind}", openapi_extra=needs(PUBLIC), response_model=ProblemKind)
def problem_kind(kind: str = Path(description="the last part of a problem's type, such "
                                              "as point-not-found")) -> ProblemKind:
    """What a problem's ``type`` means: its error class, status and exit code."""
    found = kinds().get(kind)
    if found is None:
        raise HTTPException(404, f"No problem type {kind!r}: the type of every problem "
                                 "this server answers is listed by its kind's slug, such "
                                 "as point-not-found.")
    return found
