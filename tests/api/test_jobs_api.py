"""Work started through the API (backups, restores, verify, prune, gc, copies) and the
jobs resource: 202 with the job, Idempotency-Key, one job for the same backup asked
twice (at once too), tenants kept to their VMs, points and restore targets, the job
list, log by offset, Server-Sent Events to the end, cancel, and the audit lines. The
service runs in a thread on the API's catalog where a job must really run."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.app.auth import Tenant
from stasis.catalog import JobStore
from stasis.catalog.audit import AuditLog
from stasis.errors import HypervisorError
from stasis.protection.backup import back_up_images
from stasis.repository import Repository
from stasis.service.runner import Service
from tests.api.conftest import serving
from tests.conftest import mixed_image, reopen

Client = Callable[..., TestClient]
VM = "test"  # the libvirt test driver's domain


def _problem(r: Any, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["kind"] == kind, body
    return body


@pytest.fixture
def point(api_ctx: ApiContext, tmp_path: Path) -> str:
    """A point of an image (its VM is named after the point: ``disk``)."""
    img = mixed_image(tmp_path / "disk.raw", size=2 << 20)
    m = back_up_images(api_ctx.repository(), [img], name="disk", run_dir=tmp_path)
    return m.id


def _events(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            fields["data"] = json.loads(fields["data"])
            out.append(fields)
    return out


# ------------------------------------------------------------------ starting work


def test_a_backup_answers_202_with_the_job_its_url_who_and_an_audit_line(
        client: Client, api_ctx: ApiContext) -> None:
    r = client("backup").post("/api/v1/backups", json={"vms": [VM], "consistency": "crash"})
    assert r.status_code == 202, r.text
    body = r.json()
    job = body["job"]
    assert body["existing"] is False
    assert r.headers["location"] == r.headers["content-location"] == f"/api/v1/jobs/{job['id']}"
    assert job["state"] == "queued" and job["kind"] == "backup" and job["vms"] == [VM]
    assert job["by"].startswith("backup-") and job["tenant"] is None
    stored = JobStore(api_ctx.catalog).get(job["id"])
    assert stored.params["op"] == "backup.vms" and stored.params["repo"] == \
        api_ctx.repository().url
    lines = AuditLog(api_ctx.catalog).list(action="backup.start")
    assert [e.object for e in lines] == [f"job:{job['id']}"]


def test_bad_parameters_are_refused_naming_the_field_and_nothing_is_queued(
        client: Client, api_ctx: ApiContext) -> None:
    c = client()
    body = _problem(c.post("/api/v1/backups", json={"vms": [VM], "parallel": 0}), 422,
                    "UsageError")
    assert "parallel" in body["detail"]
    body = _problem(c.post("/api/v1/backups", json={"vms": [VM], "consistency": "magic"}),
                    422, "UsageError")
    assert "magic" in body["detail"]
    _problem(c.post("/api/v1/backups", json={"vms": [VM], "policy": "p"}), 422, "UsageError")
    _problem(c.post("/api/v1/backups", json={"vms": [VM], "nonsense": 1}), 422, "UsageError")
    _problem(c.post("/api/v1/backups?repository=elsewhere", json={"vms": [VM]}), 404,
             "RepositoryNotFound")
    _problem(c.post("/api/v1/prunes", json={}), 422, "UsageError")  # no rule: keeps all
    _problem(c.post("/api/v1/copies", json={"to": "nowhere", "all": True}), 422,
             "UsageError")
    _problem(c.post("/api/v1/restores", json={"what": "disk", "point": "x"}), 422,
             "UsageError")
    assert JobStore(api_ctx.catalog).list() == []


def test_the_same_idempotency_key_answers_the_same_and_another_body_conflicts(
        client: Client, api_ctx: ApiContext) -> None:
    c = client("operator")
    key = {"Idempotency-Key": "k-1"}
    first = c.post("/api/v1/gc", json={"dry_run": True}, headers=key)
    again = c.post("/api/v1/gc", json={"dry_run": True}, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert len(JobStore(api_ctx.catalog).list()) == 1
    body = _problem(c.post("/api/v1/gc", json={"dry_run": False}, headers=key), 422,
                    "IdempotencyConflict")
    assert body["code"] == 64
    # another user's same key is theirs
    other = client("operator").post("/api/v1/gc", json={"dry_run": True}, headers=key)
    assert other.status_code == 202 and other.json()["job"]["id"] != first.json()["job"]["id"]


def test_a_backup_asked_again_while_queued_answers_the_same_job_even_at_once(
        client: Client, api_ctx: ApiContext) -> None:
    c = client("backup")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: c.post("/api/v1/backups", json={"vms": [VM]}),
                                range(8)))
    ids = {a.json()["job"]["id"] for a in answers}
    assert len(ids) == 1
    assert sorted(a.status_code for a in answers) == [200] * 7 + [202]
    assert [a.json()["existing"] for a in answers].count(False) == 1
    assert len(JobStore(api_ctx.catalog).list()) == 1
    # another kind of work is another job
    assert c.post("/api/v1/backups", json={"group": "g", "vms": [VM]}).status_code == 202


def test_roles_without_the_permission_are_refused_with_403(client: Client,
                                                          point: str) -> None:
    viewer, backup = client("viewer"), client("backup")
    for c, path, body, needed in [
            (viewer, "/api/v1/backups", {"vms": [VM]}, "backups:run"),
            (backup, "/api/v1/restores", {"point": point, "to": "/tmp/x", "what": "disk"},
             "restores:run"),
            (backup, "/api/v1/verifications", {}, "repositories:maintain"),
            (backup, "/api/v1/prunes", {"keep": {"last": 1}}, "repositories:maintain"),
            (backup, "/api/v1/gc", {}, "repositories:maintain"),
            (backup, "/api/v1/copies", {"to": "main", "all": True}, "repositories:maintain"),
            (viewer, "/api/v1/jobs/1/cancel", None, "jobs:cancel")]:
        body = _problem(c.post(path, json=body), 403, "PermissionDenied")
        assert body["permission"] == needed
    for path in ("/api/v1/jobs", "/api/v1/jobs/1", "/api/v1/jobs/1/log",
                 "/api/v1/jobs/1/events"):
        assert client(None).get(path).status_code == 401


# ------------------------------------------------------------------ tenants


def test_a_tenant_starts_work_only_on_its_own_vms_and_sees_only_its_jobs(
        client: Client, api_ctx: ApiContext) -> None:
    mine, theirs = Tenant("acme", vms=frozenset({VM})), Tenant("other")
    a, b = client("operator", mine), client("operator", theirs)
    r = a.post("/api/v1/backups", json={"vms": [VM]})
    assert r.status_code == 202 and r.json()["job"]["tenant"] == "acme"
    job = r.json()["job"]["id"]
    _problem(b.post("/api/v1/backups", json={"vms": [VM]}), 404, "VmNotFound")
    _problem(b.post("/api/v1/backups", json={"vms": ["no-such-vm"]}), 404, "VmNotFound")
    _problem(b.post("/api/v1/backups", json={"policy": "nightly"}), 404, "PolicyNotFound")
    _problem(b.post("/api/v1/backups", json={"images": ["/etc/passwd"]}), 403,
             "PermissionDenied")
    system = client("operator").post("/api/v1/gc", json={}).json()["job"]["id"]
    for path in (f"/api/v1/jobs/{job}", f"/api/v1/jobs/{job}/log",
                 f"/api/v1/jobs/{job}/events", f"/api/v1/jobs/{system}"):
        missing = _problem(b.get(path), 404, "JobNotFound")
        assert missing["detail"] == _problem(b.get("/api/v1/jobs/99999"), 404,
                                             "JobNotFound")["detail"].replace("99999",
                                                                              path.split("/")[4])
    _problem(b.post(f"/api/v1/jobs/{job}/cancel"), 404, "JobNotFound")
    assert b.get("/api/v1/jobs").json()["items"] == []
    assert [j["id"] for j in a.get("/api/v1/jobs").json()["items"]] == [job]
    assert {j["id"] for j in client("viewer").get("/api/v1/jobs").json()["items"]} == \
        {job, system}
    assert JobStore(api_ctx.catalog).get(job).state == "queued"


def test_repository_wide_work_is_refused_to_a_tenant_with_403(client: Client) -> None:
    t = client("operator", Tenant("acme", vms=frozenset({VM})))
    for path, body in [("/api/v1/verifications", {}), ("/api/v1/gc", {}),
                       ("/api/v1/prunes", {"keep": {"last": 1}}),
                       ("/api/v1/prunes", {"keep": {"last": 1}, "dry_run": True}),
                       ("/api/v1/copies", {"to": "main", "all": True})]:
        body = _problem(t.post(path, json=body), 403, "PermissionDenied")
        assert "system-wide" in body["detail"]


def test_a_tenant_restores_its_points_only_to_the_places_it_is_allowed(
        client: Client, api_ctx: ApiContext, point: str, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    mine = Tenant("acme", vms=frozenset({"disk"}), restore_dirs=(str(allowed),),
                  restore_networks=("tenant-net",))
    a = client("restore", mine)
    disk = {"what": "disk", "point": point}
    body = _problem(a.post("/api/v1/restores", json=disk | {"to": str(tmp_path / "x.raw")}),
                    403, "TargetNotAllowed")
    assert body["code"] == 67 and str(tmp_path / "x.raw") in body["detail"]
    _problem(a.post("/api/v1/restores", json=disk | {"to": f"{allowed}/../x.raw"}), 403,
             "TargetNotAllowed")
    r = a.post("/api/v1/restores", json=disk | {"to": str(allowed / "x.raw")})
    assert r.status_code == 202, r.text
    assert r.json()["job"]["kind"] == "restore"
    vm = {"point": point, "name": "copy"}
    _problem(a.post("/api/v1/restores", json=vm), 403, "TargetNotAllowed")  # no storage
    body = _problem(a.post("/api/v1/restores", json=vm | {"storage": str(allowed),
                                                          "network": "default"}),
                    403, "TargetNotAllowed")
    assert "network" in body["detail"]
    assert a.post("/api/v1/restores", json=vm | {"storage": str(allowed),
                                                 "network": "tenant-net"}).status_code == 202
    # another tenant: the point does not exist for it
    b = client("restore", Tenant("other", restore_dirs=(str(allowed),)))
    _problem(b.post("/api/v1/restores", json=disk | {"to": str(allowed / "y.raw")}), 404,
             "PointNotFound")
    denied = AuditLog(api_ctx.catalog).list(action="restore.start")
    assert {e.result for e in denied} == {"ok", "denied"}


def test_a_tenant_with_restore_pools_alone_restores_as_new_into_its_pools(
        client: Client, point: str) -> None:
    a = client("restore", Tenant("acme", vms=frozenset({"disk", "copy"}),
                                 restore_pools=("acme-pool",), restore_networks=("tenant-net",)))
    disk = {"what": "disk", "point": point}
    vm = {"point": point, "name": "copy", "network": "tenant-net"}
    # Its pool: queued (no restore dir is needed for it), a disk with or without a name.
    for body in (disk | {"pool": "acme-pool"}, disk | {"pool": "acme-pool", "to": "d.img"},
                 vm | {"pool": "acme-pool"},
                 {"what": "group", "point": point, "suffix": "-c", "pool": "acme-pool",
                  "network": "tenant-net"}):
        r = a.post("/api/v1/restores", json=body)
        assert r.status_code == 202, (body, r.text)
    # Another pool, or a directory it has none of: 403, code 67, naming the pool.
    for body in (disk | {"pool": "default"}, vm | {"pool": "default"},
                 {"what": "group", "point": point, "suffix": "-c", "pool": "default",
                  "network": "tenant-net"}):
        problem = _problem(a.post("/api/v1/restores", json=body), 403, "TargetNotAllowed")
        assert problem["code"] == 67 and "storage pool default" in problem["detail"]
        assert "pools acme-pool" in problem["detail"]
    _problem(a.post("/api/v1/restores", json=vm | {"storage": "/srv"}), 403, "TargetNotAllowed")
    # A full clone likewise: another pool is refused; its own passes the tenant's check
    # and meets libvirt's (which has no such pool here).
    _problem(a.post("/api/v1/clones", json=vm | {"pool": "default"}), 403, "TargetNotAllowed")
    problem = _problem(a.post("/api/v1/clones", json=vm | {"pool": "acme-pool"}), 422,
                       "UsageError")
    assert "no libvirt storage pool named 'acme-pool'" in problem["detail"]
    # A pool and a directory at once, or a pool's volume overwritten: refused, 422.
    sys = client("restore")
    for body in (vm | {"pool": "acme-pool", "storage": "/srv"},
                 disk | {"pool": "acme-pool", "force": True}):
        problem = _problem(sys.post("/api/v1/restores", json=body), 422, "UsageError")
        assert problem["code"] == 2


# ------------------------------------------------------------------ the jobs resource


def test_jobs_list_filters_sorts_and_pages(client: Client, api_ctx: ApiContext) -> None:
    store = JobStore(api_ctx.catalog)
    made = [store.create("backup", "a", vms=["a"]), store.create("gc", "gc"),
            store.create("backup", "b", vms=["b"])]
    store.finish(made[1].id, "succeeded")
    c = client("viewer")
    ids = [j["id"] for j in c.get("/api/v1/jobs").json()["items"]]
    assert ids == [j.id for j in reversed(made)]
    assert [j["id"] for j in c.get("/api/v1/jobs?kind=backup&sort=id").json()["items"]] == \
        [made[0].id, made[2].id]
    assert [j["id"] for j in c.get("/api/v1/jobs?state=succeeded").json()["items"]] == \
        [made[1].id]
    assert [j["id"] for j in c.get("/api/v1/jobs?vm=b").json()["items"]] == [made[2].id]
    page = c.get("/api/v1/jobs?limit=2").json()
    rest = c.get(f"/api/v1/jobs?limit=2&cursor={page['next']}").json()
    assert [j["id"] for j in page["items"] + rest["items"]] == ids and rest["next"] is None
    assert c.get("/api/v1/jobs?since=2999-01-01T00:00:00Z").json()["items"] == []
    _problem(c.get("/api/v1/jobs?state=bogus"), 422, "UsageError")
    one = c.get(f"/api/v1/jobs/{made[1].id}").json()
    assert one["state"] == "succeeded" and one["kind"] == "gc"


def test_a_jobs_log_is_read_from_an_offset(client: Client, api_ctx: ApiContext) -> None:
    store = JobStore(api_ctx.catalog)
    job = store.create("gc", "gc")
    for i in range(3):
        store.log(job.id, "info", f"line {i}")
    c = client("auditor")
    page = c.get(f"/api/v1/jobs/{job.id}/log?offset=1").json()
    assert [x["text"] for x in page["lines"]] == ["line 1", "line 2"]
    assert [x["offset"] for x in page["lines"]] == [1, 2]
    assert page["next"] == 3 and page["ended"] is False
    assert c.get(f"/api/v1/jobs/{job.id}/log?offset=3").json()["lines"] == []
    _problem(c.get(f"/api/v1/jobs/{job.id}/log?offset=-1"), 422, "UsageError")


def test_the_event_stream_of_an_ended_job_sends_its_log_progress_and_end(
        client: Client, api_ctx: ApiContext) -> None:
    store = JobStore(api_ctx.catalog)
    job = store.create("gc", "gc")
    for i in range(3):
        store.log(job.id, "info", f"line {i}")
    store.finish(job.id, "succeeded", bytes_read=42)
    c = client("viewer")
    r = c.get(f"/api/v1/jobs/{job.id}/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    logs = [e for e in events if e["event"] == "log"]
    assert [(e["id"], e["data"]["text"]) for e in logs] == \
        [("0", "line 0"), ("1", "line 1"), ("2", "line 2")]
    assert {"event": "progress", "data": {"state": "succeeded", "bytes_read": 42,
                                          "bytes_written": 0}} in events
    assert events[-1]["event"] == "end" and events[-1]["data"]["state"] == "succeeded"
    resumed = _events(c.get(f"/api/v1/jobs/{job.id}/events",
                            headers={"Last-Event-ID": "1"}).text)
    assert [e["data"]["text"] for e in resumed if e["event"] == "log"] == ["line 2"]


def test_cancelling_a_queued_job_interrupts_it_and_is_audited(
        client: Client, api_ctx: ApiContext) -> None:
    job = client("backup").post("/api/v1/backups", json={"vms": [VM]}).json()["job"]["id"]
    r = client("backup").post(f"/api/v1/jobs/{job}/cancel")
    assert r.status_code == 200, r.text
    assert r.json() == {"job": job, "was": "queued", "action": "interrupted",
                        "state": "interrupted"}
    assert JobStore(api_ctx.catalog).get(job).state == "interrupted"
    _problem(client("backup").post(f"/api/v1/jobs/{job}/cancel"), 409, "JobStateError")
    assert [e.result for e in AuditLog(api_ctx.catalog).list(action="job.cancel")] \
        in (["ok", "failed"], ["failed", "ok"])


def test_a_prune_dry_run_answers_the_decisions_at_once(
        client: Client, api_ctx: ApiContext, tmp_path: Path) -> None:
    img = mixed_image(tmp_path / "d.raw", size=2 << 20)
    for seed in range(3):
        mixed_image(img, size=2 << 20, seed=seed)
        back_up_images(api_ctx.repository(), [img], name="d", run_dir=tmp_path)
    c = client("operator")
    r = c.post("/api/v1/prunes", json={"keep": {"last": 1}, "dry_run": True})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["dry_run"] is True and len(report["kept"]) == 1 and len(report["removed"]) == 2
    assert len(api_ctx.repository().points()) == 3
    assert JobStore(api_ctx.catalog).list() == []
    assert c.post("/api/v1/prunes", json={"keep": {"last": 1}}).status_code == 202


# ------------------------------------------------------------------ run by the service


@pytest.fixture
def service(api_ctx: ApiContext, tmp_path: Path) -> Iterator[Service]:
    """``stasis serve``'s service in a thread on the API's catalog, woken by the API."""
    for d in ("run", "scratch"):
        (tmp_path / d).mkdir(exist_ok=True)
    repo: Repository = api_ctx.repository()

    def no_libvirt() -> Any:
        raise HypervisorError("libvirt is not used by these jobs")

    s = Service(api_ctx.catalog, [], repositories={"main": lambda: reopen(repo)},
                connect=no_libvirt, run_dir=tmp_path / "run", scratch_dir=tmp_path / "scratch")
    with serving(api_ctx, s):
        yield s


def test_a_verify_runs_in_the_service_and_its_stream_follows_it_to_the_end(
        client: Client, service: Service, point: str) -> None:
    c = client("operator")
    r = c.post("/api/v1/verifications", json={"deep": True})
    assert r.status_code == 202, r.text
    job = r.json()["job"]["id"]
    events = _events(c.get(f"/api/v1/jobs/{job}/events", timeout=60).text)
    end = events[-1]
    assert end["event"] == "end" and end["data"]["state"] == "succeeded", events
    assert end["data"]["bytes_read"] > 0
    assert point in end["data"]["result"]
    assert any(e["event"] == "log" for e in events)
    assert c.get(f"/api/v1/jobs/{job}").json()["state"] == "succeeded"


def test_a_client_that_goes_away_stops_the_streams_polling(
        api_ctx: ApiContext, client: Callable[..., TestClient]) -> None:
    import socket
    import time

    import uvicorn
    from sqlalchemy import event

    from stasis.api.app import create_app

    job = JobStore(api_ctx.catalog).create("gc", "gc")  # queued: no service takes it
    token = client("viewer").headers["Authorization"]
    server = uvicorn.Server(uvicorn.Config(create_app(api_ctx), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    polls: list[int] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "job_logs" in statement:
            polls.append(1)

    event.listen(api_ctx.catalog.engine, "before_cursor_execute", seen)
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(f"GET /api/v1/jobs/{job.id}/events HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: {token}\r\n\r\n".encode())
        got = b""
        while b"event: progress" not in got:
            got += sock.recv(4096)
        assert b"200 OK" in got
        while len(polls) < 3:  # it keeps looking while the client listens
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sock.close()
        # once the client is gone its polling ends: the count of polls stands still
        before = -1
        while before != len(polls):
            assert time.monotonic() < deadline, "the stream kept polling"
            before = len(polls)
            time.sleep(1.5)
    finally:
        event.remove(api_ctx.catalog.engine, "before_cursor_execute", seen)
        server.should_exit = True
        thread.join(20)
