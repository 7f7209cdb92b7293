"""``stasis drill`` on real guests: a point's VMs come up beside the originals in an
isolated network, are checked, timed and torn down. A passing drill (console pattern,
guest command, TCP port), failing ones (the failing check named, nothing left), a group
drill in order with its disks in a libvirt ``dir`` pool, SIGTERM and kill -9 (then
``stasis doctor --fix``), and refusals.

Two guests (A with a guest agent and a TCP listener, B with neither), one group point
of both, and a ``dir`` pool holding a volume that is none of the drills' are shared by
the module; the checks' timeouts are short.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stasis.backends import open_backend
from stasis.catalog import Catalog, DrillStore, JobStore
from stasis.catalog.records import CATALOG_FILE
from stasis.protection.capture import back_up_members
from stasis.repository import Credentials, Manifest, Repository
from stasis_testkit import READY_MARKER, DiskSpec, Guest, GuestKit, MiB
from tests.conftest import (
    BIN,
    CHEAP_KDF,
    PASSPHRASE,
    ROOT,
    Cli,
    define_pool,
    nbd_processes,
    remove_pool,
)

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

PORT = 8080
BYSTANDER = "not-a-drills.img"  # a volume of the pool that every drill must leave


@dataclass
class Site:
    kit: GuestKit
    a: Guest  # guest agent, TCP listener
    b: Guest  # neither
    point: Manifest
    root: Path
    cli: Cli
    networks_before: set[str]
    pool: Any  # a libvirt dir pool

    def volumes(self) -> list[str]:
        self.pool.refresh(0)
        return sorted(v.name() for v in self.pool.listAllVolumes(0))

    @property
    def conn(self) -> Any:
        return self.kit.conn


@pytest.fixture(scope="module")
def site(kit: GuestKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tag = f"{os.getpid() % 100000}"
    before = {n.name() for n in kit.conn.listAllNetworks(0)}
    prod = kit.conn.networkCreateXML(f"<network><name>stasis-drl-prod-{tag}</name>"
                                     f"<bridge name='stdp{tag}'/></network>")
    guests: list[Guest] = []
    root = tmp_path_factory.mktemp("drill")
    pool = define_pool(kit.conn, f"stasis-drl-pool-{tag}", root / "pool", start=True)
    pool.createXML(f"<volume><name>{BYSTANDER}</name><capacity>1048576</capacity>"
                   "<target><format type='raw'/></target></volume>", 0)
    try:
        guests = [
            kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB)], network=prod.name(),
                       guest_agent=True, cmdline=[f"stasis.listen={PORT}"]),
            kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB)], network=prod.name()),
        ]
        for g in guests:
            g.wait_ready(90)
        repo = Repository.init(open_backend(root / "repo"), passphrase=PASSPHRASE.encode(),
                               chunk_size=256 << 10, kdf=CHEAP_KDF)
        for d in ("run", "scratch", "storage"):
            (root / d).mkdir()
        (root / "scratch").chmod(0o711)
        point = back_up_members(kit.conn, repo, [g.name for g in guests], point_name="app",
                                kind="group", run_dir=root / "run",
                                scratch_dir=root / "scratch")
        env = {k: v for k, v in os.environ.items() if not k.startswith("STASIS_")}
        env.update(STASIS_REPO=str(root / "repo"), STASIS_PASSPHRASE=PASSPHRASE,
                   STASIS_STATE_DIR=str(root / "state"),
                   STASIS_SCRATCH_DIR=str(root / "scratch"), COLUMNS="200")
        yield Site(kit, guests[0], guests[1], point, root, Cli(root / "repo", env), before,
                   pool)
    finally:
        for g in guests:
            g.destroy()
        prod.destroy()
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        remove_pool(pool)


def _nothing_left(site: Site) -> None:
    """No domain, network, file, export or record of this module's drills is left."""
    ours = (f"{site.a.name}-drill-", f"{site.b.name}-drill-")
    assert [d.name() for d in site.conn.listAllDomains(0) if d.name().startswith(ours)] == []
    assert [n.name() for n in site.conn.listAllNetworks(0) if n.name().startswith(
        "stasis-drill-") and n.name() not in site.networks_before] == []
    assert list((site.root / "storage").iterdir()) == []
    assert site.volumes() == [BYSTANDER]
    assert not any(site.root.glob("state/drills/*.json"))
    assert [c for c in nbd_processes() if str(site.root) in c] == []


