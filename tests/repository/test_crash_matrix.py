"""The crash matrix in CI (src/stasis_testkit/crashes.py): ``stasis`` killed with SIGKILL
at a seeded instant inside the work of each operation, on a local repository (through
bench/bench_crash.py, so the bench keeps working too) and on SeaweedFS; after each kill
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

from stasis_testkit.crashes import OPERATIONS, World, matrix
from tests.s3servers import S3Server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_every_operation_killed_at_a_random_instant_leaves_a_sound_repository(
        tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_crash.py"), "--kills", "1",
         "--stores", "local", "--work-dir", str(tmp_path),
         "--results-dir", str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": f"{ROOT}/src:{ROOT}"})
    assert proc.returncode == 0, proc.stderr[-3000:]  # an invariant failed: its assertion
    report = json.loads(proc.stdout)
    assert [(r["store"], r["operation"], r["kills"]) for r in report["rows"]] == \
        [("local", op, 1) for op in OPERATIONS]
    assert len(report["kills"]) == len(OPERATIONS)
    assert len(list((tmp_path / "out").glob("bench-crash-*.json"))) == 1


def test_a_backup_killed_on_s3_leaves_a_sound_repository(seaweedfs: S3Server,
                                                        tmp_path: Path) -> None:
    bucket = seaweedfs.new_bucket()
    tag = uuid.uuid4().hex[:8]
    world = World.make(tmp_path, seaweedfs.url(bucket, f"crash-{tag}"),
                       seaweedfs.url(bucket, f"crash-{tag}-second"), image_mib=4)
    (kill,) = matrix(world, ("backup",), kills=1, seed=18)
    assert kill.operation == "backup"
