"""Disk indexes at scale: a simulated 1 TiB sparse disk with 1,000 hourly points.

No disk is read and no chunk is stored: the points are made through the repository's
own index code (IndexBuilder, store_index, commit) from generated chunk names, so
what is measured is the index format alone: the index bytes each incremental writes,
what the repository holds after N points, and what gc (mark: read every manifest,
root and page; sweep: nothing to delete) and ``stasis repo info`` cost, with their peak
memory, each in a fresh process.

Format 1 (one whole index per point) is run with fewer points (``--v1-points``,
default 20) because it writes the whole index every time; its per-point figures are
linear in the number of points, and the report extrapolates them to ``--points``.

    python bench/bench_index.py                       # 1 TiB, 1,000 points
    python bench/bench_index.py --size 64GiB --points 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from stasis.backends import open_backend  # noqa: E402
from stasis.repository import DiskRecord, Manifest, Repository, VmRecord  # noqa: E402
from stasis.repository.crypto import KdfParams  # noqa: E402
from stasis.repository.index import IndexBuilder  # noqa: E402
from stasis.repository.repo import new_point_id  # noqa: E402

PASS = b"bench-index"
UNITS = {"GiB": 1 << 30, "TiB": 1 << 40, "MiB": 1 << 20}


def parse_size(text: str) -> int:
    for unit, mult in UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * mult)
    return int(text)


def du(path: Path, prefix: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path / prefix):
        for f in files:
            total += os.stat(os.path.join(root, f)).st_size
    return total


def make(root: Path, *, version: int, size: int, chunk: int, points: int, allocated: float,
         changed: int, clusters: int, seed: int) -> dict[str, float]:
    """Make ``points`` points of one disk; return what the incrementals wrote."""
    repo = Repository.init(open_backend(root), passphrase=PASS, chunk_size=chunk,
                           kdf=KdfParams(memory_kib=1024, iterations=1))
    if version == 1:
        repo.config["version"] = 1  # write as a format 1 repository does (in memory only)
    rnd = random.Random(seed)
    count = -(-size // chunk)
    # The allocated part: 64 regions at random places, `allocated` of the disk in all.
    regions = []
    per = int(count * allocated / 64)
    for _ in range(64):
        start = rnd.randrange(0, count - per)
        regions.append((start, start + per))
    data = sorted({i for a, b in regions for i in range(a, b)})
    base = None
    writes: list[int] = []
    seconds: list[float] = []
    parent = None
    for n in range(points):
        if base is None:
            given = {i: rnd.randbytes(32) for i in data}
            touched: set[int] | None = None
        else:
            given = {}
            for _ in range(clusters):  # scattered writes, in runs of a few chunks
                a, b = regions[rnd.randrange(len(regions))]
                at = rnd.randrange(a, b)
                for i in range(at, min(at + changed // clusters, b)):
                    given[i] = rnd.randbytes(32)
            touched = set(given)
        sample = 0 < n <= 20  # du walks the store: only for the first incrementals
        before = du(root, "indexes") + du(root, "pages") if sample else 0
        t0 = time.perf_counter()
        builder = IndexBuilder(size, chunk, base=base, changed=touched,
                               emit=repo.page_emitter())
        for i in sorted(given):
            builder.set(i, given[i])
        name = repo.store_index(builder.finish())
        base = repo.load_index(name)
        manifest = Manifest(id=new_point_id(), name="vm", time=f"2026-12-03T{n:06d}",
                            kind="image", parent=parent, chunk_size=chunk,
                            vms=[VmRecord(name="vm", disks=[DiskRecord(
                                name="vda", index=name, virtual_size=size, format="raw")])])
        repo.commit(manifest)
        parent = manifest.id
        seconds.append(time.perf_counter() - t0)
        if sample:
            writes.append(du(root, "indexes") + du(root, "pages") - before)
    inc = sorted(writes) or [0]
    return {"index_bytes_per_incremental": inc[len(inc) // 2],
            "index_s_per_incremental": sorted(seconds[1:] or [0])[len(seconds[1:]) // 2],
            "repository_index_bytes": du(root, "indexes") + du(root, "pages"),
            }


def measure(root: Path, what: str) -> dict[str, float]:
    """gc or quick verify of the repository in a fresh process: seconds, peak RSS."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(HERE.parent / 'src')!r})
