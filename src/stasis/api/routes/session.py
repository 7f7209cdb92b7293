"""``/session``: a browser signs in (a cookie, and a CSRF token for unsafe requests)
and out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from stasis.api.context import ApiContext
from stasis.api.guard import GuardedRoute, needs, principal
from stasis.app import accounts
from stasis.app.auth import AUTHENTICATED, PERMISSIONS, PUBLIC, Principal
from stasis.app.models import Me, SessionStarted

router = APIRouter(route_class=GuardedRoute, tags=["session"])


class SignIn(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


@router.post("/session", openapi_extra=needs(PUBLIC), response_model=SessionStarted,
             responses={401: {"description": "wrong user name or password"},
                        429: {"description": "too many failed sign-ins"}})
def sign_in(body: SignIn, request: Request, response: Response) -> SessionStarted:
    """Sign in with a user name and password: sets the session cookie (HttpOnly,
    SameSite=Strict, Secure over TLS) and answers the CSRF token that requests other
    than GET, HEAD and OPTIONS must send in ``X-CSRF-Token``."""
    ctx = _ctx(request)
    address = request.client.host if request.client is not None else None
    signed = accounts.sign_in(ctx.catalog, body.user, body.password, address)
    response.set_cookie(ctx.session_cookie, signed.cookie, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/",
                        max_age=int(accounts.SESSION_MAX.total_seconds()))
    return SessionStarted(csrf=signed.csrf, expires=signed.expires.isoformat(),
                          me=Me.of(signed.principal, PERMISSIONS))


@router.delete("/session", openapi_extra=needs(AUTHENTICATED), status_code=204)
def sign_out(request: Request, who: Principal = Depends(principal)) -> Response:
    """Sign out: the session ends and its cookie is cleared."""
    ctx = _ctx(request)
    accounts.sign_out(ctx.catalog, who)
    response = Response(status_code=204)
    response.delete_cookie(ctx.session_cookie, path="/", httponly=True, samesite="strict")
    return response
