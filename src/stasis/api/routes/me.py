"""``/me``: who the request acts for, and what it may do."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from stasis.api.guard import GuardedRoute, needs, principal
from stasis.app.auth import AUTHENTICATED, PERMISSIONS, Principal
from stasis.app.models import Me

router = APIRouter(route_class=GuardedRoute, tags=["me"])


@router.get("/me", openapi_extra=needs(AUTHENTICATED), response_model=Me)
def me(who: Principal = Depends(principal)) -> Me:
    """The user, role, tenant and effective permissions of the request."""
    return Me.of(who, PERMISSIONS)
