"""Filesystem- and application-consistent points on real guests with a guest agent.

The tell-tale of a filesystem-consistent point is the ext4 superblock: a mounted
ext4 keeps ``needs_recovery`` set on disk (its journal may hold unreplayed
transactions), and only a freeze (or an unmount) clears it. So the disk of a
crash-consistent point of a mounted filesystem has the flag, and that of a
filesystem-consistent point does not, and holds what was written just before,
even unsynced.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stasis.app.models import BackupResult
from stasis.errors import ConsistencyNotMet, HookFailed
from stasis.hypervisor import libvirt_api as lv
from stasis.protection.capture import back_up_members
from stasis.protection.consistency import GuestCommand, Hooks
from stasis.protection.vm import back_up_vm
from stasis.recovery.restore import restore_disk
from stasis.repository import Manifest, Repository
from stasis_testkit import SAMPLE, DiskSpec, Guest, GuestKit, MiB
from tests.conftest import BIN, Cli, driver

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")
libvirt_qemu = pytest.importorskip("libvirt_qemu")

DISKS = [DiskSpec("vda", "qcow2", 16 * MiB), DiskSpec("vdb", "qcow2", 64 * MiB, ext4_from=SAMPLE)]


@pytest.fixture(scope="module")
def guests(kit: GuestKit) -> Iterator[dict[str, Guest]]:
    """Two guests with a guest agent and one without, each with ext4 mounted at /mnt."""
    made: dict[str, Guest] = {}
    try:
        for key, agent in (("a", True), ("b", True), ("plain", False)):
            made[key] = kit.create(disks=DISKS, guest_agent=agent)
        for g in made.values():
            g.wait_ready(120)
            g.run("mkdir -p /mnt && mount -t ext4 /dev/vdb /mnt", check=True)
        yield made
    finally:
        for g in made.values():
            g.destroy()


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {"run": tmp_path / "run", "scratch": tmp_path / "scratch", "out": tmp_path / "out"}
    for p in d.values():
        p.mkdir()
    return d


def agent_call(g: Guest, execute: str) -> object:
    answer = libvirt_qemu.qemuAgentCommand(g.domain, json.dumps({"execute": execute}), 10, 0)
    return json.loads(answer)["return"]


def restored_fs(repo: Repository, point: Manifest, vm: str, out: Path) -> Path:
    target = out / f"{point.id[:8]}-{vm}-vdb.raw"
    restore_disk(repo, point, target=target, vm=vm, disk="vdb", fmt="raw")
    return target


def needs_recovery(image: Path) -> bool:
    head = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True,
                          check=True).stdout
    features = next(line for line in head.splitlines() if line.startswith("Filesystem features"))
    return "needs_recovery" in features


def fs_cat(image: Path, path: str) -> str | None:
    """A file's content as stored in the image (no journal replay), None if absent."""
    r = subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True,
                       text=True)
    if "File not found" in r.stderr or r.returncode != 0:
        return None
    return r.stdout


def live_checkpoints(g: Guest, repo: Repository) -> list[str]:
    return [c.name for c in lv.checkpoints(g.domain, lv.chain_prefix(repo.id))]


def assert_running_and_thawed(*gs: Guest) -> None:
    for g in gs:
        assert g.domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert g.domain.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
        if g.agent_socket is not None:
            assert agent_call(g, "guest-fsfreeze-status") == "thawed"


def test_filesystem_point_is_clean_and_crash_point_is_not(
    kit: GuestKit, guests: dict[str, Guest], repo: Repository, dirs: dict[str, Path]
) -> None:
    a = guests["a"]
    kw = {"run_dir": dirs["run"], "scratch_dir": dirs["scratch"]}
    a.run("echo written-just-before > /mnt/fresh.txt", check=True)  # no sync
    fs_point = back_up_vm(kit.conn, repo, a.name, consistency="filesystem", **kw)
    vm = fs_point.vms[0]
    assert vm.consistency == "filesystem" and not vm.extra.get("consistency_note")
    assert vm.extra["frozen_filesystems"] >= 1
    assert fs_point.timings["frozen_ms"] > 0
    assert fs_point.extra["consistency"]["reached"] == "filesystem"
    image = restored_fs(repo, fs_point, a.name, dirs["out"])
    assert not needs_recovery(image)
    assert fs_cat(image, "/fresh.txt") == "written-just-before\n"
    assert subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True).returncode == 0
    assert_running_and_thawed(a)

    crash_point = back_up_vm(kit.conn, repo, a.name, consistency="crash", **kw)
    assert crash_point.vms[0].consistency == "crash"
    assert crash_point.timings["frozen_ms"] == 0  # one VM alone is neither paused nor frozen
    # The check above can fail: the same mounted filesystem, captured without the
    # freeze, is only as clean as after a power cut.
    assert needs_recovery(restored_fs(repo, crash_point, a.name, dirs["out"]))
    # Filesystem and crash points continue one chain.
    assert crash_point.parent == fs_point.id
    assert all(d.mode == "incremental" for d in crash_point.vms[0].disks)


