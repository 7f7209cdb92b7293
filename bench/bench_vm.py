#!/usr/bin/env python3
"""Incremental backup of a live VM: Stasis vs restic (and borg) reading the disk image again.

A test guest (stasis_testkit, TCG) runs with a 4 GiB qcow2 disk of realistic content
(bench_image.py's cached image: a Debian ext4, random data, log text, holes). Stasis
backs the running VM up in full, 1 % of the disk is changed from inside the guest by
dd, and Stasis backs it up again: incremental, from the libvirt checkpoint. The
peers do what a user without changed-block tracking does: back up the disk image
file again into a repository that already holds its first version (restic of a raw
export and of a copy of the qcow2 file, borg of the raw export).

Reported: wall time (page cache dropped before each timed command), bytes read, the
repository's growth, and for Stasis the seconds the backupBegin call took (the window
in which QEMU fixes the instant; the guest is not paused in this version). Run as
root from the repository root; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_image as bi

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
STASIS = ROOT / ".venv" / "bin" / "stasis"
RESULTS_DIR = BENCH_DIR / "results"
PASSPHRASE = bi.PASSPHRASE
GUEST_NAME = "bench-vm"
ALL_PEERS = ("restic-raw", "restic-qcow2", "borg-raw")
ALIGN = 64 * KiB  # dd block size in the guest, and the default dirty-bitmap granularity
PIECE = (64 * KiB, MiB)
DISK_PROBE = 512 * MiB  # bytes written to time the disk
TARGET_SPEEDUP = 20.0
TARGET_READ_PERCENT = 2.0

log = bi.log
mib = bi.mib


# ------------------------------------------------------------------ the change


def plan_changes(size: int, fraction: float, seed: int) -> list[tuple[int, int]]:
    """Non-overlapping (offset, length) writes of 64 KiB-1 MiB (64 KiB multiples) at
    random 64 KiB-aligned offsets over the whole disk, ``fraction`` of ``size`` in all."""
    rng = random.Random(seed)
    target = int(size * fraction) // ALIGN * ALIGN
    taken: list[tuple[int, int]] = []
    done = 0
    while done < target:
        length = min(rng.randrange(PIECE[0], PIECE[1] + 1, ALIGN), target - done)
        offset = rng.randrange(0, size - length + 1, ALIGN)
        if any(offset < o + n and o < offset + length for o, n in taken):
            continue
        taken.append((offset, length))
        done += length
    return sorted(taken)


def units_touched(changes: Sequence[tuple[int, int]], unit: int) -> int:
    """How many ``unit``-aligned blocks the writes touch."""
    blocks: set[int] = set()
    for offset, length in changes:
        blocks.update(range(offset // unit, (offset + length - 1) // unit + 1))
    return len(blocks)


def dd_script(changes: Sequence[tuple[int, int]], disk: str = "vda") -> str:
    """One shell script for the guest: every write from /dev/urandom, flushed."""
    lines = ["set -e"]
    for offset, length in changes:
        lines.append(f"dd if=/dev/urandom of=/dev/{disk} bs={ALIGN} seek={offset // ALIGN} "
                     f"count={length // ALIGN} conv=notrunc,fsync 2>/dev/null")
    lines += ["sync", "echo done"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ results


@dataclass
class Row:
    tool: str  # "stasis", "restic (raw export)", ...
    step: str  # "full", "incremental", "unchanged"
    wall_s: float
    cpu_s: float
    peak_mib: float
    bytes_read: int | None  # what the tool read of the disk
    added: int | None  # growth of the repository in this step
    begin_s: float | None = None  # Stasis: the backupBegin call
    frozen_ms: float | None = None  # Stasis: how long the guest was suspended (0: not at all)
    core_s: float | None = None  # Stasis: the point's own duration_s (reading and storing)
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    cycle: int = 0  # which change cycle (the full backups: 0); -1 for a median row
    wall_range: tuple[float, float] | None = None  # min and max over the cycles


@dataclass
class Run:
    work: Path
    logs: Path
    name: str = ""
    rows: list[Row] = field(default_factory=list)
    cycle: int = 0
    caches_dropped: bool = True

    def measure(self, label: str, cmd: list[str], env: dict[str, str]) -> tuple[bi.Measured,
                                                                                   float]:
        """Drop caches, run ``cmd`` timed; return the measurement and its start (epoch)."""
        self.caches_dropped = bi.drop_caches() and self.caches_dropped
        started = time.time()
        m = bi.run_measured(cmd, env=env, log_path=self.logs / f"{label}.log")
        return m, started

    def add(self, row: Row) -> None:
        row.cycle = self.cycle
        self.rows.append(row)
        extra = f", begin {row.begin_s} s" if row.begin_s is not None else ""
        read = f"read {mib(row.bytes_read)} MiB" if row.bytes_read is not None else ""
        log(f"  {row.tool} {row.step}: {row.wall_s} s wall, {row.cpu_s} s CPU, {read}, "
            f"repo +{mib(row.added or 0)} MiB{extra} {row.note}".rstrip())


# ------------------------------------------------------------------ Stasis


def stasis_env(work: Path) -> dict[str, str]:
    return {**os.environ, "STASIS_PASSPHRASE": PASSPHRASE,
            "STASIS_STATE_DIR": str(work / "stasis-state"),
            "STASIS_SCRATCH_DIR": str(work / "scratch")}


def stasis_backup(run: Run, repo: Path, step: str) -> Row:
    env = stasis_env(run.work)
    before = bi.repo_size(repo)[0]
    m, launched = run.measure(f"stasis-{step}-{run.cycle + 1}",
                              [str(STASIS), "backup", "vm", run.name, "--repo", str(repo),
                               "--json"], env)
    ended = launched + m.wall_s
    added = bi.repo_size(repo)[0] - before
    result = json.loads(m.stdout)
    if isinstance(result, list):  # one entry per VM
        result = result[0]
    point = bi.run_quiet([str(STASIS), "show", result["id"], "--repo", str(repo), "--json"],
                         env=env)
    detail = json.loads(point.stdout)
    vm = detail["vms"][0]
    disk = next(d for d in result["vms"][0]["disks"] if d["target"] == "vda")
    files_read = sum(int(f.get("bytes_read", 0)) for f in vm.get("files", []))
    timings = detail.get("timings", {})
    # Where the process's wall time went: before the point's own clock started (Python
    # start, imports, key derivation, libvirt, checkpoint checks, backupBegin), the
    # point's duration (block status, reading, hashing, storing), and after it
    # (ending the job, deleting the old checkpoint, exit).
    phases = {}
    if "start" in timings and "end" in timings:
        phases = {"before_point_s": round(timings["start"] - launched, 3),
                  "point_s": timings.get("duration_s"),
                  "after_point_s": round(ended - timings["end"], 3)}
    begin = vm.get("extra", {}).get("begin_s")
    frozen = vm.get("extra", {}).get("frozen_ms")  # not recorded by older versions
    return Row(
        "stasis", step, m.wall_s, m.cpu_s, max(m.maxrss_mib, m.tree_rss_mib),
        bytes_read=int(disk["bytes_read"]), added=added, begin_s=begin, frozen_ms=frozen,
        core_s=timings.get("duration_s"),
        note=f"{disk['mode']}",
        details={"point": result["id"], "mode": disk["mode"], "reason": disk["reason"],
                 "virtual_size": disk["virtual_size"], "bytes_new": disk.get("bytes_new"),
                 "stored_new": disk.get("stored_new"), "files_read": files_read,
                 "point_bytes_read": result.get("bytes_read"), **phases},
    )


def profile_backup(run: Run, repo: Path) -> str:
    """One more incremental under cProfile; the top functions by cumulative time."""
    out = run.work / "stasis-incremental.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), str(STASIS), "backup", "vm",
           run.name, "--repo", str(repo), "--json"]
    run.caches_dropped = bi.drop_caches() and run.caches_dropped
    bi.run_measured(cmd, env=stasis_env(run.work), log_path=run.logs / "stasis-profile.log")
    text = io.StringIO()
    pstats.Stats(str(out), stream=text).sort_stats("cumulative").print_stats(40)
    return text.getvalue()


# ------------------------------------------------------------------ the peers


class Peer:
    """A file-level backup tool that backs up one file (the same path every time)."""

    name = ""

    def __init__(self, work: Path, source: Path) -> None:
        self.work = work
        self.source = source
        self.repo = work / f"repo-{self.name}"

    @property
    def label(self) -> str:
        return self.name

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def init(self) -> None:
        raise NotImplementedError

    def backup_cmd(self, step: str) -> list[str]:
        raise NotImplementedError

    def bytes_read(self, stdout: str) -> tuple[int | None, dict[str, Any]]:
        raise NotImplementedError

    def backup(self, run: Run, step: str) -> Row:
        before = bi.repo_size(self.repo)[0]
        label = step if step == "full" else f"{step}-{run.cycle + 1}"  # borg: unique names
        m, _ = run.measure(f"{self.name}-{label}", self.backup_cmd(label), self.env())
        added = bi.repo_size(self.repo)[0] - before
        read, details = self.bytes_read(m.stdout)
        st = os.stat(self.source)
        details.update(file_size=st.st_size, file_allocated=st.st_blocks * 512)
        return Row(self.label, step, m.wall_s, m.cpu_s, max(m.maxrss_mib, m.tree_rss_mib),
                   bytes_read=read, added=added, details=details)


class Restic(Peer):
    def __init__(self, work: Path, source: Path, kind: str) -> None:
        self.name = f"restic-{kind}"
        self.kind = kind
        super().__init__(work, source)

    @property
    def label(self) -> str:
        return f"restic ({'raw export' if self.kind == 'raw' else 'qcow2 file'})"

    def env(self) -> dict[str, str]:
        return {**os.environ, "RESTIC_PASSWORD": PASSPHRASE,
                "RESTIC_CACHE_DIR": str(self.work / "restic-cache")}

    def init(self) -> None:
        bi.run_quiet(["restic", "-r", str(self.repo), "init", "--repository-version", "2"],
                     env=self.env())

    def backup_cmd(self, step: str) -> list[str]:
        return ["restic", "-r", str(self.repo), "backup", "--json", "--compression", "auto",
                "--tag", step, str(self.source)]

    def bytes_read(self, stdout: str) -> tuple[int | None, dict[str, Any]]:
        summary: dict[str, Any] = {}
        for line in stdout.splitlines():
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and msg.get("message_type") == "summary":
                    summary = msg
        processed = summary.get("total_bytes_processed")
        keep = ("files_new", "files_changed", "files_unmodified", "data_added",
                "total_bytes_processed", "total_duration", "snapshot_id")
        return (int(processed) if processed is not None else None,
                {k: summary[k] for k in keep if k in summary})


class Borg(Peer):
    """borg 1.2, zstd,3, fixed 4 MiB chunker + --sparse (its docs' advice for disk images)."""

    name = "borg-raw"

    @property
    def label(self) -> str:
        return "borg (raw export)"

    def env(self) -> dict[str, str]:
        return {**os.environ, "BORG_PASSPHRASE": PASSPHRASE,
                "BORG_BASE_DIR": str(self.work / "borg-base")}

    def init(self) -> None:
        bi.run_quiet(["borg", "init", "-e", "repokey-blake2", str(self.repo)], env=self.env())

    def backup_cmd(self, step: str) -> list[str]:
        return ["borg", "create", "--json", "--compression", "zstd,3", "--chunker-params",
                "fixed,4194304", "--sparse", f"{self.repo}::{step}", str(self.source)]

    def bytes_read(self, stdout: str) -> tuple[int | None, dict[str, Any]]:
        # --sparse skips the holes (SEEK_DATA): borg reads the allocated data.
        stats = json.loads(stdout).get("archive", {}).get("stats", {})
        return bi.allocated_bytes(self.source), dict(stats)


def make_peers(names: Sequence[str], work: Path, raw: Path, qcow2: Path) -> list[Peer]:
    peers: list[Peer] = []
    for name in names:
        if name == "restic-raw":
            peers.append(Restic(work, raw, "raw"))
        elif name == "restic-qcow2":
            peers.append(Restic(work, qcow2, "qcow2"))
        elif name == "borg-raw":
            peers.append(Borg(work, raw))
    return peers


# ------------------------------------------------------------------ the guest's disk


def export_disk(vda: Path, raw: Path, qcow2: Path | None) -> None:
    """The disk as the peers see it: a raw export (qemu-img convert -U, sparse) and a
    copy of the qcow2 file. Replaced files, same paths: restic finds its parent."""
    start = time.monotonic()
    tmp = raw.with_name(raw.name + ".tmp")
    bi.run_quiet(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(vda), str(tmp)])
    tmp.rename(raw)
    if qcow2 is not None:
        tmp = qcow2.with_name(qcow2.name + ".tmp")
        bi.run_quiet(["cp", "--sparse=always", str(vda), str(tmp)])
        tmp.rename(qcow2)
    log(f"  exported the disk for the peers in {time.monotonic() - start:.1f} s "
        f"(raw: {mib(bi.allocated_bytes(raw))} MiB allocated"
        + (f", qcow2 file: {mib(qcow2.stat().st_size)} MiB)" if qcow2 else ")"))


