"""bench/bench_s3.py and bench/bench_dr.py keep working: their pure parts, and each
bench run on tiny inputs (its own SeaweedFS; the drill with two small guests)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_s3 as b3  # noqa: E402

MiB = 1 << 20


def _env() -> dict[str, str]:
    root = str(BENCH.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([f"{root}/src", root])}


def _run(tmp_path: Path, script: str, *args: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args, "--json",
                           "--work-dir", str(tmp_path), "--results-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "out").glob("bench-*.json"))) == 1
    report: dict[str, object] = json.loads(proc.stdout)
    return report


def test_the_ceiling_is_the_best_thread_count_and_the_ratio_is_against_it() -> None:
    ceilings = [b3.Ceiling(1, 4, 50.0, 200.0), b3.Ceiling(1, 16, 100.0, 150.0),
                b3.Ceiling(1, 16, 80.0, 170.0), b3.Ceiling(4, 4, 60.0, 300.0)]
    run = b3.StasisRun(backup_s=10.0, put_mib=850.0, backup_requests={"PutObject": 850},
                       restore_s=5.0, get_mib=850.0, restore_requests={"GetObject": 850},
                       allocated_mib=1400.0)
    s = b3.summarize("seaweedfs", ceilings, [run], chunk_mib=1)
    one = s["ceiling"][1]
    assert (one["put_mib_s"], one["put_threads"]) == (90.0, 16)  # the median of 80 and 100
    assert (one["get_mib_s"], one["get_threads"]) == (200.0, 4)
    assert s["stasis"]["put_mib_s"] == 85.0 and s["stasis"]["logical_backup_mib_s"] == 140.0
    assert (s["put_ratio"], s["get_ratio"]) == (round(85 / 90, 3), 0.85)
    lines = b3.targets([s])
    assert lines == ["seaweedfs: Stasis PUT at 94 % of the ceiling (at least 80 %) MET",
                     "seaweedfs: Stasis GET at 85 % of the ceiling (at least 80 %) MET"]
    table = b3.render([s], 1)
    assert table[2].startswith("| seaweedfs | 90.0 MiB/s (16) | 85.0 MiB/s (10.00 s) | 94 % |")


def test_the_traffic_counts_bodies_as_bytes_or_as_files() -> None:
    assert b3._length(b"abc") == 3 and b3._length(None) == 0
    body = io.BytesIO(b"x" * 10)
    body.seek(4)
    assert b3._length(body) == 6 and body.tell() == 4


def test_the_small_image_mixes_random_text_and_holes(tmp_path: Path) -> None:
    path = tmp_path / "small.raw"
    b3.small_image(path, 32 * MiB, 1)
    data = path.read_bytes()
    runs = [data[at:at + 4 * MiB] for at in range(0, 32 * MiB, 4 * MiB)]
    assert all(r == bytes(4 * MiB) for r in runs[1::2])  # holes between
    assert len(set(runs[0][:65536])) == 256  # random bytes
    assert max(runs[2]) < 128 and runs[2].count(b"\n") > 10_000  # log text


@pytest.mark.slow
def test_bench_s3_runs_on_a_tiny_image(tmp_path: Path) -> None:
    report = _run(tmp_path, "bench_s3.py", "--servers", "seaweedfs", "--runs", "1",
                  "--small-mib", "16", "--ceiling-mib", "4", "--threads", "1,2",
                  "--object-mib", "1")
    (result,) = report["results"]  # type: ignore[misc]
    assert result["kind"] == "seaweedfs" and set(result["ceiling"]["1"]["sweep"]) == {"1", "2"}
    s = result["stasis"]
    # 8 MiB allocated: 4 of random bytes (stored as they are) and 4 of text (compressed)
    assert 4 < s["put_mib"] < 8 and s["get_mib"] >= s["put_mib"] * 0.9
    assert s["backup_requests"]["PutObject"] > 0 and s["restore_requests"]["GetObject"] > 0
    assert result["put_ratio"] > 0 and result["get_ratio"] > 0


@pytest.mark.slow
@pytest.mark.vm
def test_bench_dr_runs_on_two_tiny_guests(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    report = _run(tmp_path, "bench_dr.py", "--runs", "1", "--disk-mib", "64",
                  "--data-mib", "4")
    repo = report["repository"]
    assert repo["objects"] > 0 and repo["mib"] > 8  # type: ignore[index]
    runs = report["runs"]
    assert all(len(v) == 1 and v[0] > 0 for v in runs.values())  # type: ignore[union-attr]
