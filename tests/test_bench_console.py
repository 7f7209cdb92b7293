"""bench/bench_console.py keeps working: its table, and a run on a tiny population (a
real server subprocess and Debian's chromium, one run per page)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_console as bc  # noqa: E402


def test_the_table_gives_medians_and_the_share_of_the_floor() -> None:
    r = bc.Result("dashboard", [300.0, 100.0, 200.0], [50.0, 40.0, 60.0], 9, 20480, 1.0)
    assert bc.render([r])[2] == "| dashboard | 200 ms | 100 – 300 ms | 50 ms | 4.0× | 9 | 20 KiB |"


@pytest.mark.slow
def test_bench_console_runs_on_a_tiny_population(tmp_path: Path) -> None:
    root = str(BENCH.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([f"{root}/src", root])}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_console.py"), "--vms", "3",
                           "--points", "12", "--daily", "2", "--jobs", "3", "--runs", "1",
                           "--json", "--work-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    pages = {r["page"]: r for r in report["results"]}
    assert set(pages) == {"dashboard", "a VM with 12 points"}
    for r in pages.values():
        assert len(r["runs_ms"]) == len(r["floor_ms"]) == 1
        assert r["median_ms"] > 0 and r["floor_ms_median"] > 0 and r["html_bytes"] > 0
    # the VM's page asks for its points once, never for one point
    vm = pages["a VM with 12 points"]["extra"]["api"]
    assert "/points" in vm and not [u for u in vm if u.startswith("/points/")]
    assert list(tmp_path.iterdir()) == []  # the work dir is removed
