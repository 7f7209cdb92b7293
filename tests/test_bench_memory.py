"""bench/bench_memory.py keeps working: its sampler sees a real process's peak memory
and open files, a service run's figures are judged on what is robust, and the bench runs
on tiny sizes (a 64 MiB and a 64 GiB sparse disk; 1 and 3 points, the middle one made by
the helper process; 8 jobs through a real ``stasis serve``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_memory as bm  # noqa: E402

HOLDER = """
import sys, time
files = [open(sys.argv[1], "rb") for _ in range(40)]
block = bytearray(96 << 20)  # touched: resident
for i in range(0, len(block), 4096):
    block[i] = 1
time.sleep(0.5)
"""


def test_the_peak_memory_and_open_files_of_a_real_process_are_seen(tmp_path: Path) -> None:
    held = tmp_path / "held"
    held.write_bytes(b"data")
    m = bm.measure([sys.executable, "-c", HOLDER, str(held)], dict(os.environ), what="holder",
                   step="1", log=tmp_path / "log")
    assert m.exit_code == 0 and m.samples > 5
    assert m.rss_mib >= 96 and m.tree_maxrss_mib >= 96
    assert 40 + 3 <= m.steady_fds <= m.fds < 60
    with pytest.raises(RuntimeError, match=r"failed \(3\)"):
        bm.measure([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ),
                   what="failing", step="1", log=tmp_path / "log")


def job(n: int, rss: float, fds: int) -> dict[str, float]:
    return {"job": n, "rss_mib": rss, "fds": fds + 2, "steady_fds": fds}


def test_a_service_run_is_flat_unless_memory_or_files_grow_with_the_jobs() -> None:
    samples = [{"t": 0.0, "rss_mib": 100.0, "fds": 10, "steady_fds": 10}]
    # descriptors still closing when a job is seen ended: noise, not a leak
    noisy = [job(n, 120.0 + n % 3, 12 + (n % 4 == 0) * 3) for n in range(1, 101)]
    s = bm.summarize(noisy, samples)
    assert s["flat"] and s["fds_floor_first"] == s["fds_floor_last"] == 12
    assert abs(s["rss_slope_mib_per_100_jobs"]) < 1
    leaking_fds = [job(n, 120.0, 12 + n) for n in range(1, 101)]
    assert not bm.summarize(leaking_fds, samples)["flat"]
    leaking_memory = [job(n, 120.0 + n / 2, 12) for n in range(1, 101)]
    s = bm.summarize(leaking_memory, samples)
    assert not s["flat"] and s["rss_slope_mib_per_100_jobs"] == pytest.approx(50)


@pytest.mark.slow
def test_bench_memory_runs_on_tiny_sizes(tmp_path: Path) -> None:
    root = str(BENCH.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([f"{root}/src", root])}
    work, results = tmp_path / "work", tmp_path / "results"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(BENCH / "bench_memory.py"), "--sizes",
                           "64MiB,64GiB", "--pieces", "4", "--points", "1,3", "--jobs", "8",
                           "--work-dir", str(work), "--results-dir", str(results), "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert [p.name for p in results.iterdir()] == [p.name for p in results.glob("memory-*")]

    # every command ran at every size (a restore that differed from its source fails
    # the bench), and none held more files open at 64 GiB than its writers explain
    disks = report["disks"]
    assert {(r["what"], r["step"]) for r in disks["rows"]} == {
        (w, s) for w in ("backup image", "restore disk", "verify --deep")
        for s in ("64MiB", "64GiB")}
    assert all(r["rss_mib"] > 20 and r["fds"] >= 3 for r in disks["rows"])
    assert all(v["fds_growth"] <= bm.FLAT_FDS for v in disks["verdict"].values())

    points = report["points"]
    assert {r["what"] for r in points["rows"]} == {
        "backup image", "list --json", "prune --dry-run", "gc", "verify", "catalog rebuild"}
    assert {r["step"] for r in points["rows"]} == {"1 points", "3 points"}

    # the service: every job succeeded and no job left a descriptor open
    service = report["service"]
    assert service["jobs"] == 8 and service["failed"] == 0
    assert len(service["per_job"]) == 8 and service["samples"]
    s = service["summary"]
    # A few descriptors open lazily after the first jobs (the 1,000-job run ends 2-3
    # above its start, flat per job); a descriptor left per job would be 8 here.
    assert s["fds_floor_last"] <= s["fds_floor_first"] + 4
    assert s["rss_end_mib"] > 0
    assert list(work.iterdir()) == []  # the work dir is removed
