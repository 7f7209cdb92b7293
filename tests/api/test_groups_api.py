"""``/groups``: create, list, show, change and delete, with the CLI's checks; a
tenant's groups are its own and hold only its VMs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.catalog import GroupStore
from stasis.catalog.audit import AuditLog
from tests.api.resources import ACME, GLOBEX, tenant_vms  # noqa: F401

Client = Callable[..., TestClient]
pytestmark = pytest.mark.usefixtures("tenant_vms")


def test_create_show_edit_delete(client: Client, api_ctx: ApiContext) -> None:
    op = client("operator")
    r = op.post("/api/v1/groups", json={"name": "app", "vms": ["acme-web", "gone"],
                                        "select": ["globex-*"], "consistency": "crash"})
    assert r.status_code == 201
    made = r.json()
    assert made["members"] == ["acme-web", "gone"]
    assert made["resolved"] == {"members": ["acme-web", "globex-db"], "missing": ["gone"],
                                "selected": ["globex-db"]}
    assert op.get("/api/v1/groups/app").json()["members"] == ["acme-web", "gone"]
    r = op.patch("/api/v1/groups/app", json={"remove_vms": ["gone"],
                                             "add_labels": {"tier": "db"}})
    assert r.status_code == 200 and r.json()["labels"] == {"tier": "db"}
    bad = op.patch("/api/v1/groups/app", json={"remove_vms": ["never"]})
    assert bad.status_code == 422 and "is not a member" in bad.json()["detail"]
    assert bad.json()["code"] == 26
    empty = op.patch("/api/v1/groups/app", json={})
    assert empty.status_code == 422 and "nothing to change" in empty.json()["detail"]
    gone = op.delete("/api/v1/groups/app")
    assert gone.status_code == 200 and gone.json()["name"] == "app"
    missing = op.get("/api/v1/groups/app")
    assert missing.status_code == 404 and missing.json()["kind"] == "GroupNotFound"
    assert [e.action for e in AuditLog(api_ctx.catalog).list(action="group.")] == \
        ["group.delete", "group.edit", "group.create"]


def test_the_cli_checks_answer_422(client: Client) -> None:
    op = client("operator")
    for body, words in [({"name": "x"}, "would have no members"),
                        ({"name": "x", "vms": ["a"], "consistency": "perfect"}, "perfect"),
                        ({"name": "bad name!", "vms": ["a"]}, "bad name!"),
                        ({"name": "x", "vms": ["a"], "colour": 1}, "colour")]:
        r = op.post("/api/v1/groups", json=body)
        assert r.status_code == 422, body
        assert words in r.json()["detail"]
    op.post("/api/v1/groups", json={"name": "x", "vms": ["a"]})
    again = op.post("/api/v1/groups", json={"name": "x", "vms": ["b"]})
    assert again.status_code == 422 and "exists already" in again.json()["detail"]


def test_pages(client: Client) -> None:
    op = client("operator")
    for n in range(5):
        op.post("/api/v1/groups", json={"name": f"g{n}", "vms": ["acme-web"]})
    seen, cursor = [], None
    while True:
        page = op.get("/api/v1/groups", params={"limit": 2, "sort": "-name"}
                      | ({"cursor": cursor} if cursor else {})).json()
        seen += [g["name"] for g in page["items"]]
        if (cursor := page["next"]) is None:
            break
    assert seen == ["g4", "g3", "g2", "g1", "g0"]


def test_a_tenants_groups(client: Client, api_ctx: ApiContext) -> None:
    acme, globex, admin = (client("operator", ACME), client("operator", GLOBEX),
                           client("admin"))
    assert admin.post("/api/v1/groups", json={"name": "sys", "vms": ["test"]}).status_code \
        == 201
    r = acme.post("/api/v1/groups", json={"name": "web", "vms": ["acme-web", "acme-app"]})
    assert r.status_code == 201
    assert GroupStore(api_ctx.catalog).must_get("web").tenant == "acme"
    # members and selectors that could reach VMs not its own are refused
    for body in ({"name": "w2", "vms": ["globex-db"]}, {"name": "w2", "vms": ["nope"]},
                 {"name": "w2", "select": ["*"]}, {"name": "w2", "labels": {"a": "b"}}):
        refused = acme.post("/api/v1/groups", json=body)
        assert refused.status_code == 422 and "tenant 'acme'" in refused.json()["detail"]
    refused = acme.post("/api/v1/groups", json={"name": "w2", "select": ["acme-*"],
                                                "labels": {"owner": "acme"}})
    assert refused.status_code == 422 and "by name" in refused.json()["detail"]
    ok = acme.post("/api/v1/groups", json={"name": "w3", "labels": {"owner": "acme"}})
    assert ok.status_code == 201 and ok.json()["resolved"]["members"] == ["acme-app"]
    assert [g["name"] for g in acme.get("/api/v1/groups").json()["items"]] == ["w3", "web"]
    assert [g["name"] for g in globex.get("/api/v1/groups").json()["items"]] == []
    assert [g["name"] for g in admin.get("/api/v1/groups").json()["items"]] == \
        ["sys", "w3", "web"]
    for method, path, body in [("get", "/api/v1/groups/web", None),
                               ("patch", "/api/v1/groups/web", {"remove_vms": ["acme-app"]}),
                               ("delete", "/api/v1/groups/web", None),
                               ("get", "/api/v1/groups/sys", None)]:
        r = globex.request(method, path, json=body)
        missing = globex.request(method, "/api/v1/groups/nope", json=body)
        assert r.status_code == 404 == missing.status_code, (method, path)
        assert r.json()["detail"].replace("'web'", "'nope'").replace("'sys'", "'nope'") \
            == missing.json()["detail"]
    # an edit that would add another's VM is refused whole
    r = acme.patch("/api/v1/groups/web", json={"add_vms": ["globex-db"]})
    assert r.status_code == 422
    assert acme.get("/api/v1/groups/web").json()["members"] == ["acme-web", "acme-app"]


def test_roles_without_the_permission_get_403(client: Client) -> None:
    v = client("viewer")
    assert v.get("/api/v1/groups").status_code == 200
    for method in ("post", "patch", "delete"):
        path = "/api/v1/groups" + ("" if method == "post" else "/x")
        r = v.request(method, path, json={"name": "x", "vms": ["a"]})
        assert r.status_code == 403 and r.json()["permission"] == "groups:write"
