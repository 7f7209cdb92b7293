"""``stasis serve`` on a real guest: killed with kill -9 in the middle of a backup job
and started again, it marks the job failed, cleans its debris, and the next run of
the policy commits a point; stopped with SIGTERM in the middle of a job (one that
``stasis policy run`` queued for it through the catalog), the job ends interrupted
and nothing is left behind. One guest serves the module's tests (each test has a
repository of its own, so a checkpoint chain of its own)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stasis.backends import open_backend
from stasis.catalog import Catalog, JobStore
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Credentials, Repository
from stasis_testkit import DiskSpec, Guest, GuestKit, MiB
from tests.conftest import PASSPHRASE, Cli, driver

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

RATE = 20  # the service's clock runs 20 times as fast: a 1m policy runs every 3 s


@pytest.fixture(scope="module")
def guest(kit: GuestKit) -> Iterator[Guest]:
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB)])
    try:
        g.wait_ready(90)
        yield g
    finally:
        g.destroy()


def _until(what: str, check: Callable[[], Any], timeout: float,
           proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"stasis serve exited ({proc.returncode}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_serve_killed_mid_job_fails_it_cleans_up_and_runs_again(
        guest: Guest, cli_repo: Cli, tmp_path: Path) -> None:
    started = time.monotonic()
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o711)
    policies = tmp_path / "policies.toml"
    policies.write_text(f'[[policy]]\nname = "often"\nvms = ["{guest.name}"]\nevery = "1m"\n')
    env = {**cli_repo.env, "STASIS_SCRATCH_DIR": str(scratch)}
    fast = ("--clock-rate", f"{RATE}@{time.time():.3f}")
    args = ["serve", "--policies", str(policies), "--tick", "0.5"]
    cmd = [*driver(*fast), *args]
    dom = guest.domain
    log1 = open(tmp_path / "serve1.log", "w")  # noqa: SIM115 - closed below
    # The first service holds its job once the backup job began (checkpoint made,
    # nothing read or committed) for 8 s: long enough to kill it there.
    first = subprocess.Popen([*driver(*fast, "--job-hold-ms", "8000"), *args], env=env,
                             stdout=log1, stderr=subprocess.STDOUT, text=True)
    try:
        _until("a backup job on the guest", lambda: lv.backup_job_socket(dom), 40, first)
        jobs = cli_repo.ok("jobs", "--json", env=env).json()
        assert isinstance(jobs, list)
        running = [j for j in jobs if j["state"] == "running"]
        assert len(running) == 1, jobs  # the slots after it wait: its VM is busy
        assert running[0]["policy"] == "often" and running[0]["vms"] == [guest.name]
        assert all(j["state"] == "queued" for j in jobs if j not in running)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        log1.close()
    killed = running[0]["id"]
    # What kill -9 left: libvirt's backup job and a checkpoint of no committed point.
    assert lv.backup_job_socket(dom) is not None
    assert lv.checkpoints(dom, "stasis-")
    assert cli_repo.ok("list", "--json").json() == []

    log2 = open(tmp_path / "serve2.log", "w")  # noqa: SIM115 - closed below
    second = subprocess.Popen(cmd, env=env, stdout=log2, stderr=subprocess.STDOUT, text=True)
    try:
        def done() -> list[dict[str, Any]] | None:
            rows = cli_repo.ok("jobs", "--json", env=env).json()
            assert isinstance(rows, list)
            ok = [j for j in rows if j["state"] == "succeeded"]
            return rows if ok else None

        rows = _until("a run that succeeds", done, 60, second)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
    finally:
        if second.poll() is None:
            second.kill()
        log2.close()
    serve_log = (tmp_path / "serve2.log").read_text()
    old = next(j for j in rows if j["id"] == killed)
    assert old["state"] == "failed" and "is gone" in old["error"], serve_log
    shown = cli_repo.ok("job", "show", str(killed), "--log", "--json", env=env).json()
    assert isinstance(shown, dict)
    texts = [line["text"] for line in shown["log"]]
    assert any("killed or crashed" in t for t in texts), texts
    assert any(t.startswith("cleaned: libvirt job") for t in texts), texts
    assert any(t.startswith("cleaned: checkpoint") for t in texts), texts
    # The run after it committed a point of the guest, recorded in the catalog.
    good = next(j for j in rows if j["state"] == "succeeded")
    assert good["id"] > killed and good["vms"] == [guest.name]
    listed = cli_repo.ok("list", "--json").json()
    assert isinstance(listed, list) and listed
    assert good["result"][guest.name]["point"] in [p["id"] for p in listed]
    # No debris: no libvirt job, and every checkpoint of the chain has its point.
    assert lv.backup_job_socket(dom) is None
    assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
    committed = {p["id"][:12] for p in listed}  # type: ignore[index]
    repo_id = Repository.open(open_backend(cli_repo.repo),
                              Credentials(passphrase=PASSPHRASE.encode())).id
    chain = lv.checkpoints(dom, lv.chain_prefix(repo_id))
    assert chain and all(c.point_prefix() in committed for c in chain)
    indexed = cli_repo.ok("catalog", "points", "--json", env=env).json()
    assert [p["id"] for p in indexed] == [p["id"] for p in listed]  # type: ignore[index]
    status = cli_repo.ok("status", "--json", env=env).json()
    assert isinstance(status, list)
    row = next(r for r in status if r["vm"] == guest.name)
    assert row["newest_point"] == good["result"][guest.name]["point"]
    assert row["policies"] == ["often"] and row["next_run"]
    # With no service running, 'policy run' runs the policy here; 'backup vm' is a job too.
    ran = cli_repo.ok("policy", "run", "often", "--json", env=env).json()
    assert isinstance(ran, dict) and ran["state"] == "succeeded" and ran["policy"] == "often"
    cli_repo.ok("backup", "vm", guest.name, "--json", env=env)
    newest = cli_repo.ok("jobs", "--json", "--limit", "1", env=env).json()
    assert isinstance(newest, list) and newest[0]["state"] == "succeeded"
    assert newest[0]["policy"] is None and newest[0]["vms"] == [guest.name]
    assert newest[0]["result"][guest.name]["point"] in [
        p["id"] for p in cli_repo.ok("list", "--json").json()]  # type: ignore[union-attr]
    assert time.monotonic() - started < 90


def test_policy_run_queues_for_the_service_and_sigterm_interrupts_the_job(
        guest: Guest, cli_repo: Cli, tmp_path: Path, catalog_url: str) -> None:
    """On SQLite and on PostgreSQL: the queue is the catalog's jobs table."""
    started = time.monotonic()
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o711)
    policies = tmp_path / "policies.toml"
    # Never due during the test (1 January): only 'policy run' makes it run.
    policies.write_text(f'[[policy]]\nname = "manual"\nvms = ["{guest.name}"]\n'
                        'cron = "0 0 1 1 *"\n')
    catalog = catalog_url
    env = {**cli_repo.env, "STASIS_SCRATCH_DIR": str(scratch), "STASIS_CATALOG": catalog}
    repo_id = Repository.open(open_backend(cli_repo.repo),
                              Credentials(passphrase=PASSPHRASE.encode())).id
    dom = guest.domain
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    # Each backup of this service waits 20 s once its libvirt job began: SIGTERM lands
    # there, with a backup job and a new checkpoint on the guest.
    serve = subprocess.Popen(
        [*driver("--job-hold-ms", "20000"), "serve", "--policies", str(policies), "--tick",
         "0.5"], env=env, stdout=log,
        stderr=subprocess.STDOUT, text=True)
    try:
        def registered() -> bool:
            with Catalog.open(catalog) as c:
                return any(s.pid == serve.pid for s in JobStore(c).services())

        _until("the service to register", registered, 30, serve)
        # Without --policies: the policy as the service stored it in the catalog.
        queued = cli_repo.ok("policy", "run", "manual", "--json", env=env).json()
        assert isinstance(queued, dict)
        assert queued["state"] == "queued" and queued["service_pid"] == serve.pid
        job_id = queued["job"]

        def running() -> dict[str, Any] | None:
            job = cli_repo.ok("job", "show", str(job_id), "--json", env=env).json()
            assert isinstance(job, dict)
            return job if job["state"] == "running" and lv.backup_job_socket(dom) else None

        job = _until("the queued job running on the guest", running, 40, serve)
        assert job["pid"] == serve.pid and job["vms"] == [guest.name]
        assert job["policy"] == "manual"
        assert lv.checkpoints(dom, lv.chain_prefix(repo_id))  # made for the point to be
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(60)
    finally:
        if serve.poll() is None:
            serve.kill()
        log.close()
    serve_log = (tmp_path / "serve.log").read_text()
    assert code == 0, serve_log
    shown = cli_repo.ok("job", "show", str(job_id), "--log", "--json", env=env).json()
    assert isinstance(shown, dict)
    assert shown["state"] == "interrupted", (shown, serve_log)
    assert "interrupted" in (shown["error"] or "") and shown["ended"]
    texts = [line["text"] for line in shown["log"]]
    assert "queued by 'stasis policy run'" in texts
    assert texts[-1] == "backup manual interrupted", texts
    # Nothing committed, nothing left: no libvirt job, no checkpoint of this chain.
    assert cli_repo.ok("list", "--json").json() == []
    assert lv.backup_job_socket(dom) is None
    assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
    assert lv.checkpoints(dom, lv.chain_prefix(repo_id)) == []
    assert not list(scratch.iterdir()), list(scratch.iterdir())
    with Catalog.open(catalog) as c:
        assert JobStore(c).services() == []  # the service unregistered itself
        assert JobStore(c).list(state="running") == []
    assert time.monotonic() - started < 60


