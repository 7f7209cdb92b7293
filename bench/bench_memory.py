#!/usr/bin/env python3
"""Peak memory and open files of real ``stasis`` processes as disks, points and service
runs grow: each figure should stay flat.

Three series, each of real CLI processes (``.venv/bin/stasis``) on a local repository:

- **disks** (``--sizes``, default 4GiB,64GiB,1TiB): a sparse raw image of each virtual
  size holding the same data (``--pieces`` pieces of 1 MiB of random bytes at offsets
  spread over the whole disk, the rest a hole), in a fresh repository each: ``backup
  image``, ``restore disk`` (raw, sparse; compared with the source) and ``verify
  --deep``. The data is the same size at every size, so what grows comes from the
  virtual size alone. Image backups find the data with ``SEEK_DATA``/``SEEK_HOLE``
  (blockio/raw.py), so a 1 TiB image costs seconds.
- **points** (``--points``, default 1,100,1000): one repository of one image, made up to
  each count with one incremental per point (``--image-mib``, one MiB of new data each),
  the points before the measured ones made in one helper process through the product's
  own ``back_up_images`` (a process start per point would take most of the run), then at
  each count: ``backup image`` (the next point), ``list --json``, ``prune --dry-run``,
  ``gc``, ``verify`` and ``catalog rebuild``.
- **service** (``--jobs``, default 1000): ``stasis serve --listen 127.0.0.1:PORT`` on the
  repository, and that many image backups submitted through its REST API one after the
  other (``POST /api/v1/backups``, each waited for); the server's RSS and open files are
  sampled every ``--sample-s`` and after every job: start, peak, end, and the slope over
  the last half of the jobs.

For each process: the peak RSS (its own ``VmHWM`` from /proc/PID/status, sampled every
``--poll-s``; its children's separately, by name) and the peak count of open file
descriptors (/proc/PID/fd). Prints a table per series and a verdict line each ("flat",
or the growth per step), and writes a JSON report to bench/results/.

    nice -n 10 python bench/bench_memory.py                     # about 15 min
    python bench/bench_memory.py --sizes 64MiB,1GiB --points 1,5 --jobs 20   # seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench_api import free_port, running  # noqa: E402
from bench_index import parse_size  # noqa: E402
from bench_s3 import commit  # noqa: E402

from stasis.backends.local import TMP_MARK  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
PASSPHRASE = "bench-memory"
MiB = 1 << 20
# Growth allowed before a series is not flat: bench_image's target for peak memory
# (max(16 MiB, 10 %)), and two open files (judged on the steady ones: see fd_counts).
FLAT_RSS_MIB = 16.0
FLAT_RSS_SHARE = 0.10
FLAT_FDS = 2
_IMPORTED = (".py", ".pyc", ".pth", ".so")


# ------------------------------------------------------------------ /proc


def status_kib(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of ``pid`` in KiB (empty once it has exited)."""
    got = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":", 1)
                got[key] = int(value.split()[0])
    return got


def fd_counts(pid: int) -> tuple[int, int]:
    """Open descriptors of ``pid``: all, and the steady ones. Not steady, as each is
    open for an instant and how many a sample catches is timing, not growth: a put's
    temporary file (one per writer thread in flight), a directory (fsynced after
    renames), a pipe (a child being started), and Python's own files while it imports."""
    fds = steady = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                steady += not (TMP_MARK in target or target.startswith("pipe:")
                               or target.endswith(_IMPORTED) or os.path.isdir(target))
    return fds, steady


