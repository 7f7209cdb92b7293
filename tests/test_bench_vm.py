"""bench/bench_vm.py's pure parts: the floors, the medians, the tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_vm as bv

MiB = 1 << 20


def row(tool: str, step: str, wall: float, added: int | None = None, **details: float) -> bv.Row:
    return bv.Row(tool, step, wall, 0.0, 0.0, None, added, begin_s=0.1, details=dict(details))


def test_incremental_floor_adds_begin_reading_and_writing() -> None:
    # 0.1 s + 40 MiB at 400 MiB/s + 60 MiB at 200 MiB/s
    assert bv.incremental_floor(0.1, 40 * MiB, 60 * MiB, 400.0, 200.0) == pytest.approx(0.5)


def test_full_floor_is_the_slowest_of_disk_and_cpu() -> None:
    f = bv.full_floor(1000 * MiB, 500 * MiB, 8.0, 2, 500.0, 250.0)
    assert f == {"read_s": 2.0, "write_s": 2.0, "cpu_s": 4.0, "floor_s": 4.0}
    assert bv.full_floor(1000 * MiB, 500 * MiB, 1.0, 2, 100.0, 250.0)["floor_s"] == 10.0


def test_summary_takes_medians_of_walls_and_details() -> None:
    rows = [row("stasis", "incremental", w, added=a, floor_s=f)
            for w, a, f in ((3.0, 10, 1.0), (1.0, 30, 3.0), (2.0, 20, 2.0))]
    (s,) = bv.summarize(rows)
    assert (s.wall_s, s.added, s.details["floor_s"], s.wall_range) == (2.0, 20, 2.0, (1.0, 3.0))


def test_tables_show_each_tool_and_the_ratios_to_floor_and_peer() -> None:
    summary = bv.summarize([
        row("stasis", "incremental", 1.0, added=50 * MiB),
        row("virtnbdbackup", "incremental", 2.0, added=60 * MiB, boot_files=18 * MiB,
            added_without_boot=42 * MiB),
        row("stasis", "restore", 3.0),
    ])
    table = bv.render_table(summary, ["stasis", "virtnbdbackup", "restic (raw export)"], "1 %")
    assert table[2] == "| incremental, 1 % changed | 1.00 s | 2.00 s | – |"
    assert table[3] == ("| repository growth of that incremental | 50.0 MiB | 60.0 MiB (42.0 "
                        "without kernel/initrd) | – |")
    assert table[4] == "| restore to qcow2, until synced | 3.00 s | – | – |"
    ratios = bv.render_ratios(summary, "stasis", ["virtnbdbackup"],
                              {"incremental": 0.5, "growth": 40.0 * MiB}, "1 %")
    assert ratios[2] == "| incremental, 1 % changed | 1.00 s | 0.50 s | 2.00 | 0.50 |"
    assert ratios[3] == ("| repository growth of that incremental | 50.0 MiB | 40.0 MiB | 1.25 "
                         "| 0.83 |")
    lines = bv.targets(summary, "stasis", {"incremental": 0.5, "growth": 40.0 * MiB}, 4096 * MiB)
    assert lines[0].endswith("0.50× virtnbdbackup (1.0 s vs 2.0 s; at most 0.50×) MET")
    assert lines[1].endswith("(50.0 vs 40.0 MiB) NOT MET")


def test_chunk_sizes_and_rotation() -> None:
    assert bv.parse_chunks("4M, 1M") == ["4M", "1M"]
    assert bv.parse_chunks("") == [""]
    assert bv.rotated([1, 2, 3], 4) == [2, 3, 1]
    assert bv.until_synced(["a b", "c"]) == ["sh", "-c", "'a b' c && sync"]
