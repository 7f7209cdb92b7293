"""The accounts' routes over real accounts: sign-in and sessions (cookie + CSRF),
tokens, users, tenants, roles and the audit log, each for what it does, for a role
without its permission (403) and, where it is someone else's, as missing (404)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient

from stasis.api.app import create_app
from stasis.api.context import ApiContext
from stasis.app import accounts as acc
from stasis.app.auth import BUILTIN_ROLES, Tenant
from stasis.catalog import Catalog
from stasis.clock import SYSTEM_CLOCK
from tests.api.conftest import PASSWORD
from tests.clocks import ManualClock

Make = Callable[..., TestClient]
V1 = "/api/v1"


def browser(ctx: ApiContext) -> TestClient:
    return TestClient(create_app(ctx), raise_server_exceptions=False)


def problem(r: object, status: int, kind: str) -> dict[str, object]:
    assert r.status_code == status, (r.status_code, r.text)  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = r.json()  # type: ignore[attr-defined]
    assert body["kind"] == kind, body
    return body


def test_sign_in_sets_a_strict_cookie_and_csrf_guards_unsafe_requests(
        real_ctx: ApiContext, real_client: Make) -> None:
    real_client("operator", user="ann")
    b = browser(real_ctx)
    r = b.post(f"{V1}/session", json={"user": "ann", "password": PASSWORD.decode()})
    assert r.status_code == 200, r.text
    started = r.json()
    assert started["me"]["user"] == "ann" and started["me"]["session"] is True
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{real_ctx.session_cookie}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert b.get(f"{V1}/me").json()["user"] == "ann"  # GET needs no CSRF token
    refused = problem(b.post(f"{V1}/tokens", json={"name": "x"}), 403, "PermissionDenied")
    assert refused["permission"] == "csrf"
    made = b.post(f"{V1}/tokens", json={"name": "x"},
                  headers={"X-CSRF-Token": started["csrf"]})
    assert made.status_code == 201, made.text
    problem(b.delete(f"{V1}/session", headers={"X-CSRF-Token": "wrong"}), 403,
            "PermissionDenied")
    assert b.delete(f"{V1}/session", headers={"X-CSRF-Token": started["csrf"]}
                    ).status_code == 204
    problem(b.get(f"{V1}/me"), 401, "NotAuthenticated")
    lines = [(a.action, a.result) for a in acc.list_audit(real_ctx.catalog, user="ann")]
    assert ("login", "ok") in lines and ("logout", "ok") in lines


def test_wrong_password_and_unknown_user_answer_alike_then_429(
        real_ctx: ApiContext, real_client: Make) -> None:
    real_client("viewer", user="ann")
    b = browser(real_ctx)
    wrong = problem(b.post(f"{V1}/session", json={"user": "ann", "password": "nope"}),
                    401, "NotAuthenticated")
    unknown = problem(b.post(f"{V1}/session", json={"user": "zed", "password": "nope"}),
                      401, "NotAuthenticated")
    assert wrong == unknown
    for _ in range(acc.MAX_FAILURES - 2):
        b.post(f"{V1}/session", json={"user": "ann", "password": "nope"})
    r = b.post(f"{V1}/session", json={"user": "ann", "password": PASSWORD.decode()})
    body = problem(r, 429, "TooManyAttempts")
    assert body["code"] == 62 and int(r.headers["retry-after"]) > 0
    failed = [a for a in acc.list_audit(real_ctx.catalog, action="login")
              if a.result == "failed"]
    assert {a.user for a in failed} == {"ann", "zed"}


def test_a_success_resets_the_count(real_ctx: ApiContext, real_client: Make) -> None:
    real_client("viewer", user="ann")
    b = browser(real_ctx)
    for _ in range(2):
        for _ in range(acc.MAX_FAILURES - 1):
            problem(b.post(f"{V1}/session", json={"user": "ann", "password": "nope"}), 401,
                    "NotAuthenticated")
        assert b.post(f"{V1}/session", json={"user": "ann", "password": PASSWORD.decode()}
                      ).status_code == 200


def test_tokens_are_made_listed_used_and_revoked(real_ctx: ApiContext,
                                                 real_client: Make) -> None:
    ann = real_client("backup", user="ann")
    made = ann.post(f"{V1}/tokens", json={"name": "ci", "expires": "7d",
                                          "permissions": ["backups:run", "points:read",
                                                          "tokens:own"]})
    assert made.status_code == 201, made.text
    secret, token = made.json()["secret"], made.json()["token"]
    assert token["permissions"] == ["backups:run", "points:read", "tokens:own"]
    listed = ann.get(f"{V1}/tokens")
    assert listed.status_code == 200 and secret not in listed.text
    assert [t["name"] for t in listed.json()["items"]] == ["test", "ci"]
    ci = TestClient(create_app(real_ctx), raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {secret}"})
    me = ci.get(f"{V1}/me").json()
    assert {p["name"] for p in me["permissions"]} == {"backups:run", "points:read",
                                                      "tokens:own"}
    assert ann.get(f"{V1}/tokens").json()["items"][1]["last_used"] is not None
    # never more than the user
    body = problem(ann.post(f"{V1}/tokens", json={"name": "x", "role": "operator"}), 409,
                   "AccountError")
    assert "restores:run" in str(body["detail"])
    # the narrower token cannot make a wider one
    problem(ci.post(f"{V1}/tokens", json={"name": "y", "permissions": ["jobs:read"]}), 409,
            "AccountError")
    # another user's tokens: 404 to revoke, 403 to list
    bob = real_client("backup", user="bob")
    problem(bob.delete(f"{V1}/tokens/{token['id']}"), 404, "AccountNotFound")
    problem(bob.get(f"{V1}/tokens", params={"user": "ann"}), 403, "PermissionDenied")
    problem(bob.post(f"{V1}/tokens", json={"name": "z", "user": "ann"}), 403,
            "PermissionDenied")
    assert ann.delete(f"{V1}/tokens/{token['id']}").json()["state"] == "revoked"
    problem(ci.get(f"{V1}/me"), 401, "NotAuthenticated")
    # an admin sees and revokes anyone's
    admin = real_client("admin")
    assert {t["user"] for t in admin.get(f"{V1}/tokens", params={"all": True}).json()[
        "items"]} >= {"ann", "bob"}
    bobs = admin.get(f"{V1}/tokens", params={"user": "bob"}).json()["items"]
    assert admin.delete(f"{V1}/tokens/{bobs[0]['id']}").status_code == 200
    problem(bob.get(f"{V1}/me"), 401, "NotAuthenticated")
    problem(real_client("viewer").delete(f"{V1}/tokens/999"), 404, "AccountNotFound")


def test_an_expired_token_is_refused(real_ctx: ApiContext, real_client: Make) -> None:
    real_client("viewer", user="ann")
    # made by a host whose clock was two days behind, for one day: expired now
    past = ManualClock(SYSTEM_CLOCK.now() - timedelta(days=2))
    with Catalog.open(str(real_ctx.catalog.url), clock=past) as behind:
        secret = acc.create_token(behind, "ann", "old", expires="1d").secret
    c = TestClient(create_app(real_ctx), raise_server_exceptions=False,
                   headers={"Authorization": f"Bearer {secret}"})
    body = problem(c.get(f"{V1}/me"), 401, "NotAuthenticated")
    assert "expired" in str(body["detail"])
    problem(TestClient(create_app(real_ctx), raise_server_exceptions=False,
                       headers={"Authorization": "Bearer stasis_nothing_here"}
                       ).get(f"{V1}/me"), 401, "NotAuthenticated")


def test_users_administered_disabled_and_demoted(real_ctx: ApiContext,
                                                 real_client: Make) -> None:
    admin = real_client("admin")
    ann = real_client("operator", user="ann")
    assert ann.get(f"{V1}/audit").status_code == 200
    problem(ann.get(f"{V1}/users"), 403, "PermissionDenied")
    problem(ann.post(f"{V1}/users", json={"name": "x", "role": "admin",
                                          "password": "long enough"}), 403,
            "PermissionDenied")
    r = admin.post(f"{V1}/users", json={"name": "carl", "role": "viewer",
                                        "password": "long enough"})
    assert r.status_code == 201 and r.json()["role"] == "viewer"
    problem(admin.post(f"{V1}/users", json={"name": "carl", "role": "viewer",
                                            "password": "long enough"}), 409, "AccountError")
    problem(admin.post(f"{V1}/users", json={"name": "dan", "role": "viewer",
                                            "password": "short"}), 422, "UsageError")
    assert [u["name"] for u in admin.get(f"{V1}/users").json()["items"]] == [
        "admin-1", "ann", "carl"]
    assert admin.get(f"{V1}/users/carl").json()["name"] == "carl"
    problem(admin.get(f"{V1}/users/nobody"), 404, "AccountNotFound")
    # demoted: the token loses the rights at once
    assert admin.patch(f"{V1}/users/ann", json={"role": "viewer"}).json()["role"] == "viewer"
    problem(ann.get(f"{V1}/audit"), 403, "PermissionDenied")
    # disabled: the token stops working; enabled: back
    assert admin.patch(f"{V1}/users/ann", json={"disabled": True}).json()["disabled"]
    problem(ann.get(f"{V1}/me"), 401, "NotAuthenticated")
    admin.patch(f"{V1}/users/ann", json={"disabled": False})
    assert ann.get(f"{V1}/me").status_code == 200
    assert admin.delete(f"{V1}/users/ann").json() == {"kind": "user", "name": "ann"}
    problem(ann.get(f"{V1}/me"), 401, "NotAuthenticated")
    actions = [a.action for a in acc.list_audit(real_ctx.catalog, user="admin-1")]
    assert actions[:4] == ["user.remove", "user.edit", "user.edit", "user.edit"]


def test_tenants_and_roles_through_the_api(real_client: Make) -> None:
    admin = real_client("admin")
    r = admin.post(f"{V1}/tenants", json={"name": "acme", "vms": ["web1"],
                                          "labels": {"owner": "acme"},
                                          "restore_pools": ["acme"]})
    assert r.status_code == 201 and r.json()["labels"] == {"owner": "acme"}
    changed = admin.patch(f"{V1}/tenants/acme", json={"add_vms": ["db1"],
                                                      "restore_dirs": ["/srv/acme"]}).json()
    assert changed["vms"] == ["web1", "db1"] and changed["restore_dirs"] == ["/srv/acme"]
    problem(admin.patch(f"{V1}/tenants/acme", json={"restore_dirs": ["rel"]}), 422,
            "UsageError")
    assert [t["name"] for t in admin.get(f"{V1}/tenants").json()["items"]] == ["acme"]
    tenant_admin = real_client("admin", Tenant("acme"))
    # /me tells a tenant's user where it may restore to (the console offers it)
    assert tenant_admin.get(f"{V1}/me").json()["tenant"] == {
        "name": "acme", "restore_pools": ["acme"], "restore_networks": [],
        "restore_dirs": ["/srv/acme"]}
    problem(tenant_admin.get(f"{V1}/tenants"), 403, "PermissionDenied")
    problem(tenant_admin.post(f"{V1}/users", json={"name": "evil", "role": "admin",
                                                   "password": "long enough"}), 403,
            "PermissionDenied")
    problem(admin.delete(f"{V1}/tenants/acme"), 409, "AccountError")  # it has a user
    problem(admin.get(f"{V1}/tenants/other"), 404, "AccountNotFound")

    roles = {r["name"] for r in admin.get(f"{V1}/roles", params={"limit": 1000}
                                          ).json()["items"]}
    assert set(BUILTIN_ROLES) <= roles
    made = admin.post(f"{V1}/roles", json={"name": "peek", "permissions": ["vms:read"]})
    assert made.status_code == 201 and made.json()["builtin"] is False
    problem(admin.post(f"{V1}/roles", json={"name": "bad", "permissions": ["x:y"]}), 422,
            "UsageError")
    assert admin.get(f"{V1}/roles/peek").json()["permissions"] == ["vms:read"]
    peeker = real_client("peek")
    assert [p["name"] for p in peeker.get(f"{V1}/me").json()["permissions"]] == ["vms:read"]
    problem(peeker.get(f"{V1}/roles"), 403, "PermissionDenied")
    problem(admin.delete(f"{V1}/roles/peek"), 409, "AccountError")  # held
    problem(admin.delete(f"{V1}/roles/viewer"), 409, "AccountError")  # built-in


def test_audit_is_listed_paged_and_a_tenants_auditor_sees_its_own(
        real_ctx: ApiContext, real_client: Make) -> None:
    admin = real_client("admin")
    for name in ("t1", "t2", "t3"):
        admin.post(f"{V1}/roles", json={"name": name, "permissions": ["vms:read"]})
    page = admin.get(f"{V1}/audit", params={"action": "role.", "limit": 2}).json()
    assert [a["object"] for a in page["items"]] == ["role:t3", "role:t2"]
    rest = admin.get(f"{V1}/audit", params={"action": "role.", "limit": 2,
                                            "cursor": page["next"]}).json()
    assert [a["object"] for a in rest["items"]] == ["role:t1"] and rest["next"] is None
    assert admin.get(f"{V1}/audit", params={"since": "2999-01-01T00:00:00"}
                     ).json()["items"] == []
    # a tenant's auditor: only lines of its tenant
    watcher = real_client("auditor", Tenant("acme"), user="watcher")
    watcher.post(f"{V1}/tokens", json={"name": "mine"})
    lines = watcher.get(f"{V1}/audit").json()["items"]
    assert lines and {a["tenant"] for a in lines} == {"acme"}
    problem(real_client("viewer").get(f"{V1}/audit"), 403, "PermissionDenied")
    problem(real_client(None).get(f"{V1}/audit"), 401, "NotAuthenticated")