def test_member_without_agent_degrades_and_require_refuses(
    kit: GuestKit, guests: dict[str, Guest], repo: Repository, dirs: dict[str, Path]
) -> None:
    a, plain = guests["a"], guests["plain"]
    kw = {"point_name": "app", "kind": "group", "run_dir": dirs["run"],
          "scratch_dir": dirs["scratch"]}
    point = back_up_members(kit.conn, repo, [a.name, plain.name], consistency="filesystem", **kw)
    by_name = {vm.name: vm for vm in point.vms}
    assert by_name[a.name].consistency == "filesystem"
    assert by_name[plain.name].consistency == "crash"
    assert "guest agent" in by_name[plain.name].extra["consistency_note"]
    assert point.extra["consistency"] == {"requested": "filesystem", "required": None,
                                          "reached": "crash"}
    result = BackupResult.of(point).to_json()
    assert {v["name"]: v["consistency"] for v in result["vms"]} == {
        a.name: "filesystem", plain.name: "crash"}
    assert not needs_recovery(restored_fs(repo, point, a.name, dirs["out"]))
    assert needs_recovery(restored_fs(repo, point, plain.name, dirs["out"]))

    before = [p.id for p in repo.points()]
    chains = {g.name: live_checkpoints(g, repo) for g in (a, plain)}
    with pytest.raises(ConsistencyNotMet) as info:
        back_up_members(kit.conn, repo, [a.name, plain.name], consistency="filesystem",
                        require="filesystem", **kw)
    assert plain.name in info.value.message and "Nothing was committed" in info.value.message
    assert info.value.exit_code == 25
    assert [p.id for p in repo.points()] == before
    assert {g.name: live_checkpoints(g, repo) for g in (a, plain)} == chains
    assert_running_and_thawed(a, plain)


def test_application_hooks_run_around_the_instant(
    kit: GuestKit, guests: dict[str, Guest], repo: Repository, dirs: dict[str, Path],
    tmp_path: Path,
) -> None:
    a, b = guests["a"], guests["b"]
    log = tmp_path / "hooks.log"
    hooks = Hooks(
        pre_host=[f'echo "$STASIS_HOOK_PHASE $STASIS_POINT_NAME $STASIS_VMS" >> {log}'],
        pre_guest=[GuestCommand(a.name, "echo quiesced > /mnt/pre.txt")],
        post_guest=[GuestCommand(a.name, "echo resumed > /mnt/post.txt")],
        post_host=[f'echo "$STASIS_HOOK_PHASE" >> {log}'],
    )
    a.run("rm -f /mnt/pre.txt /mnt/post.txt; sync", check=True)
    point = back_up_members(kit.conn, repo, [a.name, b.name], point_name="app", kind="group",
                            run_dir=dirs["run"], scratch_dir=dirs["scratch"],
                            consistency="application", hooks=hooks)
    assert [vm.consistency for vm in point.vms] == ["application", "application"]
    assert log.read_text() == f"pre app {a.name} {b.name}\npost\n"
    ran = point.extra["hooks"]
    assert [(h["phase"], h["where"]) for h in ran] == [
        ("pre", "host"), ("pre", a.name), ("post", a.name), ("post", "host")]
    assert all(not h["error"] for h in ran)
    image = restored_fs(repo, point, a.name, dirs["out"])
    assert fs_cat(image, "/pre.txt") == "quiesced\n"  # ran before the instant
    assert fs_cat(image, "/post.txt") is None  # ran after it
    assert a.run("cat /mnt/post.txt").output == "resumed\n"
    assert point.timings["frozen_ms"] > 0
    assert_running_and_thawed(a, b)


