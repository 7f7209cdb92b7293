#!/usr/bin/env python3
"""Time to the first byte of one small file from a point of a Debian root disk.

Two ways to get ``/etc/hostname`` of a point of a 4 GiB GPT disk (EFI partition +
ext4 Debian root made by the test kit from debootstrap), each in a cold process
with the page cache dropped first:

- ``stasis files get POINT p2:/etc/hostname --to DIR``: straight from the
  repository (chunks of the partition table, the file system's metadata and the
  file, through the reader's cache);
- ``stasis restore disk POINT --to IMG --format raw``, then a read-only loop mount
  of the root partition, ``cat``, ``umount``: the whole disk first.

Run as root from the repository root; see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
STASIS = ROOT / ".venv" / "bin" / "stasis"
RESULTS_DIR = BENCH_DIR / "results"
PASSPHRASE = "correct horse battery staple"
GiB = 1 << 30
FILE = "/etc/hostname"

sys.path.insert(0, str(ROOT / "src"))
from stasis_testkit import fsimages  # noqa: E402


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(STASIS), *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"stasis {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def files_get(env: dict[str, str], point: str, out: Path) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    dropped = drop_caches()
    t0 = time.perf_counter()
    proc = run(env, "files", "get", point, f"p2:{FILE}", "--to", str(out), "--json")
    wall = time.perf_counter() - t0
    result = json.loads(proc.stdout)
    return {"wall_s": wall, "chunks": result["loads"], "bytes": result["bytes"],
            "caches_dropped": dropped, "content": (out / Path(FILE).name).read_bytes()}


def restore_then_read(env: dict[str, str], point: str, work: Path, offset: int) -> dict[str, Any]:
    img = work / "restored.raw"
    mnt = work / "mnt"
    img.unlink(missing_ok=True)
    mnt.mkdir(exist_ok=True)
    dropped = drop_caches()
    t0 = time.perf_counter()
    run(env, "restore", "disk", point, "--to", str(img), "--format", "raw")
    t_restore = time.perf_counter() - t0
    subprocess.run(["mount", "-o", f"ro,loop,offset={offset}", "-t", "ext4", str(img),
                    str(mnt)], check=True)
    try:
        content = (mnt / FILE.lstrip("/")).read_bytes()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    wall = time.perf_counter() - t0
    img.unlink()
    return {"wall_s": wall, "restore_s": t_restore, "caches_dropped": dropped,
            "content": content}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=4, help="disk size in GiB (default 4)")
    ap.add_argument("--chunk-size", default="4M", help="repository chunk size (default 4M)")
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", action="store_true", help="the report on stdout")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (debootstrap, drop_caches, loop mounts)")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="stasis-bench-files-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STASIS_REPO": str(work / "repo"), "STASIS_PASSPHRASE": PASSPHRASE,
           "STASIS_STATE_DIR": str(work / "state")}
    try:
        t = time.perf_counter()
        tree = fsimages.debian_tree()
        disk = fsimages.debian_root_disk(work / "debian.img", size=args.size * GiB, tree=tree)
        print(f"disk built in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        parts = json.loads(subprocess.run(["sfdisk", "--json", str(disk.path)], check=True,
                                          capture_output=True, text=True).stdout)
        root_offset = parts["partitiontable"]["partitions"][1]["start"] * 512
        run(env, "repo", "init", "--chunk-size", args.chunk_size)
        t = time.perf_counter()
        backup = json.loads(run(env, "backup", "image", str(disk.path), "--name", "debian",
                                "--json").stdout)
        print(f"backed up in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        want = (tree / FILE.lstrip("/")).read_bytes()
        point = "debian@latest"
        get_runs, restore_runs = [], []
        for i in range(args.runs):
            g = files_get(env, point, work / "out")
            r = restore_then_read(env, point, work, root_offset)
            assert g.pop("content") == want and r.pop("content") == want
            get_runs.append(g)
            restore_runs.append(r)
            print(f"run {i + 1}: files get {g['wall_s']:.2f} s ({g['chunks']} chunks); "
                  f"restore + mount + read {r['wall_s']:.2f} s", file=sys.stderr)
        report = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "disk_size": disk.size, "chunk_size": args.chunk_size, "file": FILE,
            "bytes_read_by_backup": backup.get("bytes_read"),
            "files_get": get_runs, "restore_then_read": restore_runs,
            "files_get_median_s": statistics.median(g["wall_s"] for g in get_runs),
            "restore_then_read_median_s": statistics.median(r["wall_s"] for r in restore_runs),
            "restore_median_s": statistics.median(r["restore_s"] for r in restore_runs),
        }
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (RESULTS_DIR / f"bench-files-{stamp}.json").write_text(json.dumps(report, indent=1))
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            gets = " ".join(f"{g['wall_s']:.2f}" for g in get_runs)
            restores = " ".join(f"{r['wall_s']:.2f}" for r in restore_runs)
            print("| way | median s | runs s | chunks read |\n| --- | --- | --- | --- |")
            print(f"| files get | {report['files_get_median_s']:.2f} | {gets} | "
                  f"{get_runs[0]['chunks']} |")
            print(f"| restore disk + mount + read | {report['restore_then_read_median_s']:.2f} "
                  f"| {restores} | all |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
