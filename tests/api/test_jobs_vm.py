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
from tests.conftest import reopen

pytestmark = pytest.mark.vm
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
    """A progress sink per unit of work that, while the gate is shut, holds the work at
    its second piece (the first one has reached the job's row) until the gate opens or
    the job is cancelled."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self.held = threading.Event()  # some work waits at the gate
        self._pieces = 0
        self._lock = threading.Lock()

    def shut(self) -> None:
        with self._lock:
            self._pieces = 0
        self.held.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def sink(self, cancel: threading.Event) -> Progress:
        gate = self

        class Sink:
            def start(self, description: str, total: int) -> None:
                pass

            def advance(self, amount: int) -> None:
                with gate._lock:
                    gate._pieces += 1
                    first = gate._pieces == 1
                if first:
                    return
                while not gate._open.is_set() and not cancel.is_set():
                    gate.held.set()
                    gate._open.wait(0.05)

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
    s.start()
    api_ctx.wake = s.wake
    stop = threading.Event()
    t = threading.Thread(target=s.serve, args=(stop, 0.2), daemon=True)
    t.start()
    yield s
    gate.open()
    stop.set()
    t.join(60)


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
    gate.shut()  # held at its second piece until the stream showed the first
    r = c.post("/api/v1/backups", json={"vms": [guest.name], "consistency": "crash"})
    assert r.status_code == 202, r.text
    job = r.json()["job"]["id"]
    assert r.headers["location"] == f"/api/v1/jobs/{job}"
    events = follow(c, job, lambda e: gate.open() if running_with_bytes(e) else None)
    progress = [e["data"] for e in events if e["event"] == "progress"]
    read = [p["bytes_read"] for p in progress]
    assert read == sorted(read), progress
    moving = [p["bytes_read"] for p in progress if p["state"] == "running"
              and p["bytes_read"] > 0]
    assert moving and moving[0] < read[-1], progress  # seen while it ran, then grew
    ids = [int(e["id"]) for e in events if e["event"] == "log"]
    assert ids == list(range(len(ids))) and len(ids) > 2
    end = events[-1]["data"]
    assert end["state"] == "succeeded" and end["bytes_read"] == read[-1]
    part = end["result"][guest.name]
    assert part["modes"] == {"vda": "full"}
    points = c.get("/api/v1/points", params={"vm": guest.name}).json()["items"]
    assert [p["id"] for p in points] == [part["point"]]

    guest.write_pattern("vda", DATA_AT, MiB, byte=0x33)
    again = back_up(c, guest.name)["result"][guest.name]
    assert again["modes"] == {"vda": "incremental"}
    points = c.get("/api/v1/points", params={"vm": guest.name}).json()["items"]
    assert [p["id"] for p in points] == [part["point"], again["point"]]
