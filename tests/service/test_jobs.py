"""Jobs without guests: the tables and their migration, recording, log expiry with an
injected clock, crashed-job detection, the scheduler's queue, and the points index.

Tests that take ``catalog``, ``catalog_url`` or ``migrated_catalog_url`` run on SQLite and
on PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stasis.catalog import Catalog, GroupStore, JobStore, PointIndex, PolicyStore
from stasis.catalog.migrations import HEAD
from stasis.errors import CatalogError, HypervisorError, StasisError
from stasis.hypervisor import libvirt_api as lv
from stasis.parallel import Cancelled
from stasis.repository import Repository
from stasis.repository.process import start_time
from stasis.service.jobs import (
    dead_jobs,
    expire_logs,
    fail_dead_job,
    open_catalog_or_warn,
    recorded,
    runner_alive,
    this_runner,
)
from stasis.service.policy import parse_policies
from stasis.service.runner import Service
from stasis.signals import Terminated
from tests.clocks import ManualClock
from tests.conftest import Cli, mixed_image, seed_catalog


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC))


@pytest.fixture
def catalog(migrated_catalog_url: str, clock: ManualClock) -> Iterator[Catalog]:
    with Catalog.open(migrated_catalog_url, clock=clock) as c:
        yield c


def test_the_new_tables_and_an_upgrade_from_0001_keeps_the_groups(tmp_path: Path,
                                                                  catalog_url: str) -> None:
    from alembic import command
    from sqlalchemy import create_engine, inspect

    with Catalog.open(str(tmp_path / "scratch.db")) as scratch:
        config = scratch._config()  # the shipped migrations

    e = create_engine(catalog_url.replace("postgresql://", "postgresql+psycopg://"))
    with e.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001_groups")
        conn.exec_driver_sql(
            "INSERT INTO groups (name, members, name_globs, labels, consistency, hooks, "
            "description, created, updated) VALUES ('app', '[\"a\"]', '[]', '{}', 'crash', "
            "'{}', '', '2025-01-01 00:00:00+00', '2025-01-01 00:00:00+00')")
    with Catalog.open(catalog_url) as c:
        assert c.revision() == HEAD
        stored = GroupStore(c).must_get("app")
        assert stored.group.members == ["a"]
        assert stored.created == datetime(2025, 1, 1, tzinfo=UTC)
    with e.connect() as conn:
        names = set(inspect(conn).get_table_names())
    e.dispose()
    assert {"repositories", "vms", "points", "jobs", "job_logs", "policies",
            "services"} <= names


def test_an_upgrade_names_the_repositories_of_old_jobs_by_id(tmp_path: Path,
                                                             catalog_url: str) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    with Catalog.open(str(tmp_path / "scratch.db")) as scratch:
        config = scratch._config()
    e = create_engine(catalog_url.replace("postgresql://", "postgresql+psycopg://"))
    with e.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002_points_jobs_policies")
        conn.exec_driver_sql(
            "INSERT INTO repositories (id, url, first_seen) VALUES "
            "('r1', '/srv/repo', '2025-01-01 00:00:00+00')")
        for name, repo in (("known", "/srv/repo"), ("unknown", "/elsewhere")):
            conn.exec_driver_sql(
                "INSERT INTO jobs (kind, name, vms, repo, state, queued, bytes_read, "
                f"bytes_written, result, params) VALUES ('backup', '{name}', '[]', '{repo}', "
                "'succeeded', '2025-01-01 00:00:00+00', 0, 0, '{}', '{}')")
    e.dispose()
    with Catalog.open(catalog_url) as c:
        assert c.revision() == HEAD
        repos = {j.name: j.repo for j in JobStore(c).list()}
    assert repos == {"known": "r1", "unknown": "/elsewhere"}  # nothing guessed


def test_a_job_records_its_log_result_and_end_state(catalog: Catalog, clock: ManualClock) -> None:
    import logging

    store = JobStore(catalog)
    with recorded(catalog, "backup", "web", vms=["web"], repo="/r") as run:
        logging.getLogger("stasis.protection").info("reading %s", "vda")
        clock.tick(seconds=5)
        run.result["web"] = {"point": "ab" * 16}
        run.bytes_read, run.bytes_written = 100, 40
    job = store.get(run.id or 0)
    assert job.state == "succeeded" and job.exit_code is None and job.error is None
    assert (job.bytes_read, job.bytes_written, job.vms) == (100, 40, ["web"])
    assert job.duration_s == 5.0
    assert job.host == this_runner()[0] and job.pid == this_runner()[1]
    texts = [line.text for line in store.logs(job.id)]
    assert texts[0] == "backup web started (VMs web)" and "reading vda" in texts
    assert texts[-1] == "backup web succeeded"

    with pytest.raises(HypervisorError), recorded(catalog, "backup", "db") as run:
        raise HypervisorError("connection lost", "Try again.")
    job = store.get(run.id or 0)
    assert job.state == "failed" and job.exit_code == 22 and "connection lost" in (job.error or "")
    assert any(line.level == "error" for line in store.logs(job.id))

    for interrupt in (KeyboardInterrupt(), Cancelled()):
        with pytest.raises(type(interrupt)), recorded(catalog, "backup", "x") as run:
            raise interrupt
        assert store.get(run.id or 0).state == "interrupted"

    with recorded(catalog, "backup", "two", vms=["a", "b"]) as run:  # a part fails
        run.failed_part("b", StasisError("disk gone"))
    job = store.get(run.id or 0)
    assert job.state == "failed" and job.result["b"]["error"] == "disk gone"
    assert [j.state for j in store.list(limit=2)] == ["failed", "interrupted"]
    assert len(store.list(state="interrupted")) == 2


def test_sigterm_and_ctrl_c_are_told_apart_by_class(catalog: Catalog) -> None:
    """The CLI raises Terminated for SIGTERM; the service knows it from stasis.signals."""
    store = JobStore(catalog)
    for interrupt, code, reason in ((Terminated(), 143, "interrupted by SIGTERM"),
                                    (KeyboardInterrupt(), 130, "interrupted by Ctrl-C")):
        with pytest.raises(type(interrupt)), recorded(catalog, "backup", "x") as run:
            raise interrupt
        job = store.get(run.id or 0)
        assert (job.state, job.exit_code, job.error) == ("interrupted", code, reason)


def test_the_log_of_other_threads_is_not_the_jobs(catalog: Catalog) -> None:
    import logging

    other = threading.Event()
    with recorded(catalog, "backup", "mine") as run:
        t = threading.Thread(target=lambda: (logging.getLogger("stasis.x").info("not mine"),
                                             other.set()))
        t.start()
        t.join()
    assert other.is_set()
    assert "not mine" not in [line.text for line in JobStore(catalog).logs(run.id or 0)]


def test_a_catalog_that_fails_does_not_stop_the_work(tmp_path: Path) -> None:
    warnings: list[CatalogError] = []
    bad = tmp_path / "file"
    bad.write_text("x")
    c = open_catalog_or_warn(str(bad / "catalog.db"), warnings.append)  # under a file
    assert c is None and warnings
    ran = []
    with recorded(None, "backup", "vm") as run:
        ran.append(True)
    assert ran and run.id is None

    import logging

    good = Catalog.open(str(tmp_path / "c.db"))
    with recorded(good, "backup", "vm", on_catalog_error=warnings.append) as run:
        with sqlite3.connect(tmp_path / "c.db") as db:  # the catalog breaks mid-job
            db.execute("DROP TABLE job_logs")
        logging.getLogger("stasis.protection").info("a line it cannot store")
        ran.append(True)
    assert len(ran) == 2 and run.id is not None
    assert len(warnings) == 2 and "failed" in warnings[1].message  # warned once, went on


def test_logs_expire_after_the_time_kept(catalog: Catalog, clock: ManualClock) -> None:
    store = JobStore(catalog)
    job = store.create("backup", "web", state="running", runner=this_runner())
    store.log(job.id, "info", "old line")
    clock.tick(days=20)
    store.log(job.id, "info", "newer line")
    clock.tick(days=11)  # the first is 31 days old, the second 11
    assert expire_logs(catalog, timedelta(days=30)) == 1
    assert [line.text for line in store.logs(job.id)] == ["newer line"]
    clock.tick(days=20)
    assert expire_logs(catalog, timedelta(days=30)) == 1
    assert store.logs(job.id) == [] and store.get(job.id).state == "running"  # job stays


def test_a_job_of_a_dead_runner_is_failed_with_a_log_line(catalog: Catalog) -> None:
    store = JobStore(catalog)
    proc = subprocess.Popen(["sleep", "30"])
    started = start_time(proc.pid)
    assert started is not None
    host = this_runner()[0]
    alive_job = store.create("backup", "alive", vms=["a"], state="running",
                             runner=(host, proc.pid, started))
    reused = store.create("backup", "reused", vms=["b"], state="running",
                          runner=(host, proc.pid, started + 1))  # its pid went to another
    mine = store.create("backup", "mine", state="running", runner=this_runner())
    elsewhere = store.create("backup", "elsewhere", state="running",
                             runner=("another-host", 1, 1))
    assert runner_alive(host, proc.pid, started) is True
    assert runner_alive(host, proc.pid, started + 1) is False
    assert runner_alive("another-host", 1, 1) is None
    assert [j.id for j in dead_jobs(catalog)] == [reused.id]
    proc.kill()
    proc.wait()
    assert [j.id for j in dead_jobs(catalog)] == [alive_job.id, reused.id]
    cleaned: list[list[str]] = []
    for job in dead_jobs(catalog):
        fail_dead_job(catalog, job, lambda j: (cleaned.append(j.vms), ["checkpoint: x"])[1])
    assert cleaned == [["a"], ["b"]]
    for job_id in (alive_job.id, reused.id):
        job = store.get(job_id)
        assert job.state == "failed" and "is gone" in (job.error or "")
        texts = [line.text for line in store.logs(job_id)]
        assert any("killed or crashed" in t for t in texts) and "cleaned: checkpoint: x" in texts
    assert store.get(mine.id).state == "running" and store.get(elsewhere.id).state == "running"


POLICY = """\
[[policy]]
name = "often"
vms = ["no-such-vm-{n}"]
every = "1m"
"""


def test_the_scheduler_queues_on_time_coalesces_and_runs_missed_slots_once(
    tmp_path: Path, clock: ManualClock, repo: Repository, migrated_catalog_url: str
) -> None:
    """With the libvirt test driver (no guests): a policy of a VM that does not exist
    is queued at its slot and fails; missed slots while down run once at start."""
    try:
        lv.connect("test:///default")
    except HypervisorError:
        pytest.skip("libvirt's test driver is not available")
    policies = parse_policies(POLICY.format(n=1))
    url = migrated_catalog_url

    def service(c: Catalog) -> Service:
        return Service(c, policies, repositories={"local": lambda: repo},
                       connect=lambda: lv.connect("test:///default"),
                       run_dir=tmp_path / "run", scratch_dir=tmp_path / "scratch")

    (tmp_path / "run").mkdir()
    (tmp_path / "scratch").mkdir()
    clock.set(datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC))
    c = Catalog.open(url, clock=clock)
    s = service(c)
    s.start()
    store, states = JobStore(c), PolicyStore(c)
    assert store.list() == []  # a new policy waits for its first slot
    assert states.get("often").next_run == datetime(2025, 3, 1, 12, 1, tzinfo=UTC)
    clock.tick(seconds=20)
    s.tick()
    assert store.list() == []
    clock.tick(seconds=15)  # 12:01:05
    s.due()
    s.due()  # the same slot is not queued twice
    clock.tick(minutes=1)
    s.due()  # a second slot while the first still waits: coalesced
    queued = store.list(state="queued")
    assert len(queued) == 1 and queued[0].policy == "often"
    assert s.dispatch() == [queued[0].id]
    s.running[queued[0].id].thread.join(30)
    job = store.get(queued[0].id)
    assert job.state == "failed" and "no-such-vm-1" in (job.error or "")
    s.stop()
    c.close()
    # Down for an hour: 60 slots pass, and one job runs for them at start.
    clock.tick(hours=1)
    c = Catalog.open(url, clock=clock)
    s = service(c)
    s.start()
    again = JobStore(c).list(state="queued")
    assert len(again) == 1
    assert any("missed while no service ran" in line.text
               for line in JobStore(c).logs(again[0].id))
    assert PolicyStore(c).get("often").next_run == datetime(2025, 3, 1, 13, 3, tzinfo=UTC)
    s.stop()


def test_a_clock_that_jumps_back_or_ahead_loses_no_run(
    tmp_path: Path, clock: ManualClock, repo: Repository, migrated_catalog_url: str
) -> None:
    """The host clock jumps back an hour: the next run is the schedule's next slot
    from the new time (not an hour of skipped slots); it jumps ahead an hour: the
    slots it skipped run once, at once."""
    policies = parse_policies(POLICY.format(n=2).replace('every = "1m"', 'every = "10m"'))
    (tmp_path / "run").mkdir()
    (tmp_path / "scratch").mkdir()
    clock.set(datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC))
    c = Catalog.open(migrated_catalog_url, clock=clock)
    s = Service(c, policies, repositories={"local": lambda: repo},
                connect=lambda: lv.connect("test:///default"),
                run_dir=tmp_path / "run", scratch_dir=tmp_path / "scratch")
    s.start()
    store, states = JobStore(c), PolicyStore(c)
    assert states.get("often").next_run == datetime(2025, 3, 1, 12, 10, tzinfo=UTC)
    clock.set(datetime(2025, 3, 1, 11, 0, 30, tzinfo=UTC))  # back an hour
    s.due()
    assert store.list() == []
    assert states.get("often").next_run == datetime(2025, 3, 1, 11, 10, tzinfo=UTC)
    clock.set(datetime(2025, 3, 1, 11, 10, 5, tzinfo=UTC))
    s.due()
    (first,) = store.list(state="queued")  # on time by the new clock
    assert s.dispatch() == [first.id]
    s.running[first.id].thread.join(30)  # it fails: its VM does not exist
    clock.set(datetime(2025, 3, 1, 12, 15, 5, tzinfo=UTC))  # ahead an hour
    s.due()
    (second,) = store.list(state="queued")  # the skipped slots run once, at once
    assert second.id != first.id
    assert states.get("often").next_run == datetime(2025, 3, 1, 12, 20, tzinfo=UTC)
    s.stop()
    c.close()


def test_rebuilt_index_lists_the_same_points_as_the_repository(cli_repo: Cli,
                                                               tmp_path: Path) -> None:
    img = mixed_image(tmp_path / "disk.raw", size=4 << 20)
    for _ in range(2):
        cli_repo.ok("backup", "image", str(img), "--name", "disk")
    cli_repo.ok("backup", "image", str(img), "--name", "other", "--tag", "k=v")
    listed = cli_repo.ok("list", "--json").json()
    # A disaster-recovery site: a new, empty catalog, and the repository alone.
    dr = {"STASIS_CATALOG": str(tmp_path / "dr" / "catalog.db")}
    (tmp_path / "dr").mkdir()
    rebuilt = cli_repo.ok("catalog", "rebuild", "--json", env=dr).json()
    assert isinstance(rebuilt, dict) and rebuilt["points"] == 3
    indexed = cli_repo.ok("catalog", "points", "--json", env=dr).json()
    assert isinstance(listed, list) and isinstance(indexed, list)
    keys = ("id", "name", "time", "kind", "size", "bytes_read", "parent", "tags", "vms")
    assert [{k: p[k] for k in keys} for p in indexed] == [{k: p[k] for k in keys}
                                                         for p in listed]
    # Rebuilding again (or after a point is gone) gives the repository's points, no more.
    cli_repo.ok("catalog", "rebuild", env=dr)
    assert len(cli_repo.ok("catalog", "points", "--json", env=dr).json()) == 3  # type: ignore[arg-type]


def test_points_index_sync_adds_and_drops(repo: Repository, catalog: Catalog,
                                          tmp_path: Path) -> None:
    from stasis.protection.backup import back_up_images

    img = mixed_image(tmp_path / "d.raw", size=2 << 20)
    a = back_up_images(repo, [img], name="d", run_dir=tmp_path)
    index = PointIndex(catalog)
    assert index.sync(repo) == (1, 0)
    b = back_up_images(repo, [img], name="d", run_dir=tmp_path)
    repo.remove_point(a.id)
    assert index.sync(repo) == (1, 1)
    assert [p.id for p in index.list(repo.id)] == [b.id]


@pytest.mark.parametrize(("per_host", "per_repo", "started"), [(2, 1, 1), (2, 5, 2), (5, 5, 3)])
def test_dispatch_keeps_the_limits_per_host_and_per_repository(
    tmp_path: Path, clock: ManualClock, repo: Repository, per_host: int, per_repo: int,
    started: int, catalog_template: Path,
) -> None:
    """Three policies due at once, one repository: as many start as both limits allow;
    the others stay queued for the next dispatch."""
    try:
        lv.connect("test:///default")
    except HypervisorError:
        pytest.skip("libvirt's test driver is not available")
    from stasis.service.runner import Limits

    policies = parse_policies("".join(
        POLICY.format(n=n).replace('name = "often"', f'name = "p{n}"') for n in range(3)))
    (tmp_path / "run").mkdir()
    (tmp_path / "scratch").mkdir()
    clock.set(datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC))
    c = Catalog.open(str(seed_catalog(catalog_template, tmp_path / "catalog.db")), clock=clock)
    s = Service(c, policies, repositories={"local": lambda: repo},
                connect=lambda: lv.connect("test:///default"), run_dir=tmp_path / "run",
                scratch_dir=tmp_path / "scratch", limits=Limits(per_host, per_repo))
    s.start()
    clock.tick(minutes=1)
    s.due()
    store = JobStore(c)
    assert len(store.list(state="queued")) == 3
    first = s.dispatch()
    assert len(first) == started
    assert len(store.list(state="queued")) == 3 - started
    for r in list(s.running.values()):
        r.thread.join(30)
    # Once they ended, the next dispatch starts the rest (within the same limits).
    second = s.dispatch()
    assert len(second) == min(started, 3 - started) and not set(first) & set(second)
    for r in list(s.running.values()):
        r.thread.join(30)
    s.stop()
    c.close()
