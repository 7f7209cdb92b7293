"""``stasis copy`` between two local repositories: a full copy with a shared key and
with the destination's own key, then the next point of the chain (a few MiB
changed), incrementally and, for comparison, to a destination without its base.

    flock /tmp/stasis-measure.lock python bench/bench_copy.py [--size-mib 768] [--runs 3]

Prints one JSON object: per case, the median seconds, MiB/s over the point's
stored data, objects sent, chunks read at the source.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from stasis.backends import open_backend
from stasis.protection.backup import back_up_images
from stasis.protection.copy import copy_points
from stasis.repository import Repository
from stasis.repository.crypto import KdfParams

MiB = 1 << 20
KDF = KdfParams(memory_kib=1024, iterations=1)


def make_image(path: Path, size: int, rng: random.Random) -> None:
    """Half random data, a quarter log-like text, a quarter holes."""
    line = b"2026-12-03 INFO copy request=%08d served in %d ms\n"
    with open(path, "wb") as f:
        f.truncate(size)
        for at in range(0, size, 4 * MiB):
            kind = (at // (4 * MiB)) % 4
            f.seek(at)
            if kind in (0, 1):
                f.write(rng.randbytes(4 * MiB))
            elif kind == 2:
                text = b"".join(line % (i, i % 97) for i in range(at, at + 90_000))
                f.write(text[: 4 * MiB])


def change(path: Path, size: int, rng: random.Random, n: int, length: int) -> None:
    with open(path, "r+b") as f:
        for _ in range(n):
            f.seek(rng.randrange(0, size - length) & ~4095)
            f.write(rng.randbytes(length))


def new_repo(path: Path, key_from: Repository | None = None) -> Repository:
    shutil.rmtree(path, ignore_errors=True)
    return Repository.init(open_backend(path), passphrase=b"bench", kdf=KDF, key_from=key_from)


def timed(src: Repository, dst: Repository, points: list[Any]) -> dict[str, Any]:
    began = time.monotonic()
    r = copy_points(src, dst, points)
    return {"s": time.monotonic() - began, "objects_sent": r.objects_sent,
            "bytes_sent": r.bytes_sent, "chunks_read": r.chunks_read,
            "bytes_read": r.bytes_read}


def median(rows: list[dict[str, Any]], stored: int) -> dict[str, Any]:
    s = statistics.median(r["s"] for r in rows)
    return {**rows[0], "s": round(s, 3), "runs": [round(r["s"], 3) for r in rows],
            "mib_per_s": round(stored / MiB / s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=768)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-copy-"))
    rng = random.Random(14)
    size = args.size_mib * MiB
    image = work / "disk.raw"
    make_image(image, size, rng)
    src = new_repo(work / "src")
    first = back_up_images(src, [image], name="disk")
    change(image, size, rng, n=64, length=128 << 10)
    second = back_up_images(src, [image], name="disk")
    stored = sum(d.stored_new for _vm, d in first.disks())
    stored2 = sum(d.stored_new for _vm, d in second.disks())
    out: dict[str, Any] = {"load": os.getloadavg(), "size_mib": args.size_mib,
                           "stored_first_mib": round(stored / MiB, 1),
                           "stored_second_mib": round(stored2 / MiB, 1),
                           "chunks_new_second": sum(d.chunks_new for _vm, d in second.disks())}
    for mode in ("shared", "own"):
        full, incr, cold = [], [], []
        for _ in range(args.runs):
            dst = new_repo(work / "dst", key_from=src if mode == "shared" else None)
            full.append(timed(src, dst, [first]))
            incr.append(timed(src, dst, [first, second]))
            dst = new_repo(work / "dst", key_from=src if mode == "shared" else None)
            cold.append(timed(src, dst, [second]))  # no base at the destination
        out[mode] = {"full": median(full, stored), "incremental": median(incr, stored2),
                     "second_without_base": median(cold, stored + stored2)}
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
