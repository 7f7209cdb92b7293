#!/usr/bin/env python3
"""The frozen window of group points: how long the members of a group are held.

For each group size (default 1, 4 and 8), that many test guests (stasis_testkit, TCG,
128 MiB, one small qcow2 disk each) are booted, and several group points of all of
them are made, one after another, with ``back_up_members`` (the engine ``stasis
backup group`` calls). Between points each guest writes 256 KiB to its disk, so every
point after the first is an incremental with something to read.

Reported per group size: the median and the maximum of ``frozen_ms`` (the window from
the first suspend or freeze to the last resume or thaw, recorded in the point), the
median and maximum of libvirt's ``backupBegin`` time over the members, and the wall
time of each point (the ``back_up_members`` call: prepare, instant, read, commit).
Then the timeline of the instant, per step over every member of every point (each
member's ``extra.instant_ms``: suspend, the job's debris scan, directories, XML and
``backupBegin`` call, resume, ...): how long it took, median and maximum, and when it
was asked and returned, in ms from the window's start (negative: before it).
Run as root from the repository root; see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
MiB = 1 << 20
PASSPHRASE = b"bench group passphrase"
_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def stasis_commit() -> str:
    """The commit of the Stasis source benchmarked, with '+dirty' if src/ has changes."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


@dataclass
class PointRun:
    n: int  # the point's number in its series, from 1
    point: str
    frozen_ms: float
    begin_s_max: float  # the slowest member's backupBegin
    wall_s: float
    modes: list[str]  # full / incremental, per disk
    levels: list[str]  # the consistency each member reached
    # Per member, its ``extra.instant_ms``: step -> [asked, returned], ms from the
    # window's start.
    timelines: list[dict[str, list[float]]] = field(default_factory=list)


