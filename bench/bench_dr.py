#!/usr/bin/env python3
"""The disaster-recovery drill: a group of two guests back from S3 at a site that
holds only the repository's URL and its key file.

1. SeaweedFS (tests/s3servers.py's server class) starts in a temporary directory;
   two test guests (stasis_testkit, TCG) boot on a "production" network, each with a
   qcow2 disk of ``--disk-mib`` of which ``--data-mib`` is random data written from
   the host before boot;
2. ``stasis repo init --key-file KEY`` on ``s3://BUCKET/repo`` and one group point of
   both guests (``back_up_members``, the engine of ``stasis backup group``), not timed;
   then the originals are destroyed, as when their site is lost;
3. each run (``--runs``), on a fresh state directory and from a fresh process each,
   with only the URL and the key file: ``stasis catalog rebuild``, then ``stasis
   restore group app@latest --network DRILL --start``, timed from spawn until both
   guests' boot markers are on their consoles. The copies are removed after each run.

Reported: each step's seconds (medians and runs) and the repository's size (objects
and bytes in the bucket). Run as root from the repository root, under the measure
lock; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
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
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import bench_s3 as b3  # noqa: E402

MiB = 1 << 20
RESULTS_DIR = BENCH_DIR / "results"
# $STASIS_BIN: a checkout without its own .venv runs another checkout's entry point
# with its sources first on PYTHONPATH.
STASIS = Path(os.environ.get("STASIS_BIN", Path(sys.executable).parent / "stasis"))
log = b3.log


def stasis(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(STASIS), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"stasis {' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    return proc.stdout


def console_log(conn: Any, name: str) -> Path | None:
    import xml.etree.ElementTree as ET

    import libvirt

    try:
        root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    except libvirt.libvirtError:
        return None  # not defined yet
    for serial in root.iterfind("devices/serial"):
        src = serial.find("source")
        if serial.get("type") == "file" and src is not None:
            return Path(src.get("path", ""))
    return None


def wait_markers(conn: Any, names: list[str], marker: str, proc: subprocess.Popen[str],
                 timeout: float = 600) -> None:
    """Until every guest of ``names`` has ``marker`` on its console (or ``proc`` failed)."""
    deadline = time.monotonic() + timeout
    waiting = set(names)
    while waiting:
        for name in list(waiting):
            path = console_log(conn, name)
            if path is not None and path.exists() and \
                    marker in path.read_text(errors="replace"):
                waiting.discard(name)
        if proc.poll() not in (None, 0):
            raise RuntimeError(f"the restore failed ({proc.returncode}): "
                               f"{(proc.stderr.read() if proc.stderr else '')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no boot marker on {sorted(waiting)} within {timeout} s")
        time.sleep(0.02)


def remove(conn: Any, names: list[str], storage: Path) -> None:
    import libvirt

    for name in names:
        with contextlib.suppress(libvirt.libvirtError):
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    shutil.rmtree(storage, ignore_errors=True)


def fill(path: Path, size: int, data: int) -> None:
    """``data`` bytes of random data at the start of the guest's virtual disk (raw
    first, then converted: the guest's qcow2 is created by the kit)."""
    raw = path.with_suffix(".fill.raw")
    with open(raw, "wb") as f:
        f.truncate(size)
        f.seek(1 * MiB)  # past the boot sector the kit's guest may look at
        for _ in range(data // MiB):
            f.write(os.urandom(MiB))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
                   check=True)
    raw.unlink()


