#!/usr/bin/env python3
"""Backups of live VMs: Stasis vs virtnbdbackup (the same pull-mode backup and dirty
bitmaps), and restic and borg reading the disk image again.

Test guests (stasis_testkit, TCG) run with identical 4 GiB qcow2 disks of realistic
content (bench_image.py's cached image: a Debian ext4, random data, log text, holes):
one guest per Stasis repository (one per ``--chunk-size``) and one for virtnbdbackup,
so that no tool's checkpoints meet another's. Each tool backs its guest up in full;
then, ``--runs`` times, every guest makes the same 1 % change from inside (dd at the
same offsets), and each tool backs up the change (an incremental), then nothing
changed; restic and borg back up a raw export of the disk instead (what a user without
changed-block tracking does). Then each tool restores its latest version until synced.
``--service`` adds Stasis incrementals submitted to a warm ``stasis serve``.

Reported: medians of wall time (page cache dropped before each timed command), bytes
read, the repository's growth, the ratios Stasis/peer, and the floors measured in the
same run (the disk's speeds, hashing, compressing and encrypting on this CPU). Run as
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
import re
import shlex
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
# $STASIS_BIN: a checkout without its own .venv runs another checkout's entry point
# with its sources first on PYTHONPATH.
STASIS = Path(os.environ.get("STASIS_BIN", ROOT / ".venv" / "bin" / "stasis"))
RESULTS_DIR = BENCH_DIR / "results"
PASSPHRASE = bi.PASSPHRASE
GUEST_NAME = "bench-vm"
VIRTNBD = "virtnbdbackup"
ALL_PEERS = (VIRTNBD, "restic-raw", "restic-qcow2", "borg-raw")
DEFAULT_PEERS = (VIRTNBD, "restic-raw", "borg-raw")
ALIGN = 64 * KiB  # dd block size in the guest, and the default dirty-bitmap granularity
PIECE = (64 * KiB, MiB)
DISK_PROBE = 512 * MiB  # bytes written to time the disk
TARGET_READ_PERCENT = 2.0
# Issue 13's targets: Stasis's time over the peer's (at most), or the floor's (at most).
TARGET_INCR_VS_PEER = 0.5
TARGET_SERVICE_VS_PEER = 0.3
TARGET_GROWTH_VS_CHANGE = 1.1
TARGET_UNCHANGED_S = 0.5
TARGET_FULL_VS_PEER = 1 / 1.5
TARGET_RESTORE_VS_PEER = 0.5
TARGET_VS_FLOOR = 1.3
TERMINAL = ("succeeded", "failed", "interrupted")

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
    tool: str  # "stasis", "stasis 1M", "virtnbdbackup", "restic (raw export)", ...
    step: str  # "full", "incremental", "unchanged", "restore", "service", ...
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
    cycle: int = 0  # which run of the step; -1 for a median row
    wall_range: tuple[float, float] | None = None  # min and max over the runs


@dataclass
class Run:
    work: Path
    logs: Path
    rows: list[Row] = field(default_factory=list)
    guests: list[str] = field(default_factory=list)  # domain names, to release with --keep
    cycle: int = 0
    caches_dropped: bool = True

    def measure(self, label: str, cmd: list[str], env: dict[str, str],
                cwd: Path | None = None) -> tuple[bi.Measured, float]:
        """Drop caches, run ``cmd`` timed; return the measurement and its start (epoch)."""
        self.caches_dropped = bi.drop_caches() and self.caches_dropped
        started = time.time()
        m = bi.run_measured(cmd, env=env, log_path=self.logs / f"{label}.log", cwd=cwd)
        return m, started

    def add(self, row: Row) -> None:
        row.cycle = self.cycle
        self.rows.append(row)
        extra = f", begin {row.begin_s} s" if row.begin_s is not None else ""
        read = f"read {mib(row.bytes_read)} MiB" if row.bytes_read is not None else ""
        log(f"  {row.tool} {row.step}: {row.wall_s} s wall, {row.cpu_s} s CPU, {read}, "
            f"repo +{mib(row.added or 0)} MiB{extra} {row.note}".rstrip())


def until_synced(cmd: Sequence[str]) -> list[str]:
    """``cmd`` then ``sync``, as one timed command: a restore counts until its data is on
    disk, whether or not the tool flushes it itself."""
    return ["sh", "-c", f"{shlex.join(cmd)} && sync"]


def same_image(a: Path, b: Path) -> bool:
    """qemu-img compare of two images of any format (-U: a running guest's disk)."""
    proc = subprocess.run(["qemu-img", "compare", "-q", "-U", str(a), str(b)],
                          capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise bi.CommandFailed(f"qemu-img compare failed: {proc.stderr.strip()}")
    return proc.returncode == 0


def restore_row(run: Run, tool: str, cmd: list[str], env: dict[str, str], restored: Path,
                reference: Path | None, cwd: Path | None = None) -> Row:
    """Time ``cmd`` until synced; compare what it restored with ``reference`` (if given)."""
    m, _ = run.measure(f"{tool.replace(' ', '-')}-restore-{run.cycle + 1}",
                       until_synced(cmd), env, cwd)
    # Where a tool names the file itself (virtnbdrestore), the largest file it wrote.
    out = restored if restored.exists() else max(restored.parent.iterdir(),
                                                 key=lambda p: p.stat().st_size)
    size = bi.allocated_bytes(out)
    details: dict[str, Any] = {"restored_allocated": size, "restored": str(out)}
    note = ""
    if reference is not None:
        equal = same_image(reference, out)
        details["equal"] = equal
        note = "equal" if equal else "DIFFERENT"
        log(f"  {tool}: the restored image and its source are {note}")
    return Row(tool, "restore", m.wall_s, m.cpu_s, max(m.maxrss_mib, m.tree_rss_mib),
               bytes_read=None, added=None, note=note, details=details)


# ------------------------------------------------------------------ Stasis


def stasis_env(work: Path) -> dict[str, str]:
    return {**os.environ, "STASIS_PASSPHRASE": PASSPHRASE,
            "STASIS_STATE_DIR": str(work / "stasis-state"),
            "STASIS_SCRATCH_DIR": str(work / "scratch")}


class Stasis:
    """One Stasis repository (one chunk size) backing up its own guest."""

    def __init__(self, work: Path, chunk: str, label: str) -> None:
        self.work = work
        self.chunk = chunk  # "" for Stasis's default
        self.label = label
        self.repo = work / f"repo-stasis-{chunk.lower() or 'default'}"
        self.guest: Any = None
        self.last_point = ""

    def init(self) -> None:
        """A new repository (the old one, if any, removed)."""
        shutil.rmtree(self.repo, ignore_errors=True)
        cmd = [str(STASIS), "repo", "init", "--repo", str(self.repo)]
        if self.chunk:
            cmd += ["--chunk-size", self.chunk]
        bi.run_quiet(cmd, env=stasis_env(self.work))

    def chunk_size(self) -> int:
        """What the repository uses (its config is plain JSON; the default may change)."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return int(json.loads((self.repo / "config").read_text())["chunk_size"])
        return int(bi.parse_size(self.chunk)) if self.chunk else 4 * MiB

    def backup_cmd(self) -> list[str]:
        return [str(STASIS), "backup", "vm", self.guest.name, "--repo", str(self.repo),
                "--json"]

    def backup(self, run: Run, step: str) -> Row:
        env = stasis_env(run.work)
        before = bi.repo_size(self.repo)[0]
        m, launched = run.measure(f"{self.label.replace(' ', '-')}-{step}-{run.cycle + 1}",
                                  self.backup_cmd(), env)
        added = bi.repo_size(self.repo)[0] - before
        result = json.loads(m.stdout)
        if isinstance(result, list):  # one entry per VM
            result = result[0]
        row = self.point_row(result["id"], step, launched, launched + m.wall_s)
        row.wall_s, row.cpu_s = m.wall_s, m.cpu_s
        row.peak_mib, row.added = max(m.maxrss_mib, m.tree_rss_mib), added
        disk = next(d for d in result["vms"][0]["disks"] if d["target"] == "vda")
        row.bytes_read = int(disk["bytes_read"])
        row.note = disk["mode"]
        row.details.update(mode=disk["mode"], reason=disk["reason"],
                           virtual_size=disk["virtual_size"], bytes_new=disk.get("bytes_new"),
                           stored_new=disk.get("stored_new"),
                           point_bytes_read=result.get("bytes_read"))
        self.last_point = result["id"]
        return row

    def point_row(self, point: str, step: str, launched: float, ended: float) -> Row:
        """What the point records of itself: backupBegin, its own duration, and where
        the wall time from ``launched`` to ``ended`` went around it."""
        shown = bi.run_quiet([str(STASIS), "show", point, "--repo", str(self.repo), "--json"],
                             env=stasis_env(self.work))
        detail = json.loads(shown.stdout)
        vm = detail["vms"][0]
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
        return Row(self.label, step, round(ended - launched, 2), 0.0, 0.0, bytes_read=None,
                   added=None, begin_s=vm.get("extra", {}).get("begin_s"),
                   frozen_ms=vm.get("extra", {}).get("frozen_ms"),
                   core_s=timings.get("duration_s"),
                   details={"point": point, "files_read": files_read, **phases})

    def restore(self, run: Run, reference: Path | None) -> Row:
        out = run.work / "restore-stasis" / "vda.qcow2"
        shutil.rmtree(out.parent, ignore_errors=True)
        out.parent.mkdir()
        cmd = [str(STASIS), "restore", "disk", self.last_point, "--disk", "vda", "--to",
               str(out), "--format", "qcow2", "--repo", str(self.repo), "--json"]
        try:
            return restore_row(run, self.label, cmd, stasis_env(run.work), out, reference)
        finally:
            shutil.rmtree(out.parent, ignore_errors=True)


def profile_backup(run: Run, s: Stasis) -> str:
    """One more incremental under cProfile; the top functions by cumulative time."""
    out = run.work / "stasis-incremental.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), *s.backup_cmd()]
    run.caches_dropped = bi.drop_caches() and run.caches_dropped
    bi.run_measured(cmd, env=stasis_env(run.work), log_path=run.logs / "stasis-profile.log")
    text = io.StringIO()
    pstats.Stats(str(out), stream=text).sort_stats("cumulative").print_stats(40)
    return text.getvalue()


class Service:
    """A warm ``stasis serve`` of one Stasis repository; jobs submitted with --queue."""

    def __init__(self, run: Run, s: Stasis) -> None:
        self.run = run
        self.stasis = s
        self.env = stasis_env(run.work)
        self.log_file = open(run.logs / f"serve-{s.label.replace(' ', '-')}.log", "ab")  # noqa: SIM115
        # serve wants a policy file: one whose VM does not exist and whose run is a year
        # away, so the service runs only the jobs submitted to it.
        policies = run.work / "policies.toml"
        policies.write_text('[[policy]]\nname = "bench-idle"\nvms = ["bench-none"]\n'
                            'cron = "0 0 1 1 *"\n')
        self.proc = subprocess.Popen([str(STASIS), "serve", "--repo", str(s.repo),
                                      "--policies", str(policies)],
                                     stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=self.env)

    def submit_cmd(self) -> list[str]:
        return [*self.stasis.backup_cmd(), "--queue"]

    def warm_up(self, timeout: float = 120.0) -> None:
        """Submit until the service takes jobs (it refuses while none runs), and wait
        for that first job: the service has then opened the repository and the key."""
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.run(self.submit_cmd(), capture_output=True, text=True,
                                  env=self.env)
            if proc.returncode == 0:
                self.wait(int(json.loads(proc.stdout)["job"]), timeout)
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise bi.CommandFailed(f"stasis serve does not take jobs: {proc.stderr}")
            time.sleep(0.5)

    def wait(self, job: int, timeout: float = 600.0) -> Any:
        """Poll the catalog in this process (a CLI per poll would load the CPU that the
        job runs on) until the job ends."""
        from stasis.app.jobs import show_job

        catalog = str(self.run.work / "stasis-state" / "catalog.db")
        deadline = time.monotonic() + timeout
        while True:
            found = show_job(catalog, job, with_log=False)
            if found.state in TERMINAL:
                if found.state != "succeeded":
                    raise bi.CommandFailed(f"job {job} {found.state}: {found.error}")
                return found
            if time.monotonic() > deadline:
                raise bi.CommandFailed(f"job {job} still {found.state} after {timeout} s")
            time.sleep(0.02)

    def backup(self, step: str) -> tuple[Row, Row]:
        """Submit an incremental: a row timed from the job's queueing to its end (what the
        service costs), and a row ``step``-cli timed from launching the submitting
        command. Their details hold the wake-up (queued → started)."""
        run = self.run
        before = bi.repo_size(self.stasis.repo)[0]
        m, launched = run.measure(f"{self.stasis.label.replace(' ', '-')}-{step}-"
                                  f"{run.cycle + 1}", self.submit_cmd(), self.env)
        job = self.wait(int(json.loads(m.stdout)["job"]))
        added = bi.repo_size(self.stasis.repo)[0] - before
        ended = datetime.fromisoformat(job.ended).timestamp()
        queued = datetime.fromisoformat(job.queued).timestamp()
        started = datetime.fromisoformat(job.started).timestamp()
        point = next((str(r.point) for r in job.result.values()
                      if getattr(r, "point", None)), "")
        rows = []
        for name, since in ((step, queued), (f"{step}-cli", launched)):
            row = (self.stasis.point_row(point, name, since, ended) if point else
                   Row(self.stasis.label, name, round(ended - since, 2), 0.0, 0.0, None, None))
            row.cpu_s, row.peak_mib = m.cpu_s, max(m.maxrss_mib, m.tree_rss_mib)
            row.bytes_read, row.added = job.bytes_read, added
            row.details.update(job=job.id, submit_s=m.wall_s, wake_s=round(started - queued, 3),
                               queued_to_end_s=round(ended - queued, 3),
                               job_duration_s=job.duration_s)
            row.note = f"wake-up (queued → started) {started - queued:.2f} s"
            rows.append(row)
        return rows[0], rows[1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


# ------------------------------------------------------------------ virtnbdbackup


class VirtNbd:
    """Debian's virtnbdbackup: full and inc levels into one backup directory (its own
    checkpoints virtnbdbackup.N on its own guest), stream format, no compression."""

    label = VIRTNBD

    def __init__(self, work: Path) -> None:
        self.work = work
        self.dir = work / "repo-virtnbdbackup"
        self.guest: Any = None

    def init(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)  # -l full wants an empty directory

    def backup(self, run: Run, step: str) -> Row:
        level = "full" if step == "full" else "inc"
        before = bi.repo_size(self.dir)[0] if self.dir.exists() else 0
        had = set(self.dir.iterdir()) if self.dir.exists() else set()
        label = f"virtnbdbackup-{step}-{run.cycle + 1}"
        m, _ = run.measure(label, ["virtnbdbackup", "-d", self.guest.name, "-l", level,
                                   "-o", str(self.dir), "-n"], dict(os.environ))
        added = bi.repo_size(self.dir)[0] - before
        # It saves the kit's kernel and initrd again with every backup.
        boot = sum(p.stat().st_size for p in set(self.dir.iterdir()) - had
                   if p.name.startswith(("vmlinuz", "initrd")))
        text = (run.logs / f"{label}.log").read_text(errors="replace")
        extents = [int(n) for n in re.findall(r"(\d+) bytes of data extents to backup", text)]
        return Row(self.label, step, m.wall_s, m.cpu_s, max(m.maxrss_mib, m.tree_rss_mib),
                   bytes_read=sum(extents) if extents else None, added=added,
                   note=f"{mib(boot)} MiB kernel+initrd",
                   details={"boot_files": boot, "added_without_boot": added - boot})

    def restore(self, run: Run, reference: Path | None) -> Row:
        out = run.work / "restore-virtnbdbackup"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        cmd = ["virtnbdrestore", "-i", str(self.dir), "-o", str(out), "-n", "-L",
               str(run.logs / f"virtnbdrestore-{run.cycle + 1}.internal.log")]
        try:
            return restore_row(run, self.label, cmd, dict(os.environ),
                               out / self.guest.disks["vda"].path.name, reference)
        finally:
            shutil.rmtree(out, ignore_errors=True)


# ------------------------------------------------------------------ the peers


class Peer:
    """A file-level backup tool that backs up one file (the same path every time)."""

    name = ""

    def __init__(self, work: Path, source: Path) -> None:
        self.work = work
        self.source = source
        self.repo = work / f"repo-{self.name}"
        self.last = ""  # the label of the last backup

    @property
    def label(self) -> str:
        return self.name

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def init(self) -> None:
        """A new repository (the old one, if any, removed)."""
        shutil.rmtree(self.repo, ignore_errors=True)
        bi.run_quiet(self.init_cmd(), env=self.env())

    def init_cmd(self) -> list[str]:
        raise NotImplementedError

    def restore_cmd(self, out: Path) -> list[str]:
        """Restores the last backup into ``out`` (the working directory)."""
        raise NotImplementedError

    def backup_cmd(self, step: str) -> list[str]:
        raise NotImplementedError

    def bytes_read(self, stdout: str) -> tuple[int | None, dict[str, Any]]:
        raise NotImplementedError

    def backup(self, run: Run, step: str) -> Row:
        before = bi.repo_size(self.repo)[0]
        label = f"{step}-{run.cycle + 1}"  # borg: unique names
        self.last = label
        m, _ = run.measure(f"{self.name}-{label}", self.backup_cmd(label), self.env())
        added = bi.repo_size(self.repo)[0] - before
        read, details = self.bytes_read(m.stdout)
        st = os.stat(self.source)
        details.update(file_size=st.st_size, file_allocated=st.st_blocks * 512)
        return Row(self.label, step, m.wall_s, m.cpu_s, max(m.maxrss_mib, m.tree_rss_mib),
                   bytes_read=read, added=added, details=details)

    def restore(self, run: Run, reference: Path | None) -> Row:
        out = run.work / f"restore-{self.name}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        try:
            return restore_row(run, self.label, self.restore_cmd(out), self.env(),
                               out / self.source.relative_to("/"), reference, cwd=out)
        finally:
            shutil.rmtree(out, ignore_errors=True)


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

    def init_cmd(self) -> list[str]:
        return ["restic", "-r", str(self.repo), "init", "--repository-version", "2"]

    def restore_cmd(self, out: Path) -> list[str]:
        # restic 0.14 has no restore --sparse: the image comes back fully allocated.
        return ["restic", "-r", str(self.repo), "restore", "latest", "--target", str(out)]

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

    def init_cmd(self) -> list[str]:
        return ["borg", "init", "-e", "repokey-blake2", str(self.repo)]

    def restore_cmd(self, out: Path) -> list[str]:
        return ["borg", "extract", "--sparse", f"{self.repo}::{self.last}"]

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


# ------------------------------------------------------------------ floors


def disk_read_speed(work: Path, nbytes: int) -> float:
    """MiB/s of the work dir's disk reading ``nbytes`` written (and synced) just before,
    from a cold page cache, in 4 MiB reads."""
    path = work / "disk-read.tmp"
    piece = os.urandom(4 * MiB)
    with open(path, "wb") as f:
        for done in range(0, nbytes, len(piece)):
            f.write(piece[: min(len(piece), nbytes - done)])
        f.flush()
        os.fsync(f.fileno())
    try:
        bi.drop_caches()
        started = time.monotonic()
        with open(path, "rb", buffering=0) as f:
            while f.read(4 * MiB):
                pass
        return nbytes / MiB / (time.monotonic() - started)
    finally:
        path.unlink()


def chunk_cpu_seconds(image: Path, chunk: int) -> tuple[float, int]:
    """CPU seconds one core takes, as Stasis's object layer does it, to name (keyed
    BLAKE3), compress (zstd-3, with its skip of incompressible data) and encrypt
    (AES-256-GCM) every ``chunk``-aligned chunk of ``image`` that holds data; and the
    bytes of those chunks. Reading them is not counted."""
    import blake3

    from stasis.repository.objects import Sealer

    sealer = Sealer(encrypted=True, enc_key=os.urandom(32), check_key=os.urandom(32))
    key = os.urandom(32)
    cpu, done, seen = 0.0, 0, set()
    with open(image, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for start, end in bi.data_extents(f.fileno(), size):
            for index in range(start // chunk, (end - 1) // chunk + 1):
                if index in seen:
                    continue
                seen.add(index)
                f.seek(index * chunk)
                data = f.read(chunk)
                began = time.process_time()
                name = blake3.blake3(data, key=key).hexdigest()
                sealer.seal(1, name, data)
                cpu += time.process_time() - began
                done += len(data)
    return cpu, done


@dataclass
class Facts:
    """What the floors are made of, measured in the same run."""

    read_mib_s: float  # the work dir's disk, sequential read from a cold cache
    write_mib_s: float  # the same disk, sequential write then fsync
    allocated: int  # bytes of data of the guest's disk
    changed: int  # bytes an incremental must read: the dirty 64 KiB blocks (median run)
    cores: int = 2
    cpu_s: dict[int, float] = field(default_factory=dict)  # chunk size: CPU s of a full


def incremental_floor(begin_s: float, changed: int, new: int, read_mib_s: float,
                      write_mib_s: float) -> float:
    """The least an incremental takes: backupBegin, reading the changed bytes, writing
    the new objects, one after the other (each needs the one before)."""
    return begin_s + changed / MiB / read_mib_s + new / MiB / write_mib_s


def full_floor(allocated: int, stored: int, cpu_s: float, cores: int, read_mib_s: float,
               write_mib_s: float) -> dict[str, float]:
    """The least a full backup takes when reading, the CPU work and writing overlap
    perfectly: the slowest of reading the allocated bytes, writing the stored ones, and
    the CPU seconds spread over ``cores``."""
    parts = {"read_s": allocated / MiB / read_mib_s, "write_s": stored / MiB / write_mib_s,
             "cpu_s": cpu_s / cores}
    return {**parts, "floor_s": max(parts.values())}


def floors_for(summary: Sequence[Row], tool: str, facts: Facts,
               chunk: int) -> tuple[dict[str, float], list[str]]:
    """The floor of each step of ``tool`` (a Stasis variant), by step (seconds; bytes
    for "growth"), and the lines that explain them."""
    by = {r.step: r for r in summary if r.tool == tool}
    out: dict[str, float] = {"growth": float(facts.changed)}
    lines = [f"{tool}: disk {facts.read_mib_s:.0f} MiB/s read, {facts.write_mib_s:.0f} MiB/s "
             f"write (with fsync), {facts.cores} cores"]
    full = by.get("full")
    if full is not None and full.added and chunk in facts.cpu_s:
        f = full_floor(facts.allocated, full.added, facts.cpu_s[chunk], facts.cores,
                       facts.read_mib_s, facts.write_mib_s)
        out["full"] = f["floor_s"]
        lines.append(f"  full: read {mib(facts.allocated)} MiB {f['read_s']:.2f} s, write "
                     f"{mib(full.added)} MiB {f['write_s']:.2f} s, hash+compress+encrypt "
                     f"{facts.cpu_s[chunk]:.2f} CPU s / {facts.cores} = {f['cpu_s']:.2f} s: "
                     f"floor {f['floor_s']:.2f} s")
    incr = by.get("incremental")
    if incr is not None and incr.added is not None:
        begin = incr.begin_s or 0.0
        floor = incremental_floor(begin, facts.changed, incr.added, facts.read_mib_s,
                                  facts.write_mib_s)
        # Through the service the work is the same: so is the floor.
        out.update(incremental=floor, service=floor, **{"service-cli": floor})
        lines.append(f"  incremental: backupBegin {begin:.3f} s + read {mib(facts.changed)} "
                     f"MiB + write {mib(incr.added)} MiB = floor {floor:.2f} s")
    restore = by.get("restore")
    if restore is not None and restore.details.get("floor_s"):
        out["restore"] = float(restore.details["floor_s"])
        lines.append(f"  restore: writing {mib(restore.details['restored_allocated'])} MiB "
                     f"with fsync took {out['restore']:.2f} s (timed after each restore)")
    for step in ("unchanged", "service-unchanged"):  # nothing to read or write
        idle = by.get("unchanged")
        if idle is not None and idle.begin_s is not None:
            out[step] = float(idle.begin_s)
    return out, lines


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
    """One row per (tool, step): medians over the runs (also of every numeric detail),
    the highest peak memory."""
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
        keys = {k for r in rs for k, v in r.details.items()
                if isinstance(v, int | float) and not isinstance(v, bool)}
        details: dict[str, Any] = {k: _median_opt([r.details.get(k) for r in rs]) for k in keys}
        details.update(runs=len(rs), begin_s_max=max((r.begin_s for r in rs
                                                      if r.begin_s is not None), default=None))
        if any("equal" in r.details for r in rs):
            details["equal"] = all(r.details.get("equal", True) for r in rs)
        out.append(Row(
            tool, step, round(_median(walls), 2), round(_median([r.cpu_s for r in rs]), 2),
            max(r.peak_mib for r in rs), None if read is None else int(read),
            None if added is None else int(added),
            begin_s=None if begin is None else round(begin, 4),
            frozen_ms=max(frozen) if frozen else None,
            core_s=None if core is None else round(core, 3), note=rs[0].note,
            details=details, cycle=-1, wall_range=(min(walls), max(walls)),
        ))
    order = {"full": 0, "incremental": 1, "unchanged": 2, "restore": 3, "service": 4,
             "service-cli": 5, "service-unchanged": 6}
    return sorted(out, key=lambda r: (order.get(r.step, 9), not r.tool.startswith("stasis")))


# (title, step, what): the table, then the service's rows.
TABLE = (
    ("full backup", "full", "wall"),
    ("incremental, {pct} changed", "incremental", "wall"),
    ("repository growth of that incremental", "incremental", "added"),
    ("nothing changed", "unchanged", "wall"),
    ("restore to qcow2, until synced", "restore", "wall"),
    ("incremental via the service (queued → end)", "service", "wall"),
    ("the same from launching the --queue CLI", "service-cli", "wall"),
    ("nothing changed via the service", "service-unchanged", "wall"),
)


def _cell(row: Row | None, what: str) -> str:
    if row is None:
        return "–"
    if what == "added":
        extra = (f" ({mib(row.details['added_without_boot'])} without kernel/initrd)"
                 if row.details.get("boot_files") else "")
        return f"{mib(row.added or 0)} MiB{extra}"
    return f"{row.wall_s:.2f} s"


def _value(row: Row | None, what: str) -> float | None:
    if row is None:
        return None
    return float(row.added or 0) if what == "added" else row.wall_s


def render_table(summary: Sequence[Row], tools: Sequence[str], pct: str) -> list[str]:
    """The issue's table (markdown): a row per step, a column per tool."""
    by = {(r.tool, r.step): r for r in summary}
    lines = ["| | " + " | ".join(tools) + " |", "|---" * (len(tools) + 1) + "|"]
    for title, step, what in TABLE:
        if not any((t, step) in by for t in tools):
            continue
        cells = [_cell(by.get((t, step)), what) for t in tools]
        lines.append(f"| {title.format(pct=pct)} | " + " | ".join(cells) + " |")
    return lines