@dataclass
class Series:
    vms: int
    consistency: str
    boot_s: float
    points: list[PointRun] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        frozen = [p.frozen_ms for p in self.points]
        begin = [p.begin_s_max for p in self.points]
        wall = [p.wall_s for p in self.points]
        return {
            "vms": self.vms, "consistency": self.consistency, "points": len(self.points),
            "frozen_ms_median": round(statistics.median(frozen), 1),
            "frozen_ms_max": round(max(frozen), 1),
            "begin_s_median": round(statistics.median(begin), 3),
            "begin_s_max": round(max(begin), 3),
            "wall_s": [round(w, 2) for w in wall],
            "wall_s_median": round(statistics.median(wall), 2),
            "levels": sorted({lv for p in self.points for lv in p.levels}),
            "steps": self.steps(),
        }

    def steps(self) -> list[dict[str, Any]]:
        """Per step of the instant, over every member of every point: how long it
        took, and when it was asked and returned from the window's start (ms)."""
        by: dict[str, list[list[float]]] = {}
        for p in self.points:
            for tl in p.timelines:
                for step, span in tl.items():
                    by.setdefault(step, []).append(span)
        rows = []
        for step, spans in sorted(by.items(), key=lambda kv: statistics.median(
                s[0] for s in kv[1])):
            took = [r - a for a, r in spans]
            rows.append({
                "step": step, "n": len(spans),
                "ms_median": round(statistics.median(took), 1), "ms_max": round(max(took), 1),
                "asked_median": round(statistics.median(a for a, _ in spans), 1),
                "returned_median": round(statistics.median(r for _, r in spans), 1),
                "returned_max": round(max(r for _, r in spans), 1),
            })
        return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", default="1,4,8", help="group sizes, comma separated")
    p.add_argument("--points", type=int, default=5, help="points per group size")
    p.add_argument("--memory", type=int, default=128, help="guest memory, MiB")
    p.add_argument("--disk-size", type=int, default=32, help="guest disk, MiB")
    p.add_argument("--consistency", choices=("crash", "filesystem"), default="crash",
                   help="filesystem: guests get a guest agent channel and are frozen too "
                   "(a guest whose agent does not answer degrades to crash; the table "
                   "shows the levels reached)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="repository and scratch (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not args.sizes or min(args.sizes) < 1 or args.points < 1:
        p.error("--sizes needs positive numbers and --points at least 1")
    return args


def run_series(kit: Any, repo: Any, n: int, args: argparse.Namespace, work: Path) -> Series:
    from stasis.protection.capture import back_up_members
    from stasis_testkit import DiskSpec

    log(f"== group of {n}: booting {n} guests ({args.memory} MiB, "
        f"{args.disk_size} MiB qcow2)")
    t0 = time.monotonic()
    guests = [kit.create(f"bench-group-{n}-{i}",
                         [DiskSpec("vda", "qcow2", args.disk_size * MiB)],
                         memory_mib=args.memory,
                         guest_agent=args.consistency == "filesystem") for i in range(n)]
    try:
        for g in guests:
            g.wait_ready(300)
        series = Series(n, args.consistency, round(time.monotonic() - t0, 1))
        log(f"   booted in {series.boot_s} s")
        names = [g.name for g in guests]
        for k in range(1, args.points + 1):
            if k > 1:
                for i, g in enumerate(guests):
                    g.write_pattern("vda", ((k * 5 + i) % 24) * MiB, 256 * 1024, byte=k)
            started = time.monotonic()
            m = back_up_members(kit.conn, repo, names, point_name=f"bench-{n}", kind="group",
                                run_dir=work / "run", scratch_dir=work / "scratch",
                                consistency=args.consistency)
            wall = time.monotonic() - started
            run = PointRun(
                k, m.id, float(m.timings.get("frozen_ms", 0.0)),
                max(float(v.extra.get("begin_s", 0.0)) for v in m.vms), wall,
                [d.mode for v in m.vms for d in v.disks if d.name == "vda"],
                [v.consistency for v in m.vms],
                [dict(v.extra.get("instant_ms", {})) for v in m.vms])
            series.points.append(run)
            log(f"   point {k}: frozen {run.frozen_ms:.1f} ms, slowest backupBegin "
                f"{run.begin_s_max:.3f} s, wall {wall:.2f} s ({', '.join(sorted(set(run.modes)))}"
                f"; {', '.join(sorted(set(run.levels)))})")
        return series
    finally:
        for g in guests:
            g.destroy()


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("VMs", "consistency", "points", "frozen ms median", "frozen ms max",
            "backupBegin s median", "backupBegin s max", "wall s median", "wall s per point")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        levels = "/".join(r["levels"])
        cons = r["consistency"] if levels == r["consistency"] else f"{r['consistency']} ({levels})"
        print(f"| {r['vms']} | {cons} | {r['points']} | {r['frozen_ms_median']:.1f} | "
              f"{r['frozen_ms_max']:.1f} | {r['begin_s_median']:.3f} | {r['begin_s_max']:.3f} | "
              f"{r['wall_s_median']:.2f} | {' '.join(f'{w:.2f}' for w in r['wall_s'])} |")


def print_steps(rows: list[dict[str, Any]]) -> None:
    """Each group size's timeline: every member's steps, from the window's start."""
    head = ("VMs", "step", "members x points", "took ms median", "took ms max",
            "asked at ms median", "returned at ms median", "returned at ms max")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        for st in r["steps"]:
            print(f"| {r['vms']} | {st['step']} | {st['n']} | {st['ms_median']:.1f} | "
                  f"{st['ms_max']:.1f} | {st['asked_median']:.1f} | "
                  f"{st['returned_median']:.1f} | {st['returned_max']:.1f} |")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_group.py boots libvirt guests on qemu:///system: run it as root",
              file=sys.stderr)
        return 2
    import libvirt

    from stasis.backends import open_backend
    from stasis.repository import Repository
    from stasis_testkit import GuestKit

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="bench-group-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o711)  # QEMU reaches the scratch directory in it
    for d in ("run", "scratch"):
        (work / d).mkdir(exist_ok=True)
    (work / "scratch").chmod(0o711)
    os.environ.setdefault("STASIS_STATE_DIR", str(work / "state"))
    repo = Repository.init(open_backend(work / "repo"), passphrase=PASSPHRASE)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "stasis_commit": stasis_commit(), "host": platform.node(),
        "kernel": platform.release(), "cpus": os.cpu_count(),
        "qemu": subprocess.run(["qemu-img", "--version"], capture_output=True,
                               text=True).stdout.splitlines()[0],
        "libvirt": ".".join(str(libvirt.getVersion() // 1000 ** i % 1000) for i in (2, 1, 0)),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    log(f"work dir {work}; sizes {args.sizes}, {args.points} points each, "
        f"{args.consistency} consistency")
    series: list[Series] = []
    kit = GuestKit()
    try:
        for n in args.sizes:
            series.append(run_series(kit, repo, n, args, work))
    finally:
        kit.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rows = [s.summary() for s in series]
    report.update(summary=rows, series=[asdict(s) for s in series])
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"bench-group-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        commit = report["stasis_commit"]
        short = commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")
        print(f"\n{report['date']}, Stasis {short}, "
              f"{report['cpus']} cores, {report['qemu']}, libvirt {report['libvirt']}\n")
        print_table(rows)
        print()
        print_steps(rows)
    log(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
