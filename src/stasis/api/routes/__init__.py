"""The API's routes, one module per resource, each an ``APIRouter`` whose routes are
:class:`~stasis.api.guard.GuardedRoute` (each declares its permission)."""

from __future__ import annotations

from fastapi import APIRouter

from stasis.api.routes import files, instant, me

ROUTERS: list[APIRouter] = [me.router, files.router, instant.router]
