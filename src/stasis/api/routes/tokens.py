"""``/tokens``: API tokens, one's own (``tokens:own``) or, for admins, anyone's."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from stasis.api.guard import GuardedRoute, needs, principal
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.app import accounts
from stasis.app.auth import Principal
from stasis.app.models import TokenCreated, TokenModel

router = APIRouter(route_class=GuardedRoute, tags=["tokens"])


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    expires: str | None = Field(None, description="30d, 12h, 90m, 2w, a date, an ISO "
                                                  "time or never (default 90d)")
    role: str | None = Field(None, description="a narrower role than the user's")
    permissions: list[str] | None = Field(None, description="a subset of permissions")
    user: str | None = Field(None, description="another user's (needs users:admin)")


@router.get("/tokens", openapi_extra=needs("tokens:own"), response_model=Page[TokenModel])
def list_tokens(request: Request, user: str | None = Query(
                    None, description="another user's tokens (needs users:admin)"),
                all_users: bool = Query(False, alias="all",
                                        description="every user's (needs users:admin)"),
                q: ListQuery = Depends(list_query),
                who: Principal = Depends(principal)) -> Page[TokenModel]:
    """The tokens of the request's user (or of ``user``, or of all), never their
    secrets."""
    of = None if all_users else (user or who.user)
    tokens = accounts.list_tokens(request.app.state.ctx.catalog, of, who=who)
    return paginate(tokens, q, sorts={"id": lambda t: t.id, "name": lambda t: t.name,
                                      "created": lambda t: t.created,
                                      "expires": lambda t: t.expires,
                                      "last_used": lambda t: t.last_used},
                    default="id", ident=lambda t: t.id)


@router.post("/tokens", openapi_extra=needs("tokens:own"), response_model=TokenCreated,
             status_code=201)
def create_token(body: NewToken, request: Request,
                 who: Principal = Depends(principal)) -> TokenCreated:
    """A new token: its secret is in this answer only, and is stored as its hash."""
    return accounts.create_token(request.app.state.ctx.catalog, body.user or who.user,
                                 body.name, expires=body.expires, role=body.role,
                                 permissions=body.permissions, who=who)


@router.delete("/tokens/{ident}", openapi_extra=needs("tokens:own"),
               response_model=TokenModel)
def revoke_token(ident: int, request: Request,
                 who: Principal = Depends(principal)) -> TokenModel:
    """Revoke a token: one's own, or anyone's with users:admin (another user's token
    is, to anyone else, a missing one)."""
    return accounts.revoke_token(request.app.state.ctx.catalog, ident, who=who)