def children(pid: int) -> list[int]:
    """The live descendants of ``pid``."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                found += kids
                todo += kids
    return found


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return "?"


@dataclass
class Peaks:
    """What a sampler saw of one process and its children."""

    rss_mib: float = 0.0  # the process's own VmHWM at its last sample
    fds: int = 0
    steady_fds: int = 0
    children_mib: dict[str, float] = field(default_factory=dict)  # by name: the largest
    samples: int = 0

    def sample(self, pid: int) -> dict[str, int]:
        got = status_kib(pid)
        if "VmHWM" in got:
            self.rss_mib = max(self.rss_mib, got["VmHWM"] / 1024)
            fds, steady = fd_counts(pid)
            self.fds, self.steady_fds = max(self.fds, fds), max(self.steady_fds, steady)
            self.samples += 1
        exe = _exe(pid)
        for kid in children(pid):
            if _exe(kid) == exe:
                continue  # forked, not yet the program it runs: a copy of the parent
            hwm = status_kib(kid).get("VmHWM")
            if hwm is not None:
                name = comm(kid)
                self.children_mib[name] = max(self.children_mib.get(name, 0.0), hwm / 1024)
        return got


@dataclass
class Measured:
    what: str
    step: str
    seconds: float
    exit_code: int
    rss_mib: float  # peak of its own VmHWM
    fds: int  # peak of open descriptors
    steady_fds: int  # peak of them without puts' temporary files and pipes
    children_mib: dict[str, float]
    tree_maxrss_mib: float  # wait4's ru_maxrss: the largest single process of the tree
    samples: int


def measure(argv: Sequence[str], env: dict[str, str], *, what: str, step: str,
            log: Path, poll_s: float = 0.01, timeout: float = 1800) -> Measured:
    """Run ``argv`` to its end, sampling its memory and open files; raise if it fails."""
    peaks = Peaks()
    t0 = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(list(argv), env=env, stdout=out, stderr=subprocess.STDOUT)
    while True:
        peaks.sample(proc.pid)  # before the check: the last sample is of a live process
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() - t0 > timeout:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{' '.join(argv)} took more than {timeout:.0f} s")
        time.sleep(poll_s)
    m = Measured(what, step, round(time.monotonic() - t0, 3), proc.returncode,
                 round(peaks.rss_mib, 1), peaks.fds, peaks.steady_fds,
                 {k: round(v, 1) for k, v in peaks.children_mib.items()},
                 round(usage.ru_maxrss / 1024, 1), peaks.samples)
    if m.exit_code != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({m.exit_code}); see {log}:\n"
                           + log.read_text(errors="replace")[-2000:])
    return m


def verdict(rows: list[Measured], steps: list[str]) -> dict[str, Any]:
    """Per command: the peak RSS and fds at the first and the last step, and flat or the
    growth per step."""
    out: dict[str, Any] = {}
    for what in dict.fromkeys(r.what for r in rows):
        mine = {r.step: r for r in rows if r.what == what}
        first, last = mine[steps[0]], mine[steps[-1]]
        rss = max(r.rss_mib for r in mine.values()) - first.rss_mib
        fds = max(r.steady_fds for r in mine.values()) - first.steady_fds
        flat = rss <= max(FLAT_RSS_MIB, FLAT_RSS_SHARE * first.rss_mib) and fds <= FLAT_FDS
        per = max(len(steps) - 1, 1)
        out[what] = {"flat": flat, "rss_first_mib": first.rss_mib,
                     "rss_last_mib": last.rss_mib, "rss_growth_mib": round(rss, 1),
                     "rss_growth_per_step_mib": round(rss / per, 1),
                     "fds_first": first.steady_fds, "fds_last": last.steady_fds,
                     "fds_growth": fds}
    return out


def verdict_line(series: str, v: dict[str, Any]) -> str:
    grown = [f"{what} +{g['rss_growth_per_step_mib']} MiB and +{g['fds_growth']} fds per step"
             for what, g in v.items() if not g["flat"]]
    return f"{series}: " + ("flat" if not grown else "GROWS: " + "; ".join(grown))


def table(rows: list[Measured], step_title: str) -> list[str]:
    lines = [f"| {step_title} | command | s | peak RSS MiB | children MiB | peak fds "
             "(steady) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        kids = ", ".join(f"{k} {v}" for k, v in sorted(r.children_mib.items())) or "–"
        lines.append(f"| {r.step} | {r.what} | {r.seconds} | {r.rss_mib} | {kids} "
                     f"| {r.fds} ({r.steady_fds}) |")
    return lines


# ------------------------------------------------------------------ the world


@dataclass
class Bench:
    work: Path
    stasis: str
    poll_s: float

    def env(self, repo: Path) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("STASIS_")}
        return {**base, "STASIS_REPO": str(repo), "STASIS_PASSPHRASE": PASSPHRASE,
                "STASIS_STATE_DIR": str(self.work / "state"),
                "STASIS_CATALOG": f"sqlite:///{self.work / 'catalog.db'}",
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
                "COLUMNS": "200"}

    def init(self, repo: Path) -> None:
        """A repository with a cheap key slot (the KDF is not what is measured)."""
        from stasis.backends import open_backend
        from stasis.repository import Repository, crypto

        Repository.init(open_backend(repo), passphrase=PASSPHRASE.encode(),
                        chunk_size=MiB, kdf=crypto.KdfParams(memory_kib=1024, iterations=1))

    def run(self, repo: Path, args: list[str], *, what: str, step: str) -> Measured:
        m = measure([self.stasis, *args], self.env(repo), what=what, step=step,
                    log=self.work / "commands.log", poll_s=self.poll_s)
        print(f"  {step} {what}: {m.seconds} s, {m.rss_mib} MiB, {m.fds} fds", file=sys.stderr)
        return m


def sparse_image(path: Path, size: int, pieces: int, seed: int) -> list[tuple[int, bytes]]:
    """A sparse raw image of ``size`` with ``pieces`` MiB of random data spread over it."""
    rnd = random.Random(seed)
    stride = size // pieces
    written = []
    with open(path, "wb") as f:
        f.truncate(size)
        for n in range(pieces):
            at = (n * stride + rnd.randrange(0, max(stride - MiB, 1))) // MiB * MiB
            data = rnd.randbytes(MiB)
            f.seek(at)
            f.write(data)
            written.append((at, data))
    return written


def same_image(path: Path, size: int, written: list[tuple[int, bytes]]) -> None:
    """The restored image has the source's size, data and holes (it stays sparse)."""
    st = os.stat(path)
    if st.st_size != size:
        raise RuntimeError(f"{path}: restored {st.st_size} bytes, not {size}")
    with open(path, "rb") as f:
        for at, data in written:
            f.seek(at)
            if f.read(len(data)) != data:
                raise RuntimeError(f"{path}: the restored data at {at} differs")
    allocated = st.st_blocks * 512
    if allocated > 2 * len(written) * MiB + 64 * MiB:
        raise RuntimeError(f"{path}: {allocated / MiB:.0f} MiB allocated: not sparse")


