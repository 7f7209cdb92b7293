"""``/repositories``, ``/status`` and ``/problems/{kind}``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from stasis.repository import Repository
from tests.api.resources import ACME, GLOBEX, commit, tenant_vms  # noqa: F401

Client = Callable[..., TestClient]


def test_repositories(client: Client, repo: Repository) -> None:
    commit(repo, 1, ["acme-web"])
    c = client("viewer")
    page = c.get("/api/v1/repositories").json()
    assert [(r["name"], r["default"], r["id"]) for r in page["items"]] == \
        [("main", True, repo.id)]
    assert page["items"][0]["info"]["points"] == 1
    one = c.get("/api/v1/repositories/main").json()
    assert one["url"] == repo.url and one["info"]["id"] == repo.id
    missing = c.get("/api/v1/repositories/other")
    assert missing.status_code == 404 and missing.json()["kind"] == "RepositoryNotFound"


def test_repository_urls_show_no_secret() -> None:
    from stasis.app.repos import without_secrets

    assert without_secrets("s3://key:secret@host/bucket?region=x") == \
        "s3://host/bucket?region=x"
    assert without_secrets("/srv/repo") == "/srv/repo"


def test_repositories_need_repositories_read(client: Client) -> None:
    assert client(None).get("/api/v1/repositories").status_code == 401


@pytest.mark.usefixtures("tenant_vms")
def test_status_filters_and_tenants(client: Client, repo: Repository) -> None:
    commit(repo, 1, ["acme-web"])
    commit(repo, 2, ["globex-db"])
    op = client("operator")
    op.post("/api/v1/policies", json={"name": "web", "vms": ["acme-web"], "every": "1h",
                                      "rpo": "1h"})
    rows = op.get("/api/v1/status").json()["items"]
    assert {r["vm"] for r in rows} >= {"acme-web", "globex-db"}
    web = op.get("/api/v1/status/acme-web").json()
    assert web["newest_point"] == f"{1:032x}" and web["policies"] == ["web"]
    assert web["rpo"] == "breached"  # its newest point is from January 2026
    assert [r["vm"] for r in op.get("/api/v1/status", params={"policy": "web"})
            .json()["items"]] == ["acme-web"]
    assert [r["vm"] for r in op.get("/api/v1/status", params={"state": "breached"})
            .json()["items"]] == ["acme-web"]
    assert op.get("/api/v1/status", params={"state": "sad"}).status_code == 422
    globex = client("viewer", GLOBEX)
    assert [r["vm"] for r in globex.get("/api/v1/status").json()["items"]] == ["globex-db"]
    assert globex.get("/api/v1/status/acme-web").status_code == 404
    assert client("viewer", ACME).get("/api/v1/status/acme-web").status_code == 200


def test_status_needs_status_read(client: Client) -> None:
    assert client(None).get("/api/v1/status").status_code == 401


def test_every_problem_type_resolves(client: Client) -> None:
    anyone = client(None)
    r = anyone.get("/api/v1/points/zz")  # 401: its type must resolve too
    for answer in (r, client("viewer").get("/api/v1/points/zzzz"),
                   client("viewer").get("/api/v1/nowhere")):
        kind = anyone.get(answer.json()["type"])
        assert kind.status_code == 200, answer.json()["type"]
        assert kind.json()["code"] == answer.json()["code"]
        assert kind.json()["status"] == answer.status_code
    held = anyone.get("/api/v1/problems/point-held").json()
    assert held["code"] == 28 and held["status"] == 409 and held["meaning"]
    unknown = anyone.get("/api/v1/problems/no-such-thing")
    assert unknown.status_code == 404 and unknown.json()["kind"] == "NotFound"
