"""``/vms``: the inventory with filters, one VM, and its labels — by role and tenant."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.catalog.audit import AuditLog
from tests.api.resources import ACME, GLOBEX, tenant_vms  # noqa: F401

Client = Callable[..., TestClient]
pytestmark = pytest.mark.usefixtures("tenant_vms")


def names(r: object) -> list[str]:
    return [v["name"] for v in r.json()["items"]]  # type: ignore[attr-defined]


def test_list_filters_and_sorts(client: Client) -> None:
    c = client("viewer")
    assert names(c.get("/api/v1/vms")) == ["acme-app", "acme-web", "globex-db", "test"]
    assert names(c.get("/api/v1/vms", params={"name": "acme-*"})) == ["acme-app", "acme-web"]
    assert names(c.get("/api/v1/vms", params={"label": "owner=acme"})) == ["acme-app"]
    assert names(c.get("/api/v1/vms", params={"state": "running"})) == ["test"]
    assert names(c.get("/api/v1/vms", params={"protected": False, "sort": "-name"})) == \
        ["test", "globex-db", "acme-web", "acme-app"]
    page = c.get("/api/v1/vms", params={"limit": 2, "sort": "state"}).json()
    assert len(page["items"]) == 2 and page["next"]
    rest = c.get("/api/v1/vms", params={"limit": 2, "sort": "state", "cursor": page["next"]})
    assert len(rest.json()["items"]) == 2 and rest.json()["next"] is None


def test_bad_filters_answer_422_naming_them(client: Client) -> None:
    c = client("viewer")
    r = c.get("/api/v1/vms", params={"state": "dancing"})
    assert r.status_code == 422 and "state" in r.json()["detail"]
    r = c.get("/api/v1/vms", params={"label": "owner"})
    assert r.status_code == 422 and "'owner' is not KEY=VALUE" in r.json()["detail"]


def test_a_tenant_sees_its_vms_only(client: Client) -> None:
    acme, globex = client("viewer", ACME), client("viewer", GLOBEX)
    assert names(acme.get("/api/v1/vms")) == ["acme-app", "acme-web"]
    assert names(globex.get("/api/v1/vms")) == ["globex-db"]
    assert acme.get("/api/v1/vms/acme-app").json()["name"] == "acme-app"
    for vm in ("globex-db", "test", "nope"):
        r = acme.get(f"/api/v1/vms/{vm}")
        assert r.status_code == 404 and r.json()["kind"] == "VmNotFound"
    r = client("operator", GLOBEX).patch("/api/v1/vms/acme-web/labels",
                                         json={"set": {"x": "y"}})
    assert r.status_code == 404


def test_labels_patch_put_and_audit(client: Client, api_ctx: ApiContext) -> None:
    op = client("operator")
    r = op.patch("/api/v1/vms/acme-web/labels", json={"set": {"tier": "web", "env": "prod"}})
    assert r.status_code == 200 and r.json() == {"vm": "acme-web",
                                                 "labels": {"env": "prod", "tier": "web"}}
    r = op.patch("/api/v1/vms/acme-web/labels", json={"remove": ["env"]})
    assert r.json()["labels"] == {"tier": "web"}
    r = op.put("/api/v1/vms/acme-web/labels", json={"labels": {"a": "1"}})
    assert r.json()["labels"] == {"a": "1"}
    assert op.get("/api/v1/vms/acme-web/labels").json()["labels"] == {"a": "1"}
    bad = op.patch("/api/v1/vms/acme-web/labels", json={"set": {"-bad": "1"}})
    assert bad.status_code == 422 and "not a label key" in bad.json()["detail"]
    assert op.get("/api/v1/vms/acme-web/labels").json()["labels"] == {"a": "1"}
    assert [e.action for e in AuditLog(api_ctx.catalog).list()].count("vm.labels") == 3


def test_roles_without_the_permission_get_403(client: Client) -> None:
    r = client("viewer").patch("/api/v1/vms/acme-web/labels", json={"set": {"a": "b"}})
    assert r.status_code == 403 and r.json()["permission"] == "vms:write"
    assert client(None).get("/api/v1/vms").status_code == 401