from stasis.backends import open_backend
from stasis.repository import Credentials, Repository
from stasis.repository.gc import collect_garbage
from stasis.repository.stats import repo_info
repo = Repository.open(open_backend({str(root)!r}), Credentials(passphrase={PASS!r}))
t0 = time.perf_counter()
if {what!r} == "gc":
    r = collect_garbage(repo, dry_run=True)
    extra = {{"pages_read": r.pages_referenced, "indexes_read": r.indexes_referenced,
              "chunks_referenced": r.chunks_referenced}}
else:
    i = repo_info(repo)
    extra = {{"referenced_gib": i.referenced_size / 2**30}}
s = time.perf_counter() - t0
print(json.dumps({{"s": s, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  **extra}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1TiB")
    ap.add_argument("--chunk-size", default="1MiB")
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--v1-points", type=int, default=20)
    ap.add_argument("--allocated", type=float, default=0.2,
                    help="fraction of the disk that holds data")
    ap.add_argument("--changed", type=int, default=1000,
                    help="chunks changed per incremental (1000 MiB at 1 MiB chunks)")
    ap.add_argument("--clusters", type=int, default=100,
                    help="in how many runs of consecutive chunks the change falls")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    size, chunk = parse_size(args.size), parse_size(args.chunk_size)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-index-"))
    results = {}
    try:
        for version, points in ((2, args.points), (1, args.v1_points)):
            root = work / f"v{version}"
            t0 = time.perf_counter()
            made = make(root, version=version, size=size, chunk=chunk, points=points,
                        allocated=args.allocated, changed=args.changed,
                        clusters=args.clusters, seed=7)
            made["make_s"] = time.perf_counter() - t0
            made["points"] = points
            made["gc"] = measure(root, "gc")  # type: ignore[assignment]
            made["info"] = measure(root, "info")  # type: ignore[assignment]
            results[f"v{version}"] = made
            shutil.rmtree(root)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    v1, v2 = results["v1"], results["v2"]
    scale = args.points / v1["points"]
    report = {"size": size, "chunk_size": chunk, "points": args.points,
              "allocated": args.allocated, "changed_chunks": args.changed,
              "clusters": args.clusters, "v2": v2, "v1": v1,
              "v1_extrapolated": {
                  "repository_index_bytes": v1["repository_index_bytes"] * scale,
                  "gc_s": v1["gc"]["s"] * scale}}  # type: ignore[index]
    if args.json:
        print(json.dumps(report, indent=1))
        return
    mib = 1 << 20
    print(f"{args.size} disk, {chunk // 1024} KiB chunks, {args.allocated:.0%} allocated, "
          f"{args.changed} chunks changed per point in {args.clusters} runs")
    print(f"| | format 2 (paged), {args.points} points | format 1, {v1['points']} points "
          f"| format 1 extrapolated to {args.points} |")
    print("|---|---|---|---|")
    print(f"| index bytes written per incremental | {v2['index_bytes_per_incremental'] / mib:.2f} "
          f"MiB | {v1['index_bytes_per_incremental'] / mib:.2f} MiB | same |")
    print(f"| index time per incremental | {v2['index_s_per_incremental'] * 1000:.0f} ms | "
          f"{v1['index_s_per_incremental'] * 1000:.0f} ms | same |")
    print(f"| index bytes in the repository | {v2['repository_index_bytes'] / mib:.0f} MiB | "
          f"{v1['repository_index_bytes'] / mib:.0f} MiB | "
          f"{report['v1_extrapolated']['repository_index_bytes'] / mib:.0f} MiB |")
    g2, g1 = v2["gc"], v1["gc"]  # type: ignore[index]
    print(f"| gc (mark, dry run) | {g2['s']:.1f} s, {g2['rss_mib']:.0f} MiB peak, "
          f"{g2['pages_read']} pages read | {g1['s']:.1f} s, {g1['rss_mib']:.0f} MiB peak | "
          f"{report['v1_extrapolated']['gc_s']:.0f} s |")
    q2, q1 = v2["info"], v1["info"]  # type: ignore[index]
    print(f"| repo info | {q2['s']:.1f} s, {q2['rss_mib']:.0f} MiB peak | "
          f"{q1['s']:.1f} s, {q1['rss_mib']:.0f} MiB peak | "
          f"{q1['s'] * scale:.0f} s |")
    print(f"(made in {v2['make_s']:.0f} s and {v1['make_s']:.0f} s; peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
