"""What the console's pages need from the API in one request each: a point's hold
(``GET /points/{id}/hold``), each VM's labels in ``/vms``, a timeline's facts per
point in ``/points``, the last days of each VM and group (``/history``), a
repository's growth and forecast (``/repositories/{name}/usage``) and the copy lag
per second site (``/copy-lag``) — as roles and tenants see them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.app import accounts as acc
from stasis.app.dashboard import FAR_DAYS, copy_lag, day_marks
from stasis.app.models import SiteStatusRow, VmStatusRow
from stasis.protection.backup import back_up_images
from stasis.repository import DiskRecord, Manifest, Repository, VmRecord
from tests.api.resources import ACME, GLOBEX, commit, tenant_vms  # noqa: F401
from tests.conftest import write_image

Client = Callable[..., TestClient]

# These routes read the catalog only through queries the catalog's own tests run on
# both databases (the points index, stored policies and groups): SQLite is enough here.
pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def tokens_only_role(api_ctx: ApiContext) -> None:
    """A role that sees nothing these routes give (only its own tokens)."""
    acc.add_role(api_ctx.catalog, "tokens-only", ["tokens:own"])


def narrow(client: Client) -> TestClient:
    return client("tokens-only")


def midnight(days_ago: int) -> datetime:
    today = datetime.now(UTC).date()
    return datetime.combine(today - timedelta(days=days_ago), time(0), UTC)


def point(repo: Repository, n: int, at: datetime, vms: list[str], *, kind: str = "vm",
          name: str | None = None, modes: tuple[str, ...] = ("full",),
          stored_new: int = 0, consistency: str = "crash",
          frozen_ms: float | None = None, index: str = "00" * 32) -> Manifest:
    disks = [DiskRecord(name=f"vd{chr(97 + i)}", index=index, virtual_size=1 << 30,
                        format="qcow2", mode=mode, bytes_read=1000 + i,
                        stored_new=stored_new)
             for i, mode in enumerate(modes)]
    m = Manifest(id=f"{n:032x}", name=name or vms[0], time=at.isoformat(), kind=kind,
                 vms=[VmRecord(name=v, kind="vm", consistency=consistency, disks=disks)
                      for v in vms],
                 timings={"frozen_ms": frozen_ms} if frozen_ms is not None else {})
    repo.commit(m)
    return m


# ------------------------------------------------------------------ a point's hold


@pytest.mark.usefixtures("tenant_vms")
def test_a_points_hold_is_read_back_with_reason_until_and_who(client: Client,
                                                             repo: Repository) -> None:
    web = commit(repo, 1, ["acme-web"]).id
    db = commit(repo, 2, ["globex-db"]).id
    viewer = client("viewer")
    free = viewer.get(f"/api/v1/points/{web}/hold")
    assert free.status_code == 200, free.text
    assert free.json() == {"point": web, "held": False, "hold": None}
    op = client("operator", user="oscar")
    made = op.post(f"/api/v1/points/{web}/hold",
                   json={"reason": "legal case 7", "until": "2099-01-31"})
    assert made.status_code == 200, made.text
    got = viewer.get("/api/v1/points/acme-web@latest/hold").json()
    assert got["point"] == web and got["held"] is True
    hold = got["hold"]
    assert hold["reason"] == "legal case 7" and "oscar" in hold["by"]
    assert hold["until"].startswith(("2099-01-31", "2099-02-01")) and hold["created"]
    assert hold == made.json()  # what the hold answered when it was made
    assert op.delete(f"/api/v1/points/{web}/hold").status_code == 200
    assert viewer.get(f"/api/v1/points/{web}/hold").json()["held"] is False
    # another tenant's point is not found, nor one that does not exist
    acme = client("viewer", ACME)
    assert acme.get(f"/api/v1/points/{web}/hold").status_code == 200
    for ref in (db, "ffff"):
        r = acme.get(f"/api/v1/points/{ref}/hold")
        assert r.status_code == 404 and r.json()["kind"] == "PointNotFound"


def test_reading_a_hold_needs_points_read(client: Client, repo: Repository) -> None:
    web = commit(repo, 1, ["acme-web"]).id
    r = narrow(client).get(f"/api/v1/points/{web}/hold")
    assert r.status_code == 403 and r.json()["permission"] == "points:read"


# ------------------------------------------------------------------ /vms and /points


@pytest.mark.usefixtures("tenant_vms")
def test_vms_come_with_their_labels(client: Client) -> None:
    rows = {r["name"]: r for r in client("viewer").get("/api/v1/vms").json()["items"]}
    assert rows["acme-app"]["labels"] == {"owner": "acme"}
    assert rows["globex-db"]["labels"] == {"owner": "globex"}
    assert rows["acme-web"]["labels"] == {}
    one = client("viewer").get("/api/v1/vms/acme-app").json()
    assert one["labels"] == {"owner": "acme"}
    acme = client("viewer", ACME).get("/api/v1/vms").json()["items"]
    assert sorted(r["name"] for r in acme) == ["acme-app", "acme-web"]


@pytest.mark.usefixtures("tenant_vms")
def test_the_points_list_gives_a_timeline_what_it_draws(client: Client,
                                                        repo: Repository) -> None:
    point(repo, 1, midnight(3), ["acme-web"], modes=("full", "full"), stored_new=7,
          consistency="filesystem", frozen_ms=12.5)
    point(repo, 2, midnight(2), ["acme-web"], modes=("incremental", "full"))
    point(repo, 3, midnight(1), ["acme-web", "globex-db"], kind="group", name="mixed")
    page = client("viewer").get("/api/v1/points", params={"vm": "acme-web",
                                                          "sort": "-time"}).json()
    first, second, third = page["items"][::-1]
    assert first["frozen_ms"] == 12.5 and first["stored_new"] == 14
    assert first["vm_records"] == [{
        "name": "acme-web", "kind": "vm", "consistency": "filesystem", "mode": "full",
        "disks": [{"name": "vda", "mode": "full", "virtual_size": 1 << 30,
                   "bytes_read": 1000, "stored_new": 7},
                  {"name": "vdb", "mode": "full", "virtual_size": 1 << 30,
                   "bytes_read": 1001, "stored_new": 7}]}]
    assert second["vm_records"][0]["mode"] == "incremental"
    assert [d["mode"] for d in second["vm_records"][0]["disks"]] == ["incremental", "full"]
    assert second["frozen_ms"] is None
    assert [v["name"] for v in third["vm_records"]] == ["acme-web", "globex-db"]
    # a tenant's listing is its own points only, with the same facts
    acme = client("viewer", ACME).get("/api/v1/points").json()["items"]
    assert [p["id"] for p in acme] == [f"{1:032x}", f"{2:032x}"]


# ------------------------------------------------------------------ /history


def test_a_day_is_breached_when_the_newest_point_grew_older_than_the_rpo() -> None:
    now = midnight(0) + timedelta(hours=6)
    times = [midnight(5) + timedelta(minutes=30), midnight(3) + timedelta(minutes=30),
             midnight(2) + timedelta(hours=12), midnight(1) + timedelta(hours=1)]
    marks = day_marks(times, timedelta(hours=36), now, 7)
    assert [(m.points, m.rpo) for m in marks] == [
        (0, "before"),    # day -6: before the first point
        (1, "met"),       # day -5: judged from its first point on
        (0, "breached"),  # day -4: 47.5 h old at its end
        (1, "breached"),  # day -3: 48 h old just before its point
        (1, "met"),       # day -2: 35.5 h at most
        (1, "met"),
        (0, "met"),       # today, up to now: 5 h
    ]
    assert marks[-1].day == now.date().isoformat()
    assert [m.rpo for m in day_marks(times, None, now, 3)] == ["none"] * 3


@pytest.mark.usefixtures("tenant_vms")
def test_history_per_vm_and_group_for_roles_and_tenants(client: Client,
                                                        repo: Repository) -> None:
    op = client("operator")
    assert op.post("/api/v1/policies", json={"name": "web", "vms": ["acme-web"],
                                             "every": "1h", "rpo": "36h"}).status_code == 201
    assert op.post("/api/v1/groups", json={"name": "shop", "vms": ["acme-web", "acme-app"]}
                   ).status_code == 201
    point(repo, 1, midnight(5) + timedelta(minutes=30), ["acme-web"])
    point(repo, 2, midnight(3) + timedelta(minutes=30), ["acme-web"])
    point(repo, 3, midnight(2) + timedelta(hours=12), ["acme-web", "acme-app"],
          kind="group", name="shop")
    point(repo, 4, midnight(2), ["globex-db"])
    page = op.get("/api/v1/history", params={"days": 7}).json()
    rows = {(r["kind"], r["name"]): r for r in page["items"]}
    assert set(rows) >= {("vm", "acme-web"), ("vm", "acme-app"), ("vm", "globex-db"),
                         ("group", "shop")}
    web = rows[("vm", "acme-web")]
    assert web["rpo_s"] == 36 * 3600 and len(web["days"]) == 7
    assert [(d["points"], d["rpo"]) for d in web["days"][:5]] == [
        (0, "before"), (1, "met"), (0, "breached"), (1, "breached"), (1, "met")]
    assert web["days"][-1]["day"] == datetime.now(UTC).date().isoformat()
    shop = rows[("group", "shop")]
    assert shop["rpo_s"] is None
    assert [d["points"] for d in shop["days"]] == [0, 0, 0, 0, 1, 0, 0]
    assert [d["rpo"] for d in shop["days"]][3:5] == ["before", "none"]
    assert rows[("vm", "globex-db")]["rpo_s"] is None
    only = op.get("/api/v1/history", params={"kind": "group"}).json()["items"]
    assert [r["name"] for r in only] == ["shop"] and len(only[0]["days"]) == 30
    assert op.get("/api/v1/history", params={"days": 0}).status_code == 422
    # a tenant sees its own VMs and the groups it defined, nothing else
    globex = client("viewer", GLOBEX).get("/api/v1/history").json()["items"]
    assert [(r["kind"], r["name"]) for r in globex] == [("vm", "globex-db")]
    r = narrow(client).get("/api/v1/history")
    assert r.status_code == 403 and r.json()["permission"] == "status:read"


# ------------------------------------------------------------------ usage and forecast


def test_usage_counts_growth_back_from_today_and_forecasts_a_local_disk(
        client: Client, repo: Repository, tmp_path: Path) -> None:
    src = write_image(tmp_path / "disk.raw", 4 << 20, [(0, os.urandom(3 << 20))])
    made = back_up_images(repo, [src], name="web", run_dir=tmp_path / "run")
    stored = sum(d.stored_new for _, d in made.disks())
    assert stored > 2 << 20
    # its chunks stay (no gc) while points of earlier days say they stored them
    index = made.disks()[0][1].index  # a real one: the repository's info reads them
    assert client("admin").delete(f"/api/v1/points/{made.id}").status_code == 200
    point(repo, 10, midnight(4), ["acme-web"], stored_new=stored // 2, index=index)
    point(repo, 11, midnight(2), ["acme-web"], modes=("incremental", "full"),
          stored_new=stored // 8, index=index)  # two disks
    r = client("viewer").get("/api/v1/repositories/main/usage", params={"days": 7})
    assert r.status_code == 200, r.text
    u = r.json()
    listed = client("viewer").get("/api/v1/repositories/main").json()["info"]
    assert u["stored_size"] == listed["stored_size"] and u["id"] == repo.id
    assert u["dedup_ratio"] == listed["dedup_ratio"]
    s = u["stored_size"]
    assert s >= stored
    a, b = 2 * (stored // 8), stored // 2  # what the points of day -2 and -4 stored
    assert [d["stored"] for d in u["days"]] == [s - a - b] * 2 + [s - a] * 2 + [s] * 3
    assert u["days"][-1]["day"] == datetime.now(UTC).date().isoformat()
    assert u["growth_per_day"] > 0
    disk = shutil.disk_usage(Path(repo.url))
    assert u["capacity"] == disk.total and 0 < u["free"] <= disk.total
    assert u["full_in_days"] == pytest.approx(u["free"] / u["growth_per_day"])
    if u["full_in_days"] <= FAR_DAYS:
        assert u["full_on"] and u["full_on"] in u["forecast"]
    else:  # a few MiB a day on a big disk
        assert u["full_on"] is None and "not full within 100 years" in u["forecast"]
    missing = client("viewer").get("/api/v1/repositories/other/usage")
    assert missing.status_code == 404 and missing.json()["kind"] == "RepositoryNotFound"
    r = narrow(client).get("/api/v1/repositories/main/usage")
    assert r.status_code == 403 and r.json()["permission"] == "repositories:read"


def test_an_empty_repository_is_not_growing(client: Client) -> None:
    u = client("viewer").get("/api/v1/repositories/main/usage").json()
    assert u["growth_per_day"] == 0 and u["full_on"] is None
    assert "not growing" in u["forecast"] and len(u["days"]) == 30


# ------------------------------------------------------------------ copy lag


def site(policy: str, role: str, repository: str, lag: float | None, points: int | None,
         newest: str | None) -> SiteStatusRow:
    return SiteStatusRow(policy=policy, role=role, repository=repository,
                         repo_id=repository, newest_point=None, newest_time=newest,
                         lag_s=lag, lag_points=points)


def row(vm: str, sites: list[SiteStatusRow]) -> VmStatusRow:
    return VmStatusRow(vm=vm, newest_point=None, newest_time=None, age_s=None,
                       policies=[], next_run=None, rpo="none", rpo_detail="",
                       last_verify=None, sites=sites)


def test_copy_lag_is_the_worst_of_the_vms_copied_to_a_site() -> None:
    rows = [row("a", [site("p", "source", "main", None, None, "t3"),
                      site("p", "copy", "dr", 3600.0, 2, "t1")]),
            row("b", [site("p", "copy", "dr", 60.0, 1, "t2"),
                      site("q", "copy", "far", None, None, None)])]
    lag = {(r.policy, r.repository): r for r in copy_lag(rows)}
    assert set(lag) == {("p", "dr"), ("q", "far")}
    dr = lag[("p", "dr")]
    assert (dr.vms, dr.behind, dr.lag_s, dr.lag_points, dr.worst_vm, dr.newest_time) == \
        (2, 0, 3600.0, 3, "a", "t2")
    far = lag[("q", "far")]
    assert (far.vms, far.behind, far.lag_s, far.worst_vm) == (1, 1, None, "b")


@pytest.mark.usefixtures("tenant_vms")
def test_copy_lag_route_for_roles_and_tenants(client: Client, repo: Repository) -> None:
    commit(repo, 1, ["acme-web"])
    c = client("viewer")
    assert c.get("/api/v1/copy-lag").json() == {"items": [], "next": None}
    r = narrow(client).get("/api/v1/copy-lag")
    assert r.status_code == 403 and r.json()["permission"] == "status:read"
    assert client("viewer", ACME).get("/api/v1/copy-lag").status_code == 200
