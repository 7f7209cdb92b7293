"""Errors as RFC 9457 ``application/problem+json``.

Every :class:`~stasis.errors.StasisError` answers with the same words as the CLI: its
message as ``detail``, its hint, its exit code as ``code`` and its class as ``kind``.
The ``type`` is stable per error class (``/api/v1/problems/<kind>``, a page that says
what the error means); the HTTP status follows from the class (:func:`status_of`).
A malformed request answers 422 naming each field that was wrong; anything else that
goes wrong is a 500 whose body says nothing of the server's insides.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stasis import errors as e

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("stasis.api")

# The HTTP status of each error class; a class not named takes its nearest named base's.
STATUS: dict[type[e.StasisError], int] = {
    e.StasisError: 400,
    e.UsageError: 422,
    e.NotAuthenticated: 401,
    e.PermissionDenied: 403,
    e.TooManyAttempts: 429,
    e.RequestTooLarge: 413,
    e.IdempotencyConflict: 422,
    e.AccountError: 409,
    e.AccountNotFound: 404,
    e.RangeNotSatisfiable: 416,
    e.InstantNotFound: 404,
    e.InstantError: 409,
    e.ExportError: 502,
    e.RepositoryNotFound: 404,
    e.PointNotFound: 404,
    e.DiskNotFound: 404,
    e.VmNotFound: 404,
    e.JobNotFound: 404,
    e.PolicyNotFound: 404,
    e.CloneSourceNotFound: 404,
    e.FileNotInPoint: 404,
    e.ObjectNotFound: 404,
    e.AmbiguousPoint: 422,
    e.AmbiguousVolume: 422,
    e.PolicyError: 422,
    e.ConfigFileError: 422,
    e.GroupError: 422,
    e.GroupNotFound: 404,
    e.TargetExists: 409,
    e.FileTargetExists: 409,
    e.RepositoryExists: 409,
    e.Locked: 409,
    e.JobStateError: 409,
    e.PoliciesFromFile: 409,
    e.JobNotEnded: 409,
    e.VmState: 409,
    e.PointHeld: 409,
    e.BackendError: 502,
    e.BackendUnreachable: 503,
    e.Interrupted: 503,
    e.IntegrityError: 500,
}


def status_of(cls: type[e.StasisError]) -> int:
    for base in cls.__mro__:
        if base in STATUS:
            return STATUS[base]
    return 400


def kind_slug(cls: type[BaseException] | str) -> str:
    """``PointNotFound`` -> ``point-not-found`` (the last part of a problem's type)."""
    name = cls if isinstance(cls, str) else cls.__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def type_uri(cls: type[BaseException] | str) -> str:
    return f"/api/v1/problems/{kind_slug(cls)}"


def problem(status: int, kind: str, title: str, detail: str, *, code: int, hint: str = "",
            instance: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": type_uri(kind), "title": title, "status": status,
                            "detail": detail, "code": code, "kind": kind, "hint": hint}
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="stasis"'
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def title_of(cls: type[BaseException]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).capitalize()


def of_error(err: e.StasisError, instance: str | None = None) -> JSONResponse:
    cls = type(err)
    extra: dict[str, Any] = {}
    if isinstance(err, e.PermissionDenied):
        extra["permission"] = err.permission
    if isinstance(err, e.PolicyError):
        extra["problems"] = [str(p) for p in err.problems]
    answer = problem(status_of(cls), cls.__name__, title_of(cls), err.message,
                     code=cls.exit_code, hint=err.hint, instance=instance, **extra)
    if isinstance(err, e.TooManyAttempts) and "retry_after" in err.kwargs:
        answer.headers["Retry-After"] = str(err.kwargs["retry_after"])
    return answer


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json."""

    @app.exception_handler(e.StasisError)
    async def stasis_error(request: Request, err: e.StasisError) -> JSONResponse:
        return of_error(err, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(x) for x in d.get("loc", ())),
                   "message": str(d.get("msg", ""))} for d in err.errors()]
        named = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return problem(422, "UsageError", "Invalid request", f"The request was not valid "
                       f"({named}). Nothing was done.", code=e.UsageError.exit_code,
                       instance=request.url.path, errors=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(err.status_code, "HttpError")
        return problem(err.status_code, kind, title_of(type(err)) if kind == "HttpError"
                       else re.sub(r"(?<!^)(?=[A-Z])", " ", kind).capitalize(),
                       str(err.detail), code=2, instance=request.url.path)

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return problem(500, "InternalError", "Internal error", "The server failed on this "
                       "request; its log says why. Nothing was committed by the failure.",
                       code=1, instance=request.url.path)
