"""Authentication, and the one permission every route declares.

Routes are made by :class:`GuardedRoute`: a route must say which permission it needs
(``openapi_extra=needs("points:read")``, or :data:`~stasis.app.auth.PUBLIC`); a route
without one fails when the application is built, so no route can be added unguarded.
The permission is visible in the OpenAPI document as ``x-permission``, and the route
gets a dependency that authenticates the request and refuses a principal without it
(403 naming the permission). Handlers read the principal with ``Depends(principal)``.

A request authenticates with ``Authorization: Bearer <token>``, or with the session
cookie a browser got at sign-in; a request by cookie that changes anything (not GET,
HEAD or OPTIONS) must also send the session's CSRF token in ``X-CSRF-Token``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute

from stasis.app.auth import AUTHENTICATED, PERMISSIONS, PUBLIC, Principal
from stasis.app.scope import Scope
from stasis.errors import NotAuthenticated, PermissionDenied

PERMISSION_KEY = "x-permission"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def needs(permission: str) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that needs ``permission``."""
    if permission not in PERMISSIONS and permission not in (PUBLIC, AUTHENTICATED):
        raise ValueError(f"unknown permission {permission!r}")
    return {PERMISSION_KEY: permission}


def permission_of(route: APIRoute) -> str:
    """The permission ``route`` declares."""
    return str((route.openapi_extra or {})[PERMISSION_KEY])


def _address(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def authenticate(request: Request) -> Principal:
    """The principal of ``request`` (kept on the request, so it is looked up once)."""
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):
        return known
    from stasis.api.context import ApiContext

    ctx: ApiContext = request.app.state.ctx
    address = _address(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise NotAuthenticated("the Authorization header must be 'Bearer <token>'.",
                                   hint="Create a token with 'stasis token create'.")
        found = ctx.authenticator.by_token(secret.strip(), address=address)
    else:
        cookie = request.cookies.get(ctx.session_cookie)
        if cookie is None:
            raise NotAuthenticated("this needs a signed-in user: send a bearer token or "
                                   "sign in first.",
                                   hint="POST /api/v1/session signs in; 'stasis token "
                                        "create' makes a token.")
        found = ctx.authenticator.by_session(cookie, address=address)
        if request.method not in SAFE_METHODS:
            sent = request.headers.get("x-csrf-token", "")
            if found.csrf is None or not hmac.compare_digest(sent, found.csrf):
                raise PermissionDenied("csrf", "a request by session cookie without the "
                                       "session's X-CSRF-Token header")
    request.state.principal = found
    return found


def principal(request: Request) -> Principal:
    """The request's principal, for handlers (the route's guard authenticated it)."""
    return authenticate(request)


def _guard(permission: str) -> Callable[[Request], None]:
    def guard(request: Request) -> None:
        p = authenticate(request)
        if not p.can(permission):
            raise PermissionDenied(permission, f"{p.shown} (role {p.role})")

    guard.__name__ = f"needs_{permission.replace(':', '_')}"
    return guard


class GuardedRoute(APIRoute):
    """A route that declares the permission it needs and is refused without it."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        extra = kwargs.get("openapi_extra") or {}
        if PERMISSION_KEY not in extra:
            raise TypeError(f"route {path} declares no permission: give it "
                            "openapi_extra=needs(...)")
        permission = str(extra[PERMISSION_KEY])
        if permission != PUBLIC:
            deps = list(kwargs.get("dependencies") or [])
            deps.insert(0, Depends(_guard(permission)))
            kwargs["dependencies"] = deps
        super().__init__(path, endpoint, **kwargs)


def scope(request: Request) -> Scope:
    """What the request's principal may see (one :class:`~stasis.app.scope.Scope` per
    request), for handlers: ``where: Scope = Depends(scope)``."""
    known = getattr(request.state, "scope", None)
    if isinstance(known, Scope):
        return known
    made = Scope.of(authenticate(request), request.app.state.ctx.libvirt)
    request.state.scope = made
    return made
