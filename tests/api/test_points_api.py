"""``/points``: list with filters and pages, show, hold and release, delete — as roles
and tenants see them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.catalog.audit import AuditLog
from stasis.protection.backup import back_up_images
from stasis.repository import Repository
from tests.api.resources import ACME, GLOBEX, commit, tenant_vms  # noqa: F401
from tests.conftest import write_image

Client = Callable[..., TestClient]


@pytest.fixture
def points(repo: Repository) -> list[str]:
    return [commit(repo, 1, ["acme-web"]).id, commit(repo, 2, ["globex-db"]).id,
            commit(repo, 3, ["acme-web", "acme-app"], name="acme-group").id,
            commit(repo, 4, ["acme-web", "globex-db"], name="mixed").id]


def ids(page: dict) -> list[str]:
    return [p["id"] for p in page["items"]]


def test_list_filters_sorts_and_pages(client: Client, points: list[str]) -> None:
    c = client("viewer")
    assert ids(c.get("/api/v1/points").json()) == points
    assert ids(c.get("/api/v1/points", params={"vm": "globex-db"}).json()) == \
        [points[1], points[3]]
    assert ids(c.get("/api/v1/points", params={"name": "acme-*"}).json()) == \
        [points[0], points[2]]
    assert ids(c.get("/api/v1/points", params={"since": "2026-01-02T00:00:00Z",
                                               "until": "2026-01-03T00:00:00Z"}).json()) \
        == points[1:3]
    assert ids(c.get("/api/v1/points", params={"sort": "-time"}).json()) == points[::-1]
    seen, cursor = [], None
    while True:
        page = c.get("/api/v1/points", params={"limit": 3}
                     | ({"cursor": cursor} if cursor else {})).json()
        seen += ids(page)
        if (cursor := page["next"]) is None:
            break
    assert seen == points


def test_bad_filters_answer_422_naming_them(client: Client, points: list[str]) -> None:
    c = client("viewer")
    r = c.get("/api/v1/points", params={"since": "yesterday"})
    assert r.status_code == 422 and "since" in r.json()["detail"]
    r = c.get("/api/v1/points", params={"sort": "color"})
    assert r.status_code == 422 and "color" in r.json()["detail"]
    r = c.get("/api/v1/points", params={"repository": "nope"})
    assert r.status_code == 404 and r.json()["kind"] == "RepositoryNotFound"


@pytest.mark.usefixtures("tenant_vms")
def test_a_tenant_sees_only_points_of_its_own_vms(client: Client, points: list[str]) -> None:
    acme, globex = client("viewer", ACME), client("viewer", GLOBEX)
    assert ids(acme.get("/api/v1/points").json()) == [points[0], points[2]]
    assert ids(globex.get("/api/v1/points").json()) == [points[1]]
    for ref in (points[1], points[3], "globex-db@latest", "mixed@latest"):
        r = acme.get(f"/api/v1/points/{ref}")
        missing = acme.get("/api/v1/points/ffff")
        assert r.status_code == 404 == missing.status_code
        assert r.json()["kind"] == missing.json()["kind"] == "PointNotFound"
    # a prefix shared with another tenant's point is unique among its own
    assert acme.get("/api/v1/points/0000").status_code == 422  # two of its own
    assert acme.get("/api/v1/points/acme-web@latest").json()["id"] == points[0]
    other = client("operator", ACME).post(f"/api/v1/points/{points[1]}/hold", json={})
    assert other.status_code == 404
    assert client("admin", ACME).delete(f"/api/v1/points/{points[1]}").status_code == 404


def test_show_a_point_of_images(client: Client, repo: Repository, tmp_path: Path) -> None:
    src = write_image(tmp_path / "disk.raw", 1 << 20, [(0, b"x" * 4096)])
    m = back_up_images(repo, [src], name="web", run_dir=tmp_path / "run")
    r = client("viewer").get(f"/api/v1/points/{m.id[:10]}")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == m.id and body["name"] == "web" and body["size"] == 1 << 20
    assert body["vms"][0]["disks"][0]["virtual_size"] == 1 << 20


def test_hold_release_and_delete(client: Client, api_ctx: ApiContext,
                                 points: list[str]) -> None:
    op = client("operator")
    r = op.post(f"/api/v1/points/{points[0]}/hold", json={"reason": "audit 7",
                                                          "until": "2099-01-01"})
    assert r.status_code == 200 and r.json()["active"] and r.json()["reason"] == "audit 7"
    assert ids(op.get("/api/v1/points", params={"held": True}).json()) == [points[0]]
    assert points[0] not in ids(op.get("/api/v1/points", params={"held": False}).json())
    held = op.delete(f"/api/v1/points/{points[0]}")
    assert held.status_code == 409 and held.json()["kind"] == "PointHeld"
    assert held.json()["code"] == 28
    released = op.delete(f"/api/v1/points/{points[0]}/hold")
    assert released.status_code == 200 and released.json()["released"]
    gone = op.delete(f"/api/v1/points/{points[0]}")
    assert gone.status_code == 200 and gone.json()["id"] == points[0]
    assert op.get(f"/api/v1/points/{points[0]}").status_code == 404
    actions = [(e.action, e.result) for e in AuditLog(api_ctx.catalog).list()]
    assert ("point.hold", "ok") in actions and ("point.release", "ok") in actions
    assert ("point.delete", "failed") in actions and ("point.delete", "ok") in actions


def test_a_hold_in_the_past_is_refused(client: Client, points: list[str]) -> None:
    r = client("operator").post(f"/api/v1/points/{points[0]}/hold",
                                json={"until": "2000-01-01"})
    assert r.status_code == 422 and "in the past" in r.json()["detail"]
    assert r.json()["code"] == 2


@pytest.mark.parametrize(("method", "path", "role"), [
    ("post", "/hold", "viewer"), ("delete", "/hold", "auditor"), ("delete", "", "backup")])
def test_roles_without_the_permission_get_403(client: Client, points: list[str],
                                              method: str, path: str, role: str) -> None:
    r = getattr(client(role), method)(f"/api/v1/points/{points[0]}{path}",
                                      **({"json": {}} if method == "post" else {}))
    assert r.status_code == 403
    assert r.json()["permission"] in ("points:hold", "points:delete")


def test_listing_needs_points_read(client: Client) -> None:
    assert client(None).get("/api/v1/points").status_code == 401
