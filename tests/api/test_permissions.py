"""The permission matrix, generated from the routes' own declarations: for every
route and every role, a role without the route's permission gets 403 naming it, a
role with it gets past the guard, and no one gets past it without a token. A new
route is in this matrix the moment it exists."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from stasis.api.app import create_app
from stasis.api.context import ApiContext
from stasis.app.auth import AUTHENTICATED, BUILTIN_ROLES, PUBLIC


def routes(ctx: ApiContext) -> list[tuple[str, str, str]]:
    """(method, path with its parameters filled, permission) of every operation of the
    OpenAPI document (where each route's declaration is published)."""
    found = []
    for path, ops in create_app(ctx).openapi()["paths"].items():
        for method, op in ops.items():
            types = {p["name"]: p.get("schema", {}).get("type") for p in
                     op.get("parameters", []) if p["in"] == "path"}
            filled = re.sub(r"\{([^}]+)\}", lambda m, t=types: "999999" if t.get(m[1]) ==
                            "integer" else "no-such-thing", path)
            found.append((method.upper(), filled, str(op["x-permission"])))
    return found


def call(c: TestClient, method: str, path: str) -> int:
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return c.request(method, path, json=body).status_code


def test_every_role_against_every_route(client: Callable[..., TestClient],
                                        api_ctx: ApiContext) -> None:
    table = routes(api_ctx)
    assert table, "no routes found"
    wrong = []
    for role, (_desc, granted) in BUILTIN_ROLES.items():
        c = client(role)
        for method, path, permission in table:
            status = call(c, method, path)
            allowed = permission in (PUBLIC, AUTHENTICATED) or permission in granted
            if allowed and status in (401, 403):
                wrong.append(f"{role}: {method} {path} ({permission}) -> {status}")
            if not allowed:
                if status != 403:
                    wrong.append(f"{role}: {method} {path} ({permission}) -> {status}, "
                                 "not 403")
                elif c.request(method, path).json().get("permission") != permission:
                    wrong.append(f"{role}: {method} {path}: the 403 names another "
                                 "permission")
    assert not wrong, "\n".join(wrong)


def test_no_route_but_the_public_ones_answers_without_a_token(
        client: Callable[..., TestClient], api_ctx: ApiContext) -> None:
    anonymous = client(None)
    wrong = [f"{m} {p} -> {s}" for m, p, perm in routes(api_ctx)
             if perm != PUBLIC and (s := call(anonymous, m, p)) != 401]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("role", ["admin"])
def test_admin_holds_every_permission_a_route_declares(api_ctx: ApiContext,
                                                       role: str) -> None:
    declared = {perm for _m, _p, perm in routes(api_ctx)} - {PUBLIC, AUTHENTICATED}
    assert declared <= BUILTIN_ROLES[role][1]