def repo_size(server: Any, bucket: str) -> tuple[int, int]:
    client = server.client()
    objects = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", ()):
            objects += 1
            size += int(obj["Size"])
    return objects, size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--disk-mib", type=int, default=1024, help="each guest's virtual disk")
    ap.add_argument("--data-mib", type=int, default=256, help="random data on each disk")
    ap.add_argument("--chunk-size", default="1M")
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    import libvirt

    from stasis.backends import open_backend
    from stasis.protection.capture import back_up_members
    from stasis.repository import Credentials, Repository
    from stasis.repository.keyfile import read_key_file
    from stasis_testkit import READY_MARKER, DiskSpec, GuestKit

    work = Path(tempfile.mkdtemp(prefix="bench-dr-", dir=args.work_dir or "/var/tmp"))
    files = b3.isolated_aws(work)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # misses are expected
    conn = libvirt.open("qemu:///system")
    tag = f"{os.getpid() % 100000}"
    nets = []
    steps: dict[str, list[float]] = {"catalog rebuild": [], "restore group until booted": [],
                                     "drill total": []}
    load = [os.getloadavg()]
    try:
        for role in ("prod", "drill"):
            # No <forward> and no <ip>: nothing leaves it (the copies run isolated).
            nets.append(conn.networkCreateXML(
                f"<network><name>stasis-dr-{role}-{tag}</name>"
                f"<bridge name='stdr{role[0]}{tag}'/></network>"))
        prod, drill = (n.name() for n in nets)
        with b3.running("seaweedfs", work / "seaweedfs", files) as server, \
                GuestKit(conn, work / "kit") as kit:
            bucket = server.new_bucket()
            url = server.url(bucket, "repo")
            key = work / "dr.key"
            base = {k: v for k, v in os.environ.items() if not k.startswith("STASIS_")}
            env = {**base, "STASIS_REPO": url, "STASIS_STATE_DIR": str(work / "prod-state")}
            stasis(env, "repo", "init", "--key-file", str(key), "--chunk-size", args.chunk_size)
            guests = []
            for _ in range(2):
                g = kit.create(disks=[DiskSpec("vda", "qcow2", args.disk_mib * MiB)],
                               network=prod, start=False)
                fill(g.disks["vda"].path, args.disk_mib * MiB, args.data_mib * MiB)
                g.start()
                guests.append(g)
            for g in guests:
                g.wait_ready(180)
            repo = Repository.open(open_backend(url), Credentials(keyfile=read_key_file(key)))
            (work / "run").mkdir()
            (work / "scratch").mkdir(mode=0o711)
            began = time.monotonic()
            point = back_up_members(conn, repo, [g.name for g in guests], point_name="app",
                                    kind="group", run_dir=work / "run",
                                    scratch_dir=work / "scratch")
            backup_s = time.monotonic() - began
            objects, size = repo_size(server, bucket)
            log(f"group point {point.id[:12]} in {backup_s:.1f} s; the repository: "
                f"{objects} objects, {size / MiB:.1f} MiB")
            originals = [g.name for g in guests]
            for g in guests:
                g.destroy()  # their site is lost
            for run in range(args.runs):
                # The DR site: a state directory that has never seen the production one,
                # the URL and the key file; the AWS config for the endpoint's keys.
                site = work / f"site-{run}"
                site.mkdir()
                (site / "scratch").mkdir(mode=0o711)
                dr_env = {**base, "STASIS_REPO": url, "STASIS_STATE_DIR": str(site / "state"),
                          "STASIS_SCRATCH_DIR": str(site / "scratch")}
                b3.bi.drop_caches()
                began = time.monotonic()
                stasis(dr_env, "catalog", "rebuild", "--key-file", str(key))
                rebuilt = time.monotonic()
                suffix = f"-dr{run}"
                names = [n + suffix for n in originals]
                storage = site / "storage"
                storage.mkdir()
                proc = subprocess.Popen(
                    [str(STASIS), "restore", "group", "app@latest", "--key-file", str(key),
                     "--suffix", suffix, "--storage", str(storage), "--network", drill,
                     "--start"], env=dr_env, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, text=True)
                try:
                    wait_markers(conn, names, READY_MARKER, proc)
                    done = time.monotonic()
                    _out, err = proc.communicate(timeout=600)
                    if proc.returncode != 0:
                        raise RuntimeError(f"restore group failed: {err.strip()[-2000:]}")
                finally:
                    remove(conn, names, storage)
                steps["catalog rebuild"].append(round(rebuilt - began, 2))
                steps["restore group until booted"].append(round(done - rebuilt, 2))
                steps["drill total"].append(round(done - began, 2))
                load.append(os.getloadavg())
                log(f"run {run}: rebuild {rebuilt - began:.2f} s, restore group until both "
                    f"booted {done - rebuilt:.2f} s")
                shutil.rmtree(site, ignore_errors=True)
    finally:
        for net in nets:
            with contextlib.suppress(libvirt.libvirtError):
                net.destroy()
        shutil.rmtree(work, ignore_errors=True)
    out = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": b3.commit(),
           "load": load, "disk_mib": args.disk_mib, "data_mib": args.data_mib,
           "chunk_size": args.chunk_size, "backup_s": round(backup_s, 2),
           "repository": {"objects": objects, "mib": round(size / MiB, 1)},
           "runs": steps, "median_s": {k: statistics.median(v) for k, v in steps.items()}}
    args.results_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (args.results_dir / f"bench-dr-{stamp}.json").write_text(json.dumps(out, indent=1) + "\n")
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"repository: {objects} objects, {size / MiB:.1f} MiB (2 guests, "
          f"{args.data_mib} MiB of random data each on {args.disk_mib} MiB disks)")
    print("| step | median s | runs s |\n| --- | --- | --- |")
    for k, v in steps.items():
        print(f"| {k} | {statistics.median(v):.2f} | {' '.join(f'{x:.2f}' for x in v)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