def bitmaps(vda: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(vda)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return []
    data = json.loads(proc.stdout).get("format-specific", {}).get("data", {})
    return list(data.get("bitmaps", []) or [])


# ------------------------------------------------------------------ reporting


def _f(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _median_opt(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return _median(known) if known else None


def summarize(rows: list[Row]) -> list[Row]:
    """One row per (tool, step): medians over the cycles, the highest peak memory."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.tool, r.step), []).append(r)
    out = []
    for (tool, step), rs in groups.items():
        walls = [r.wall_s for r in rs]
        read = _median_opt([r.bytes_read for r in rs])
        added = _median_opt([r.added for r in rs])
        begin = _median_opt([r.begin_s for r in rs])
        frozen = [r.frozen_ms for r in rs if r.frozen_ms is not None]
        core = _median_opt([r.core_s for r in rs])
        out.append(Row(
            tool, step, round(_median(walls), 2), round(_median([r.cpu_s for r in rs]), 2),
            max(r.peak_mib for r in rs), None if read is None else int(read),
            None if added is None else int(added),
            begin_s=None if begin is None else round(begin, 4),
            frozen_ms=max(frozen) if frozen else None,
            core_s=None if core is None else round(core, 3), note=rs[0].note,
            details={"runs": len(rs), "begin_s_max": max((r.begin_s for r in rs
                                                           if r.begin_s is not None),
                                                          default=None),
                     **{k: _median_opt([r.details.get(k) for r in rs])
                        for k in ("before_point_s", "point_s", "after_point_s", "files_read")
                        if any(k in r.details for r in rs)}},
            cycle=-1, wall_range=(min(walls), max(walls)),
        ))
    order = {"full": 0, "incremental": 1, "unchanged": 2}
    return sorted(out, key=lambda r: (order.get(r.step, 9), r.tool != "stasis"))


def print_table(rows: list[Row], size: int) -> None:
    stasis = {r.step: r for r in rows if r.tool == "stasis"}
    head = (f"{'tool':<20} {'step':<12} {'wall s':>7} {'min-max':>11} {'CPU s':>6} "
            f"{'peak MiB':>8} {'read MiB':>9} {'% disk':>6} {'repo +MiB':>9} {'×faster':>8} "
            f"{'begin s':>7}")
    print(f"\n{head}\n{'-' * len(head)}")
    for r in rows:
        ref = stasis.get(r.step)
        faster = r.wall_s / ref.wall_s if ref and r.tool != "stasis" and ref.wall_s else None
        pct = 100 * r.bytes_read / size if r.bytes_read is not None else None
        spread = f"{r.wall_range[0]:.2f}-{r.wall_range[1]:.2f}" if r.wall_range else "-"
        print(f"{r.tool:<20} {r.step:<12} {r.wall_s:>7.2f} {spread:>11} {r.cpu_s:>6.1f} "
              f"{r.peak_mib:>8.1f} "
              f"{_f(mib(r.bytes_read) if r.bytes_read is not None else None):>9} "
              f"{_f(pct, '.2f'):>6} {_f(mib(r.added or 0)):>9} {_f(faster, '.1f'):>8} "
              f"{_f(r.begin_s, '.3f'):>7}")


def floor(rows: list[Row], disk_mib_s: float) -> list[str]:
    """The least an incremental can take here: the fixed cost of a run (the unchanged
    one) plus writing its new objects at the disk's measured speed."""
    by = {(r.tool, r.step): r for r in rows}
    s, idle = by.get(("stasis", "incremental")), by.get(("stasis", "unchanged"))
    if s is None or not s.added:
        return []
    write_s = mib(s.added) / disk_mib_s
    lines = [f"disk: {disk_mib_s} MiB/s sequential write with fsync; the incremental stored "
             f"{mib(s.added)} MiB of new objects: at least {write_s:.2f} s of writing"]
    if idle is not None:
        least = idle.wall_s + write_s
        lines.append(f"fixed cost (unchanged run) {idle.wall_s:.2f} s + that writing = "
                     f"{least:.2f} s at least, against {s.wall_s:.2f} s measured")
        for r in rows:
            if r.tool != "stasis" and r.step == "incremental":
                lines.append(f"  best possible vs {r.tool} at this chunk size and fixed cost: "
                             f"{r.wall_s / least:.1f}× (target {TARGET_SPEEDUP:g}×)")
    return lines


def targets(rows: list[Row], size: int) -> list[str]:
    by = {(r.tool, r.step): r for r in rows}
    s = by.get(("stasis", "incremental"))
    lines: list[str] = []
    if s is None:
        return lines
    for r in rows:
        if r.tool != "stasis" and r.step == "incremental":
            x = r.wall_s / s.wall_s
            lines.append(f"incremental ≥{TARGET_SPEEDUP:g}× faster than {r.tool}: {x:.1f}× "
                         f"({s.wall_s} s vs {r.wall_s} s) "
                         f"{'MET' if x >= TARGET_SPEEDUP else 'NOT MET'}")
    if s.bytes_read is not None:
        pct = 100 * s.bytes_read / size
        lines.append(f"incremental reads ≤{TARGET_READ_PERCENT:g} % of the disk: {pct:.2f} % "
                     f"({mib(s.bytes_read)} of {mib(size)} MiB) "
                     f"{'MET' if pct <= TARGET_READ_PERCENT else 'NOT MET'}")
    if s.begin_s is not None:
        worst = s.details.get("begin_s_max")
        paused = ("not recorded by this version" if s.frozen_ms is None
                  else "0 (not suspended)" if s.frozen_ms == 0 else f"{s.frozen_ms:.1f} ms")
        lines.append(f"window in which the instant is fixed (backupBegin): {s.begin_s:.3f} s "
                     f"(median; longest {_f(worst, '.3f')} s); guest suspended/frozen: "
                     f"{paused}")
    return lines


def write_json(report: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"bench-vm-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


# ------------------------------------------------------------------ main


def parse_peers(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in ALL_PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"peers are a comma list of {', '.join(ALL_PEERS)} "
                                         "(or empty)")
    return names


def parse_fraction(text: str) -> float:
    value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"not a fraction in (0, 0.5): {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size", type=bi.parse_size, default=4 * GiB,
                   help="virtual size of the guest's disk (default 4G; at least 2G)")
    p.add_argument("--change", type=parse_fraction, default=0.01,
                   help="how much of the disk the guest changes (default 1%%)")
    p.add_argument("--cache-dir", type=Path, default=BENCH_DIR / ".cache",
                   help="bench_image.py's cache of test images (default bench/.cache)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="repositories, exports, logs (default: a new directory in the cache "
                   "dir); must be on a local disk")
    p.add_argument("--peers", type=parse_peers, default=list(ALL_PEERS),
                   help="comma list of restic-raw,restic-qcow2,borg-raw (default all)")
    p.add_argument("--stasis-chunk-size", default="",
                   help="chunk size of the Stasis repository (default: Stasis's default)")
    p.add_argument("--seed", type=int, default=bi.SEED, help="seed of the data and the change")
    p.add_argument("--memory", type=int, default=256, help="guest RAM in MiB (default 256)")
    p.add_argument("--repeat", type=bi.positive_int, default=3,
                   help="change-and-back-up cycles after the full backups; medians are "
                   "reported (default 3)")
    p.add_argument("--no-unchanged", dest="unchanged", action="store_false",
                   help="skip the Stasis backup with nothing changed after each cycle")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip restoring the incremental point and comparing it with the disk")
    p.add_argument("--profile", action="store_true",
                   help="change the disk once more and run one more incremental under "
                   "cProfile (not timed; top functions printed and saved)")
    p.add_argument("--keep", action="store_true",
                   help="keep the guest, the work directory and the repositories")
    return p.parse_args(argv)


def check_environment(peers: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (libvirt's system instance, dropping the page cache)")
    needed = ["qemu-img", "qemu-nbd", "mkfs.ext4", *sorted({p.split("-")[0] for p in peers})]
    missing = [c for c in needed if shutil.which(c) is None]
    if not STASIS.exists():
        missing.append(str(STASIS))
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)}")


def change_guest(guest: Any, changes: list[tuple[int, int]]) -> float:
    script = dd_script(changes)
    start = time.monotonic()
    result = guest.run(script, timeout=1800, check=True)
    seconds = time.monotonic() - start
    if "done" not in result.output:
        raise SystemExit(f"the guest's dd script did not finish: {result.output[-500:]}")
    log(f"  the guest wrote {mib(sum(n for _, n in changes))} MiB in {len(changes)} dd writes "
        f"in {seconds:.1f} s")
    return seconds


def verify_point(run: Run, repo: Path, point: str, raw: Path) -> bool:
    """Restore the point's vda and compare it with the export of the guest's disk."""
    out = run.work / "verify.raw"
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    start = time.monotonic()
    bi.run_quiet([str(STASIS), "restore", "disk", point, "--disk", "vda", "--to", str(out),
                  "--format", "raw", "--repo", str(repo), "--json"], env=stasis_env(run.work))
    equal = bi.images_equal(raw, out)
    log(f"  restored point {point[:12]} and compared with the guest's disk: "
        f"{'equal' if equal else 'DIFFERENT'} ({time.monotonic() - start:.1f} s)")
    out.unlink()
    return equal


def bench(args: argparse.Namespace, run: Run, kit: Any, report: dict[str, Any]) -> None:
    from stasis_testkit import DiskSpec

    size = args.size
    cached, layout = bi.build_disk(args.cache_dir.resolve(), size, args.seed)
    report["image"] = bi.describe_image(cached, layout)
    log(f"image {cached.name}: {mib(size)} MiB virtual, "
        f"{mib(bi.allocated_bytes(cached))} MiB allocated")

    log("== guest: define, put the image in as vda (qcow2, compat=1.1), boot")
    guest = kit.create(GUEST_NAME, [DiskSpec("vda", "qcow2", size)], start=False,
                       memory_mib=args.memory)
    run.name = guest.name
    vda = guest.disks["vda"].path
    start = time.monotonic()
    bi.run_quiet(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1",
                  str(cached), str(vda)])
    log(f"  qemu-img convert to {vda}: {time.monotonic() - start:.1f} s, "
        f"{mib(vda.stat().st_size)} MiB file")
    guest.start()
    log(f"  {guest.name} ready in {guest.wait_ready(120):.1f} s")

    repo = run.work / "repo-stasis"
    init = [str(STASIS), "repo", "init", "--repo", str(repo)]
    if args.stasis_chunk_size:
        init += ["--chunk-size", args.stasis_chunk_size]
    bi.run_quiet(init, env=stasis_env(run.work))
    chunk = int(bi.parse_size(args.stasis_chunk_size)) if args.stasis_chunk_size else 4 * MiB
    (run.work / "scratch").mkdir(mode=0o711, exist_ok=True)

    raw, qcow2 = run.work / "export" / "disk.raw", run.work / "export" / "disk.qcow2"
    raw.parent.mkdir()
    peers = make_peers(args.peers, run.work, raw, qcow2)
    want_qcow2 = any(p.source == qcow2 for p in peers)
    for peer in peers:
        peer.init()

    log("== first version: full backups")
    guest.sync()
    if peers or args.verify:
        export_disk(vda, raw, qcow2 if want_qcow2 else None)
    run.add(stasis_backup(run, repo, "full"))
    for peer in peers:
        run.add(peer.backup(run, "full"))

    report["changes"] = []
    last_point = ""
    for cycle in range(args.repeat):
        run.cycle = cycle
        log(f"== cycle {cycle + 1} of {args.repeat}: the guest changes "
            f"{args.change * 100:g} % of its disk")
        changes = plan_changes(size, args.change, args.seed + 7 + cycle)
        changed = sum(n for _, n in changes)
        seconds = change_guest(guest, changes)
        c = {
            "cycle": cycle, "bytes": changed, "writes": len(changes),
            "percent": round(100 * changed / size, 3), "guest_seconds": round(seconds, 1),
            # The least a reader of whole chunks / of 64 KiB bitmap blocks must read.
            "chunk_size": chunk, "chunks_touched": units_touched(changes, chunk),
            "chunk_bytes_touched": units_touched(changes, chunk) * chunk,
            "bitmap_bytes_touched": units_touched(changes, ALIGN) * ALIGN,
        }
        report["changes"].append(c)
        log(f"  dirty at 64 KiB granularity: {mib(c['bitmap_bytes_touched'])} MiB; "
            f"{c['chunks_touched']} chunks of {mib(chunk)} MiB touched: "
            f"{mib(c['chunk_bytes_touched'])} MiB "
            f"({100 * c['chunk_bytes_touched'] / size:.2f} % of the disk) for a reader of "
            "whole chunks")
        guest.sync()
        if peers or args.verify:
            export_disk(vda, raw, qcow2 if want_qcow2 else None)
        incr = stasis_backup(run, repo, "incremental")
        run.add(incr)
        if incr.bytes_read not in (c["chunk_bytes_touched"], c["bitmap_bytes_touched"]):
            log(f"  NOTE: Stasis read {incr.bytes_read} bytes of the disk; the writes touched "
                f"{c['bitmap_bytes_touched']} bytes of 64 KiB blocks and "
                f"{c['chunk_bytes_touched']} bytes of whole chunks")
        last_point = incr.details["point"]
        for peer in peers:
            run.add(peer.backup(run, "incremental"))
        if args.unchanged:
            log("  Stasis again, nothing changed (the fixed cost of an incremental)")
            run.add(stasis_backup(run, repo, "unchanged"))
    report["bitmaps"] = bitmaps(vda)

    if args.verify and last_point:
        ok = verify_point(run, repo, last_point, raw)
        report["verified"] = ok
        if not ok:
            report.setdefault("failures", []).append("the restored incremental point differs")

    if args.profile:
        log("== profile: one more change, one more incremental under cProfile")
        change_guest(guest, plan_changes(size, args.change, args.seed + 1000))
        guest.sync()
        text = profile_backup(run, repo)
        report["profile"] = text
        print(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_environment(args.peers)
    import libvirt

    from stasis_testkit import GuestKit

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    cache = args.cache_dir.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="work-vm-", dir=cache))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o711)  # QEMU reaches the scratch directory in it
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    run = Run(work, logs)
    report: dict[str, Any] = {
        "command": [sys.executable, *sys.argv], "host": platform.node(),
        "kernel": platform.release(), "cpus": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1),
        "stasis_commit": bi.stasis_commit(), "size": args.size, "peers": args.peers,
        "versions": {
            "stasis": bi.run_quiet([str(STASIS), "version"]).stdout.strip(),
            **{p: bi.run_quiet([p, "--version" if p == "borg" else "version"]).stdout.strip()
               for p in sorted({n.split("-")[0] for n in args.peers})},
            "qemu": bi.run_quiet(["qemu-img", "--version"]).stdout.splitlines()[0],
        },
    }
    log(f"work dir {work}; peers {', '.join(args.peers) or 'none'}")
    report["disk_mib_s"] = round(bi.disk_write_speed(work, DISK_PROBE), 1)
    log(f"disk: {report['disk_mib_s']} MiB/s sequential write with fsync")
    started = time.monotonic()
    kit = GuestKit()
    try:
        bench(args, run, kit, report)
    finally:
        if args.keep:
            if run.name:
                kit.release(run.name)
                log(f"kept guest {run.name} (python -m stasis_testkit destroy {run.name})")
            log(f"kept {work}")
            kit.close()
        else:
            kit.close()
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(run.rows)
    report.update(rows=[asdict(r) for r in run.rows], summary=[asdict(r) for r in summary],
                  caches_dropped=run.caches_dropped,
                  runtime_s=round(time.monotonic() - started, 1),
                  targets=targets(summary, args.size),
                  floor=floor(summary, report["disk_mib_s"]))
    print_table(summary, args.size)
    cycles = f"median of {args.repeat} cycles" if args.repeat > 1 else "one cycle"
    print(f"\nfull: one run; incremental and unchanged: {cycles} (min-max: range of wall s).")
    print("read MiB: Stasis: bytes_read of vda (what it read of the VM's disk; parent chunks "
          "it reads from its\nrepository are not counted); restic: total_bytes_processed; "
          "borg: the allocated bytes of the file\n(--sparse skips holes). "
          "×faster = peer wall / Stasis wall of the same step.")
    for r in summary:
        d = r.details
        if r.tool == "stasis" and "point_s" in d:
            print(f"stasis {r.step}: {r.wall_s} s = {_f(d['before_point_s'], '.2f')} s before "
                  f"the point (start, key, libvirt, backupBegin) + {_f(d['point_s'], '.2f')} s "
                  f"point + {_f(d['after_point_s'], '.2f')} s after (job end, checkpoint "
                  f"deletion, exit); also read {mib(d.get('files_read') or 0)} MiB of "
                  "kernel/initrd files")
    for c in report.get("changes", []):
        print(f"cycle {c['cycle'] + 1}: changed {mib(c['bytes'])} MiB in {c['writes']} writes; "
              f"{c['chunks_touched']} chunks touched = {mib(c['chunk_bytes_touched'])} MiB "
              f"({100 * c['chunk_bytes_touched'] / args.size:.2f} %); at 64 KiB granularity "
              f"{mib(c['bitmap_bytes_touched'])} MiB")
    print("\nTargets:")
    for line in report["targets"]:
        print(f"  {line}")
    if report["floor"]:
        print("\nWhat the disk and the fixed cost alone allow (same run):")
        for line in report["floor"]:
            print(f"  {line}")
    if not run.caches_dropped:
        print("NOTE: the page cache could not be dropped; timings include warm caches")
    print(f"\nbenchmark runtime {report['runtime_s']} s; results in {write_json(report)}")
    failures = report.get("failures", [])
    for failure in failures:
        print(f"FAILURE: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
