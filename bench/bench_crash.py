"""The crash matrix at scale: ``stasis`` killed with SIGKILL at seeded random instants
inside the work of each operation (backup image, copy, prune, gc, catalog rebuild,
restore; backup vm and backup group of test-kit guests with ``--ops vm,group``), on a
local repository and on SeaweedFS, with every invariant of
src/stasis_testkit/crashes.py checked after every kill (deep verify of both sites, every
committed point restored bit-exactly, no live lock, the catalog rebuilt to exactly the
repository's points, the same operation run again at once; for VMs: no guest paused or
frozen, the next backup incremental and equal to the guests' disks, no libvirt job,
checkpoint of an uncommitted point or job directory left after it).

    python bench/bench_crash.py                      # 100 kills per operation and store
    python bench/bench_crash.py --kills 20 --stores local --ops backup,gc
    python bench/bench_crash.py --placement call --ops gc,prune   # kill at a storage call
    python bench/bench_crash.py --ops vm,group --guests 2          # boots 2 guests (root)

``--placement time`` kills at a seeded instant after the first lock; ``call`` at the
seeded N-th storage call of the operation's kind (stasis_testkit.callkill), which puts
every kill inside the work of even a short gc or prune.

Any failed invariant stops the run with its assertion (the seed and round repeat it),
so a report exists only for a run in which every invariant held after every kill. The
report: per store and operation, the kills, how many landed inside the work (the
rest came after the process had finished), the leftovers they left (temporary files,
allowed: gc removes them), and the time to run the operation again after a kill.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench_s3 import commit, isolated_aws, running  # noqa: E402

from stasis_testkit import DiskSpec, Guest, GuestKit, MiB  # noqa: E402
from stasis_testkit.crashes import (  # noqa: E402
    ALL_OPERATIONS,
    OPERATIONS,
    PLACEMENTS,
    VM_OPERATIONS,
    Kill,
    World,
    matrix,
)

RESULTS_DIR = BENCH_DIR / "results"
STORES = ("local", "seaweedfs")
_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def summarize(store: str, kills: list[Kill]) -> list[dict[str, Any]]:
    rows = []
    for op in dict.fromkeys(k.operation for k in kills):
        mine = [k for k in kills if k.operation == op]
        inside = [k for k in mine if not k.finished]
        rows.append({"store": store, "operation": op, "placement": mine[0].placement,
                     "kills": len(mine),
                     "inside_work": len(inside),
                     "leftovers": sum(k.leftovers for k in mine),
                     "vm_debris": sum(k.vm_debris for k in mine),
                     "rerun_median_s": round(statistics.median(k.rerun_s for k in mine), 3)})
    return rows


def render(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| store | operation | placement | kills | inside the work | "
             "leftovers (allowed) | VM debris (the next backup removed) | "
             "run again after a kill (median) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['store']} | {r['operation']} | {r['placement']} | {r['kills']} | "
                     f"{r['inside_work']} | "
                     f"{r['leftovers']} | {r['vm_debris']} | {r['rerun_median_s']} s |")
    return lines


@contextlib.contextmanager
def booted(count: int) -> Iterator[list[Guest]]:
    """``count`` running test-kit guests with a guest agent (so a backup freezes them),
    each with one 64 MiB qcow2 disk; destroyed at the end."""
    with GuestKit() as kit:  # the cached boot files of the default kit directory
        guests = []
        try:
            for _ in range(count):
                guests.append(kit.create(disks=[DiskSpec("vda", "qcow2", 64 * MiB)],
                                         guest_agent=True))
            for g in guests:
                g.wait_ready(180)
            log(f"booted {count} guests")
            yield guests
        finally:
            for g in guests:
                g.destroy()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100, help="per operation and store")
    ap.add_argument("--ops", default=",".join(OPERATIONS),
                    help=f"of: {', '.join(ALL_OPERATIONS)}")
    ap.add_argument("--placement", choices=PLACEMENTS, default="time",
                    help="kill at a seeded instant, or at a seeded storage call")
    ap.add_argument("--guests", type=int, default=2,
                    help="guests booted for vm and group (vm backs up the first)")
    ap.add_argument("--stores", default=",".join(STORES))
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--image-mib", type=int, default=16)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    args.operations = tuple(o for o in args.ops.split(",") if o)
    args.store_kinds = tuple(s for s in args.stores.split(",") if s)
    unknown = [o for o in args.operations if o not in ALL_OPERATIONS] + \
        [s for s in args.store_kinds if s not in STORES]
    if unknown:
        ap.error(f"unknown operations or stores: {', '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-crash-", dir=args.work_dir or "/var/tmp"))
    rows: list[dict[str, Any]] = []
    kills_all: list[dict[str, Any]] = []
    load = [os.getloadavg()]
    began = time.monotonic()
    stack = contextlib.ExitStack()
    try:
        files = isolated_aws(work)
        guests = stack.enter_context(booted(args.guests)) \
            if set(args.operations) & set(VM_OPERATIONS) else []
        for store in args.store_kinds:
            root = work / store
            root.mkdir()

            def on_kill(k: Kill, store: str = store) -> None:
                where = (f"at storage call {k.at_call} ({k.delay_s:.3f} s)" if k.at_call
                         else f"{k.delay_s:.3f} s into the work")
                log(f"{store} {k.operation} #{k.round}: killed {where}"
                    f"{' (after it ended)' if k.finished else ''}; run again "
                    f"{k.rerun_s:.2f} s; leftovers {k.leftovers}")
                kills_all.append({"store": store, **asdict(k)})

            if store == "local":
                world = World.make(root, str(root / "repo"), str(root / "second"),
                                   image_mib=args.image_mib, placement=args.placement,
                                   guests=guests)
                kills = matrix(world, args.operations, args.kills, args.seed, on_kill)
            else:
                with running(store, work / f"{store}-server", files) as server:
                    bucket = server.new_bucket()
                    world = World.make(root, server.url(bucket, "crash"),
                                       server.url(bucket, "crash-second"),
                                       image_mib=args.image_mib, placement=args.placement,
                                       guests=guests)
                    kills = matrix(world, args.operations, args.kills, args.seed, on_kill)
            rows += summarize(store, kills)
            load.append(os.getloadavg())
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit(),
              "cpus": os.cpu_count(), "load": load, "seed": args.seed,
              "placement": args.placement,
              "image_mib": args.image_mib, "duration_s": round(time.monotonic() - began, 1),
              "rows": rows, "kills": kills_all}
    args.results_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (args.results_dir / f"bench-crash-{stamp}.json").write_text(json.dumps(report, indent=1)
                                                                 + "\n")
    print(json.dumps(report, indent=1) if args.json else "\n".join(render(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
