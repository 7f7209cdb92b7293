"""Instant VMs, exports, attached disks and clones through the API: an export of a
point of an image read back over NBD (real nbdkit), who may and which tenant sees
what, a full clone and a finalize started as jobs (202, the job as the service will
run it, one job per Idempotency-Key), and on a real TCG guest an instant VM started,
listed and discarded. tests/api/test_instant_jobs_vm.py runs those jobs on real
guests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.app.auth import Tenant
from stasis.catalog import JobStore
from stasis.catalog.audit import AuditLog
from stasis.protection.backup import back_up_images
from stasis.repository import Credentials, Manifest, Repository
from tests.api.resources import commit, tenant_vms  # noqa: F401  (a fixture)
from tests.conftest import PASSPHRASE, mixed_image, remove_domain

Client = Callable[..., TestClient]
ACME = Tenant("acme", vms=frozenset({"web1"}), restore_dirs=("/srv/acme",),
              restore_networks=("acme-net",))
OTHER = Tenant("other", vms=frozenset({"db1"}))


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture
def served_ctx(api_ctx: ApiContext) -> ApiContext:
    # What serve gives the API: the credentials an export process opens the repository
    # with.
    api_ctx.credentials = {"main": Credentials(passphrase=PASSPHRASE.encode())}
    return api_ctx


@pytest.fixture
def point(repo: Repository, tmp_path: Path) -> Iterator[tuple[Manifest, Path]]:
    image = mixed_image(tmp_path / "web1.img")
    yield back_up_images(repo, [image], name="web1"), image


def test_an_export_serves_the_point_until_deleted(client: Client, served_ctx: ApiContext,
                                                  point: tuple[Manifest, Path],
                                                  tmp_path: Path) -> None:
    m, image = point
    c = client("restore", tenant=ACME)
    r = c.post("/api/v1/exports", json={"point": m.id})
    assert r.status_code == 201, r.text
    served = r.json()
    assert (served["vm"], served["disk"], served["point"]) == ("web1", "web1.img", m.id)
    assert served["export_alive"] and served["tenant"] == "acme"
    try:
        out = tmp_path / "read.raw"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", served["uri"],
                        str(out)], check=True, capture_output=True)
        assert out.read_bytes() == image.read_bytes()
        listed = c.get("/api/v1/exports").json()["items"]
        assert [e["id"] for e in listed] == [served["id"]]
        # Another tenant sees nothing and cannot stop it.
        o = client("restore", tenant=OTHER)
        assert o.get("/api/v1/exports").json()["items"] == []
        gone = o.delete(f"/api/v1/exports/{served['id']}")
        missing = o.delete("/api/v1/exports/00000000")
        assert gone.status_code == missing.status_code == 404
        assert gone.json()["kind"] == missing.json()["kind"] == "InstantNotFound"
        assert client("admin").get("/api/v1/exports").json()["items"][0]["id"] == served["id"]
    finally:
        stopped = c.delete(f"/api/v1/exports/{served['id']}")
    assert stopped.status_code == 200
    assert not running(served["export_pid"])
    assert not Path(served["socket"]).exists()
    assert c.get("/api/v1/exports").json()["items"] == []
    assert c.delete(f"/api/v1/exports/{served['id']}").status_code == 404
    actions = [e.action for e in AuditLog(served_ctx.catalog).list(action="export.")]
    assert actions == ["export.stop", "export.start"]


def test_another_tenants_point_cannot_be_served_or_started(client: Client,
                                                           served_ctx: ApiContext,
                                                           point: tuple[Manifest, Path]
                                                           ) -> None:
    m, _image = point
    o = client("restore", tenant=OTHER)
    for path, body in (("/api/v1/exports", {"point": m.id}),
                       ("/api/v1/instant", {"point": m.id}),
                       ("/api/v1/clones", {"point": m.id, "name": "db1"}),
                       ("/api/v1/attachments", {"point": m.id, "vm": "web1",
                                                "disk": "web1.img", "to": "db1"})):
        r = o.post(path, json=body)
        assert r.status_code == 404, path
        assert r.json()["kind"] == "PointNotFound"
    for method, path in (("post", "/api/v1/instant/web1-instant/finalize"),
                         ("post", "/api/v1/instant/web1-instant/discard"),
                         ("delete", "/api/v1/clones/web1-clone"),
                         ("delete", "/api/v1/attachments/web1/vdb")):
        r = getattr(o, method)(path)
        assert r.status_code == 404, path
        assert r.json()["kind"] == "InstantNotFound"
    assert [e for e in AuditLog(served_ctx.catalog).list()
            if not e.action.startswith(("user.", "token.", "tenant."))] == []


def test_a_tenant_restores_only_where_it_may(client: Client, served_ctx: ApiContext,
                                             point: tuple[Manifest, Path]) -> None:
    m, _image = point
    c = client("restore", tenant=ACME)
    outside = c.post("/api/v1/instant", json={"point": m.id, "storage": "/var/tmp",
                                              "network": "acme-net"})
    assert outside.status_code == 422
    assert "may not restore to /var/tmp" in outside.json()["detail"]
    no_net = c.post("/api/v1/instant", json={"point": m.id, "storage": "/srv/acme/vms"})
    assert no_net.status_code == 422 and "acme-net" in no_net.json()["detail"]
    net = c.post("/api/v1/clones", json={"point": m.id, "name": "web1", "storage":
                                         "/srv/acme", "network": "default"})
    assert net.status_code == 422 and "network default" in net.json()["detail"]
    unowned = c.post("/api/v1/clones", json={"point": m.id, "name": "web9", "storage":
                                             "/srv/acme", "network": "acme-net"})
    assert unowned.status_code == 422 and "would not be its own" in unowned.json()["detail"]


def test_malformed_bodies_name_the_field(client: Client, served_ctx: ApiContext) -> None:
    c = client("restore")
    r = c.post("/api/v1/exports", json={"pont": "x"})
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"body.point", "body.pont"} <= fields


@pytest.mark.parametrize("role", ["auditor", "viewer", "backup"])
def test_roles_without_restores_run_are_refused(client: Client, served_ctx: ApiContext,
                                                role: str) -> None:
    c = client(role)
    for method, path in (("post", "/api/v1/instant"), ("get", "/api/v1/instant"),
                         ("post", "/api/v1/instant/x/finalize"),
                         ("post", "/api/v1/instant/x/discard"),
                         ("post", "/api/v1/exports"), ("get", "/api/v1/exports"),
                         ("delete", "/api/v1/exports/x"), ("post", "/api/v1/attachments"),
                         ("delete", "/api/v1/attachments/x/vdb"),
                         ("post", "/api/v1/clones"), ("get", "/api/v1/clones"),
                         ("delete", "/api/v1/clones/x")):
        r = c.request(method.upper(), path, json={} if method == "post" else None)
        assert r.status_code == 403, (method, path)
        assert r.json()["permission"] == "restores:run"


# ------------------------------------------------------------------ jobs


@pytest.mark.usefixtures("tenant_vms")
def test_a_full_clone_is_a_job_of_the_tenant_once_per_idempotency_key(
        client: Client, served_ctx: ApiContext, repo: Repository, tmp_path: Path) -> None:
    m = commit(repo, 1, ["acme-web"])
    acme = Tenant("acme", vms=frozenset({"acme-web", "acme-copy"}),
                  restore_dirs=(str(tmp_path),), restore_networks=("default",))
    c = client("restore", tenant=acme, user="ann")
    body = {"point": m.id[:8], "name": "acme-copy", "storage": str(tmp_path),
            "network": "default"}
    r = c.post("/api/v1/clones", json=body, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert r.headers["location"] == f"/api/v1/jobs/{job['id']}" and not r.json()["existing"]
    (queued,) = JobStore(served_ctx.catalog).list()
    assert (queued.id, queued.kind, queued.state, queued.tenant) == (
        job["id"], "restore", "queued", "acme")
    assert queued.by.startswith("ann ") and queued.vms == ["acme-copy"]
    assert queued.repo == repo.id
    # the full id, resolved among the tenant's points
    assert queued.params == {"op": "clone", "repo": repo.url, "point": m.id,
                             "name": "acme-copy", "storage": str(tmp_path),
                             "network": "default", "start": False, "vm": None}
    again = c.post("/api/v1/clones", json=body, headers={"Idempotency-Key": "k1"})
    assert (again.status_code, again.json()["job"]["id"]) == (202, job["id"])
    assert len(JobStore(served_ctx.catalog).list()) == 1
    assert c.get(f"/api/v1/jobs/{job['id']}").status_code == 200
    # another tenant sees neither the job nor the point
    o = client("restore", tenant=OTHER)
    assert o.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    theirs = o.post("/api/v1/clones", json={**body, "name": "db1"})
    assert theirs.status_code == 404 and theirs.json()["kind"] == "PointNotFound"
    starts = AuditLog(served_ctx.catalog).list(action="restore.start")
    assert [(e.object, e.detail["op"]) for e in starts] == [(f"job:{job['id']}", "clone")]


@pytest.mark.usefixtures("tenant_vms")
def test_a_full_clone_refused_before_any_job(client: Client, served_ctx: ApiContext,
                                             repo: Repository, tmp_path: Path) -> None:
    m = commit(repo, 1, ["acme-web"])
    c = client("restore")
    taken = c.post("/api/v1/clones", json={"point": m.id, "name": "globex-db",
                                           "storage": str(tmp_path)})
    assert taken.status_code == 422 and "already exists" in taken.json()["detail"]
    # A missing storage directory is made; one that cannot be (under a file) is refused.
    (tmp_path / "afile").write_text("")
    nowhere = c.post("/api/v1/clones", json={"point": m.id, "name": "new1",
                                             "storage": str(tmp_path / "afile" / "none")})
    assert nowhere.status_code == 422 and "does not exist" in nowhere.json()["detail"]
    wrong_vm = c.post("/api/v1/clones", json={"point": m.id, "name": "new1", "vm": "db9",
                                              "storage": str(tmp_path)})
    assert wrong_vm.status_code in (404, 422), wrong_vm.text
    assert JobStore(served_ctx.catalog).list() == []


def test_a_finalize_of_no_instant_vm_starts_no_job(client: Client,
                                                   served_ctx: ApiContext) -> None:
    r = client("restore").post("/api/v1/instant/nothing-here/finalize")
    assert r.status_code == 404 and r.json()["kind"] == "InstantNotFound"
    assert JobStore(served_ctx.catalog).list() == []


# ------------------------------------------------------------------ a real guest


@pytest.mark.vm
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)  # boots a guest
def test_instant_vm_started_listed_and_discarded(client: Client, served_ctx: ApiContext,
                                                 repo: Repository, tmp_path: Path,
                                                 kit: object) -> None:
    from stasis.protection.vm import back_up_vm
    from stasis_testkit import DiskSpec, GuestKit, MiB
    from tests.cli.test_instant import _instant_guest, _wait_marker

    assert isinstance(kit, GuestKit)
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 64 * MiB)])
    name = f"{g.name}-api"
    storage = tmp_path / "storage"
    storage.mkdir()
    try:
        g.wait_ready(90)
        scratch = tmp_path / "scratch"
        scratch.mkdir(mode=0o711)
        m = back_up_vm(kit.conn, repo, g.name, run_dir=tmp_path / "run",
                       scratch_dir=scratch)
        served_ctx.connect = "qemu:///system"
        c = client("restore", user="ops")
        r = c.post("/api/v1/instant", json={"point": m.id, "name": name,
                                            "storage": str(storage)})
        assert r.status_code == 201, r.text
        started = r.json()
        assert started["name"] == name and started["vm"] == g.name
        _wait_marker(_instant_guest(kit, g, name))
        (row,) = c.get("/api/v1/instant").json()["items"]
        assert (row["kind"], row["name"], row["state"]) == ("instant", name, "running")
        assert row["export_alive"] and row["by"] == "ops"
        again = c.post("/api/v1/instant", json={"point": m.id, "name": name,
                                                "storage": str(storage)})
        assert again.status_code == 422 and "already exists" in again.json()["detail"]
        gone = c.post(f"/api/v1/instant/{name}/discard")
        assert gone.status_code == 200 and f"domain {name}" in gone.json()["removed"]
        assert name not in {d.name() for d in kit.conn.listAllDomains(0)}
        assert not running(started["export_pid"])
        assert list(storage.iterdir()) == []
        assert c.get("/api/v1/instant").json()["items"] == []
        assert c.post(f"/api/v1/instant/{name}/discard").status_code == 404
    finally:
        remove_domain(kit.conn, name)
        g.destroy()