def test_a_queued_vm_backup_runs_in_the_service_and_job_cancel_interrupts_it(
        guest: Guest, cli_repo: Cli, tmp_path: Path) -> None:
    """``backup vm --queue``: the service runs it (a job of kind backup.vms, held once
    its libvirt job began); ``stasis job cancel`` interrupts it, nothing committed."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o711)
    policies = tmp_path / "policies.toml"
    policies.write_text('[[policy]]\nname = "none"\nvms = ["nothing"]\ncron = "0 0 1 1 *"\n')
    env = {**cli_repo.env, "STASIS_SCRATCH_DIR": str(scratch)}
    catalog = str(Path(env["STASIS_STATE_DIR"]) / "catalog.db")
    repo_id = Repository.open(open_backend(cli_repo.repo),
                              Credentials(passphrase=PASSPHRASE.encode())).id
    dom = guest.domain
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    serve = subprocess.Popen(
        [*driver("--job-hold-ms", "60000"), "serve", "--policies", str(policies), "--tick",
         "0.5"], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        def registered() -> bool:
            with Catalog.open(catalog) as c:
                return any(s.pid == serve.pid for s in JobStore(c).services())

        _until("the service to register", registered, 30, serve)
        queued = cli_repo.ok("backup", "vm", guest.name, "--queue", "--json", env=env).json()
        assert isinstance(queued, dict) and queued["service_pid"] == serve.pid
        job_id = queued["job"]

        def running() -> bool:
            with Catalog.open(catalog) as c:
                job = JobStore(c).get(job_id)
            return job.state == "running" and lv.backup_job_socket(dom) is not None

        _until("the queued backup running on the guest", running, 60, serve)
        cancelled = cli_repo.ok("job", "cancel", str(job_id), "--json", env=env).json()
        assert cancelled == {"job": job_id, "was": "running", "action": "cancel requested",
                             "state": "running"}

        def ended() -> Any:
            with Catalog.open(catalog) as c:
                job = JobStore(c).get(job_id)
            return job if job.state != "running" else None

        job = _until("the job to end", ended, 30, serve)  # not the 60 s hold
        assert serve.poll() is None  # the service goes on
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
    finally:
        if serve.poll() is None:
            serve.kill()
        log.close()
    serve_log = (tmp_path / "serve.log").read_text()
    assert job.state == "interrupted" and job.exit_code == 143, (job, serve_log)
    assert job.kind == "backup" and job.vms == [guest.name]
    assert cli_repo.ok("list", "--json").json() == []
    assert lv.backup_job_socket(dom) is None
    assert lv.checkpoints(dom, lv.chain_prefix(repo_id)) == []
    assert not list(scratch.iterdir()), list(scratch.iterdir())
