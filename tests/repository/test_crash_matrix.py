"""The crash matrix in CI (src/stasis_testkit/crashes.py): ``stasis`` killed with SIGKILL
at a seeded instant inside the work of each operation, on a local repository and on
SeaweedFS; after each kill every invariant holds (a deep verify is clean on both sites,
every committed point restores bit-exactly, no live lock is left, the catalog rebuilds
to exactly the repository's points) and the same operation run again at once succeeds.
bench/bench_crash.py runs hundreds of kills per operation and reports them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from stasis_testkit.crashes import OPERATIONS, World, matrix
from tests.s3servers import S3Server

pytestmark = pytest.mark.slow


def test_every_operation_killed_at_a_random_instant_leaves_a_sound_repository(
        tmp_path: Path) -> None:
    world = World.make(tmp_path, str(tmp_path / "repo"), str(tmp_path / "second"))
    kills = matrix(world, OPERATIONS, kills=1, seed=18)
    assert [k.operation for k in kills] == list(OPERATIONS)


def test_backup_and_gc_killed_on_s3_leave_a_sound_repository(
        seaweedfs: S3Server, tmp_path: Path) -> None:
    bucket = seaweedfs.new_bucket()
    tag = uuid.uuid4().hex[:8]
    world = World.make(tmp_path, seaweedfs.url(bucket, f"crash-{tag}"),
                       seaweedfs.url(bucket, f"crash-{tag}-second"), image_mib=4)
    kills = matrix(world, ("backup", "gc"), kills=1, seed=18)
    assert len(kills) == 2


def test_the_bench_reports_each_kill(tmp_path: Path) -> None:
    """bench/bench_crash.py keeps working: one kill of one operation, its report."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "bench" / "bench_crash.py"), "--kills", "1", "--ops",
         "backup", "--stores", "local", "--image-mib", "4", "--work-dir", str(tmp_path),
         "--results-dir", str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": f"{root}/src:{root}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    (row,) = report["rows"]
    assert (row["store"], row["operation"], row["kills"]) == ("local", "backup", 1)
    assert len(report["kills"]) == 1 and len(list((tmp_path / "out").glob("*.json"))) == 1
