"""The API's guard and errors: every route declares a permission, requests without a
principal or without the permission are refused as problem+json, bodies are bounded."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.api.guard import GuardedRoute
from stasis.app.auth import BUILTIN_ROLES, PERMISSIONS, Tenant


def test_me_shows_the_effective_rights(client: Callable[..., TestClient]) -> None:
    r = client("backup", Tenant("acme", vms=frozenset({"web1"}))).get("/api/v1/me")
    assert r.status_code == 200
    body = r.json()
    assert body["role"] == "backup"
    assert body["tenant"]["name"] == "acme"
    assert {p["name"] for p in body["permissions"]} == set(BUILTIN_ROLES["backup"][1])
    assert all(p["description"] == PERMISSIONS[p["name"]] for p in body["permissions"])


def test_no_token_is_a_401_problem(client: Callable[..., TestClient]) -> None:
    r = client(None).get("/api/v1/me")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    body = r.json()
    assert body["type"] == "/api/v1/problems/not-authenticated"
    assert body["code"] == 60 and body["status"] == 401


@pytest.mark.parametrize("header", ["Bearer nope", "Basic dXNlcjpwdw==", "Bearer "])
def test_a_wrong_authorization_is_refused(client: Callable[..., TestClient],
                                          header: str) -> None:
    c = client(None)
    r = c.get("/api/v1/me", headers={"Authorization": header})
    assert r.status_code == 401 and r.json()["kind"] == "NotAuthenticated"


def test_a_route_without_a_permission_cannot_be_made() -> None:
    router = APIRouter(route_class=GuardedRoute)
    with pytest.raises(TypeError, match="declares no permission"):
        @router.get("/unguarded")
        def unguarded() -> None: ...


def test_an_unknown_route_is_a_404_problem(client: Callable[..., TestClient]) -> None:
    r = client().get("/api/v1/no-such-thing")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_a_body_far_too_large_is_refused_before_it_is_read(
        client: Callable[..., TestClient], api_ctx: ApiContext) -> None:
    r = client().post("/api/v1/me", content=b"x" * (api_ctx.max_body + 1))
    assert r.status_code == 413
    assert r.json()["code"] == 63


def test_every_route_declares_its_permission_in_the_openapi(
        client: Callable[..., TestClient]) -> None:
    doc = client(None).get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "x-permission" in op, f"{method.upper()} {path}"


def test_requests_share_one_libvirt_connection_opened_again_when_dropped(
        api_ctx: ApiContext) -> None:
    first = api_ctx.libvirt()
    assert api_ctx.libvirt() is first and first.isAlive()
    first.close()  # libvirtd dropped it, say
    again = api_ctx.libvirt()
    assert again is not first and again.isAlive()
