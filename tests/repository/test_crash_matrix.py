"""The crash matrix in CI (src/stasis_testkit/crashes.py): ``stasis`` killed with SIGKILL
inside the work of each operation, on a local repository at a seeded storage call
(through bench/bench_crash.py ``--placement call``, so the bench keeps working too: a
kill by call lands inside even a gc's or a prune's short work, which a kill by time
mostly misses) and on SeaweedFS at a seeded instant (by time); after each kill
every invariant holds (a deep verify is clean on both sites, every committed point
restores bit-exactly, no live lock is left, the catalog rebuilds to exactly the
repository's points) and the same operation run again at once succeeds. The bench runs
hundreds of kills per operation and reports them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from stasis_testkit import DiskSpec, GuestKit, MiB
from stasis_testkit.crashes import OPERATIONS, VM_OPERATIONS, World, matrix
from tests.s3servers import S3Server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_every_operation_killed_at_a_random_storage_call_leaves_a_sound_repository(
        tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_crash.py"), "--kills", "1",
         "--stores", "local", "--placement", "call", "--work-dir", str(tmp_path),
         "--results-dir", str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": f"{ROOT}/src:{ROOT}"})
    assert proc.returncode == 0, proc.stderr[-3000:]  # an invariant failed: its assertion
    report = json.loads(proc.stdout)
    assert [(r["store"], r["operation"], r["placement"], r["kills"])
            for r in report["rows"]] == [("local", op, "call", 1) for op in OPERATIONS]
    assert len(report["kills"]) == len(OPERATIONS)
    # Each died at its drawn storage call, before its work ended: gc and prune too.
    assert all(not k["finished"] and k["at_call"] for k in report["kills"]), report["kills"]
    assert len(list((tmp_path / "out").glob("bench-crash-*.json"))) == 1


def test_a_backup_killed_on_s3_leaves_a_sound_repository(seaweedfs: S3Server,
                                                        tmp_path: Path) -> None:
    bucket = seaweedfs.new_bucket()
    tag = uuid.uuid4().hex[:8]
    world = World.make(tmp_path, seaweedfs.url(bucket, f"crash-{tag}"),
                       seaweedfs.url(bucket, f"crash-{tag}-second"), image_mib=4)
    (kill,) = matrix(world, ("backup",), kills=1, seed=18)
    assert kill.operation == "backup"


@pytest.mark.vm
def test_vm_and_group_backups_killed_at_a_random_instant_leave_guests_and_chain_sound(
        kit: GuestKit, tmp_path: Path) -> None:
    """One guest (with its agent, so a backup freezes it) for every kill: backup vm and
    backup group of it, each killed once; the matrix checks that the guest runs and is
    thawed, that the next backup is incremental and restores to the guest's disk, and
    that no libvirt job, checkpoint of an uncommitted point or job directory is left."""
    pytest.importorskip("libvirt")
    guest = kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB)], guest_agent=True)
    try:
        guest.wait_ready(120)
        world = World.make(tmp_path, str(tmp_path / "repo"), str(tmp_path / "second"),
                           guests=[guest], changed_mib=8, image_points=0)
        kills = matrix(world, VM_OPERATIONS, kills=1, seed=18)
        assert [k.operation for k in kills] == list(VM_OPERATIONS)
        assert all(not k.finished for k in kills), kills  # killed inside the backup
        # Every point (VM and group alike) was restored against its guest's disk.
        assert set(world._repo().point_ids()) <= set(world.vm_points)
        assert sum(k.vm_debris for k in kills) > 0, kills  # what the next backup removed
    finally:
        guest.destroy()
