"""bench/bench_api.py keeps working: wrk's output read, the table, and a bench run on a
tiny population (SQLite; a real server subprocess and wrk for 1 s, and for 2 s while
backups run into the served repository)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_api as ba  # noqa: E402

WRK = """Running 10s test @ http://127.0.0.1:8000/api/v1/points?limit=100
  2 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.10ms    3.20ms  40.01ms   80.00%
    Req/Sec   410.00     30.00   500.00     70.00%
  Latency Distribution
     50%   11.50ms
     75%   13.00ms
     90%   16.00ms
     99%    1.20s
  8200 requests in 10.00s, 180.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:    820.00
Transfer/sec:     18.00MB
"""


def test_wrk_output_is_read_in_milliseconds_with_every_error() -> None:
    assert ba.parse_wrk(WRK) == {"rps": 820.0, "p50_ms": 11.5, "p99_ms": 1200.0,
                                 "requests": 8200, "errors": 6}


def test_the_table_gives_each_route_as_a_share_of_both_floors() -> None:
    runs = [ba.Run("sqlite", "points?limit=100", 10, 100.0, 9.0, 30.0, 1000, 0),
            ba.Run("sqlite", "trivial route", 10, 400.0, 2.0, 5.0, 4000, 0),
            ba.Run("–", "bare uvicorn", 10, 5000.0, 0.2, 1.0, 50000, 0)]
    table = ba.render(runs)
    assert table[2] == ("| sqlite | points?limit=100 | 10 | 100.0 | 9.00 ms | 30.0 ms | 0 "
                        "| 25.0% | 2.0% |")
    assert table[4].endswith("| – | 100.0% |")


@pytest.mark.slow
def test_bench_api_runs_on_a_tiny_population(tmp_path: Path) -> None:
    # ./scripts/setup installs wrk: a missing one is a broken setup, not a skip
    assert shutil.which("wrk") is not None, "wrk is not installed: run ./scripts/setup"
    root = str(BENCH.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([f"{root}/src", root])}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_api.py"), "--vms", "3",
                           "--points", "12", "--jobs", "5", "--duration", "1", "--warmup",
                           "0", "--connections", "2", "--catalogs", "sqlite", "--json",
                           "--under-backups", "2", "--work-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    routes = {(r["catalog"], r["route"]) for r in report["runs"]}
    assert routes == {("sqlite", "points?limit=100"), ("sqlite", "points?vm=vm-002"),
                      ("sqlite", "vms?limit=100"), ("sqlite", "trivial route"),
                      ("sqlite", "points?limit=100 under backups"), ("–", "bare uvicorn")}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in report["runs"])
    (loaded,) = [r for r in report["runs"] if r["route"].endswith("under backups")]
    assert loaded["extra"]["backups"] >= 1 and loaded["extra"]["backups_failed"] == 0
    assert loaded["extra"]["rss_end_mib"] > 0
    assert list(tmp_path.iterdir()) == []  # the work dir is removed
