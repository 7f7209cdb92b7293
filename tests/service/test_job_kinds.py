"""Jobs of every kind: submitted with validated parameters, run by the service (verify,
prune and gc on a repository of images; no guest needed), within the limits, and
cancelled wherever they are (queued, run by the service, run by a command)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stasis.app.kinds import KINDS, VerifyParams
from stasis.app.models import CancelResult, Queued
from stasis.app.submit import cancel_job, queue, submit
from stasis.catalog import Catalog, JobStore, PointIndex
from stasis.errors import HypervisorError, JobStateError, UsageError
from stasis.protection.backup import back_up_images
from stasis.repository import Repository
from stasis.service.jobs import this_runner
from stasis.service.runner import Limits, Service
from tests.clocks import ManualClock
from tests.conftest import BIN, PASSPHRASE, Cli, mixed_image, reopen, seed_catalog
from tests.drivers.stasis import JobHold


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC))


@pytest.fixture
def url(tmp_path: Path, catalog_template: Path) -> str:
    return str(seed_catalog(catalog_template, tmp_path / "catalog.db"))


@pytest.fixture
def points(repo: Repository, tmp_path: Path) -> Repository:
    """Three points of one chain, and the garbage of a removed fourth."""
    img = mixed_image(tmp_path / "d.raw", size=2 << 20)
    for seed in range(4):
        mixed_image(img, size=2 << 20, seed=seed)
        back_up_images(repo, [img], name="d", run_dir=tmp_path)
    repo.remove_point(repo.points()[0].id)
    return repo


def no_libvirt() -> Any:
    raise HypervisorError("libvirt is not used by this job")


def service(c: Catalog, repo: Repository, tmp_path: Path, **kw: Any) -> Service:
    for d in ("run", "scratch"):
        (tmp_path / d).mkdir(exist_ok=True)
    s = Service(c, [], repositories={"local": lambda: reopen(repo)}, connect=no_libvirt,
                run_dir=tmp_path / "run", scratch_dir=tmp_path / "scratch", **kw)
    s.start()
    return s


def wait_ended(s: Service, timeout: float = 60) -> None:
    for r in list(s.running.values()):
        r.thread.join(timeout)
        assert not r.thread.is_alive()


@pytest.fixture
def catalog(url: str, clock: ManualClock) -> Iterator[Catalog]:
    with Catalog.open(url, clock=clock) as c:
        yield c


# ------------------------------------------------------------------ submit


@pytest.mark.parametrize(("kind", "params", "why"), [
    ("verify", {"deep": "very"}, "deep"),
    ("verify", {"points": ["x"], "colour": "red"}, "colour"),
    ("backup.vms", {"vms": ["a"], "parallel": "two"}, "parallel"),
    ("backup.vms", {"vms": ["a"], "consistency": "perfect"}, "perfect"),
    ("gc", {"wait": -1}, "--wait"),
    ("prune", {}, "at least one --keep"),
    ("prune", {"keep": {"last": 1}, "name": "a", "vm": "b"}, "two ways"),
    ("restore.vm", {}, "point"),
    ("defrag", {}, "not a job kind"),  # (drill was unknown before issue 17)
    ("drill", {"target": "app", "mode": "sideways"}, "restore or instant"),
    ("drill", {"target": "app", "checks": [{"kind": "tcp", "arg": "http"}]}, "port"),
])
def test_submit_refuses_bad_parameters_before_anything_is_queued(
        points: Repository, url: str, kind: str, params: dict[str, Any], why: str) -> None:
    with pytest.raises(UsageError) as e:
        submit(url, kind, {"repo": points.url, **params})
    assert why in e.value.message
    with Catalog.open(url) as c:
        assert JobStore(c).list() == []


def test_submit_queues_the_registry_kind_with_the_repository_by_id(
        points: Repository, url: str) -> None:
    job_id = submit(url, "verify", VerifyParams(repo=points.url, deep=True))
    with pytest.raises(UsageError, match="names its repository"):
        submit(url, "gc", {})
    with Catalog.open(url) as c:
        job = JobStore(c).get(job_id)
    assert (job.kind, job.state, job.repo, job.name) == ("verify", "queued", points.id,
                                                         "all points")
    assert job.params["op"] == "verify" and job.params["deep"] is True
    assert set(KINDS) >= {"backup.vms", "backup.group", "backup.images", "restore.vm",
                          "restore.disk", "restore.group", "verify", "prune", "gc", "policy"}


# ------------------------------------------------------------------ the runner


def test_the_service_runs_verify_prune_and_gc_jobs(points: Repository, url: str,
                                                   catalog: Catalog, tmp_path: Path) -> None:
    s = service(catalog, points, tmp_path, limits=Limits(per_host=1, per_repo=1))
    ids = [submit(url, "verify", {"repo": points.url, "deep": True}),
           submit(url, "prune", {"repo": points.url, "keep": {"last": 1}}),
           submit(url, "gc", {"repo": points.url, "wait": 5})]
    store = JobStore(catalog)
    for job_id in ids:  # one at a time (the limits), oldest first
        assert s.dispatch() == [job_id]
        wait_ended(s)
    verify, prune, gc = (store.get(i) for i in ids)
    assert verify.state == "succeeded", verify.error
    assert len(verify.result) == 3 and all(r["ok"] for r in verify.result.values())
    assert verify.bytes_read > 0 and verify.vms == ["d"]
    assert prune.state == "succeeded", prune.error
    assert sorted(r["action"] for r in prune.result.values()) == ["keep", "removed", "removed"]
    assert len(reopen(points).points()) == 1
    assert gc.state == "succeeded", gc.error
    assert gc.result["gc"]["chunks"]["count"] > 0  # the removed points' chunks went
    assert all(j.host == this_runner()[0] for j in (verify, prune, gc))
    s.stop()


def test_an_unknown_kind_or_repository_fails_the_job_with_the_reason(
        points: Repository, catalog: Catalog, tmp_path: Path) -> None:
    store = JobStore(catalog)
    odd = store.create("copy", "x", repo=points.id, params={"op": "copy.somewhere"})
    bad = store.create("gc", "gc", repo=points.id, params={"op": "gc", "wait": "soon"})
    other = store.create("gc", "gc", repo="another-repository", params={"op": "gc"})
    s = service(catalog, points, tmp_path, limits=Limits(per_host=5, per_repo=5))
    assert s.dispatch() == []
    assert "'copy.somewhere' is not a job kind" in (store.get(odd.id).error or "")
    assert "wait" in (store.get(bad.id).error or "")
    assert "does not serve" in (store.get(other.id).error or "")
    assert {store.get(j.id).state for j in (odd, bad, other)} == {"failed"}
    s.stop()


def test_the_limits_hold_for_jobs_of_every_kind(points: Repository, url: str,
                                                catalog: Catalog, tmp_path: Path) -> None:
    """Per repository (by id, whatever the location submitted), and a busy VM: a
    backup of it waits, a verify of its points does not."""
    from stasis.hypervisor import libvirt_api as lv

    try:
        lv.connect("test:///default")
    except HypervisorError:
        pytest.skip("libvirt's test driver is not available")
    hold = threading.Event()
    s = service(catalog, points, tmp_path, limits=Limits(per_host=5, per_repo=1),
                unit_progress=lambda cancel: JobHold(hold, 60_000))
    s.connect = lambda: lv.connect("test:///default")
    first = submit(url, "verify", {"repo": points.url})
    second = submit(url, "gc", {"repo": f"file://{points.url}"})
    assert s.dispatch() == [first]  # one job on the repository at once
    assert s.dispatch() == []
    hold.set()
    wait_ended(s)
    assert s.dispatch() == [second]
    wait_ended(s)

    store = JobStore(catalog)
    other = store.create("backup", "test", vms=["test"], state="running",
                         runner=this_runner())  # a command backing up VM 'test'
    s.limits = Limits(per_host=5, per_repo=5)
    backup = submit(url, "backup.vms", {"repo": points.url, "vms": ["test"]})
    verify = submit(url, "verify", {"repo": points.url})
    assert s.dispatch() == [verify]
    assert any("waits: VM test is in another job" in line.text for line in store.logs(backup))
    wait_ended(s)
    store.finish(other.id, "succeeded")
    assert store.get(backup).state == "queued"
    s.stop()


# ------------------------------------------------------------------ cancel


def test_a_queued_job_is_cancelled_at_once_and_never_starts(points: Repository, url: str,
                                                           catalog: Catalog,
                                                           tmp_path: Path) -> None:
    job_id = submit(url, "gc", {"repo": points.url})
    done = cancel_job(url, job_id)
    assert done == CancelResult(job=job_id, was="queued", action="interrupted",
                                state="interrupted")
    s = service(catalog, points, tmp_path)
    assert s.dispatch() == []
    job = JobStore(catalog).get(job_id)
    assert job.state == "interrupted" and job.started is None and job.exit_code == 143
    with pytest.raises(JobStateError, match="is interrupted"):
        cancel_job(url, job_id)
    s.stop()


@pytest.mark.parametrize("kind", ["gc", "verify"])
def test_a_running_service_job_is_cancelled_with_nothing_committed(
        points: Repository, url: str, catalog: Catalog, tmp_path: Path, kind: str) -> None:
    garbage = sorted(points.backend.list("chunks/"), key=lambda o: o.key)
    s = service(catalog, points, tmp_path,
                unit_progress=lambda cancel: JobHold(cancel, 60_000))
    job_id = submit(url, kind, {"repo": points.url})
    assert s.dispatch() == [job_id]
    store = JobStore(catalog)
    deadline = time.monotonic() + 30
    while not any("holding" in line.text for line in store.logs(job_id)):
        assert time.monotonic() < deadline, "the job never began"
        time.sleep(0.05)
    assert cancel_job(url, job_id).action == "cancel requested"
    began = time.monotonic()
    s.tick()  # the service polls the flag
    wait_ended(s)
    assert time.monotonic() - began < 30  # the hold ended at once, not after 60 s
    job = store.get(job_id)
    assert job.state == "interrupted" and job.exit_code == 143, job.error
    assert job.result == {}
    assert sorted(points.backend.list("chunks/"), key=lambda o: o.key) == garbage
    s.stop()


def test_a_foreground_job_is_sent_sigterm_and_ends_interrupted(cli_repo: Cli,
                                                               tmp_path: Path) -> None:
    """``stasis gc`` waiting for a backup's lock; ``stasis job cancel`` stops it."""
    from stasis.backends import open_backend
    from stasis.repository import Credentials

    url = str(Path(cli_repo.env["STASIS_STATE_DIR"]) / "catalog.db")
    repo = Repository.open(open_backend(cli_repo.repo),
                           Credentials(passphrase=PASSPHRASE.encode()))
    with repo.shared_lock("a backup"):
        proc = subprocess.Popen([str(BIN), "gc", "--wait", "120"], env=cli_repo.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            job_id = None
            deadline = time.monotonic() + 60
            while job_id is None:
                assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
                time.sleep(0.1)
                with Catalog.open(url) as c:
                    running = JobStore(c).list(state="running", kind="gc")
                job_id = running[0].id if running else None
            assert cancel_job(url, job_id) == CancelResult(
                job=job_id, was="running", action="terminated", state="running")
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
    assert proc.returncode == 143, err
    with Catalog.open(url) as c:
        job = JobStore(c).get(job_id)
    assert job.state == "interrupted" and "SIGTERM" in (job.error or "")


# ------------------------------------------------------------------ --queue


def test_queue_is_refused_without_a_service_and_queued_with_one(cli_repo: Cli) -> None:
    url = str(Path(cli_repo.env["STASIS_STATE_DIR"]) / "catalog.db")
    r = cli_repo("gc", "--queue")
    assert r.code == 37, r.err
    assert "no service runs on the catalog" in r.err and "Nothing was queued" in r.err
    with Catalog.open(url) as c:
        assert JobStore(c).list() == []
        JobStore(c).register_service(this_runner(), None)  # this process serves it
    queued = cli_repo.ok("verify", "--queue", "--deep", "--json").json()
    assert isinstance(queued, dict)
    assert Queued.model_validate(queued).service_pid == os.getpid()
    with Catalog.open(url) as c:
        job = JobStore(c).get(queued["job"])
        assert PointIndex(c).list() == []
    assert (job.kind, job.state, job.params["deep"]) == ("verify", "queued", True)
    with pytest.raises(JobStateError):  # in-process the same
        with Catalog.open(url) as c:
            JobStore(c).unregister_service(JobStore(c).services()[0].id)
        queue(url, "gc", {"repo": str(cli_repo.repo)}, by="a test")


# ------------------------------------------------------------------ waking the service

HOUR = 3600.0  # the serving tests' tick: a job that ran did not wait for one


def serve_counting(s: Service) -> tuple[threading.Event, threading.Thread, list[int],
                                        threading.Event]:
    """``s.serve`` in a thread with an hour's tick; the ticks it made, and its first."""
    ticks: list[int] = []
    first = threading.Event()
    tick = s.tick

    def counted() -> None:
        tick()
        ticks.append(1)
        first.set()

    s.tick = counted  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=s.serve, args=(stop,), kwargs={"tick_s": HOUR},
                              daemon=True)
    thread.start()
    assert first.wait(60), "the service never ticked"
    return stop, thread, ticks, first


