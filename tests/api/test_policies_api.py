"""``/policies``: stored in the catalog, written as JSON or TOML and checked as policy
files are, exported, edited, deleted; templates offered to tenants."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.catalog import PolicyStore
from stasis.catalog.audit import AuditLog
from stasis.repository import Repository
from stasis.service.policy import parse_policies
from tests.api.resources import ACME, GLOBEX, commit, tenant_vms  # noqa: F401

Client = Callable[..., TestClient]
TOML = {"Content-Type": "application/toml"}
FILE = """\
[[policy]]
name = "nightly"
vms = ["acme-web"]
cron = "0 2 * * *"
timezone = "Europe/Paris"
retention = { keep_last = 2 }

[[policy]]
name = "hourly"
vms = ["globex-db"]
every = "1h"
"""


def test_import_list_export_and_next_runs(client: Client, api_ctx: ApiContext) -> None:
    op = client("operator")
    r = op.post("/api/v1/policies", content=FILE, headers=TOML)
    assert r.status_code == 201 and [p["name"] for p in r.json()] == ["nightly", "hourly"]
    page = op.get("/api/v1/policies", params={"after": "2026-03-28T12:00:00+00:00"}).json()
    assert [p["name"] for p in page["items"]] == ["hourly", "nightly"]
    nightly = page["items"][1]["policy"]
    # in the policy's own zone, across the DST change of 2026-03-29
    assert nightly["next_runs"][1:3] == ["2026-03-30T02:00:00+02:00",
                                         "2026-03-31T02:00:00+02:00"]
    exported = op.get("/api/v1/policies/nightly/export")
    assert exported.headers["content-type"].startswith("application/toml")
    assert [p.name for p in parse_policies(exported.text)] == ["nightly"]
    assert PolicyStore(api_ctx.catalog).get("nightly") is not None


def test_json_create_put_patch_delete(client: Client, api_ctx: ApiContext) -> None:
    op = client("operator")
    r = op.post("/api/v1/policies", json={"name": "web", "vms": ["acme-web"], "every": "6h",
                                          "retention": {"keep_daily": 7}})
    assert r.status_code == 201
    shown = op.get("/api/v1/policies/web").json()
    assert shown["policy"]["schedule"] == {"timezone": "UTC", "every": "6h"}
    assert shown["policy"]["retention"]["counts"]["daily"] == 7
    r = op.patch("/api/v1/policies/web", json={"every": None, "cron": "0 3 * * *",
                                               "description": "three o'clock"})
    assert r.status_code == 200 and r.json()["policy"]["schedule"]["cron"] == "0 3 * * *"
    assert r.json()["policy"]["description"] == "three o'clock"
    r = op.put("/api/v1/policies/web", json={"vms": ["acme-app"], "every": "1d"})
    assert r.status_code == 200 and r.json()["policy"]["members"]["vms"] == ["acme-app"]
    assert r.json()["policy"]["description"] == ""
    gone = op.delete("/api/v1/policies/web")
    assert gone.status_code == 200 and gone.json()["name"] == "web"
    missing = op.get("/api/v1/policies/web")
    assert missing.status_code == 404 and missing.json()["kind"] == "PolicyNotFound"
    assert [e.action for e in AuditLog(api_ctx.catalog).list(action="policy.")] == \
        ["policy.delete", "policy.replace", "policy.edit", "policy.create"]


def test_bad_policies_are_refused_whole_naming_each_problem(client: Client,
                                                             api_ctx: ApiContext) -> None:
    op = client("operator")
    r = op.post("/api/v1/policies", json={"name": "x", "vms": ["a"], "every": "6h",
                                          "retention": {"keep_daily": "seven"},
                                          "colour": "blue"})
    assert r.status_code == 422 and r.json()["kind"] == "PolicyError"
    assert r.json()["code"] == 29
    problems = r.json()["problems"]
    assert any("keep_daily" in p for p in problems) and any("colour" in p for p in problems)
    r = op.post("/api/v1/policies", content=FILE.replace('every = "1h"', 'every = 7'),
                headers=TOML)
    assert r.status_code == 422
    assert any(":11: policy 'hourly': every" in p for p in r.json()["problems"])
    assert PolicyStore(api_ctx.catalog).list() == []  # nothing of the file was stored
    r = op.post("/api/v1/policies", json={"name": "y", "vms": ["a"], "every": "1h",
                                          "repository": "elsewhere"})
    assert r.status_code == 422 and "elsewhere" in r.json()["detail"]
    assert op.post("/api/v1/policies", content="[[policy]\n", headers=TOML).status_code == 422
    assert op.post("/api/v1/policies", content="x", headers={
        "Content-Type": "text/plain"}).status_code == 422
    op.post("/api/v1/policies", json={"name": "z", "vms": ["a"], "every": "1h"})
    again = op.post("/api/v1/policies", json={"name": "z", "vms": ["b"], "every": "1h"})
    assert again.status_code == 422 and "exists" in again.json()["detail"]
    renamed = op.patch("/api/v1/policies/z", json={"name": "zz"})
    assert renamed.status_code == 422


@pytest.mark.usefixtures("tenant_vms")
def test_templates_and_tenants(client: Client, api_ctx: ApiContext) -> None:
    admin, op = client("admin"), client("operator")
    acme, globex = client("operator", ACME), client("operator", GLOBEX)
    gold = {"name": "gold", "every": "1h", "retention": {"keep_last": 24}, "vms": ["test"]}
    refused = op.post("/api/v1/policies", params={"template": True}, json=gold)
    assert refused.status_code == 403 and refused.json()["permission"] == "users:admin"
    assert admin.post("/api/v1/policies", params={"template": True}, json=gold).status_code \
        == 201
    assert op.post("/api/v1/policies", json={"name": "sys", "vms": ["test"],
                                             "every": "1d"}).status_code == 201
    # a tenant sees the template and makes its own policy of it, of its own VMs
    assert [p["name"] for p in acme.get("/api/v1/policies").json()["items"]] == ["gold"]
    r = acme.post("/api/v1/policies", json={"from_template": "gold", "name": "acme-gold",
                                            "vms": ["acme-web"]})
    assert r.status_code == 201
    made = r.json()[0]
    assert made["tenant"] == "acme" and not made["template"]
    assert made["policy"]["retention"]["counts"]["last"] == 24
    assert made["policy"]["members"]["vms"] == ["acme-web"]
    assert [p["name"] for p in acme.get("/api/v1/policies").json()["items"]] == \
        ["acme-gold", "gold"]
    assert [p["name"] for p in globex.get("/api/v1/policies").json()["items"]] == ["gold"]
    for body in ({"name": "p", "vms": ["globex-db"], "every": "1h"},
                 {"name": "p", "select": ["*"], "every": "1h"},
                 {"from_template": "gold", "name": "p", "vms": ["nope"]}):
        r = acme.post("/api/v1/policies", json=body)
        assert r.status_code == 422 and "acme" in r.json()["detail"], body
    # another tenant's policy is not there, for any verb
    for method in ("get", "delete"):
        r = globex.request(method, "/api/v1/policies/acme-gold")
        assert r.status_code == 404, method
        assert globex.request(method, "/api/v1/policies/sys").status_code == 404
    assert globex.patch("/api/v1/policies/acme-gold", json={"every": "2h"}).status_code == 404
    assert globex.get("/api/v1/policies/acme-gold/export").status_code == 404
    # templates are the admins' to change
    r = acme.patch("/api/v1/policies/gold", json={"every": "2h"})
    assert r.status_code == 403 and r.json()["permission"] == "users:admin"
    assert acme.delete("/api/v1/policies/acme-gold").status_code == 200


def test_retention_preview(client: Client, repo: Repository) -> None:
    op = client("operator")
    op.post("/api/v1/policies", json={"name": "web", "vms": ["acme-web"], "every": "1d",
                                      "retention": {"keep_last": 2}})
    for n in (1, 2, 3):
        commit(repo, n, ["acme-web"], name="acme-web", tags={"policy": "web"})
    commit(repo, 4, ["other"], name="other")
    r = op.get("/api/v1/policies/web/retention-preview")
    assert r.status_code == 200
    body = r.json()
    assert body["chains"] == ["acme-web"]
    assert body["removed"] == [f"{1:032x}"] and len(body["kept"]) == 2
    assert len(repo.points()) == 4  # nothing was removed


def test_roles_without_the_permission_get_403(client: Client) -> None:
    v = client("viewer")
    assert v.get("/api/v1/policies").status_code == 200
    r = v.post("/api/v1/policies", json={"name": "x"})
    assert r.status_code == 403 and r.json()["permission"] == "policies:write"
    for method in ("put", "patch", "delete"):
        assert v.request(method, "/api/v1/policies/x", json={}).status_code == 403


def test_policy_writes_are_refused_when_serve_runs_a_policy_file(
        client: Client, api_ctx: ApiContext, tmp_path: pathlib.Path) -> None:
    op = client("operator")
    body = {"name": "web", "vms": ["acme-web"], "every": "6h"}
    assert op.post("/api/v1/policies", json=body).status_code == 201
    api_ctx.policy_file = tmp_path / "policies.toml"
    for r in (op.post("/api/v1/policies", json=body),
              op.put("/api/v1/policies/web", json=body),
              op.patch("/api/v1/policies/web", json={"every": "1h"}),
              op.delete("/api/v1/policies/web")):
        assert r.status_code == 409, r.text
        assert r.json()["kind"] == "PoliciesFromFile" and r.json()["code"] == 70
        assert str(api_ctx.policy_file) in r.json()["detail"]
    assert op.get("/api/v1/policies/web").status_code == 200  # reads still answer
    assert client("viewer").delete("/api/v1/policies/web").status_code == 403


def test_an_unsaved_policy_is_previewed_checked_and_not_stored(
        client: Client, api_ctx: ApiContext, repo: Repository) -> None:
    """The editor's preview: an edited policy's next runs in its zone and what its new
    retention would keep and remove, before anything is saved; a wrong one is refused
    as a save would be, naming the field."""
    op = client("operator")
    op.post("/api/v1/policies", json={"name": "web", "vms": ["acme-web"], "every": "1d",
                                      "retention": {"keep_last": 3}})
    for n in (1, 2, 3):
        commit(repo, n, ["acme-web"], name="acme-web", tags={"policy": "web"})
    edited = {"name": "web", "vms": ["acme-web"], "cron": "0 2 * * *",
              "timezone": "Europe/Paris", "retention": {"keep_last": 1}}
    r = op.post("/api/v1/policies/preview", json=edited,
                params={"after": "2026-03-28T12:00:00+00:00"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["policy"]["next_runs"][1] == "2026-03-30T02:00:00+02:00"
    assert body["retention"]["chains"] == ["acme-web"]
    assert body["retention"]["kept"] == [f"{3:032x}"]
    assert body["retention"]["removed"] == [f"{1:032x}", f"{2:032x}"]
    assert all(d["reasons"] for d in body["retention"]["points"])
    # nothing was stored or removed: the saved policy still keeps three
    saved = op.get("/api/v1/policies/web/retention-preview").json()
    assert len(saved["kept"]) == 3 and len(repo.points()) == 3
    assert op.get("/api/v1/policies/web").json()["policy"]["schedule"]["every"] == "1d"
    # as TOML too (an imported file, previewed before it is imported)
    r = op.post("/api/v1/policies/preview", content=FILE.split("\n\n")[0] + "\n",
                headers=TOML)
    assert r.status_code == 200 and r.json()["retention"]["chains"] == []
    bad = op.post("/api/v1/policies/preview", json={**edited, "retention": {
        "keep_last": "one"}})
    assert bad.status_code == 422 and bad.json()["kind"] == "PolicyError"
    assert any("keep_last" in p for p in bad.json()["problems"]), bad.json()
    two = op.post("/api/v1/policies/preview", content=FILE, headers=TOML)
    assert two.status_code == 422 and "one policy" in two.json()["detail"]
    assert AuditLog(api_ctx.catalog).list(action="policy.edit") == []


@pytest.mark.usefixtures("tenant_vms")
def test_a_tenant_previews_only_its_own_chains(client: Client, repo: Repository) -> None:
    op, acme = client("operator"), client("operator", ACME)
    op.post("/api/v1/policies", json={"name": "sys", "vms": ["globex-db"], "every": "1d"})
    commit(repo, 1, ["globex-db"], name="globex-db", tags={"policy": "sys"})
    commit(repo, 2, ["acme-web"], name="acme-web", tags={"policy": "mine"})
    # the system's policy of that name: the tenant sees none of its points
    r = acme.post("/api/v1/policies/preview", json={"name": "sys", "vms": ["acme-web"],
                                                    "every": "1d"})
    assert r.status_code == 200 and r.json()["retention"]["points"] == []
    # nor of a name nobody stored; nor may it name another's VM
    r = acme.post("/api/v1/policies/preview", json={"name": "mine", "vms": ["acme-web"],
                                                    "every": "1d"})
    assert r.status_code == 200 and r.json()["retention"]["points"] == []
    foreign = acme.post("/api/v1/policies/preview", json={"name": "x", "vms": ["globex-db"],
                                                          "every": "1d"})
    assert foreign.status_code == 422 and "globex-db" in foreign.json()["detail"]