def render_ratios(summary: Sequence[Row], tool: str, peers: Sequence[str],
                  floors: dict[str, float], pct: str) -> list[str]:
    """For one Stasis variant: its figure, its floor, and its ratio to the floor and
    to each peer (Stasis/peer: below 1, Stasis is the faster or smaller)."""
    by = {(r.tool, r.step): r for r in summary}
    head = [tool, "floor", f"{tool}/floor", *(f"{tool}/{p}" for p in peers)]
    lines = ["| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for title, step, what in TABLE:
        own = _value(by.get((tool, step)), what)
        if own is None:
            continue
        # A peer has no service: the service rows compare with its incremental.
        peer_step = {"service": "incremental", "service-cli": "incremental",
                     "service-unchanged": "unchanged"}.get(step, step)
        floor = floors.get("growth" if what == "added" else step)
        cells = [_cell(by.get((tool, step)), what),
                 "–" if floor is None else (f"{mib(floor)} MiB" if what == "added"
                                             else f"{floor:.2f} s"),
                 "–" if not floor else f"{own / floor:.2f}"]
        for p in peers:
            theirs = _value(by.get((p, peer_step)), what)
            cells.append("–" if not theirs else f"{own / theirs:.2f}")
        lines.append(f"| {title.format(pct=pct)} | " + " | ".join(cells) + " |")
    return lines


def targets(summary: Sequence[Row], tool: str, floors: dict[str, float],
            size: int) -> list[str]:
    """Issue 13's targets for one Stasis variant, each with its numbers and a verdict."""
    by = {(r.tool, r.step): r for r in summary}
    peer = {step: by.get((VIRTNBD, step)) for step in ("full", "incremental", "restore")}
    lines: list[str] = []

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    def vs_peer(step: str, peer_step: str, most: float, what: str) -> None:
        s, p = by.get((tool, step)), peer.get(peer_step)
        if s and p and p.wall_s:
            x = s.wall_s / p.wall_s
            lines.append(f"{what}: {x:.2f}× virtnbdbackup ({s.wall_s} s vs {p.wall_s} s; "
                         f"at most {most:.2f}×) {verdict(x <= most)}")

    def vs_floor(step: str) -> None:
        s, f = by.get((tool, step)), floors.get(step)
        if s and f:
            x = s.wall_s / f
            lines.append(f"{step} within {TARGET_VS_FLOOR}× of its floor: {x:.2f}× "
                         f"({s.wall_s} s vs {f:.2f} s) {verdict(x <= TARGET_VS_FLOOR)}")

    vs_peer("incremental", "incremental", TARGET_INCR_VS_PEER, "incremental through the CLI")
    vs_peer("service", "incremental", TARGET_SERVICE_VS_PEER,
            "incremental through the service (queued → end)")
    incr = by.get((tool, "incremental"))
    if incr and incr.added is not None and floors.get("growth"):
        x = incr.added / floors["growth"]
        lines.append(f"growth of the incremental: {x:.2f}× the changed bytes ({mib(incr.added)}"
                     f" vs {mib(floors['growth'])} MiB) {verdict(x <= TARGET_GROWTH_VS_CHANGE)}")
    idle = by.get((tool, "unchanged"))
    if idle:
        lines.append(f"unchanged VM through the CLI: {idle.wall_s} s (at most "
                     f"{TARGET_UNCHANGED_S} s) {verdict(idle.wall_s <= TARGET_UNCHANGED_S)}")
    vs_peer("full", "full", TARGET_FULL_VS_PEER, "full backup (≥1.5× faster)")
    vs_floor("full")
    vs_peer("restore", "restore", TARGET_RESTORE_VS_PEER, "restore (≥2× faster)")
    vs_floor("restore")
    if incr and incr.bytes_read is not None:
        pct = 100 * incr.bytes_read / size
        lines.append(f"incremental reads ≤{TARGET_READ_PERCENT:g} % of the disk: {pct:.2f} % "
                     f"({mib(incr.bytes_read)} of {mib(size)} MiB) "
                     f"{verdict(pct <= TARGET_READ_PERCENT)}")
    if incr and incr.begin_s is not None:
        worst = incr.details.get("begin_s_max")
        paused = ("not recorded by this version" if incr.frozen_ms is None
                  else "0 (not suspended)" if incr.frozen_ms == 0 else f"{incr.frozen_ms:.1f} ms")
        lines.append(f"window in which the instant is fixed (backupBegin): {incr.begin_s:.3f} s "
                     f"(median; longest {_f(worst, '.3f')} s); guest suspended/frozen: {paused}")
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


def parse_chunks(text: str) -> list[str]:
    """A comma list of chunk sizes ("4M,1M"); empty: Stasis's default."""
    sizes = [t.strip() for t in text.split(",") if t.strip()]
    for s in sizes:
        bi.parse_size(s)
    return sizes or [""]


def parse_fraction(text: str) -> float:
    value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"not a fraction in (0, 0.5): {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size", type=bi.parse_size, default=4 * GiB,
                   help="virtual size of the guests' disks (default 4G; at least 2G)")
    p.add_argument("--change", type=parse_fraction, default=0.01,
                   help="how much of the disk the guests change (default 1%%)")
    p.add_argument("--cache-dir", type=Path, default=BENCH_DIR / ".cache",
                   help="bench_image.py's cache of test images (default bench/.cache)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="repositories, exports, logs (default: a new directory in the cache "
                   "dir); must be on a local disk")
    p.add_argument("--peers", type=parse_peers, default=list(DEFAULT_PEERS),
                   help=f"comma list of {','.join(ALL_PEERS)} (default "
                   f"{','.join(DEFAULT_PEERS)})")
    p.add_argument("--chunk-size", "--stasis-chunk-size", dest="chunks", type=parse_chunks,
                   default=[""], help="chunk size of the Stasis repository (repo init "
                   "--chunk-size), or a comma list (4M,1M): one repository and one guest each "
                   "(default: Stasis's default)")
    p.add_argument("--seed", type=int, default=bi.SEED, help="seed of the data and the change")
    p.add_argument("--memory", type=int, default=256, help="guest RAM in MiB (default 256)")
    p.add_argument("--runs", "--repeat", dest="runs", type=bi.positive_int, default=3,
                   help="runs of every step (fresh repositories for the full backups, a new "
                   "change for each incremental); medians are reported (default 3)")
    p.add_argument("--service", action="store_true",
                   help="also measure Stasis incrementals submitted to a warm `stasis serve` "
                   "(--queue), from submission to the job's end")
    p.add_argument("--no-unchanged", dest="unchanged", action="store_false",
                   help="skip the backups with nothing changed after each incremental")
    p.add_argument("--no-restore", dest="restore", action="store_false",
                   help="skip the restores (and so the check of what the tools stored)")
    p.add_argument("--profile", action="store_true",
                   help="change the disk once more and run one more Stasis incremental under "
                   "cProfile (not timed; top functions printed and saved)")
    p.add_argument("--keep", action="store_true",
                   help="keep the guests, the work directory and the repositories")
    return p.parse_args(argv)


def check_environment(peers: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (libvirt's system instance, dropping the page cache)")
    tools = {p.split("-")[0] for p in peers}
    needed = ["qemu-img", "qemu-nbd", "mkfs.ext4", *sorted(tools)]
    if VIRTNBD in tools:
        needed.append("virtnbdrestore")
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
    log(f"  {guest.name} wrote {mib(sum(n for _, n in changes))} MiB in {len(changes)} dd "
        f"writes in {seconds:.1f} s")
    return seconds


def tool_versions(peers: Sequence[str]) -> dict[str, str]:
    cmds = {"restic": ["restic", "version"], "borg": ["borg", "--version"],
            VIRTNBD: ["virtnbdbackup", "--version"]}
    versions = {"stasis": bi.run_quiet([str(STASIS), "version"]).stdout.strip(),
                "qemu": bi.run_quiet(["qemu-img", "--version"]).stdout.splitlines()[0]}
    for tool in sorted({p.split("-")[0] for p in peers}):
        proc = subprocess.run(cmds[tool], capture_output=True, text=True)
        versions[tool] = (proc.stdout or proc.stderr).strip()
    return versions


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    """``items`` starting at ``by`` (mod its length): no tool always goes first."""
    n = by % len(items) if items else 0
    return [*items[n:], *items[:n]]


class Bench:
    """The guests, the tools, and the steps they all go through."""

    def __init__(self, args: argparse.Namespace, run: Run, kit: Any,
                 report: dict[str, Any]) -> None:
        self.args, self.run, self.kit, self.report = args, run, kit, report
        work = run.work
        labels = ([f"stasis {c}" if c else "stasis" for c in args.chunks]
                  if len(args.chunks) > 1 or args.chunks != [""] else ["stasis"])
        self.stasis = [Stasis(work, c, label) for c, label in zip(args.chunks, labels,
                                                                   strict=True)]
        self.raw, self.qcow2 = work / "export" / "disk.raw", work / "export" / "disk.qcow2"
        self.vnb = VirtNbd(work) if VIRTNBD in args.peers else None
        self.peers = make_peers(args.peers, work, self.raw, self.qcow2)
        self.guests: list[Any] = []

    @property
    def subjects(self) -> list[Stasis | VirtNbd | Peer]:
        return [*self.stasis, *([self.vnb] if self.vnb else []), *self.peers]

    def make_guests(self, cached: Path) -> None:
        """One guest per Stasis repository and one for virtnbdbackup, each with a copy
        of the same qcow2 image."""
        from stasis_testkit import DiskSpec

        owners: list[Stasis | VirtNbd] = [*self.stasis, *([self.vnb] if self.vnb else [])]
        first: Path | None = None
        for owner in owners:
            slug = "vnb" if isinstance(owner, VirtNbd) else (owner.chunk.lower() or "stasis")
            guest = self.kit.create(f"{GUEST_NAME}-{slug}",
                                    [DiskSpec("vda", "qcow2", self.args.size)], start=False,
                                    memory_mib=self.args.memory)
            self.run.guests.append(guest.name)
            vda = guest.disks["vda"].path
            start = time.monotonic()
            if first is None:
                bi.run_quiet(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o",
                              "compat=1.1", str(cached), str(vda)])
                first = vda
            else:
                bi.run_quiet(["cp", "--sparse=always", str(first), str(vda)])
            log(f"  {guest.name}: vda {vda} ({mib(vda.stat().st_size)} MiB file) in "
                f"{time.monotonic() - start:.1f} s")
            owner.guest = guest
            self.guests.append(guest)
        for guest in self.guests:
            guest.start()
        for guest in self.guests:
            log(f"  {guest.name} ready in {guest.wait_ready(180):.1f} s")

    def export(self) -> None:
        """The disk of the first Stasis guest as restic and borg see it."""
        if self.peers:
            want_qcow2 = any(p.source == self.qcow2 for p in self.peers)
            export_disk(self.stasis[0].guest.disks["vda"].path, self.raw,
                        self.qcow2 if want_qcow2 else None)

    def fulls(self) -> None:
        args, run = self.args, self.run
        self.raw.parent.mkdir(exist_ok=True)
        for g in self.guests:
            g.sync()
        self.export()
        for i in range(args.runs):
            run.cycle = i
            log(f"== full backups, run {i + 1} of {args.runs} (fresh repositories)")
            for subject in rotated(self.subjects, i):
                subject.init()
                run.add(subject.backup(run, "full"))

    def change_all(self, seed: int, guests: Sequence[Any]) -> dict[str, Any]:
        size = self.args.size
        changes = plan_changes(size, self.args.change, seed)
        seconds = [change_guest(g, changes) for g in guests]
        for g in guests:
            g.sync()
        chunks = {s.chunk_size() for s in self.stasis}
        return {
            "bytes": sum(n for _, n in changes), "writes": len(changes),
            "percent": round(100 * sum(n for _, n in changes) / size, 3),
            "guest_seconds": [round(s, 1) for s in seconds],
            # The least a reader of 64 KiB bitmap blocks / of whole chunks must read.
            "bitmap_bytes_touched": units_touched(changes, ALIGN) * ALIGN,
            "chunk_bytes_touched": {c: units_touched(changes, c) * c for c in sorted(chunks)},
        }

    def incrementals(self) -> None:
        args, run = self.args, self.run
        self.report["changes"] = []
        for i in range(args.runs):
            run.cycle = i
            log(f"== run {i + 1} of {args.runs}: every guest changes {args.change * 100:g} % "
                "of its disk (the same writes)")
            c = self.change_all(args.seed + 7 + i, self.guests)
            c["cycle"] = i
            self.report["changes"].append(c)
            log(f"  dirty at 64 KiB granularity: {mib(c['bitmap_bytes_touched'])} MiB; whole "
                f"chunks touched: " + ", ".join(f"{mib(n)} MiB at {mib(k)} MiB"
                                                for k, n in c["chunk_bytes_touched"].items()))
            self.export()
            for subject in rotated(self.subjects, i):
                run.add(subject.backup(run, "incremental"))
            if args.unchanged:
                log("  again, nothing changed (the fixed cost of an incremental)")
                for subject in rotated([*self.stasis, *([self.vnb] if self.vnb else [])], i):
                    run.add(subject.backup(run, "unchanged"))

    def restores(self) -> None:
        args, run = self.args, self.run
        for g in self.guests:
            g.sync()
        for i in range(args.runs):
            run.cycle = i
            log(f"== restores, run {i + 1} of {args.runs}")
            for subject in rotated(self.subjects, i):
                reference = (subject.source if isinstance(subject, Peer)
                             else subject.guest.disks["vda"].path) if i == 0 else None
                row = subject.restore(run, reference)
                if isinstance(subject, Stasis):
                    # The disk's time to write as many bytes, durably, right after.
                    n = int(row.details["restored_allocated"])
                    speed = bi.disk_write_speed(run.work, n)
                    row.details["floor_s"] = round(n / MiB / speed, 3)
                    row.details["floor_mib_s"] = round(speed, 1)
                if row.details.get("equal") is False:
                    self.report.setdefault("failures", []).append(
                        f"{subject.label}: the restored image differs from its source")
                run.add(row)

    def services(self) -> None:
        args, run = self.args, self.run
        for s in self.stasis:
            log(f"== {s.label} through a warm `stasis serve`")
            service = Service(run, s)
            try:
                service.warm_up()
                for i in range(args.runs):
                    run.cycle = i
                    self.change_all(args.seed + 500 + i, [s.guest])
                    for row in service.backup("service"):
                        run.add(row)
                    if args.unchanged:
                        run.add(service.backup("service-unchanged")[0])
            finally:
                service.stop()

    def cpu_floor(self, cached: Path) -> dict[int, float]:
        out = {}
        for chunk in sorted({s.chunk_size() for s in self.stasis}):
            log(f"== CPU floor: hashing, compressing, encrypting the image's data in "
                f"{mib(chunk)} MiB chunks (one core)")
            cpu, done = chunk_cpu_seconds(cached, chunk)
            log(f"  {cpu:.2f} CPU s for {mib(done)} MiB")
            out[chunk] = cpu
        return out


def bench(b: Bench) -> None:
    args, run, report = b.args, b.run, b.report
    cached, layout = bi.build_disk(args.cache_dir.resolve(), args.size, args.seed)
    report["image"] = bi.describe_image(cached, layout)
    report["allocated"] = bi.allocated_bytes(cached)
    log(f"image {cached.name}: {mib(args.size)} MiB virtual, "
        f"{mib(report['allocated'])} MiB allocated")
    log("== guests: define, put the image in as vda (qcow2, compat=1.1), boot")
    b.make_guests(cached)
    (run.work / "scratch").mkdir(mode=0o711, exist_ok=True)
    b.fulls()
    b.incrementals()
    report["bitmaps"] = {g.name: bitmaps(g.disks["vda"].path) for g in b.guests}
    if args.restore:
        b.restores()
    if args.service:
        b.services()
    report["cpu_s"] = b.cpu_floor(cached)
    if args.profile:
        log("== profile: one more change, one more incremental under cProfile")
        s = b.stasis[0]
        b.change_all(args.seed + 1000, [s.guest])
        text = profile_backup(run, s)
        report["profile"] = text
        print(text)


def print_report(b: Bench, summary: list[Row], report: dict[str, Any]) -> None:
    args = b.args
    pct = f"{args.change * 100:g} %"
    tools = [s.label for s in b.stasis] + [p for p in
                                           ([VIRTNBD] if b.vnb else []) +
                                           [peer.label for peer in b.peers]]
    runs = f"medians of {args.runs} runs" if args.runs > 1 else "one run"
    print(f"\n## {mib(args.size) / 1024:g} GiB disk, {mib(report['allocated'])} MiB allocated, "
          f"{pct} changed; {runs}; page cache dropped before each command\n")
    print("\n".join(render_table(summary, tools, pct)))
    peers = tools[len(b.stasis):]
    for s in b.stasis:
        floors = report["floors"][s.label]
        print(f"\n### {s.label} ({mib(s.chunk_size()):g} MiB chunks): ratios (below 1: "
              "Stasis is faster or smaller) and floors\n")
        print("\n".join(render_ratios(summary, s.label, peers, floors["by_step"], pct)))
        print()
        for line in floors["lines"]:
            print(line)
        print("\nTargets:")
        for line in report["targets"][s.label]:
            print(f"  {line}")
    print("\nwall s, min-max over the runs:")
    for r in summary:
        spread = f"{r.wall_range[0]:.2f}-{r.wall_range[1]:.2f}" if r.wall_range else "-"
        read = f", read {mib(r.bytes_read)} MiB" if r.bytes_read is not None else ""
        print(f"  {r.tool:<22} {r.step:<18} {r.wall_s:>7.2f} s ({spread}), CPU {r.cpu_s:.1f} s, "
              f"peak {r.peak_mib:.0f} MiB{read} {r.note}".rstrip())
        d = r.details
        if r.tool.startswith("stasis") and d.get("point_s") is not None \
                and d.get("before_point_s") is not None:
            print(f"  {'':<22} {'':<18} = {d['before_point_s']:.2f} s before the point + "
                  f"{d['point_s']:.2f} s point + {_f(d.get('after_point_s'), '.2f')} s after")
    for c in report.get("changes", []):
        print(f"change {c['cycle'] + 1}: {mib(c['bytes'])} MiB in {c['writes']} writes; "
              f"{mib(c['bitmap_bytes_touched'])} MiB of 64 KiB blocks dirty")
    if not b.run.caches_dropped:
        print("NOTE: the page cache could not be dropped; timings include warm caches")


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
        "chunks": args.chunks, "runs": args.runs, "versions": tool_versions(args.peers),
        "load_before": os.getloadavg(),
    }
    log(f"work dir {work}; peers {', '.join(args.peers) or 'none'}")
    write = bi.disk_write_speed(work, DISK_PROBE)
    read = disk_read_speed(work, DISK_PROBE)
    report.update(disk_mib_s=round(write, 1), disk_read_mib_s=round(read, 1))
    log(f"disk: {write:.0f} MiB/s sequential write with fsync, {read:.0f} MiB/s read (cold)")
    started = time.monotonic()
    kit = GuestKit()
    b = Bench(args, run, kit, report)
    try:
        bench(b)
    finally:
        if args.keep:
            for name in run.guests:
                kit.release(name)
                log(f"kept guest {name} (python -m stasis_testkit destroy {name})")
            log(f"kept {work}")
            kit.close()
        else:
            kit.close()
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(run.rows)
    changed = _median([c["bitmap_bytes_touched"] for c in report.get("changes", [])] or [0])
    facts = Facts(read_mib_s=report["disk_read_mib_s"], write_mib_s=report["disk_mib_s"],
                  allocated=report["allocated"], changed=int(changed),
                  cores=os.cpu_count() or 2, cpu_s=report["cpu_s"])
    report["floors"], report["targets"] = {}, {}
    for s in b.stasis:
        by_step, lines = floors_for(summary, s.label, facts, s.chunk_size())
        report["floors"][s.label] = {"by_step": by_step, "lines": lines}
        report["targets"][s.label] = targets(summary, s.label, by_step, args.size)
    report.update(rows=[asdict(r) for r in run.rows], summary=[asdict(r) for r in summary],
                  caches_dropped=run.caches_dropped, facts=asdict(facts),
                  runtime_s=round(time.monotonic() - started, 1),
                  load_after=os.getloadavg())
    saved = write_json(report)
    print_report(b, summary, report)
    print(f"\nload average before {report['load_before']}, after {report['load_after']}")
    print(f"benchmark runtime {report['runtime_s']} s; results in {saved}")
    failures = report.get("failures", [])
    for failure in failures:
        print(f"FAILURE: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
