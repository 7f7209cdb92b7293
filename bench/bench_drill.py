#!/usr/bin/env python3
"""The measured RTO of recovery drills: instant against restore, one VM and a group.

Two setups, each backed up once into a fresh repository, then drilled ``--runs``
times each way (``stasis drill ... --json``, a new process, the page cache dropped
first), the RTO as the drill measured it (from its start until its last check passed):

- **one VM**: a test guest (stasis_testkit, TCG) with a sparse qcow2 disk of ``--size``
  GiB, ``--data`` GiB of it random data (incompressible: a restore decrypts, checks
  and writes every byte), a guest agent and a TCP listener, on an isolated
  "production" network; checks: the boot marker on the console, ``exec:true`` through
  the agent, and the TCP port across the drill's own isolated network;
- **a two-VM group**: two such guests with ``--group-size`` GiB disks of
  ``--group-data`` GiB data each, one group point; the same checks on both, the second
  started once the first passed them.

Run as root from the repository root; see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MiB, GiB = 1 << 20, 1 << 30
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
STASIS = ROOT / ".venv" / "bin" / "stasis"
RESULTS_DIR = BENCH_DIR / "results"
PASSPHRASE = "bench passphrase"
PORT = 8080

from bench_instant import drop_caches, log, make_disk  # noqa: E402 (helpers shared)


def stasis(env: dict[str, str], *args: str) -> Any:
    proc = subprocess.run([str(STASIS), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"stasis {' '.join(args)} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout) if "--json" in args else proc.stdout


def drill(env: dict[str, str], target: str, mode: str, storage: Path,
          marker: str) -> dict[str, Any]:
    drop_caches()
    result: dict[str, Any] = stasis(
        env, "drill", target, "--mode", mode, "--storage", str(storage),
        "--check", f"console~300:{marker}", "--check", "exec~120:true",
        "--check", f"tcp~120:{PORT}", "--json")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=float, default=8, help="one VM's disk, GiB")
    ap.add_argument("--data", type=float, default=2, help="random data on it, GiB")
    ap.add_argument("--group-size", type=float, default=4, help="each group VM's disk, GiB")
    ap.add_argument("--group-data", type=float, default=1, help="random data on each, GiB")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--stasis", type=Path, default=None,
                    help="the stasis command (default: .venv/bin/stasis)")
    args = ap.parse_args()
    global STASIS
    STASIS = args.stasis or STASIS
    sys.path.insert(0, str(ROOT / "src"))
    import libvirt

    from stasis_testkit import READY_MARKER, DiskSpec, Guest, GuestKit

    work = Path(tempfile.mkdtemp(prefix="bench-drill-", dir=args.work_dir or "/var/tmp"))
    storage = work / "storage"
    storage.mkdir()
    scratch = work / "scratch"
    scratch.mkdir(mode=0o711)
    env = {**os.environ, "STASIS_REPO": str(work / "repo"), "STASIS_PASSPHRASE": PASSPHRASE,
           "STASIS_STATE_DIR": str(work / "state"), "STASIS_SCRATCH_DIR": str(scratch)}
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # misses are expected
    conn = libvirt.open("qemu:///system")
    prod = conn.networkCreateXML(f"<network><name>bench-drill-prod-{os.getpid()}</name>"
                                 f"<bridge name='stbp{os.getpid() % 100000}'/></network>")
    results: dict[str, list[float]] = {}
    guests: list[Guest] = []

    def guest(kit: GuestKit, size: float, data: float) -> Guest:
        g = kit.create(disks=[DiskSpec("vda", "qcow2", int(size * GiB))], start=False,
                       network=prod.name(), guest_agent=True,
                       cmdline=[f"stasis.listen={PORT}"])
        guests.append(g)
        make_disk(g.disks["vda"].path, int(size * GiB), int(data * GiB), work)
        g.start()
        g.wait_ready(180)
        return g

    try:
        with GuestKit(conn, work / "kit") as kit:
            stasis(env, "repo", "init")
            one = guest(kit, args.size, args.data)
            a, b = guest(kit, args.group_size, args.group_data), guest(
                kit, args.group_size, args.group_data)
            began = time.monotonic()
            stasis(env, "backup", "vm", one.name, "--json")
            stasis(env, "backup", "group", "app", "--vm", a.name, "--vm", b.name, "--json")
            log(f"backups: {time.monotonic() - began:.1f} s")
            setups = {f"one VM, {args.size:g} GiB ({args.data:g} GiB data)": one.name,
                      f"group of 2, {args.group_size:g} GiB ({args.group_data:g} GiB data) "
                      "each": "app"}
            for run in range(args.runs):
                for label, target in setups.items():
                    for mode in ("restore", "instant"):
                        r = drill(env, target, mode, storage, READY_MARKER)
                        results.setdefault(f"{label} | {mode}", []).append(r["rto_s"])
                        log(f"run {run}: {label}, {mode}: RTO {r['rto_s']:.1f} s "
                            f"(drill {r['duration_s']:.1f} s with teardown)")
    finally:
        for g in guests:
            g.destroy()
        prod.destroy()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    out = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit,
           "load": os.getloadavg(), "runs": results,
           "median_s": {k: round(statistics.median(v), 2) for k, v in results.items()}}
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"bench-drill-{stamp}.json").write_text(json.dumps(out, indent=1) + "\n")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print("| setup | mode | median RTO s | runs s |\n| --- | --- | --- | --- |")
    for k, v in results.items():
        setup, mode = k.split(" | ")
        print(f"| {setup} | {mode} | {statistics.median(v):.1f} | "
              f"{' '.join(f'{x:.1f}' for x in v)} |")


if __name__ == "__main__":
    main()