# ------------------------------------------------------------------ disks


def disks_series(b: Bench, sizes: list[str], pieces: int, seed: int) -> list[Measured]:
    rows = []
    for text in sizes:
        size = parse_size(text)
        repo = b.work / f"repo-{text}"
        b.init(repo)
        image = b.work / f"disk-{text}.raw"
        written = sparse_image(image, size, pieces, seed)
        out = b.work / f"restored-{text}.raw"
        rows.append(b.run(repo, ["backup", "image", str(image), "--name", "disk", "--json"],
                          what="backup image", step=text))
        rows.append(b.run(repo, ["restore", "disk", "disk@latest", "--to", str(out),
                                 "--format", "raw"], what="restore disk", step=text))
        same_image(out, size, written)
        rows.append(b.run(repo, ["verify", "--deep", "--json"], what="verify --deep",
                          step=text))
        for f in (image, out):
            f.unlink()
        subprocess.run(["rm", "-rf", str(repo)], check=True)
    return rows


# ------------------------------------------------------------------ points


def change(image: Path, n: int, image_mib: int) -> None:
    """One MiB of new data in the image, at a place of its own for point ``n``."""
    with open(image, "r+b") as f:
        f.seek((n % image_mib) * MiB)
        f.write(random.Random(n).randbytes(MiB))