def ended(store: JobStore, job_id: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (state := store.get(job_id).state) in ("queued", "running"):
        assert time.monotonic() < deadline, f"job {job_id} is still {state}"
        time.sleep(0.05)
    return state


def test_a_job_queued_by_a_command_is_taken_at_once_not_at_the_next_tick(
        points: Repository, url: str, catalog: Catalog, tmp_path: Path) -> None:
    s = service(catalog, points, tmp_path)
    stop, thread, ticks, _ = serve_counting(s)
    queued = queue(url, "verify", {"repo": points.url}, by="the test")
    assert ended(JobStore(catalog), queued.job) == "succeeded"
    assert len(ticks) >= 2  # woken: it ticked again before its hour passed
    stop.set()  # stopping wakes it too
    thread.join(60)
    assert not thread.is_alive()


def test_a_jobs_end_starts_the_next_queued_one_at_once(points: Repository, url: str,
                                                       catalog: Catalog, tmp_path: Path) -> None:
    s = service(catalog, points, tmp_path, limits=Limits(per_host=1, per_repo=1))
    ids = [submit(url, "verify", {"repo": points.url}) for _ in range(2)]  # nobody woken
    stop, thread, _, _ = serve_counting(s)  # the first tick starts the first job alone
    store = JobStore(catalog)
    assert [ended(store, i) for i in ids] == ["succeeded", "succeeded"]
    first, second = (store.get(i) for i in ids)
    assert first.ended is not None and second.started is not None
    assert second.started >= first.ended  # one at a time: the second took the first's slot
    stop.set()
    thread.join(60)


def test_a_wake_up_reaches_the_listener_of_that_runner_only() -> None:
    from stasis.service.wake import WakeListener, wake

    heard = threading.Event()
    runner = ("host", 1, 123456789)  # an identity no process has
    listener = WakeListener(runner, heard.set)
    try:
        assert listener.listening
        assert not WakeListener(runner, heard.set).listening  # the name is taken
        assert not wake(1, 987654321)  # nobody listens there
        assert not heard.is_set()
        assert wake(1, 123456789)
        assert heard.wait(30)
    finally:
        listener.close()
    assert not wake(1, 123456789)


def test_the_services_jobs_share_one_libvirt_connection(points: Repository, catalog: Catalog,
                                                        tmp_path: Path) -> None:
    class Conn:
        alive, closed = True, False

        def isAlive(self) -> bool:  # libvirt's name
            return self.alive

        def close(self) -> int:
            self.closed = True
            return 0

    made: list[Conn] = []

    def connect() -> Conn:
        made.append(Conn())
        return made[-1]

    s = service(catalog, points, tmp_path)
    s.connect = connect  # type: ignore[assignment]
    env = s._env(JobStore(catalog).create("gc", "gc", repo=points.id))
    assert s.conn() is env.conn() is s.conn()
    assert len(made) == 1
    made[0].alive = False  # libvirtd restarted: connected again, the dead one closed
    assert s.conn() is made[1] and made[0].closed
    s.stop()
