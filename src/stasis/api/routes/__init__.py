"""The API's routes, one module per resource, each an ``APIRouter`` whose routes are
:class:`~stasis.api.guard.GuardedRoute` (each declares its permission)."""

from __future__ import annotations

from fastapi import APIRouter

from stasis.api.routes import (
    groups,
    me,
    points,
    policies,
    problem_types,
    repositories,
    status,
    vms,
)

ROUTERS: list[APIRouter] = [me.router, vms.router, groups.router, policies.router,
                            points.router, repositories.router, status.router,
                            problem_types.router]