def make_points(repo: Path, image: Path, first: int, count: int, image_mib: int) -> None:
    """Points ``first`` … ``first + count - 1``: one incremental each, in this process."""
    from stasis.backends import open_backend
    from stasis.protection.backup import back_up_images
    from stasis.repository import Credentials, Repository

    r = Repository.open(open_backend(repo), Credentials(passphrase=PASSPHRASE.encode()))
    for n in range(first, first + count):
        change(image, n, image_mib)
        back_up_images(r, [image], name="points")


def points_series(b: Bench, counts: list[int], image_mib: int) -> list[Measured]:
    repo = b.work / "repo-points"
    b.init(repo)
    image = b.work / "points.raw"
    with open(image, "wb") as f:
        f.truncate(image_mib * MiB)
    rows: list[Measured] = []
    have = 0
    for count in counts:
        if count - 1 > have:  # the points before the measured backup, in one process
            t0 = time.monotonic()
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "_points",
                            str(repo), str(image), str(have), str(count - 1 - have),
                            str(image_mib)], env=b.env(repo), check=True)
            print(f"  {count - 1 - have} points made in {time.monotonic() - t0:.1f} s",
                  file=sys.stderr)
            have = count - 1
        step = f"{count} points"
        change(image, have, image_mib)
        rows.append(b.run(repo, ["backup", "image", str(image), "--name", "points", "--json"],
                          what="backup image", step=step))
        have += 1
        for what, args in (("list --json", ["list", "--json"]),
                           ("prune --dry-run", ["prune", "--dry-run", "--keep-last", "1",
                                                "--json"]),
                           ("gc", ["gc", "--json"]),
                           ("verify", ["verify", "--json"]),
                           ("catalog rebuild", ["catalog", "rebuild", "--json"])):
            rows.append(b.run(repo, args, what=what, step=step))
    listed = json.loads(subprocess.run([b.stasis, "list", "--json"], env=b.env(repo),
                                       capture_output=True, text=True, check=True).stdout)
    if len(listed) != have:
        raise RuntimeError(f"the repository lists {len(listed)} points, not {have}")
    return rows


# ------------------------------------------------------------------ service