def _drill(site: Site, *args: str, **kw: Any) -> Any:
    return site.cli("drill", *args, "--storage", str(site.root / "storage"), **kw)


def test_a_passing_drill_checks_console_command_and_port_then_removes_everything(
    site: Site,
) -> None:
    a = site.a
    r = _drill(site, a.name, "--check", f"console~60:{READY_MARKER}",
               "--check", "exec~30:hostname", "--check", f"tcp~30:{PORT}", "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert result["passed"] and result["point"] == site.point.id
    assert result["network_created"] and result["network"].startswith("stasis-drill-")
    (vm,) = result["vms"]
    assert vm["vm"] == a.name and vm["name"] != a.name and vm["addresses"]
    checks = {c["kind"]: c for c in result["checks"]}
    assert set(checks) == {"console", "exec", "tcp"}
    assert all(c["passed"] and c["vm"] == a.name for c in checks.values())
    # The command ran in the copy, which is the original system inside (its hostname).
    assert checks["exec"]["output"].strip() == a.name
    assert checks["tcp"]["output"] == f"{vm['addresses'][0]}:{PORT} answered"
    # The RTO runs from the start until the last check passed: the whole of them.
    assert result["rto_s"] >= sum(c["seconds"] for c in checks.values())
    assert result["rto_s"] <= result["duration_s"]
    assert any(x.startswith("domain ") for x in result["removed"])
    assert any(x.startswith("network ") for x in result["removed"])
    _nothing_left(site)
    # The original runs on, untouched; the drill is a job with each check's result.
    assert a.domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    (job,) = site.cli.ok("jobs", "--json").json()
    shown = site.cli.ok("job", "show", str(job["id"]), "--log", "--json").json()
    assert shown["kind"] == "drill" and shown["state"] == "succeeded"
    assert [shown["result"][f"check {n}"]["kind"] for n in (1, 2, 3)] == [
        "console", "exec", "tcp"]
    assert shown["result"][a.name]["drilled_as"] == vm["name"]
    # The newest drill of A is in the catalog, and in the repository for another site.
    with Catalog.open(str(site.root / "state" / CATALOG_FILE)) as c:
        newest = DrillStore(c).get("vm", a.name)
    assert newest is not None and newest.passed and newest.rto_s == result["rto_s"]
    assert (newest.drill_id, newest.job, newest.point) == (result["id"], job["id"],
                                                          site.point.id)
    proofs = {(p.subject_kind, p.subject): p for p in Repository.open(
        open_backend(site.root / "repo"),
        Credentials(passphrase=PASSPHRASE.encode())).drill_proofs()}
    assert proofs[("vm", a.name)].drill == result["id"]
    assert proofs[("vm", a.name)].rto_s == result["rto_s"]
    assert shown["result"]["drill"]["rto_s"] == result["rto_s"]


def test_an_agent_check_on_a_vm_without_an_agent_says_so_and_tears_down(
    site: Site,
) -> None:
    b = site.b
    began = time.monotonic()
    r = _drill(site, b.name, "--mode", "instant", "--check", "agent~60")
    assert r.code == 73, r.err
    assert "check agent" in r.err and b.name in r.err
    assert "no guest agent" in r.err and "no org.qemu.guest_agent.0 channel" in r.err
    assert "removed again" in r.err
    assert time.monotonic() - began < 60  # said at once, not at the timeout
    _nothing_left(site)
    with Catalog.open(str(site.root / "state" / CATALOG_FILE)) as c:
        newest = DrillStore(c).get("vm", b.name)
    assert newest is not None and not newest.passed and newest.rto_s is None
    assert "no guest agent" in (newest.failure or "")


def test_a_check_that_never_passes_times_out_and_an_instant_drill_is_torn_down(
    site: Site,
) -> None:
    r = _drill(site, site.a.name, "--mode", "instant", "--check",
               "console~3:no such line ever")
    assert r.code == 73, r.err
    assert "check console:no such line ever" in r.err and "timed out after 3 s" in r.err
    assert READY_MARKER in r.err or "Output" in r.err or "console shows no match" in r.err
    _nothing_left(site)


def test_a_group_drill_starts_in_order_each_checked_before_the_next_its_disks_in_a_pool(
    site: Site, tmp_path: Path,
) -> None:
    """A restore drill with ``--pool``: every disk is a volume made through the pool
    (libvirt lists it unrefreshed while the drill runs), and teardown deletes exactly
    the drill's volumes."""
    a, b = site.a, site.b
    script = tmp_path / "volumes.sh"
    script.write_text(f"#!/bin/sh\nvirsh -q -c {site.conn.getURI()} vol-list "
                      f"{site.pool.name()} | awk '{{print $1}}'\n")
    script.chmod(0o755)
    r = site.cli("drill", "app", "--pool", site.pool.name(), "--order", f"{b.name},{a.name}",
                 "--check", f"console~60:{READY_MARKER}", "--check", f"exec@{a.name}~30:true",
                 "--check", f"script~30:{script}", "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert result["mode"] == "restore" and result["pool"] == site.pool.name()
    assert result["storage"] == ""
    assert result["start_order"] == [b.name, a.name]
    assert [v["vm"] for v in result["vms"]] == [b.name, a.name]
    assert result["vms"][0]["started_at"] < result["vms"][1]["started_at"]
    assert [(c["kind"], c["vm"]) for c in result["checks"]] == [
        ("console", b.name), ("console", a.name), ("exec", a.name), ("script", None)]
    # Each VM's disk and files (kernel, initrd) were volumes of the pool, and those
    # alone were deleted.
    listed = result["checks"][-1]["output"].split()
    drilled = sorted(v for v in listed if v != BYSTANDER)
    assert BYSTANDER in listed and {f"{v['name']}-vda.qcow2" for v in result["vms"]} <= set(
        drilled)
    assert all(v.startswith(tuple(f"{x['name']}-" for x in result["vms"])) for v in drilled)
    assert sorted(x for x in result["removed"] if x.startswith("volume ")) == [
        f"volume {v} of pool {site.pool.name()}" for v in drilled]
    _nothing_left(site)
    assert list((site.root / "pool").iterdir()) == [site.root / "pool" / BYSTANDER]
    with Catalog.open(str(site.root / "state" / CATALOG_FILE)) as c:
        group = DrillStore(c).get("group", "app")
    assert group is not None and group.drill_id == result["id"] and group.passed
    assert len(group.checks) == 4


@pytest.mark.parametrize(("args", "says"), [
    (("--pool", "POOL", "--storage", "STORAGE"), "--pool and --storage are two places"),
    (("--pool", "POOL", "--mode", "instant"), "an instant drill restores none"),
    (("--pool", "stasis-no-such-pool"), "no libvirt storage pool named 'stasis-no-such-pool'"),
])
def test_a_pool_with_storage_for_an_instant_drill_or_unknown_is_refused(
    site: Site, args: tuple[str, ...], says: str,
) -> None:
    given = [{"POOL": site.pool.name(), "STORAGE": str(site.root / "storage")}.get(x, x)
             for x in args]
    r = site.cli("drill", site.a.name, *given)
    assert r.code == 2, r.err
    assert says in r.err and "nothing was" in r.err
    _nothing_left(site)


def _start_drill(site: Site, place: str) -> tuple[subprocess.Popen[str], str]:
    """A drill in a process of its own, once its VM runs; the VM's name. ``place``:
    instant (overlays in the storage directory) or pool (a restore into the pool)."""
    where = (["--storage", str(site.root / "storage"), "--mode", "instant"]
             if place == "instant" else ["--pool", site.pool.name()])
    proc = subprocess.Popen(
        [str(BIN), "drill", site.b.name, *where, "--check", "console~300:no such line ever"],
        env=site.cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for d in site.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            if d.name().startswith(f"{site.b.name}-drill-"):
                return proc, d.name()
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the drill's VM never ran")


def test_sigterm_tears_the_drill_down(site: Site) -> None:
    # A pool's volumes go by the same teardown (the group drill's test), so one mode.
    proc, _name = _start_drill(site, "instant")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    _nothing_left(site)


@pytest.mark.parametrize("place", ["instant", "pool"])
def test_kill_9_leaves_what_doctor_finds_and_removes(site: Site, place: str) -> None:
    proc, name = _start_drill(site, place)
    try:
        proc.kill()
        proc.wait()
        assert site.conn.lookupByName(name).isActive()
        left = [v for v in site.volumes() if v != BYSTANDER]
        assert (f"{name}-vda.qcow2" in left) if place == "pool" else left == []
        found = site.cli.ok("doctor", "--json").json()
        drills = [f for f in found if f["kind"] == "drill"]
        assert len(drills) == 1 and not drills[0]["fixed"], found
        assert site.conn.lookupByName(name).isActive()  # doctor alone changes nothing
        fixed = site.cli.ok("doctor", "--fix", "--json").json()
        drills = [f for f in fixed if f["kind"] == "drill"]
        assert len(drills) == 1 and drills[0]["fixed"], fixed
        assert (f"instant VM {name}" if place == "instant" else
                f"volume {name}-vda.qcow2 of pool {site.pool.name()}") in drills[0]["what"]
        _nothing_left(site)
    finally:
        site.cli("doctor", "--fix")


def test_a_drill_killed_as_its_network_is_made_leaves_doctor_the_network(site: Site) -> None:
    """The record names the network's UUID before the network is made: a kill -9 in
    between leaves a network that doctor finds and removes (and none of anyone else's)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.drivers.stasis", "--kill-after-network", "--",
         "drill", site.a.name, "--storage", str(site.root / "storage"), "--mode", "instant"],
        env=site.cli.env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    made = [n.name() for n in site.conn.listAllNetworks(0)
            if n.name().startswith("stasis-drill-") and n.name() not in site.networks_before]
    assert len(made) == 1, made
    fixed = site.cli.ok("doctor", "--fix", "--json").json()
    drills = [f for f in fixed if f["kind"] == "drill"]
    assert len(drills) == 1 and f"network {made[0]}" in drills[0]["what"], fixed
    _nothing_left(site)


def test_a_network_that_forwards_is_refused(site: Site) -> None:
    name = f"stasis-drl-nat-{os.getpid() % 100000}"
    net = site.conn.networkDefineXML(
        f"<network><name>{name}</name><forward mode='nat'/>"
        "<ip address='10.214.77.1' prefix='24'/></network>")
    try:
        r = _drill(site, site.a.name, "--network", name)
        assert r.code == 74, r.err
        assert f"'{name}' is not isolated" in r.err and "forward" in r.err
        assert not net.isActive()
        _nothing_left(site)
    finally:
        net.undefine()


def test_a_second_drill_of_the_same_vms_is_refused(site: Site) -> None:
    locks = site.root / "state" / "drills" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / "app.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("drill 0badc0de, pid 1")
        held.flush()
        r = _drill(site, "app")
    assert r.code == 75, r.err
    assert "A drill of app is running already (drill 0badc0de, pid 1)" in r.err
    _nothing_left(site)


@pytest.mark.parametrize(("check", "says"), [
    ("ping", "'ping' is not a drill check"),
    ("tcp:http", "the port must be a number"),
    ("console:(", "not a regular expression"),
    ("exec", "needs an argument"),
    ("agent~0", "must be more than 0 s"),
    ("exec@nosuchvm:true", "a check names VM nosuchvm"),
])
def test_bad_checks_are_refused_before_anything_is_made(site: Site, check: str,
                                                        says: str) -> None:
    r = _drill(site, "app", "--check", check)
    assert r.code == 2, r.err
    assert says in r.err and "nothing was made" in r.err
    _nothing_left(site)


def test_json_of_a_script_check(site: Site, tmp_path: Path) -> None:
    """A host script reads the drill's VMs and addresses on stdin."""
    seen = tmp_path / "seen.json"
    script = tmp_path / "probe.sh"
    script.write_text(f"#!/bin/sh\ncat > {seen}\necho \"$STASIS_DRILL_NETWORK\"\n")
    script.chmod(0o755)
    r = _drill(site, site.a.name, "--mode", "instant", "--check",
               f"tcp~30:{PORT}", "--check", f"script~30:{script}", "--json")
    assert r.code == 0, r.err
    result = r.json()
    doc = json.loads(seen.read_text())
    assert doc["drill"] == result["id"] and doc["network"] == result["network"]
    assert doc["vms"] == [{"vm": site.a.name, "name": result["vms"][0]["name"],
                           "addresses": result["vms"][0]["addresses"]}]
    script_check = result["checks"][-1]
    assert script_check["kind"] == "script" and script_check["vm"] is None
    assert script_check["output"].strip() == result["network"]
    _nothing_left(site)


def test_a_policy_drill_runs_on_schedule_and_status_shows_it_against_the_targets(
    site: Site,
) -> None:
    """The service queues the drill section's drill at its slot, runs it as a job, and
    ``stasis status --json`` shows it against ``rto`` and ``max_age``; the RTO target
    missed is told once, like an RPO breach."""
    from datetime import UTC, datetime

    from stasis.hypervisor import libvirt_api as lv
    from stasis.service.notify import Notifier
    from stasis.service.policy import parse_policies
    from stasis.service.runner import Service
    from tests.clocks import ManualClock

    a = site.a
    policies = parse_policies(f"""
[[policy]]
name = "drilled"
vms = ["{a.name}"]
every = "1d"
[policy.drill]
every = "1m"
mode = "instant"
checks = ["console~60:{READY_MARKER}"]
storage = "{site.root / 'storage'}"
rto = "1s"
max_age = "7d"
""", repositories={"local"})
    told: list[Any] = []
    clock = ManualClock(datetime.now(UTC))
    creds = Credentials(passphrase=PASSPHRASE.encode())
    with Catalog.open(str(site.root / "state" / CATALOG_FILE), clock=clock) as c:
        s = Service(c, policies, repositories={
            "local": lambda: Repository.open(open_backend(site.root / "repo"), creds)},
            connect=lambda: lv.connect(), run_dir=site.root / "run",
            scratch_dir=site.root / "scratch", credentials={"local": creds},
            notifier=Notifier(clock=clock, send=lambda cfg, event: told.append(event) or []))
        s.start()
        try:
            clock.tick(seconds=61)
            s.tick()
            for r in list(s.running.values()):
                r.thread.join(180)
            (job,) = JobStore(c).list(kind="drill", policy="drilled")
            assert job.state == "succeeded", job.error
            assert job.name == a.name and job.params["mode"] == "instant"
            s.check_drills(policies[0])  # checked again: an ongoing breach is not told again
        finally:
            s.stop()
    (event,) = told
    assert event.kind == "drill" and event.drill.subject == a.name
    assert "over the target 1s" in event.message()
    _nothing_left(site)
    rows = site.cli.ok("status", "--json").json()
    row = next(r for r in rows if r["vm"] == a.name)
    drill = row["drill"]
    assert drill["last_drill"] == job.result["drill"]["id"] and drill["passed"]
    assert drill["state"] == "breached" and drill["rto_target_s"] == 1.0
    assert drill["rto_s"] == job.result["drill"]["rto_s"] > 1.0
    assert drill["max_age_s"] == 7 * 86400 and drill["age_s"] < 7 * 86400
    assert drill["reasons"] == [f"measured RTO {drill['rto_s']:.0f}s is over the target 1s"]