@pytest.mark.parametrize("where", ["host", "guest", "host-timeout", "guest-timeout"])
def test_failing_pre_hook_aborts_cleanly(
    kit: GuestKit, guests: dict[str, Guest], repo: Repository, dirs: dict[str, Path],
    tmp_path: Path, where: str,
) -> None:
    a, b = guests["a"], guests["b"]
    marker = tmp_path / "post-ran"
    hooks = Hooks(post_host=[f"touch {marker}"])
    if where == "host":
        hooks.pre_host = ["echo cannot lock tables; exit 3"]
    elif where == "guest":
        hooks.pre_guest = [GuestCommand(b.name, "echo cannot lock tables; exit 3")]
    elif where == "host-timeout":
        hooks.pre_host = [f"echo $$ > {tmp_path}/pid; exec sleep 60"]
        hooks.timeout_s = 1.5
    else:
        hooks.pre_guest = [GuestCommand(b.name, "sleep 60")]
        hooks.timeout_s = 1.5
    before = [p.id for p in repo.points()]
    with pytest.raises(HookFailed) as info:
        back_up_members(kit.conn, repo, [a.name, b.name], point_name="app", kind="group",
                        run_dir=dirs["run"], scratch_dir=dirs["scratch"],
                        consistency="application", hooks=hooks)
    message = info.value.message
    if where.endswith("timeout"):
        assert "did not finish within 1.5 s" in message
    else:
        assert "status 3" in message and "cannot lock tables" in message
    if where == "host-timeout":  # the hook's process is gone, not left running
        pid = int((tmp_path / "pid").read_text())
        assert not Path(f"/proc/{pid}").exists()
    assert "nothing was committed" in message
    assert (b.name if where.startswith("guest") else "host") in message
    assert info.value.exit_code == 24
    assert marker.exists()  # the post hooks release what the pre hooks that ran took
    assert [p.id for p in repo.points()] == before
    assert live_checkpoints(a, repo) == [] and live_checkpoints(b, repo) == []
    assert list(dirs["scratch"].iterdir()) == []
    assert_running_and_thawed(a, b)


def test_failing_post_hook_is_recorded_not_fatal(
    kit: GuestKit, guests: dict[str, Guest], repo: Repository, dirs: dict[str, Path],
) -> None:
    a = guests["a"]
    hooks = Hooks(post_guest=[GuestCommand(a.name, "echo disk busy; exit 4")],
                  post_host=["exit 5"], pre_host=["true"])
    point = back_up_members(kit.conn, repo, [a.name], point_name="solo", kind="group",
                            run_dir=dirs["run"], scratch_dir=dirs["scratch"],
                            consistency="application", hooks=hooks)
    assert repo.resolve(point.id).id == point.id  # committed
    failures = BackupResult.of(point).to_json()["hook_failures"]
    assert [(h["where"], h["exit_code"]) for h in failures] == [(a.name, 4), ("host", 5)]
    assert "disk busy" in failures[0]["output"]
    # Each failure is a warning the result carries (code 50), the point complete.
    warned = [w.to_dict() for w in point.run_warnings]
    assert [(w["code"], w["kind"]) for w in warned] == [(50, "PostHookFailed")] * 2
    assert a.name in warned[0]["message"] and "exited with status 5" in warned[1]["message"]
    assert all("committed and complete" in w["message"] for w in warned)
    assert_running_and_thawed(a)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_guest_stays_frozen_when_stasis_dies_in_the_window(
    guests: dict[str, Guest], cli_repo: Cli, tmp_path: Path, sig: int
) -> None:
    """Stasis is signalled while the guest's filesystems are frozen (the window is
    held open for the test). SIGTERM: it thaws them itself. kill -9: its guardian."""
    a = guests["a"]
    (tmp_path / "scratch").mkdir()
    env = {**cli_repo.env, "STASIS_SCRATCH_DIR": str(tmp_path / "scratch")}
    args = ["backup", "vm", a.name, "--consistency", "filesystem"]
    cmd = [str(BIN), *args]
    proc = subprocess.Popen([*driver("--window-ms", "4000"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while agent_call(a, "guest-fsfreeze-status") != "frozen":
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the guest was never frozen"
        time.sleep(0.01)
    proc.send_signal(sig)
    signalled = time.monotonic()
    proc.wait(60)
    while agent_call(a, "guest-fsfreeze-status") != "thawed":
        assert time.monotonic() - signalled < 5, "the guest stayed frozen"
        time.sleep(0.02)
    assert a.run("echo alive > /mnt/alive.txt && cat /mnt/alive.txt", timeout=10).output \
        == "alive\n"
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
    assert cli_repo.ok("list", "--json").json() == []
    r = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["vms"][0]["consistency"] == "filesystem"
    assert_running_and_thawed(a)