@dataclass
class ServiceRun:
    jobs: int
    seconds: float
    failed: int
    samples: list[dict[str, float]]  # every --sample-s: t, rss_mib, fds, steady_fds
    per_job: list[dict[str, float]]  # after each job: job, rss_mib, fds, steady_fds
    children_mib: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def summarize(per_job: list[dict[str, float]], samples: list[dict[str, float]]
              ) -> dict[str, Any]:
    """Start (after the first job: the repository and catalog opened), peak, the middle
    job, end, and the slope over the last half of the jobs, per 100 jobs; flat or not."""
    half = per_job[len(per_job) // 2:]
    xs = [j["job"] for j in half]
    first, last = per_job[0], per_job[-1]
    rss_slope = slope(xs, [j["rss_mib"] for j in half]) * 100
    fds_slope = slope(xs, [j["fds"] for j in half]) * 100
    rss_peak = max([s["rss_mib"] for s in samples] + [j["rss_mib"] for j in per_job])
    fds_peak = max([int(s["fds"]) for s in samples] + [int(j["fds"]) for j in per_job])
    # A job's descriptors are not all closed the instant the API says it ended (its
    # thread finishes after it), so a leak is judged on the fewest open over the first
    # and the last tenth of the jobs: one fd left per job raises the second by a tenth
    # of the jobs.
    tenth = max(len(per_job) // 10, 3)
    fds_floor_first = min(int(j["steady_fds"]) for j in per_job[:tenth])
    fds_floor_last = min(int(j["steady_fds"]) for j in per_job[-tenth:])
    # The first jobs import and open what every later job reuses (their growth is the
    # start's): flat is judged on the last half, where a leak is all that is left.
    middle = half[0]
    grown = last["rss_mib"] - middle["rss_mib"]
    flat = (grown <= max(FLAT_RSS_MIB, FLAT_RSS_SHARE * middle["rss_mib"])
            and fds_floor_last - fds_floor_first <= FLAT_FDS)
    return {"rss_before_mib": samples[0]["rss_mib"] if samples else 0.0,
            "rss_start_mib": first["rss_mib"], "rss_peak_mib": round(rss_peak, 1),
            "rss_middle_mib": middle["rss_mib"], "rss_end_mib": last["rss_mib"],
            "rss_slope_mib_per_100_jobs": round(rss_slope, 2),
            "fds_before": int(samples[0]["fds"]) if samples else 0,
            "fds_start": int(first["fds"]), "fds_peak": fds_peak, "fds_end": int(last["fds"]),
            "fds_slope_per_100_jobs": round(fds_slope, 2),
            "fds_floor_first": fds_floor_first, "fds_floor_last": fds_floor_last,
            "flat": flat}


def api(base: str, token: str, method: str, path: str,
        body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def service_series(b: Bench, jobs: int, image_mib: int, sample_s: float) -> ServiceRun:
    repo = b.work / "repo-service"
    b.init(repo)
    env = b.env(repo)
    image = b.work / "service.raw"
    with open(image, "wb") as f:
        f.truncate(image_mib * MiB)
    password = b.work / "password"
    password.write_text("bench password\n")
    subprocess.run([b.stasis, "user", "add", "bench", "--role", "admin", "--password-file",
                    str(password)], env=env, check=True, capture_output=True)
    made = subprocess.run([b.stasis, "token", "create", "bench", "--user", "bench", "--json"],
                          env=env, check=True, capture_output=True, text=True)
    token = json.loads(made.stdout)["secret"]
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    command = [b.stasis, "serve", "--listen", f"127.0.0.1:{port}", "--tick", "1"]
    samples: list[dict[str, float]] = []
    per_job: list[dict[str, float]] = []
    peaks = Peaks()
    failed = 0
    t0 = time.monotonic()
    with running(command, f"{base}/problems/usage-error", env,
                 b.work / "serve.log") as server:
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                got = peaks.sample(server.pid)
                fds, steady = fd_counts(server.pid)
                samples.append({"t": round(time.monotonic() - t0, 2),
                                "rss_mib": round(got.get("VmRSS", 0) / 1024, 1),
                                "fds": fds, "steady_fds": steady})
                stop.wait(sample_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            for n in range(jobs):
                change(image, n, image_mib)
                job = api(base, token, "POST", "/backups",
                          {"images": [str(image)], "name": "service"})["job"]
                while job["state"] not in ("succeeded", "failed", "interrupted"):
                    time.sleep(0.05)
                    job = api(base, token, "GET", f"/jobs/{job['id']}")
                failed += job["state"] != "succeeded"
                got = status_kib(server.pid)
                fds, steady = fd_counts(server.pid)
                per_job.append({"job": n + 1, "rss_mib": round(got.get("VmRSS", 0) / 1024, 1),
                                "fds": fds, "steady_fds": steady})
                if (n + 1) % max(jobs // 10, 1) == 0:
                    print(f"  {n + 1} jobs: RSS {per_job[-1]['rss_mib']} MiB, "
                          f"{per_job[-1]['fds']} fds", file=sys.stderr)
        finally:
            stop.set()
            sampler.join(10)
    run = ServiceRun(jobs, round(time.monotonic() - t0, 1), failed, samples, per_job,
                     {k: round(v, 1) for k, v in peaks.children_mib.items()})
    run.summary = summarize(per_job, samples)
    return run


def service_table(run: ServiceRun) -> list[str]:
    s = run.summary
    return ["| jobs | failed | duration | RSS before → after job 1 → middle job → end (peak) | "
            "slope, last half | fds before → after job 1 → peak → end | slope, last half |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {run.jobs} | {run.failed} | {run.seconds} s | {s['rss_before_mib']} → "
            f"{s['rss_start_mib']} → {s['rss_middle_mib']} → {s['rss_end_mib']} MiB "
            f"({s['rss_peak_mib']}) | "
            f"{s['rss_slope_mib_per_100_jobs']:+} MiB / 100 jobs | {s['fds_before']} → "
            f"{s['fds_start']} → {s['fds_peak']} → {s['fds_end']} | "
            f"{s['fds_slope_per_100_jobs']:+} / 100 jobs |"]


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_points"]:  # the helper process of the points series
        repo, image, first, count, image_mib = args[1:]
        make_points(Path(repo), Path(image), int(first), int(count), int(image_mib))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4GiB,64GiB,1TiB", help="virtual sizes of the disks")
    ap.add_argument("--pieces", type=int, default=64, help="MiB of data in every disk")
    ap.add_argument("--points", default="1,100,1000", help="point counts measured")
    ap.add_argument("--jobs", type=int, default=1000, help="jobs of the service run")
    ap.add_argument("--image-mib", type=int, default=16,
                    help="the image of the points and service series")
    ap.add_argument("--series", default="disks,points,service")
    ap.add_argument("--sample-s", type=float, default=1.0, help="the server's sampling")
    ap.add_argument("--poll-s", type=float, default=0.01, help="a command's sampling")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument("--json", action="store_true", help="print the JSON report")
    a = ap.parse_args(args)
    series = [s.strip() for s in a.series.split(",") if s.strip()]
    unknown = set(series) - {"disks", "points", "service"}
    if unknown:
        ap.error(f"--series: {', '.join(sorted(unknown))}: not disks, points or service")
    stasis = str(Path(sys.executable).parent / "stasis")
    report: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                              "commit": commit(), "cores": os.cpu_count(),
                              "load_start": os.getloadavg()[0]}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="stasis-bench-memory-", dir=a.work_dir) as tmp:
        b = Bench(Path(tmp), stasis, a.poll_s)
        runs: dict[str, Callable[[], None]] = {}

        def disks() -> None:
            sizes = [s.strip() for s in a.sizes.split(",")]
            rows = disks_series(b, sizes, a.pieces, a.seed)
            v = verdict(rows, sizes)
            report["disks"] = {"pieces_mib": a.pieces, "rows": [asdict(r) for r in rows],
                               "verdict": v}
            lines.extend([f"Disks ({a.pieces} MiB of data in each, sparse):",
                          *table(rows, "virtual size"), verdict_line("disks", v), ""])

        def points() -> None:
            counts = [int(c) for c in a.points.split(",")]
            rows = points_series(b, counts, a.image_mib)
            steps = [f"{c} points" for c in counts]
            v = verdict(rows, steps)
            report["points"] = {"image_mib": a.image_mib, "rows": [asdict(r) for r in rows],
                                "verdict": v}
            lines.extend([f"Points (one {a.image_mib} MiB image, one incremental per point):",
                          *table(rows, "points"), verdict_line("points", v), ""])

        def service() -> None:
            run = service_series(b, a.jobs, a.image_mib, a.sample_s)
            report["service"] = asdict(run)
            s = run.summary
            lines.extend([f"Service ({a.jobs} image backups through the API, one after the "
                          "other):", *service_table(run),
                          "service: " + ("flat" if s["flat"] else
                                         f"GROWS: {s['rss_slope_mib_per_100_jobs']:+} MiB and "
                                         f"{s['fds_slope_per_100_jobs']:+} fds per 100 jobs"),
                          ""])

        runs.update(disks=disks, points=points, service=service)
        for name in series:
            print(f"{name}:", file=sys.stderr)
            runs[name]()
    report["load_end"] = os.getloadavg()[0]
    a.results_dir.mkdir(parents=True, exist_ok=True)
    out = a.results_dir / f"memory-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=1))
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print("\n".join(lines))
        print(f"(load {report['load_start']:.1f} → {report['load_end']:.1f}; "
              f"{os.cpu_count()} cores; report in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
