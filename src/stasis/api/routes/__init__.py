"""The API's routes, one module per resource, each an ``APIRouter`` whose routes are
:class:`~stasis.api.guard.GuardedRoute` (each declares its permission)."""

from __future__ import annotations

from fastapi import APIRouter

from stasis.api.routes import docs, me, metrics

# under /api/v1
ROUTERS: list[APIRouter] = [me.router, docs.router]
# at the root: /metrics, where Prometheus looks by default
ROOT_ROUTERS: list[APIRouter] = [metrics.router]
