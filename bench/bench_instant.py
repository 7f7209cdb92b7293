#!/usr/bin/env python3
"""Time to the boot marker: instant recovery vs a full restore then boot.

A test guest (stasis_testkit, TCG) with a sparse qcow2 disk of ``--size`` GiB, of
which ``--data`` GiB is random data (incompressible, so a restore has to decrypt,
check and write every byte of it), is backed up once. Then, ``--runs`` times each,
the page cache dropped before each way and each in a new process:

- **restore + boot**: ``stasis restore vm POINT --name N --storage DIR --start``,
  timed from spawn to the guest's boot marker on its console;
- **instant**: ``stasis instant POINT --name N --storage DIR``, timed the same way.

Each VM is removed after its run (``stasis instant discard`` for the instant one).
Run as root from the repository root; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MiB, GiB = 1 << 20, 1 << 30
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
STASIS = ROOT / ".venv" / "bin" / "stasis"
RESULTS_DIR = BENCH_DIR / "results"
PASSPHRASE = "bench passphrase"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def drop_caches() -> None:
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def make_disk(path: Path, size: int, data: int, work: Path) -> None:
    """A qcow2 of ``size`` with ``data`` bytes of random data in 64 MiB runs spread
    over the disk, the rest unallocated."""
    raw = work / "fill.raw"
    runs = max(1, data // (64 * MiB))
    stride = size // runs
    with open(raw, "wb") as f:
        f.truncate(size)
        for i in range(runs):
            f.seek(i * stride)
            for _ in range(4):
                f.write(os.urandom(16 * MiB))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1",
                    str(raw), str(path)], check=True)
    raw.unlink()


def stasis(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(STASIS), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"stasis {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def console_log(conn: Any, name: str) -> Path:
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    for serial in root.iterfind("devices/serial"):
        src = serial.find("source")
        if serial.get("type") == "file" and src is not None:
            return Path(src.get("path", ""))
    raise RuntimeError(f"{name} has no console log")


def wait_marker(conn: Any, name: str, marker: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    path: Path | None = None
    while True:
        if path is None:
            try:
                path = console_log(conn, name)
            except Exception:  # not defined yet
                path = None
        if path is not None and path.exists() and marker in path.read_text(errors="replace"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: no boot marker within {timeout} s")
        time.sleep(0.02)


def timed(conn: Any, env: dict[str, str], marker: str, args: list[str], name: str) -> float:
    drop_caches()
    began = time.monotonic()
    proc = subprocess.Popen([str(STASIS), *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_marker(conn, name, marker)
    took = time.monotonic() - began
    _out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"stasis {' '.join(args)} failed: {err.strip()}")
    return took


def remove_vm(conn: Any, name: str, storage: Path) -> None:
    import libvirt

    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefine()
    for p in storage.glob(f"{name}*"):
        p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=float, default=8, help="virtual disk size, GiB")
    ap.add_argument("--data", type=float, default=2, help="random data on it, GiB")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import libvirt

    from stasis_testkit import READY_MARKER, DiskSpec, GuestKit

    work = Path(tempfile.mkdtemp(prefix="bench-instant-", dir=args.work_dir or "/var/tmp"))
    storage = work / "storage"
    storage.mkdir()
    scratch = work / "scratch"
    scratch.mkdir(mode=0o711)
    env = {**os.environ, "STASIS_REPO": str(work / "repo"), "STASIS_PASSPHRASE": PASSPHRASE,
           "STASIS_STATE_DIR": str(work / "state"), "STASIS_SCRATCH_DIR": str(scratch)}
    size, data = int(args.size * GiB), int(args.data * GiB)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # misses are expected
    conn = libvirt.open("qemu:///system")
    results: dict[str, list[float]] = {"restore + boot": [], "instant": []}
    with GuestKit(conn, work / "kit") as kit:
        g = kit.create(disks=[DiskSpec("vda", "qcow2", size)], start=False)
        try:
            log(f"disk: {args.size:g} GiB, {args.data:g} GiB of random data")
            make_disk(g.disks["vda"].path, size, data, work)
            g.start()
            g.wait_ready(120)
            stasis(env, "repo", "init")
            began = time.monotonic()
            point = json.loads(stasis(env, "backup", "vm", g.name, "--json"))
            log(f"backup: {time.monotonic() - began:.1f} s, point {point['id'][:12]}")
            marker = f"{READY_MARKER} {g.name}"
            g.destroy()  # the copies boot alone, as after losing the original
            for run in range(args.runs):
                name = f"bench-restored-{run}"
                took = timed(conn, env, marker, ["restore", "vm", point["id"], "--name", name,
                                                 "--storage", str(storage), "--start"], name)
                results["restore + boot"].append(took)
                log(f"run {run}: restore + boot {took:.1f} s")
                remove_vm(conn, name, storage)
                name = f"bench-instant-{run}"
                took = timed(conn, env, marker, ["instant", point["id"], "--name", name,
                                                 "--storage", str(storage)], name)
                results["instant"].append(took)
                log(f"run {run}: instant {took:.1f} s")
                stasis(env, "instant", "discard", name)
        finally:
            g.destroy()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    out = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit,
           "size_gib": args.size, "data_gib": args.data, "runs": results,
           "median_s": {k: round(statistics.median(v), 2) for k, v in results.items()}}
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"bench-instant-{stamp}.json").write_text(json.dumps(out, indent=1) + "\n")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print("| way | median s | runs s |\n| --- | --- | --- |")
    for k, v in results.items():
        print(f"| {k} | {statistics.median(v):.1f} | {' '.join(f'{x:.1f}' for x in v)} |")


if __name__ == "__main__":
    main()
