"""Backups, copies, prunes and gcs as processes at once on one S3 repository, with the
server stopped for a while in the middle (a network partition): every process either
succeeds or fails as the situation allows (the store unreachable while it is cut off, a
gc held off), and afterwards both sites verify deep and every committed point restores
bit-exactly (src/stasis_testkit/stress.py; bench/bench_stress.py runs thousands; the
local gc-and-backups stress is tests/repository/test_gc.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from stasis_testkit.crashes import World
from stasis_testkit.stress import ROLES, Stress
from tests.s3servers import S3Server

pytestmark = pytest.mark.slow


def test_every_role_at_once_through_a_partition_leaves_a_sound_repository(
        seaweedfs: S3Server, tmp_path: Path) -> None:
    bucket = seaweedfs.new_bucket()
    tag = uuid.uuid4().hex[:8]
    world = World.make(tmp_path, seaweedfs.url(bucket, f"stress-{tag}"),
                       seaweedfs.url(bucket, f"stress-{tag}-second"), image_mib=4)
    outcome = Stress(world, rounds=4, seed=18).run(partition=seaweedfs.kill,
                                                    heal=seaweedfs.start, cut_s=3.0)
    assert not outcome.unexpected, outcome.unexpected
    assert outcome.partitions == 1
    assert {k.split()[0] for k in outcome.runs} == set(ROLES)
    assert sum(outcome.runs.values()) == 4 * len(ROLES)
    assert any(k.endswith("ok") for k in outcome.runs)
