"""Jobs through the API on a real guest, over real HTTP: a backup followed by its
Server-Sent Events to the end (its bytes growing as it runs), an incremental after a
guest write, a backup and a restore cancelled in the middle (nothing committed, no
libvirt job, checkpoint or scratch file, no domain or image left), two clients asking
for the same backup at once (one job, and never two jobs on the VM), and a policy
stored only in the catalog run now.

A real ``Service`` runs in a thread on the API's catalog, connected to qemu:///system.
Its ``unit_progress`` (the parameter ``stasis serve``'s progress sinks come from) holds
the work at its second piece while the test's gate is shut: so a test sees the job
running with bytes done, and cancels it there, whatever the host's speed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from stasis.api.app import create_app
from stasis.api.context import ApiContext
from stasis.api.server import ApiServer
from stasis.app.listen import Listen
from stasis.catalog import JobStore, PointIndex
from stasis.catalog.audit import AuditLog
from stasis.hypervisor import libvirt_api as lv
from stasis.progress import Progress
from stasis.repository import Repository
from stasis.service.runner import Service
from stasis_testkit import DiskSpec, Guest, GuestKit, MiB
from tests.api.conftest import serving
from tests.conftest import remove_domain, reopen

# The catalog's own tests and the API's other tests run on SQLite and PostgreSQL; these
# boot guests, and run on SQLite alone to keep the suite's time (nothing here depends on
# which database the catalog is).
pytestmark = [pytest.mark.vm,
              pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)]
libvirt = pytest.importorskip("libvirt")

URI = "qemu:///system"
Client = Callable[..., TestClient]
DATA_AT, DATA_LEN = 16 * MiB, 8 * MiB  # what each test writes in the guest first


@pytest.fixture(scope="module")
def guest(kit: GuestKit) -> Iterator[Guest]:
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 48 * MiB)])
    try:
        g.wait_ready(90)
        yield g
    finally:
        g.destroy()


class Gate:
    """Progress sinks for the service's units of work that, while the gate is shut,
    hold the work at given pieces: piece ``n`` (counted over the job, from 1) waits
    until every stop at or before it was released, or the job is cancelled."""

    def __init__(self) -> None:
        self.held = threading.Event()  # some work waits at a stop
        self._stops: list[tuple[int, threading.Event]] = []
        self._pieces = 0
        self._lock = threading.Lock()

    def shut(self, *at: int) -> None:
        """Stop the work at pieces ``at`` (default: the second, once the first one
        reached the job's row)."""
        with self._lock:
            self._pieces = 0
            self._stops = [(n, threading.Event()) for n in sorted(at or (2,))]
        self.held.clear()

    def release(self) -> None:
        """Let the work past the next stop."""
        with self._lock:
            waiting = [e for _, e in self._stops if not e.is_set()]
        if waiting:
            waiting[0].set()

    def open(self) -> None:
        with self._lock:
            for _, e in self._stops:
                e.set()

    def sink(self, cancel: threading.Event) -> Progress:
        gate = self

        class Sink:
            def start(self, description: str, total: int) -> None:
                pass

            def advance(self, amount: int) -> None:
                with gate._lock:
                    gate._pieces += 1
                    stops = [e for n, e in gate._stops if n <= gate._pieces]
                for stop in stops:
                    while not stop.is_set() and not cancel.is_set():
                        gate.held.set()
                        stop.wait(0.05)

            def finish(self) -> None:
                pass

        return Sink()


# ------------------------------------------------------------------ the service, served


@pytest.fixture
def api_ctx(api_ctx: ApiContext) -> ApiContext:
    """The API's context on the real libvirt the guests run on."""
    api_ctx.connect = URI
    return api_ctx


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    d = tmp_path / "scratch"
    d.mkdir(mode=0o711)
    return d


@pytest.fixture
def service(api_ctx: ApiContext, tmp_path: Path, gate: Gate,
            scratch: Path) -> Iterator[Service]:
    """``stasis serve``'s service (no policy file: the catalog's policies) in a thread
    on the API's catalog, woken by the API."""
    (tmp_path / "run").mkdir()
    repo: Repository = api_ctx.repository()
    s = Service(api_ctx.catalog, [], repositories={"main": lambda: reopen(repo)},
                connect=lambda: lv.connect(URI), run_dir=tmp_path / "run",
                scratch_dir=scratch, unit_progress=gate.sink, policies_from_catalog=True)
    with serving(api_ctx, s):
        yield s
        gate.open()


@pytest.fixture
def http(api_ctx: ApiContext, service: Service, client: Client
         ) -> Iterator[Callable[[str], httpx.Client]]:
    """``http(role)``: an HTTP client of the API served on loopback, with a real token
    of a new user of ``role``."""
    server = ApiServer(create_app(api_ctx), Listen("127.0.0.1", 0))
    server.start()
    made: list[httpx.Client] = []

    def make(role: str) -> httpx.Client:
        c = httpx.Client(base_url=f"http://127.0.0.1:{server.port}",
                         headers={"Authorization": client(role).headers["Authorization"]},
                         timeout=120)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()
        server.stop()


Event = dict[str, Any]


def follow(c: httpx.Client, job: int, on: Callable[[Event], None] | None = None
           ) -> list[Event]:
    """The job's events, read live to its ``end`` (``on`` sees each as it comes)."""
    events: list[Event] = []
    fields: dict[str, str] = {}
    with c.stream("GET", f"/api/v1/jobs/{job}/events") as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "event" in fields:
                e: Event = {"event": fields["event"], "id": fields.get("id"),
                            "data": json.loads(fields["data"])}
                events.append(e)
                if on is not None:
                    on(e)
            fields = {}
    assert events and events[-1]["event"] == "end", events
    return events


def running_with_bytes(e: Event, field: str = "bytes_read") -> bool:
    return bool(e["event"] == "progress" and e["data"]["state"] == "running"
                and e["data"][field] > 0)


def back_up(c: httpx.Client, vm: str) -> dict[str, Any]:
    """A backup of ``vm`` through the API, followed to its end; the job as it ended."""
    r = c.post("/api/v1/backups", json={"vms": [vm], "consistency": "crash"})
    assert r.status_code == 202, r.text
    end: dict[str, Any] = follow(c, r.json()["job"]["id"])[-1]["data"]
    assert end["state"] == "succeeded", end
    return end


def chain(dom: Any, repo: Repository) -> list[str]:
    return [c.name for c in lv.checkpoints(dom, lv.chain_prefix(repo.id))]


def no_libvirt_job(dom: Any) -> None:
    assert lv.backup_job_socket(dom) is None
    assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE


# ------------------------------------------------------------------ the tests


def test_a_backup_is_followed_live_to_its_end_and_the_next_is_incremental(
        guest: Guest, http: Callable[[str], httpx.Client], gate: Gate) -> None:
    c = http("backup")
    guest.write_pattern("vda", DATA_AT, DATA_LEN, byte=0x5A)
    # Held at its first piece until the stream showed it running with nothing read,
    # then at its second until the stream showed the first piece's bytes.
    gate.shut(1, 2)
    r = c.post("/api/v1/backups", json={"vms": [guest.name], "consistency": "crash"})
    assert r.status_code == 202, r.text
    job = r.json()["job"]["id"]
    assert r.headers["location"] == f"/api/v1/jobs/{job}"
    seen: list[int] = []

    def release(e: Event) -> None:
        if e["event"] == "progress" and e["data"]["state"] == "running":
            done = e["data"]["bytes_read"]
            if (not seen and done == 0) or (seen == [0] and done > 0):
                seen.append(done)
                gate.release()

    events = follow(c, job, release)
    progress = [e["data"] for e in events if e["event"] == "progress"]
    moving = [p["bytes_read"] for p in progress if p["state"] == "running"]
    assert seen == moving[:2] and moving == sorted(moving) and moving[-1] > 0, progress
    ids = [int(e["id"]) for e in events if e["event"] == "log"]
    assert ids == list(range(len(ids))) and len(ids) > 2
    end = events[-1]["data"]
    assert end["state"] == "succeeded" and progress[-1]["state"] == "succeeded"
    part = end["result"][guest.name]
    assert part["modes"] == {"vda": "full"}
    # The end gives the point's bytes read (a running job counts the chunks it covered)
    assert end["bytes_read"] == part["bytes_read"] > 0
    points = c.get("/api/v1/points", params={"vm": guest.name}).json()["items"]
    assert [p["id"] for p in points] == [part["point"]]

    guest.write_pattern("vda", DATA_AT, MiB, byte=0x33)
    again = back_up(c, guest.name)["result"][guest.name]
    assert again["modes"] == {"vda": "incremental"}
    points = c.get("/api/v1/points", params={"vm": guest.name}).json()["items"]
    assert [p["id"] for p in points] == [part["point"], again["point"]]


def test_a_backup_cancelled_midway_commits_nothing_and_leaves_no_debris(
        guest: Guest, http: Callable[[str], httpx.Client], gate: Gate, api_ctx: ApiContext,
        scratch: Path, tmp_path: Path) -> None:
    c = http("operator")
    repo = api_ctx.repository()
    dom = guest.domain
    guest.write_pattern("vda", DATA_AT, DATA_LEN, byte=0x5A)
    first = back_up(c, guest.name)["result"][guest.name]["point"]
    before = chain(dom, repo)
    assert len(before) == 1
    guest.write_pattern("vda", DATA_AT, 2 * MiB, byte=0x44)
    gate.shut()
    r = c.post("/api/v1/backups", json={"vms": [guest.name], "consistency": "crash"})
    assert r.status_code == 202, r.text
    job = r.json()["job"]["id"]
    asked: list[dict[str, Any]] = []

    def cancel_midway(e: Event) -> None:
        if asked or not running_with_bytes(e):
            return
        assert lv.backup_job_socket(dom) is not None  # in the middle of its libvirt job
        answer = c.post(f"/api/v1/jobs/{job}/cancel")
        assert answer.status_code == 200, answer.text
        asked.append(answer.json())

    end = follow(c, job, cancel_midway)[-1]["data"]
    gate.open()
    assert asked == [{"job": job, "was": "running", "action": "cancel requested",
                      "state": "running"}]
    assert end["state"] == "interrupted" and end["exit_code"] == 143, end
    assert end["error"] == "interrupted: cancelled on request (job cancel)"
    assert end["result"] == {} and end["bytes_read"] > 0  # what it read is not unsaid
    # Nothing committed: not in the repository, not in the catalog, not listed.
    assert [m.id for m in reopen(repo).points()] == [first]
    assert [p.id for p in PointIndex(api_ctx.catalog).list(repo.id)] == [first]
    assert [p["id"] for p in c.get("/api/v1/points").json()["items"]] == [first]
    # No libvirt job, the chain as it was, no scratch file.
    no_libvirt_job(dom)
    assert chain(dom, repo) == before
    assert list(scratch.iterdir()) == []
    cancels = AuditLog(api_ctx.catalog).list(action="job.cancel")
    assert [(e.object, e.result) for e in cancels] == [(f"job:{job}", "ok")]
    # The next backup is an incremental on that chain, and holds what the guest wrote.
    after = back_up(c, guest.name)["result"][guest.name]
    assert after["modes"] == {"vda": "incremental"}
    out = tmp_path / "vda.raw"
    r = c.post("/api/v1/restores", json={"what": "disk", "point": after["point"],
                                         "disk": "vda", "to": str(out), "format": "raw"})
    assert r.status_code == 202, r.text
    assert follow(c, r.json()["job"]["id"])[-1]["data"]["state"] == "succeeded"
    with out.open("rb") as f:
        f.seek(DATA_AT)
        assert f.read(2 * MiB) == b"\x44" * (2 * MiB)
        assert f.read(DATA_LEN - 2 * MiB) == b"\x5a" * (DATA_LEN - 2 * MiB)
    assert out.read_bytes() == guest.read_image("vda", 0, 48 * MiB)


def test_a_restore_cancelled_midway_defines_no_domain_and_leaves_no_image(
        guest: Guest, http: Callable[[str], httpx.Client], gate: Gate, api_ctx: ApiContext,
        service: Service, tmp_path: Path) -> None:
    c = http("operator")  # the restore role starts restores but cancels no job
    guest.write_pattern("vda", DATA_AT, DATA_LEN, byte=0x5A)
    point = back_up(http("backup"), guest.name)["result"][guest.name]["point"]
    target = tmp_path / "restored"
    target.mkdir()
    name = f"{guest.name}-cancelled"
    conn = lv.connect(URI)
    gate.shut()
    try:
        r = c.post("/api/v1/restores", json={"point": point, "name": name,
                                             "storage": str(target)})
        assert r.status_code == 202, r.text
        job = r.json()["job"]["id"]
        asked: list[int] = []

        def cancel_midway(e: Event) -> None:
            if asked or not running_with_bytes(e, "bytes_written"):
                return
            assert c.post(f"/api/v1/jobs/{job}/cancel").status_code == 200
            asked.append(job)

        end = follow(c, job, cancel_midway)[-1]["data"]
        gate.open()
        assert asked == [job]
        assert end["state"] == "interrupted" and end["kind"] == "restore", end
        assert end["bytes_written"] > 0
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByName(name)
        assert list(target.iterdir()) == []
        assert guest.is_running
    finally:
        # A failed test leaves no restore running on to define the domain after this.
        service.stop()
        remove_domain(conn, name)
        conn.close()


def test_two_clients_backing_up_one_vm_at_once_make_one_job_and_never_two_at_a_time(
        guest: Guest, http: Callable[[str], httpx.Client], gate: Gate,
        api_ctx: ApiContext, service: Service) -> None:
    a, b = http("backup"), http("backup")
    body = {"vms": [guest.name], "consistency": "crash"}
    # Two jobs may run on the repository at once: only the VM keeps them apart.
    service.limits.per_repo = 2
    gate.shut()
    together = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def ask(c: httpx.Client) -> None:
        together.wait()
        answers.append(c.post("/api/v1/backups", json=body))

    threads = [threading.Thread(target=ask, args=(c,)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.status_code for r in answers) == [200, 202], [r.text for r in answers]
    assert sorted(r.json()["existing"] for r in answers) == [False, True]
    first = {r.json()["job"]["id"] for r in answers}
    assert len(first) == 1
    job = first.pop()
    assert gate.held.wait(60)  # it runs, held at the gate
    assert JobStore(api_ctx.catalog).get(job).state == "running"
    again = b.post("/api/v1/backups", json=body)  # a running one answers too
    assert again.status_code == 200 and again.json()["job"]["id"] == job
    # Other work on the same VM is another job, and it waits for the VM.
    other = b.post("/api/v1/backups", json={"group": "app", **body})
    assert other.status_code == 202, other.text
    second = other.json()["job"]["id"]
    store = JobStore(api_ctx.catalog)

    def waits() -> bool:
        lines = b.get(f"/api/v1/jobs/{second}/log").json()["lines"]
        return any(line["text"].startswith("waits: VM") for line in lines)

    for _ in range(600):
        if waits():
            break
        threading.Event().wait(0.1)
    assert waits()
    assert store.get(second).state == "queued" and store.get(job).state == "running"
    gate.open()
    ended = [follow(a, j)[-1]["data"] for j in (job, second)]
    assert [e["state"] for e in ended] == ["succeeded", "succeeded"], ended
    assert ended[1]["started"] >= ended[0]["ended"]
    backups = store.list(kind="backup")
    assert sorted(j.id for j in backups) == sorted({job, second})


def test_a_policy_stored_only_in_the_catalog_runs_now(
        guest: Guest, http: Callable[[str], httpx.Client], api_ctx: ApiContext) -> None:
    c = http("operator")
    r = c.post("/api/v1/policies", json={"name": "manual", "vms": [guest.name],
                                         "cron": "0 0 1 1 *", "consistency": "crash"})
    assert r.status_code == 201, r.text
    r = c.post("/api/v1/backups", json={"policy": "manual"})
    assert r.status_code == 202, r.text
    end = follow(c, r.json()["job"]["id"])[-1]["data"]
    assert end["state"] == "succeeded", end
    assert end["policy"] == "manual" and end["vms"] == [guest.name]
    point = end["result"][guest.name]["point"]
    assert [p["id"] for p in c.get("/api/v1/points").json()["items"]] == [point]
