#!/usr/bin/env python3
"""Memory and speed of a directory of a point downloaded as a streamed archive.

A whole-disk ext4 holding one directory of ``--files`` files of random data
(``--size-mib`` in all, 1 GiB by default) is backed up; then
``GET /api/v1/points/{id}/files/archive?path=/big&format=F`` is read through the
API in-process (FastAPI's TestClient) for zip and tar.zst, while a thread samples
the process's resident memory. The archive is only counted, never kept.

    flock /tmp/stasis-measure.lock python bench/bench_archive.py [--size-mib 1024] [--runs 3]

Prints one JSON object: per format, the median seconds and MiB/s over the
directory's bytes, the archive's size, and the resident memory before the
download and its peak during it (MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

MiB = 1 << 20


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Peak:
    """The highest resident memory seen while the block runs (sampled every 10 ms)."""

    def __enter__(self) -> Peak:
        self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from stasis.api.app import create_app
    from stasis.api.context import ApiContext
    from stasis.app.auth import BUILTIN_ROLES, Principal
    from stasis.backends import open_backend
    from stasis.catalog import Catalog
    from stasis.protection.backup import back_up_images
    from stasis.repository import Repository
    from stasis.repository.crypto import KdfParams
    from stasis_testkit import fsimages

    class OneToken:
        def by_token(self, secret: str, *, address: str | None) -> Principal:
            return Principal(user="bench", role="admin", permissions=BUILTIN_ROLES["admin"][1])

        def by_session(self, cookie: str, *, address: str | None) -> Principal:
            raise AssertionError("no sessions here")

    with tempfile.TemporaryDirectory(prefix="stasis-bench-archive-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        tree = work / "tree" / "big"
        tree.mkdir(parents=True)
        each = args.size_mib * MiB // args.files
        rnd = random.Random(15)
        for i in range(args.files):
            (tree / f"file-{i}.bin").write_bytes(rnd.randbytes(each))
        disk = fsimages.ext4_disk(work / "disk.img", tree.parent,
                                  size=(args.size_mib + 256) * MiB * 5 // 4)
        repo = Repository.init(open_backend(work / "repo"), passphrase=b"bench",
                               kdf=KdfParams(memory_kib=1024, iterations=1))
        began = time.monotonic()
        point = back_up_images(repo, [disk.path], name="bench")
        backup_s = time.monotonic() - began
        os.unlink(disk.path)
        with Catalog.open(str(work / "catalog.db")) as catalog:
            ctx = ApiContext(catalog=catalog, repositories={"main": repo},
                             default_repository="main", connect="test:///default",
                             authenticator=OneToken())
            client = TestClient(create_app(ctx))
            client.headers["Authorization"] = "Bearer bench"
            result: dict[str, Any] = {"size_mib": args.size_mib, "files": args.files,
                                      "backup_s": round(backup_s, 1),
                                      "load": os.getloadavg()[0]}
            for fmt in ("zip", "tar.zst"):
                times, peaks, befores, sizes = [], [], [], []
                for _ in range(args.runs):
                    before = rss_mib()
                    with Peak() as peak:
                        t0 = time.monotonic()
                        size = 0
                        with client.stream("GET", f"/api/v1/points/{point.id}/files/archive",
                                           params={"path": "/big", "format": fmt}) as r:
                            assert r.status_code == 200, r.read()
                            for piece in r.iter_raw():
                                size += len(piece)
                        times.append(time.monotonic() - t0)
                    befores.append(before)
                    peaks.append(peak.peak)
                    sizes.append(size)
                med = statistics.median(times)
                result[fmt] = {"median_s": round(med, 2),
                               "mib_s": round(args.size_mib / med, 1),
                               "archive_mib": round(sizes[0] / MiB, 1),
                               "rss_before_mib": round(statistics.median(befores), 1),
                               "rss_peak_mib": round(max(peaks), 1)}
            result["load_after"] = os.getloadavg()[0]
            client.close()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
