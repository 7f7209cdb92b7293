"""``/drills``: a drill started as a job (202, queued for the service), bad checks
refused as problem+json, tenants refused; the newest drill of each VM and group listed
(a tenant's own VMs' only); ``/group-status``: each group's newest point and drill."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.catalog import DrillRecord, DrillStore, JobStore
from stasis.repository import Repository
from tests.api.resources import ACME, GLOBEX, commit, tenant_vms  # noqa: F401

Client = Callable[..., TestClient]
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_drill_is_queued_as_a_job_and_bad_input_is_refused(
        client: Client, repo: Repository, real_ctx: ApiContext) -> None:
    commit(repo, 1, ["acme-web"])
    op = client("operator")
    r = op.post("/api/v1/drills", json={"target": "acme-web", "mode": "instant",
                                        "checks": ["tcp~30:443", "exec:true"]})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert job["kind"] == "drill" and job["state"] == "queued" and job["name"] == "acme-web"
    stored = JobStore(real_ctx.catalog).get(job["id"])
    assert stored.params["op"] == "drill" and stored.params["mode"] == "instant"
    assert [c["kind"] for c in stored.params["checks"]] == ["tcp", "exec"]
    assert stored.params["checks"][0]["timeout_s"] == 30.0
    bad = op.post("/api/v1/drills", json={"target": "acme-web", "checks": ["tcp:http"]})
    assert bad.status_code == 422 and "the port must be a number" in bad.json()["detail"]
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert op.post("/api/v1/drills", json={"target": "x", "mode": "sideways"}
                   ).status_code == 422
    for body, says in (({"pool": "fast", "storage": "/srv/d"}, "--pool and --storage"),
                       ({"pool": "fast", "mode": "instant"}, "an instant drill restores no")):
        bad = op.post("/api/v1/drills", json={"target": "acme-web"} | body)
        assert bad.status_code == 422 and says in bad.json()["detail"], bad.text
    assert len(JobStore(real_ctx.catalog).list(kind="drill")) == 1  # nothing else queued
    pooled = op.post("/api/v1/drills", json={"target": "acme-web", "pool": "fast"})
    assert pooled.status_code == 202, pooled.text
    assert JobStore(real_ctx.catalog).get(pooled.json()["job"]["id"]).params["pool"] == "fast"


@pytest.mark.usefixtures("tenant_vms")
def test_drills_are_the_systems_and_tenants_read_their_own(
        client: Client, repo: Repository, real_ctx: ApiContext) -> None:
    commit(repo, 1, ["acme-web"])
    acme = client("restore", ACME)
    r = acme.post("/api/v1/drills", json={"target": "acme-web"})
    assert r.status_code == 403 and "a drill is system-wide" in r.json()["detail"]
    store = DrillStore(real_ctx.catalog)
    for kind, subject, passed in (("vm", "acme-web", True), ("vm", "globex-db", False),
                                  ("group", "shop", True)):
        store.record(DrillRecord(kind, subject, "d1", "ab" * 16, subject, "restore", passed,
                                 41.5 if passed else None, NOW - timedelta(minutes=1), NOW,
                                 checks=[]))
    rows = client("viewer").get("/api/v1/drills").json()["items"]
    assert [(r["subject_kind"], r["subject"], r["passed"]) for r in rows] == [
        ("group", "shop", True), ("vm", "acme-web", True), ("vm", "globex-db", False)]
    assert [r["subject"] for r in client("viewer").get(
        "/api/v1/drills", params={"passed": "false"}).json()["items"]] == ["globex-db"]
    assert [r["subject"] for r in acme.get("/api/v1/drills").json()["items"]] == ["acme-web"]


@pytest.mark.usefixtures("tenant_vms")
def test_group_status_lists_each_group_with_its_drill_a_tenants_own_only(
        client: Client, repo: Repository, real_ctx: ApiContext) -> None:
    shop = commit(repo, 1, ["acme-web", "acme-app"], name="shop", kind="group")
    commit(repo, 2, ["acme-web", "globex-db"], name="mixed", kind="group")
    DrillStore(real_ctx.catalog).record(DrillRecord(
        "group", "shop", "d1", shop.id, "shop", "restore", False, None,
        NOW - timedelta(minutes=5), NOW, failure="check tcp:443 on acme-web did not pass",
        checks=[]))
    rows = client("viewer").get("/api/v1/group-status").json()["items"]
    assert [(r["group"], r["vms"], r["newest_point"]) for r in rows] == [
        ("mixed", ["acme-web", "globex-db"], f"{2:032x}"),
        ("shop", ["acme-web", "acme-app"], shop.id)]
    drill = rows[1]["drill"]
    assert (drill["last_drill"], drill["passed"], drill["state"]) == ("d1", False, "breached")
    assert "check tcp:443 on acme-web" in drill["reasons"][0]
    assert [r["group"] for r in client("viewer").get(
        "/api/v1/group-status", params={"state": "breached"}).json()["items"]] == ["shop"]
    assert [r["group"] for r in client("viewer").get(
        "/api/v1/group-status", params={"state": "none"}).json()["items"]] == ["mixed"]
    # A tenant sees a group whose VMs are all its own, not one it shares with another.
    acme = client("viewer", ACME).get("/api/v1/group-status").json()["items"]
    assert [r["group"] for r in acme] == ["shop"]
    assert client("viewer", GLOBEX).get("/api/v1/group-status").json()["items"] == []
    assert client(None).get("/api/v1/group-status").status_code == 401
