"""The API's routes, one module per resource, each an ``APIRouter`` whose routes are
:class:`~stasis.api.guard.GuardedRoute` (each declares its permission)."""

from __future__ import annotations

from fastapi import APIRouter

from stasis.api.routes import (
    accounts,
    audit,
    backups,
    console,
    dashboard,
    docs,
    drills,
    files,
    groups,
    instant,
    jobs,
    maintenance,
    me,
    metrics,
    points,
    policies,
    problem_types,
    repositories,
    restores,
    session,
    status,
    tokens,
    vms,
)

# under /api/v1
ROUTERS: list[APIRouter] = [
    me.router, session.router, tokens.router, accounts.router, audit.router,
    vms.router, groups.router, policies.router, points.router, repositories.router,
    status.router, backups.router, restores.router, maintenance.router, jobs.router,
    files.router, instant.router, problem_types.router, docs.router, drills.router,
    dashboard.router,
]
# at the root: /metrics, where Prometheus looks by default; the console's page at /
ROOT_ROUTERS: list[APIRouter] = [metrics.router, console.router]
