"""``/me``: who the request acts for, and what it may do."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from stasis.api.guard import GuardedRoute, needs, principal
from stasis.app.auth import AUTHENTICATED, PERMISSIONS, Principal
from stasis.app.models import Me, MeNow

router = APIRouter(route_class=GuardedRoute, tags=["me"])


@router.get("/me", openapi_extra=needs(AUTHENTICATED), response_model=MeNow)
def me(who: Principal = Depends(principal)) -> MeNow:
    """The user, role, tenant and effective permissions of the request; for a browser
    session also its CSRF token (a reloaded page gets it back here)."""
    base = Me.of(who, PERMISSIONS)
    return MeNow(**base.model_dump(), csrf=who.csrf if who.session is not None else None)
