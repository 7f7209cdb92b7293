"""Concurrency for hours, compressed into minutes: backups, copies, prunes and gcs (each a
``stasis`` process, one loop per role, as several hosts would run them) on one
repository at once, locally and on SeaweedFS, for ``--rounds`` rounds per role; on S3 the
server is stopped for a while during the run (a network partition) and started again.
Afterwards every invariant of src/stasis_testkit/crashes.py is checked (both sites verify
deep, every committed point restores bit-exactly, no live lock, the catalog rebuilds to
the repository's points). A process may fail only as the situation allows
(src/stasis_testkit/stress.py); anything else stops the run.

    python bench/bench_stress.py --rounds 250            # 1,000 processes per store
    python bench/bench_stress.py --rounds 20 --stores local
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench_s3 import commit, isolated_aws, running  # noqa: E402

from stasis_testkit.crashes import World  # noqa: E402
from stasis_testkit.stress import Stress  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
STORES = ("local", "seaweedfs")


def render(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| store | rounds per role | processes | outcomes | partition | unexpected | "
             "duration |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["runs"].items()))
        cut = f"{r['partition_s']} s" if r["partitions"] else "–"
        lines.append(f"| {r['store']} | {r['rounds']} | {sum(r['runs'].values())} | "
                     f"{outcomes} | {cut} | {len(r['unexpected'])} | {r['duration_s']} s |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=250, help="processes per role")
    ap.add_argument("--stores", default=",".join(STORES))
    ap.add_argument("--cut-s", type=float, default=5.0, help="how long S3 is stopped")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--image-mib", type=int, default=8)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    stores = [s for s in args.stores.split(",") if s]
    if unknown := [s for s in stores if s not in STORES]:
        ap.error(f"unknown stores: {', '.join(unknown)}")
    work = Path(tempfile.mkdtemp(prefix="bench-stress-", dir=args.work_dir or "/var/tmp"))
    rows: list[dict[str, Any]] = []
    load = [os.getloadavg()]
    began = time.monotonic()
    try:
        files = isolated_aws(work)
        for store in stores:
            root = work / store
            root.mkdir()
            if store == "local":
                world = World.make(root, str(root / "repo"), str(root / "second"),
                                   image_mib=args.image_mib)
                outcome = Stress(world, rounds=args.rounds, seed=args.seed).run()
            else:
                with running(store, work / f"{store}-server", files) as server:
                    bucket = server.new_bucket()
                    world = World.make(root, server.url(bucket, "stress"),
                                       server.url(bucket, "stress-second"),
                                       image_mib=args.image_mib)
                    outcome = Stress(world, rounds=args.rounds, seed=args.seed).run(
                        partition=server.kill, heal=server.start, cut_s=args.cut_s)
            row = {"store": store, **outcome.__dict__, "runs": dict(outcome.runs)}
            rows.append(row)
            load.append(os.getloadavg())
            if outcome.unexpected:
                print("\n".join(outcome.unexpected), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit(),
              "cpus": os.cpu_count(), "load": load, "seed": args.seed,
              "duration_s": round(time.monotonic() - began, 1), "rows": rows}
    args.results_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (args.results_dir / f"bench-stress-{stamp}.json").write_text(json.dumps(report, indent=1)
                                                                  + "\n")
    print(json.dumps(report, indent=1) if args.json else "\n".join(render(rows)))
    return 1 if any(r["unexpected"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
