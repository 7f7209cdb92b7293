#!/usr/bin/env python3
"""Stasis, restic and borg side by side on one disk image.

Steps: build (and cache) a raw disk image holding a Debian root filesystem,
random data, log-like text and holes; back it up with each tool into a fresh
repository; restore it and check the result equals the source; change 1 % of
it and back it up again; optionally back up a qcow2 conversion; and measure the
peak memory of ``stasis backup image`` on a 4 GiB and a 64 GiB sparse image.

Every command is timed and its peak memory taken (``wait4`` rusage, and a
sampled sum over its process tree); the page cache is dropped before each one.
Run as root from the repository root; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
STASIS = ROOT / ".venv" / "bin" / "stasis"
RESULTS_DIR = BENCH_DIR / "results"
PASSPHRASE = "correct horse battery staple"
SEED = 20240601
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ALL_TOOLS = ("stasis", "restic", "borg")

# Image layout: a 1 GiB ext4 root filesystem at 1 MiB (like a first partition),
# then SEGMENTS random and SEGMENTS text segments scattered over the rest, holes between.
FS_OFFSET = MiB
FS_SIZE = GiB
RANDOM_FRACTION = 0.15
TEXT_FRACTION = 0.15
SEGMENTS = 8
ALIGN = 64 * KiB
CHANGE_FRACTION = 0.01
CHANGE_PIECE = (64 * KiB, MiB)
SPARSE_SIZES = (4 * GiB, 64 * GiB)
SPARSE_DATA = 256 * MiB
SPARSE_PIECE = MiB

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", flush=True)


def mib(n: float) -> float:
    return round(n / MiB, 1)


# --------------------------------------------------------------------- measuring


@dataclass
class Measured:
    wall_s: float
    cpu_s: float  # user + system, the process and its reaped children
    maxrss_mib: float  # wait4 ru_maxrss: the largest single process of the tree
    tree_rss_mib: float  # sampled peak of the summed RSS of the live process tree
    stdout: str


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children[ppid].append(int(entry.name))
    return children


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    children = _children_map()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_kib(pid)
        todo.extend(children.get(pid, ()))
    return total


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process tree until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class CommandFailed(RuntimeError):
    pass


def run_measured(
    cmd: Sequence[str], *, env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> Measured:
    """Run ``cmd``, wait for it with wait4, and return its time and memory."""
    log(f"  $ {' '.join(str(c) for c in cmd)}")
    out_path = log_path.with_suffix(".out")
    with open(out_path, "wb") as out, open(log_path, "ab") as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise CommandFailed(f"{cmd[0]} exited {proc.returncode}:\n{tail}\n{stdout[-1000:]}")
    return Measured(
        wall_s=round(wall, 2),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
        maxrss_mib=round(usage.ru_maxrss / 1024, 1),
        tree_rss_mib=round(sampler.peak_kib / 1024, 1),
        stdout=stdout,
    )


_drop_state: dict[str, bool] = {}


def drop_caches() -> bool:
    """sync, then drop the page cache, dentries and inodes; False if not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        if "warned" not in _drop_state:
            log(f"WARNING: cannot drop the page cache ({e}); timings include warm caches")
            _drop_state["warned"] = True
        return False
    return True


def repo_size(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file under ``path``."""
    apparent = allocated = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def run_quiet(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise CommandFailed(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


# ------------------------------------------------------------------ test data


LEVELS = ("INFO",) * 10 + ("DEBUG",) * 5 + ("WARN",) * 2 + ("ERROR",)
SERVICES = (
    "nginx", "sshd", "postgres", "app-worker", "cron", "kernel", "systemd", "api-gateway",
    "redis", "billing",
)
MESSAGES = (
    "GET /api/v1/orders/{n} HTTP/1.1 200 {m} bytes in {t} ms",
    "POST /api/v1/carts/{n}/items HTTP/1.1 201 {m} bytes in {t} ms",
    "connection from 10.{a}.{b}.{c} port {p} accepted",
    "checkpoint complete: wrote {n} buffers ({a}.{b}%); 0 WAL file(s) added, {c} removed",
    "session {h} opened for user deploy by (uid=0)",
    "job {h} finished with status ok after {t} ms",
    "cache miss for key user:{n}:profile, fetched in {t} ms",
    "worker {c} processed batch {n} ({m} records) lag={t}ms",
    "TLS handshake with 192.168.{a}.{b}:{p} completed (TLSv1.3, TLS_AES_256_GCM_SHA384)",
    "invoice {n} for customer {m} rendered, {t} ms, request-id {h}",
)


class LogText:
    """Deterministic log lines: compressible like real logs, but never repeating."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.clock = 1_714_521_600.0  # 2024-05-01
        self.pending = b""

    def _line(self) -> str:
        r = self.rng
        self.clock += r.random() * 0.05
        t = time.gmtime(self.clock)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(self.clock % 1 * 1e6):06d}Z"
        msg = r.choice(MESSAGES).format(
            n=r.randrange(1, 10**6), m=r.randrange(100, 60000), t=r.randrange(1, 900),
            a=r.randrange(256), b=r.randrange(256), c=r.randrange(1, 64),
            p=r.randrange(1024, 65536), h=f"{r.getrandbits(48):012x}",
        )
        svc = r.choice(SERVICES)
        return f"{stamp} web{r.randrange(1, 9):02d} {svc}[{r.randrange(100, 32768)}]: " \
               f"{r.choice(LEVELS)} {msg}\n"

    def take(self, n: int) -> bytes:
        parts = [self.pending]
        have = len(self.pending)
        while have < n:
            lines = "".join(self._line() for _ in range(2000)).encode()
            parts.append(lines)
            have += len(lines)
        data = b"".join(parts)
        self.pending = data[n:]
        return data[:n]


def fill(fd: int, offset: int, length: int, source: Callable[[int], bytes]) -> None:
    block = 4 * MiB
    for pos in range(offset, offset + length, block):
        os.pwrite(fd, source(min(block, offset + length - pos)), pos)


def sparse_copy(src: Path, dst_fd: int, dst_offset: int) -> None:
    """Copy ``src`` into ``dst_fd`` at ``dst_offset``, skipping holes and all-zero
    blocks (what ``dd conv=notrunc,sparse`` does)."""
    block = MiB
    zero = bytes(block)
    fd = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for start, end in data_extents(fd, size):
            for pos in range(start, end, block):
                data = os.pread(fd, min(block, end - pos), pos)
                if data != zero[: len(data)]:
                    os.pwrite(dst_fd, data, dst_offset + pos)
    finally:
        os.close(fd)


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        pos = end


# ------------------------------------------------------------------ the image


@dataclass
class Region:
    kind: str  # "ext4", "random" or "text"
    offset: int
    length: int


@dataclass
class Layout:
    size: int
    regions: list[Region] = field(default_factory=list)

    def data_bytes(self, kind: str) -> int:
        return sum(r.length for r in self.regions if r.kind == kind)


def plan_layout(size: int, seed: int) -> Layout:
    """The ext4 fs first, then random and text segments scattered, one per slot."""
    if size < 2 * GiB:
        raise SystemExit("--size must be at least 2 GiB (the Debian filesystem alone is 1 GiB)")
    rng = random.Random(seed)
    layout = Layout(size, [Region("ext4", FS_OFFSET, FS_SIZE)])
    first = FS_OFFSET + FS_SIZE + MiB
    slots = 2 * SEGMENTS
    slot = (size - first) // slots // ALIGN * ALIGN
    lengths = {
        "random": int(size * RANDOM_FRACTION) // SEGMENTS // ALIGN * ALIGN,
        "text": int(size * TEXT_FRACTION) // SEGMENTS // ALIGN * ALIGN,
    }
    for k in range(slots):
        kind = "random" if k % 2 == 0 else "text"
        length = min(lengths[kind], slot)
        start = first + k * slot + rng.randrange(0, slot - length + 1, ALIGN)
        layout.regions.append(Region(kind, start, length))
    return layout


def debian_mirror() -> str:
    """The Debian mirror apt uses here (sources.list or deb822 .sources)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    pattern = re.compile(r"^(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)", re.MULTILINE)
    for path in files:
        with contextlib.suppress(OSError):
            for uri in pattern.findall(path.read_text()):
                if uri.rstrip("/").endswith("/debian"):
                    return str(uri)
    return DEFAULT_MIRROR


def rootfs_tarball(cache: Path) -> Path:
    """debootstrap --variant=minbase (once), kept as a tarball in the cache."""
    tarball = cache / f"debian-{SUITE}-minbase.tar"
    if tarball.exists():
        log(f"Debian rootfs: cached {tarball}")
        return tarball
    mirror = debian_mirror()
    tmp = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    try:
        log(f"Debian rootfs: debootstrap --variant=minbase {SUITE} from {mirror} (minutes)")
        run_quiet(["debootstrap", "--variant=minbase", SUITE, str(tmp / "root"), mirror])
        partial = tarball.with_suffix(".tar.partial")
        run_quiet(["tar", "--numeric-owner", "--xattrs", "--acls", "-C", str(tmp / "root"),
                   "-cf", str(partial), "."])
        partial.rename(tarball)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"Debian rootfs: {mib(tarball.stat().st_size)} MiB tarball")
    return tarball


def ext4_image(cache: Path) -> Path:
    """The rootfs as a 1 GiB ext4 image made with mkfs.ext4 -d (no mounts)."""
    image = cache / f"debian-{SUITE}-minbase.ext4"
    if image.exists():
        log(f"ext4 image: cached {image}")
        return image
    tarball = rootfs_tarball(cache)
    tmp = Path(tempfile.mkdtemp(prefix="ext4-", dir=cache))
    try:
        root = tmp / "root"
        root.mkdir()
        run_quiet(["tar", "--numeric-owner", "--xattrs", "--acls", "-C", str(root),
                   "-xf", str(tarball)])
        partial = tmp / "fs.ext4"
        log("ext4 image: mkfs.ext4 -d")
        run_quiet(["mkfs.ext4", "-q", "-F", "-L", "bench-root", "-d", str(root), str(partial),
                   str(FS_SIZE // KiB) + "k"])
        partial.rename(image)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"ext4 image: {mib(allocated_bytes(image))} MiB allocated of {mib(FS_SIZE)} MiB")
    return image


def build_disk(cache: Path, size: int, seed: int) -> tuple[Path, Layout]:
    """The cached raw test disk for ``size``; built once."""
    layout = plan_layout(size, seed)
    disk = cache / f"disk-{size // MiB}M-seed{seed}.raw"
    if disk.exists():
        log(f"disk image: cached {disk}")
        return disk, layout
    fs = ext4_image(cache)
    partial = disk.with_suffix(".partial")
    rng = random.Random(seed + 1)
    text = LogText(random.Random(seed + 2))
    log(f"disk image: writing {disk.name} ({size / GiB:.1f} GiB virtual)")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for region in layout.regions:
            if region.kind == "ext4":
                sparse_copy(fs, fd, region.offset)
            else:
                source = rng.randbytes if region.kind == "random" else text.take
                fill(fd, region.offset, region.length, source)
        os.fsync(fd)
    finally:
        os.close(fd)
    partial.rename(disk)
    return disk, layout


def describe_image(path: Path, layout: Layout) -> dict[str, Any]:
    return {
        "virtual_mib": mib(layout.size),
        "allocated_mib": mib(allocated_bytes(path)),
        "ext4_region_mib": mib(layout.data_bytes("ext4")),
        "random_mib": mib(layout.data_bytes("random")),
        "text_mib": mib(layout.data_bytes("text")),
        "regions": [asdict(r) for r in layout.regions],
    }


def change_image(path: Path, layout: Layout, seed: int) -> int:
    """Overwrite CHANGE_FRACTION of the virtual size, in 64 KiB-1 MiB pieces at random
    places in the data regions (text regions get text, the others random bytes)."""
    rng = random.Random(seed + 3)
    text = LogText(random.Random(seed + 4))
    weights = [r.length for r in layout.regions]
    target = int(layout.size * CHANGE_FRACTION)
    done = pieces = 0
    fd = os.open(path, os.O_WRONLY)
    try:
        while done < target:
            region = rng.choices(layout.regions, weights)[0]
            length = rng.randrange(CHANGE_PIECE[0], CHANGE_PIECE[1] + 1, 4 * KiB)
            offset = region.offset + rng.randrange(0, region.length - length + 1, 4 * KiB)
            data = text.take(length) if region.kind == "text" else rng.randbytes(length)
            os.pwrite(fd, data, offset)
            done += length
            pieces += 1
        os.fsync(fd)
    finally:
        os.close(fd)
    log(f"changed {mib(done)} MiB in {pieces} pieces")
    return done


def build_sparse(cache: Path, size: int, seed: int) -> Path:
    """A mostly-sparse image: SPARSE_DATA in 1 MiB pieces scattered over ``size``."""
    path = cache / f"sparse-{size // GiB}G-seed{seed}.raw"
    if path.exists():
        return path
    rng = random.Random(seed + 5)
    text = LogText(random.Random(seed + 6))
    slots = rng.sample(range(size // SPARSE_PIECE), SPARSE_DATA // SPARSE_PIECE)
    partial = path.with_suffix(".partial")
    log(f"sparse image: writing {path.name}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for k, slot in enumerate(sorted(slots)):
            data = rng.randbytes(SPARSE_PIECE) if k % 2 else text.take(SPARSE_PIECE)
            os.pwrite(fd, data, slot * SPARSE_PIECE)
        os.fsync(fd)
    finally:
        os.close(fd)
    partial.rename(path)
    return path


def images_equal(a: Path, b: Path) -> bool:
    proc = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", str(a), str(b)],
                          capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise CommandFailed(f"qemu-img compare failed: {proc.stderr.strip()}")
    return proc.returncode == 0


# ------------------------------------------------------------------- the tools


class Tool:
    """How one tool inits a repository, backs up, and restores."""

    name = ""

    def __init__(self, work: Path) -> None:
        self.work = work

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def init_cmd(self, repo: Path) -> list[str]:
        raise NotImplementedError

    def backup_cmd(self, repo: Path, image: Path, label: str) -> list[str]:
        raise NotImplementedError

    def restore_cmd(self, repo: Path, label: str, out: Path, image: Path) -> tuple[list[str], Path]:
        """The restore command (run in ``out``) and where it puts the image."""
        raise NotImplementedError


class StasisTool(Tool):
    name = "stasis"
    chunk_size = ""  # the repository's default unless --stasis-chunk-size

    def env(self) -> dict[str, str]:
        return {**os.environ, "STASIS_PASSPHRASE": PASSPHRASE,
                "STASIS_STATE_DIR": str(self.work / "stasis-state")}

    def init_cmd(self, repo: Path) -> list[str]:
        cmd = [str(STASIS), "repo", "init", "--repo", str(repo)]
        return [*cmd, "--chunk-size", self.chunk_size] if self.chunk_size else cmd

    def backup_cmd(self, repo: Path, image: Path, label: str) -> list[str]:
        return [str(STASIS), "backup", "image", str(image), "--repo", str(repo),
                "--name", "bench", "--json"]

    def restore_cmd(self, repo: Path, label: str, out: Path, image: Path) -> tuple[list[str], Path]:
        target = out / "disk.raw"
        return [str(STASIS), "restore", "disk", "bench@latest", "--to", str(target),
                "--format", "raw", "--repo", str(repo), "--json"], target


class ResticTool(Tool):
    """restic 0.14, repository format 2 (compression auto, its default for v2)."""

    name = "restic"

    def env(self) -> dict[str, str]:
        return {**os.environ, "RESTIC_PASSWORD": PASSPHRASE,
                "RESTIC_CACHE_DIR": str(self.work / "restic-cache")}

    def init_cmd(self, repo: Path) -> list[str]:
        return ["restic", "-r", str(repo), "init", "--repository-version", "2"]

    def backup_cmd(self, repo: Path, image: Path, label: str) -> list[str]:
        return ["restic", "-r", str(repo), "backup", "--compression", "auto", "--tag", label,
                str(image)]

    def restore_cmd(self, repo: Path, label: str, out: Path, image: Path) -> tuple[list[str], Path]:
        cmd = ["restic", "-r", str(repo), "restore", "latest", "--target", str(out)]
        return cmd, out / image.relative_to("/")


class BorgTool(Tool):
    """borg 1.2 with zstd,3 and the fixed 4 MiB chunker + --sparse that its docs give for
    sparse disk images."""

    name = "borg"
    chunker = "fixed,4194304"

    def env(self) -> dict[str, str]:
        return {**os.environ, "BORG_PASSPHRASE": PASSPHRASE,
                "BORG_BASE_DIR": str(self.work / "borg-base")}

    def init_cmd(self, repo: Path) -> list[str]:
        return ["borg", "init", "-e", "repokey-blake2", str(repo)]

    def backup_cmd(self, repo: Path, image: Path, label: str) -> list[str]:
        cmd = ["borg", "create", "--compression", "zstd,3"]
        if self.chunker != "default":
            cmd += ["--chunker-params", self.chunker, "--sparse"]
        return [*cmd, f"{repo}::{label}", str(image)]

    def restore_cmd(self, repo: Path, label: str, out: Path, image: Path) -> tuple[list[str], Path]:
        return ["borg", "extract", "--sparse", f"{repo}::{label}"], out / image.relative_to("/")


TOOL_CLASSES: dict[str, type[Tool]] = {"stasis": StasisTool, "restic": ResticTool,
                                       "borg": BorgTool}


# ------------------------------------------------------------------- the steps


@dataclass
class StepResult:
    step: str
    tool: str
    wall_s: float
    cpu_s: float
    maxrss_mib: float
    tree_rss_mib: float
    stored_mib: float | None = None  # apparent size of the repository after the step
    added_mib: float | None = None  # growth of the repository in this step
    ok: bool = True
    note: str = ""
    run: int = 0  # repetition; -1 for a summary of all repetitions
    wall_range: tuple[float, float] | None = None  # min and max over repetitions

    @property
    def peak_mib(self) -> float:
        """The peak memory we report: the larger of the two measurements."""
        return max(self.maxrss_mib, self.tree_rss_mib)


@dataclass
class Bench:
    work: Path
    tools: list[Tool]
    logs: Path
    results: list[StepResult] = field(default_factory=list)
    keep: bool = False
    run: int = 0
    failures: list[str] = field(default_factory=list)
    caches_dropped: bool = True
    disk_mib_s: list[float] = field(default_factory=list)  # one per repetition
    floors: list[dict[str, Any]] = field(default_factory=list)  # one per repetition

    def measure(self, tool: Tool, step: str, cmd: list[str], cwd: Path | None = None) -> Measured:
        self.caches_dropped = drop_caches() and self.caches_dropped
        log_path = self.logs / f"{tool.name}-{step}-run{self.run}.log"
        return run_measured(cmd, env=tool.env(), log_path=log_path, cwd=cwd)

    def record(self, result: StepResult) -> None:
        result.run = self.run
        self.results.append(result)
        stored = f", repo {result.stored_mib} MiB" if result.stored_mib is not None else ""
        log(f"  {result.tool} {result.step}: {result.wall_s} s, peak RSS "
            f"{result.maxrss_mib} MiB (tree {result.tree_rss_mib} MiB){stored}"
            f"{'' if result.ok else ' FAILED'} {result.note}".rstrip())


def init_repo(bench: Bench, tool: Tool, repo: Path) -> None:
    run_measured(tool.init_cmd(repo), env=tool.env(),
                 log_path=bench.logs / f"init-{repo.name}-run{bench.run}.log")


def backup_one(bench: Bench, tool: Tool, step: str, repo: Path, image: Path,
               label: str) -> None:
    before = repo_size(repo)[0]
    m = bench.measure(tool, step, tool.backup_cmd(repo, image, label))
    after = repo_size(repo)[0]
    bench.record(StepResult(step, tool.name, m.wall_s, m.cpu_s, m.maxrss_mib, m.tree_rss_mib,
                            stored_mib=mib(after), added_mib=mib(after - before)))


def restore_one(bench: Bench, tool: Tool, repo: Path, image: Path, label: str) -> None:
    """Restore ``label``, compare it with ``image``, and delete it."""
    out = bench.work / f"restore-{tool.name}"
    out.mkdir()
    cmd, restored = tool.restore_cmd(repo, label, out, image)
    try:
        m = bench.measure(tool, "restore", cmd, cwd=out)
        # Stasis makes the restored image durable (fsync before the rename); restic 0.14
        # and borg leave it in the page cache. Timing `sync` right after puts every tool
        # on the same footing: time until the restored data is on disk.
        sync_started = time.monotonic()
        os.sync()
        durable_s = round(m.wall_s + time.monotonic() - sync_started, 2)
        log("  comparing the restored image with the source (qemu-img compare)")
        equal = images_equal(image, restored)
        note = f"restored file allocates {mib(allocated_bytes(restored))} MiB"
        if not equal:
            bench.failures.append(f"{tool.name}: the restored image differs from the source")
        bench.record(StepResult("restore", tool.name, m.wall_s, m.cpu_s, m.maxrss_mib,
                                m.tree_rss_mib, ok=equal,
                                note=note if equal else f"MISMATCH; {note}"))
        bench.record(StepResult("restore-durable", tool.name, durable_s, m.cpu_s,
                                m.maxrss_mib, m.tree_rss_mib, ok=equal))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def place_image(cached: Path, image: Path, *, writable: bool) -> None:
    """Put the test image at ``image``: a hard link to the cached one while it is only
    read (saves its size in disk space), a real copy before it is written."""
    tmp = image.with_name(image.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    if writable:
        run_quiet(["cp", "--sparse=always", str(cached), str(tmp)])
    else:
        try:
            os.link(cached, tmp)
        except OSError:  # another filesystem
            run_quiet(["cp", "--sparse=always", str(cached), str(tmp)])
    tmp.rename(image)


def tool_pipeline(bench: Bench, tool: Tool, cached: Path, layout: Layout, seed: int) -> int:
    """One tool, one fresh repository: full backup, restore + compare, change 1 %,
    second backup. The change is the same for every tool (same seed)."""
    log(f"== {tool.name}")
    image = bench.work / "disk.raw"
    repo = bench.work / f"repo-{tool.name}"
    place_image(cached, image, writable=False)
    init_repo(bench, tool, repo)
    backup_one(bench, tool, "full", repo, image, "full")
    restore_one(bench, tool, repo, image, "full")
    place_image(cached, image, writable=True)
    changed = change_image(image, layout, seed)
    backup_one(bench, tool, "incremental", repo, image, "incremental")
    if not bench.keep:
        shutil.rmtree(repo)
    return changed


def qcow2_step(bench: Bench, cached: Path) -> None:
    """Every tool backs up a qcow2 conversion of the (unchanged) image into a fresh repo."""
    qcow2 = bench.work / "disk.qcow2"
    log("== qcow2: convert the image to qcow2 and back it up into fresh repos")
    start = time.monotonic()
    run_quiet(["qemu-img", "convert", "-O", "qcow2", str(cached), str(qcow2)])
    log(f"  qemu-img convert: {time.monotonic() - start:.1f} s, "
        f"{mib(qcow2.stat().st_size)} MiB file")
    for tool in bench.tools:
        repo = bench.work / f"repo-{tool.name}-qcow2"
        init_repo(bench, tool, repo)
        backup_one(bench, tool, "full-qcow2", repo, qcow2, "qcow2")
        if not bench.keep:
            shutil.rmtree(repo)
    if not bench.keep:
        qcow2.unlink()


def sparse_memory(bench: Bench, cache: Path, seed: int) -> list[dict[str, Any]]:
    """Peak memory of ``stasis backup image`` as the virtual size grows, data fixed."""
    log(f"== sparse: stasis peak memory, {mib(SPARSE_DATA)} MiB of data scattered in 1 MiB "
        "pieces over growing virtual sizes")
    tool = StasisTool(bench.work)
    rows = []
    for size in SPARSE_SIZES:
        image = build_sparse(cache, size, seed)
        repo = bench.work / f"repo-sparse-{size // GiB}G"
        init_repo(bench, tool, repo)
        try:
            m = bench.measure(tool, f"sparse-{size // GiB}G", tool.backup_cmd(repo, image, "s"))
            rows.append({"run": bench.run, "virtual_gib": size // GiB,
                         "data_mib": mib(SPARSE_DATA),
                         "wall_s": m.wall_s, "cpu_s": m.cpu_s, "maxrss_mib": m.maxrss_mib,
                         "tree_rss_mib": m.tree_rss_mib, "stored_mib": mib(repo_size(repo)[0])})
            log(f"  {size // GiB} GiB: {m.wall_s} s, peak RSS {m.maxrss_mib} MiB "
                f"(tree {m.tree_rss_mib} MiB)")
        finally:
            shutil.rmtree(repo, ignore_errors=True)
    return rows


# ------------------------------------------------------------------ reporting


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _median_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(_median(known), 1) if known else None


def summarize(results: list[StepResult]) -> list[StepResult]:
    """One row per (step, tool): median time, CPU and size; the highest memory."""
    groups: dict[tuple[str, str], list[StepResult]] = {}
    for r in results:
        groups.setdefault((r.step, r.tool), []).append(r)
    rows = []
    for (step, tool), rs in groups.items():
        walls = [r.wall_s for r in rs]
        rows.append(StepResult(
            step, tool, wall_s=round(_median(walls), 2),
            cpu_s=round(_median([r.cpu_s for r in rs]), 2),
            maxrss_mib=max(r.maxrss_mib for r in rs),
            tree_rss_mib=max(r.tree_rss_mib for r in rs),
            stored_mib=_median_or_none([r.stored_mib for r in rs]),
            added_mib=_median_or_none([r.added_mib for r in rs]),
            ok=all(r.ok for r in rs), note=rs[0].note, run=-1,
            wall_range=(min(walls), max(walls)),
        ))
    return rows


def summarize_sparse(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_size: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_size.setdefault(r["virtual_gib"], []).append(r)
    return [{"virtual_gib": size, "data_mib": rs[0]["data_mib"], "runs": len(rs),
             "wall_s": round(_median([r["wall_s"] for r in rs]), 2),
             "cpu_s": round(_median([r["cpu_s"] for r in rs]), 2),
             "maxrss_mib": max(r["maxrss_mib"] for r in rs),
             "tree_rss_mib": max(r["tree_rss_mib"] for r in rs)}
            for size, rs in sorted(by_size.items())]


STEP_TITLES = {
    "full": "full backup (raw image)",
    "restore": "restore of the full backup (raw)",
    "restore-durable": "restore until the data is on disk (restore, then sync)",
    "incremental": "backup after 1 % changed (second point/snapshot/archive)",
    "full-qcow2": "full backup of the qcow2 conversion (fresh repos)",
}


def print_tables(results: list[StepResult]) -> None:
    head = (f"{'tool':<7} {'wall s':>8} {'min-max':>11} {'CPU s':>7} {'RSS MiB':>8} "
            f"{'tree MiB':>9} "
            f"{'repo MiB':>9} {'+MiB':>8} | {'S/peer t':>8} {'×faster':>7} {'S/peer mem':>10} "
            f"{'S/peer size':>11}")
    for step, title in STEP_TITLES.items():
        rows = [r for r in results if r.step == step]
        if not rows:
            continue
        ref = next((r for r in rows if r.tool == "stasis"), None)
        print(f"\n{title}\n{head}\n{'-' * len(head)}")
        for r in rows:
            peer = ref is not None and r.tool != "stasis"
            size_key = "added_mib" if step == "incremental" else "stored_mib"
            t = _ratio(ref.wall_s, r.wall_s) if peer and ref else None
            rss = _ratio(ref.peak_mib, r.peak_mib) if peer and ref else None
            size = (_ratio(getattr(ref, size_key), getattr(r, size_key))
                    if peer and ref else None)
            spread = f"{r.wall_range[0]:.1f}-{r.wall_range[1]:.1f}" if r.wall_range else "-"
            print(f"{r.tool:<7} {r.wall_s:>8.1f} {spread:>11} {r.cpu_s:>7.1f} {r.maxrss_mib:>8.1f} "
                  f"{r.tree_rss_mib:>9.1f} {_fmt(r.stored_mib):>9} {_fmt(r.added_mib):>8} | "
                  f"{_fmt(t, '.2f'):>8} {_fmt(_ratio(1, t), '.2f'):>7} {_fmt(rss, '.2f'):>10} "
                  f"{_fmt(size, '.2f'):>11}"
                  + ("" if r.ok else "  FAILED"))
            if r.note:
                print(f"        {r.note}")


def print_sparse(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print(f"\nstasis backup image, {mib(SPARSE_DATA)} MiB of data scattered over a sparse disk")
    print(f"{'virtual':>8} {'wall s':>8} {'CPU s':>7} {'RSS MiB':>8} {'tree MiB':>9}")
    for r in rows:
        print(f"{r['virtual_gib']:>6}Gi {r['wall_s']:>8.1f} {r['cpu_s']:>7.1f} "
              f"{r['maxrss_mib']:>8.1f} {r['tree_rss_mib']:>9.1f}")


FLOOR_TARGET = 1.3  # the full backup and the restore: at most this × their floor


def backup_floor(measured: list[dict[str, Any]]) -> dict[str, float] | None:
    """The full backup's floor (medians of the repetitions): the larger of the CPU's
    (its compute over the cores) and the disk's (its reads and writes at once)."""
    if not measured:
        return None
    cpu = _median([m["cpu_floor_s"] for m in measured])
    disk = _median([m["disk_backup_s"] for m in measured])
    return {"cpu_s": round(cpu, 2), "disk_s": round(disk, 2), "floor_s": round(max(cpu, disk), 2)}


def floors(results: list[StepResult], disk_mib_s: float | None,
           allocated_mib: float | None, measured: list[dict[str, Any]] | None = None
           ) -> list[str]:
    """What the disk and the CPU alone cost Stasis, measured in the same run: the
    restored image and the repository's new objects are written durably, at best at
    the disk's speed, and a full backup cannot beat its compute spread over the cores."""
    if not disk_mib_s:
        return []
    by = {(r.step, r.tool): r for r in results}
    lines = [f"disk: {disk_mib_s} MiB/s sequential write with fsync (median of the runs)"]
    full, floor_b = by.get(("full", "stasis")), backup_floor(measured or [])
    if full and floor_b:
        m = (measured or [{}])[0]
        lines.append(
            f"full backup floor {floor_b['floor_s']} s: the larger of compute "
            f"{floor_b['cpu_s']} s ({_median([x['cpu_s'] for x in measured or []]):.2f} "
            f"CPU-s over {m.get('cores')} cores) and the disk reading the allocated "
            f"chunks while writing {m.get('stored_mib')} MiB ({floor_b['disk_s']} s); "
            f"Stasis took {full.wall_s} s = {full.wall_s / floor_b['floor_s']:.2f}× the floor")
    restore = by.get(("restore", "stasis"))
    if restore and allocated_mib:
        floor = allocated_mib / disk_mib_s
        lines.append(f"restore writes {allocated_mib} MiB: at least {floor:.2f} s on this disk; "
                     f"Stasis took {restore.wall_s} s ({100 * floor / restore.wall_s:.0f} % of "
                     "its time is that floor)")
        for peer in ("restic", "borg"):
            p = by.get(("restore", peer))
            if p:
                lines.append(f"  best possible vs {peer} (whose time excludes its flush): "
                             f"{p.wall_s / floor:.2f}×")
    for step, key in (("full", "stored_mib"), ("incremental", "added_mib")):
        s = by.get((step, "stasis"))
        if s and getattr(s, key):
            floor = getattr(s, key) / disk_mib_s
            lines.append(f"{step} backup writes {getattr(s, key)} MiB of new objects: at least "
                         f"{floor:.2f} s on this disk; Stasis took {s.wall_s} s")
    return lines


def targets(results: list[StepResult], sparse: list[dict[str, Any]],
            measured: list[dict[str, Any]] | None = None, disk_mib_s: float | None = None,
            allocated_mib: float | None = None) -> list[str]:
    """The project's targets, each with its numbers and a verdict."""
    by = {(r.step, r.tool): r for r in results}
    lines = []

    def within(step: str, floor: float | None, what: str) -> None:
        s = by.get((step, "stasis"))
        if s and floor:
            x = s.wall_s / floor
            lines.append(f"{step} within {FLOOR_TARGET:g}× of {what}: {x:.2f}× ({s.wall_s} s "
                         f"vs {floor:.2f} s) {'MET' if x <= FLOOR_TARGET else 'NOT MET'}")

    floor_b = backup_floor(measured or [])
    within("full", floor_b["floor_s"] if floor_b else None, "the disk-or-CPU floor")
    within("restore", allocated_mib / disk_mib_s if allocated_mib and disk_mib_s else None,
           "the disk's time to write the restored bytes")

    def speed(step: str, peer: str, want: float) -> None:
        s, p = by.get((step, "stasis")), by.get((step, peer))
        if s and p:
            x = p.wall_s / s.wall_s
            lines.append(f"{step} ≥{want:g}× faster than {peer}: {x:.2f}× "
                         f"({s.wall_s} s vs {p.wall_s} s) {'MET' if x >= want else 'NOT MET'}")

    speed("full", "restic", 3)
    speed("full", "borg", 3)
    speed("restore", "restic", 2)
    speed("restore-durable", "restic", 2)
    for step, key in (("full", "stored_mib"), ("incremental", "added_mib")):
        s, p = by.get((step, "stasis")), by.get((step, "restic"))
        if s and p:
            a, b = getattr(s, key), getattr(p, key)
            lines.append(f"{step} stored size ≤ restic: {a} MiB vs {b} MiB "
                         f"{'MET' if a <= b else 'NOT MET'}")
    if len(sparse) >= 2:
        lo, hi = sparse[0], sparse[-1]
        lo_peak = max(lo["tree_rss_mib"], lo["maxrss_mib"])
        hi_peak = max(hi["tree_rss_mib"], hi["maxrss_mib"])
        flat = hi_peak - lo_peak <= max(16.0, 0.1 * lo_peak)
        lines.append(f"peak memory flat from {lo['virtual_gib']} to {hi['virtual_gib']} GiB: "
                     f"{lo['tree_rss_mib']} → {hi['tree_rss_mib']} MiB (tree), "
                     f"{lo['maxrss_mib']} → {hi['maxrss_mib']} MiB (largest process) "
                     f"{'MET' if flat else 'NOT MET'}")
    return lines


def tool_versions(tools: Sequence[Tool]) -> dict[str, str]:
    cmds = {"stasis": [str(STASIS), "version"], "restic": ["restic", "version"],
            "borg": ["borg", "--version"]}
    versions = {}
    for tool in tools:
        proc = subprocess.run(cmds[tool.name], capture_output=True, text=True)
        versions[tool.name] = proc.stdout.strip()
    return versions


def write_json(report: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"bench-image-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


# ----------------------------------------------------------------------- main


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4G, 4GiB, 512M)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def parse_tools(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in ALL_TOOLS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"tools are a comma list of {', '.join(ALL_TOOLS)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size", type=parse_size, default=4 * GiB,
                   help="virtual size of the test disk (default 4G; at least 2G)")
    p.add_argument("--cache-dir", type=Path, default=BENCH_DIR / ".cache",
                   help="where the rootfs tarball and test images are kept (default bench/.cache)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where repositories and restores go (default: a new directory in the "
                   "cache dir); must be on a local disk")
    p.add_argument("--tools", type=parse_tools, default=list(ALL_TOOLS),
                   help="comma list of stasis,restic,borg (default all)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (repositories)")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the generated data")
    p.add_argument("--repeat", type=positive_int, default=1,
                   help="run everything N times and report medians (default 1)")
    p.add_argument("--no-qcow2", dest="qcow2", action="store_false",
                   help="skip the backup of a qcow2 conversion")
    p.add_argument("--no-sparse", dest="sparse", action="store_false",
                   help="skip the 4 GiB vs 64 GiB sparse memory check")
    p.add_argument("--sparse-only", action="store_true",
                   help="run only the sparse memory check of stasis")
    p.add_argument("--stasis-chunk-size", default="",
                   help="chunk size of the Stasis repository (default: Stasis's default)")
    p.add_argument("--borg-chunker", choices=("fixed", "default"), default="fixed",
                   help="borg chunker: fixed,4194304 + --sparse (its docs' advice for disk "
                   "images; default) or borg's default buzhash")
    return p.parse_args(argv)


def check_environment(tools: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (debootstrap, dropping the page cache)")
    needed = ["qemu-img", "qemu-nbd", "debootstrap", "mkfs.ext4", "tar",
              *(t for t in tools if t != "stasis")]
    missing = [c for c in needed if shutil.which(c) is None]
    if "stasis" in tools and not STASIS.exists():
        missing.append(str(STASIS))
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)}")


def make_tools(names: Sequence[str], work: Path, borg_chunker: str,
               stasis_chunk_size: str = "") -> list[Tool]:
    tools = [TOOL_CLASSES[n](work) for n in names]
    for tool in tools:
        if isinstance(tool, BorgTool) and borg_chunker == "default":
            tool.chunker = "default"
        if isinstance(tool, StasisTool):
            tool.chunk_size = stasis_chunk_size
    return tools


def check_space(work: Path, need: int) -> None:
    free = shutil.disk_usage(work).free
    log(f"free space in {work}: {mib(free)} MiB; this run needs about {mib(need)} MiB")
    if free < need:
        log("WARNING: not enough free space; a tool may fail with ENOSPC")


def disk_write_speed(work: Path, nbytes: int) -> float:
    """MiB/s of the work dir's disk, now: ``nbytes`` written in 4 MiB pieces (random,
    so nothing below compresses or dedups them), then fsync, from a cold page cache.
    Writing a restored image or a repository's new objects durably cannot go faster."""
    piece = os.urandom(4 * MiB)
    path = work / "disk-speed.tmp"
    drop_caches()
    started = time.monotonic()
    try:
        write_synced(path, piece, nbytes)
    finally:
        path.unlink(missing_ok=True)
    return nbytes / MiB / (time.monotonic() - started)


def write_synced(path: Path, piece: bytes, nbytes: int) -> None:
    """Write ``nbytes`` to a new ``path`` by copies of ``piece``, then fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        done = 0
        while done < nbytes:
            done += os.write(fd, piece[: min(len(piece), nbytes - done)])
        os.fsync(fd)
    finally:
        os.close(fd)


def data_chunks(path: Path, chunk_size: int) -> list[int]:
    """Offsets of the chunks of ``path`` that hold data (SEEK_DATA/SEEK_HOLE, aligned to
    the chunk grid): what a full backup reads."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size, offset, found = os.fstat(fd).st_size, 0, set()
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            found.update(range(start // chunk_size * chunk_size, end, chunk_size))
            offset = end
        return sorted(found)
    finally:
        os.close(fd)


def cpu_floor(image: Path, chunk_size: int) -> tuple[float, int]:
    """CPU seconds of the work a full backup cannot skip, and the bytes it stores: every
    allocated chunk checked for zeros, named (keyed BLAKE3) and sealed (zstd-3 +
    AES-256-GCM) once, with the Stasis code itself; the data is read (untimed) from the
    page cache, and only the compute is counted (each thread's CPU time around it)."""
    import blake3  # the Stasis venv's: the bench runs in it

    from stasis.repository import objects

    sealer = objects.Sealer(encrypted=True, enc_key=os.urandom(32), check_key=os.urandom(32))
    key, zeros = os.urandom(32), bytes(chunk_size)
    todo, lock = iter(data_chunks(image, chunk_size)), threading.Lock()
    cpu, stored, seen = [0.0], [0], set()
    fd = os.open(image, os.O_RDONLY)

    def work() -> None:
        while True:
            with lock:
                offset = next(todo, None)
            if offset is None:
                return
            data = os.pread(fd, chunk_size, offset)
            started = time.thread_time()
            size = 0
            if data != (zeros if len(data) == chunk_size else bytes(len(data))):
                name = blake3.blake3(data, key=key).digest()
                with lock:
                    new = name not in seen
                    seen.add(name)
                if new:
                    size = len(sealer.seal(objects.KIND_CHUNK, name.hex(), data))
            spent = time.thread_time() - started
            with lock:
                cpu[0] += spent
                stored[0] += size

    try:
        threads = [threading.Thread(target=work) for _ in range(os.cpu_count() or 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.close(fd)
    return cpu[0], stored[0]


def disk_backup_speed(work: Path, image: Path, chunk_size: int, write_bytes: int) -> float:
    """Seconds the disk needs for a full backup's I/O: the image's allocated chunks read
    (cold page cache) while ``write_bytes`` are written (random) and fsynced, both at
    once, as a backup that overlaps them perfectly would."""
    offsets = data_chunks(image, chunk_size)
    piece = os.urandom(4 * MiB)
    path = work / "disk-speed.tmp"
    drop_caches()

    def read() -> None:
        fd = os.open(image, os.O_RDONLY)
        try:
            for offset in offsets:
                os.pread(fd, chunk_size, offset)
        finally:
            os.close(fd)

    started = time.monotonic()
    reader = threading.Thread(target=read)
    reader.start()
    try:
        write_synced(path, piece, write_bytes)
    finally:
        path.unlink(missing_ok=True)
        reader.join()
    return time.monotonic() - started


def measure_floors(bench: Bench, image: Path, args: argparse.Namespace) -> None:
    """The full backup's floors on this machine, now: the CPU's (compute / cores) and
    the disk's (its reads and writes at once). Restore's is the disk's write speed."""
    from stasis.repository.repo import DEFAULT_CHUNK_SIZE

    chunk_size = parse_size(args.stasis_chunk_size) if args.stasis_chunk_size \
        else DEFAULT_CHUNK_SIZE
    cpu_s, stored = cpu_floor(image, chunk_size)
    cores = os.cpu_count() or 1
    disk_s = disk_backup_speed(bench.work, image, chunk_size, stored)
    bench.floors.append({"cpu_s": round(cpu_s, 2), "cores": cores,
                         "cpu_floor_s": round(cpu_s / cores, 2),
                         "disk_backup_s": round(disk_s, 2), "stored_mib": mib(stored),
                         "chunk_size": chunk_size})
    log(f"floors: compute {cpu_s:.2f} CPU-s on {cores} cores = {cpu_s / cores:.2f} s; disk "
        f"reads the allocated chunks while writing {mib(stored)} MiB: {disk_s:.2f} s")


def run_main_bench(bench: Bench, cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    cached, layout = build_disk(cache, args.size, args.seed)
    info = describe_image(cached, layout)
    log(f"image: {info['virtual_mib']} MiB virtual, {info['allocated_mib']} MiB allocated")
    # A work copy, a repository, and restic 0.14's non-sparse restore at the same time.
    check_space(bench.work, 2 * allocated_bytes(cached) + args.size + GiB)
    speed = round(disk_write_speed(bench.work, allocated_bytes(cached)), 1)
    bench.disk_mib_s.append(speed)
    log(f"disk: {speed} MiB/s sequential write with fsync ({info['allocated_mib']} MiB)")
    measure_floors(bench, cached, args)
    for tool in bench.tools:
        info["changed_mib"] = mib(tool_pipeline(bench, tool, cached, layout, args.seed))
    if not bench.keep:
        (bench.work / "disk.raw").unlink()
    if args.qcow2:
        qcow2_step(bench, cached)
    return info


def stasis_commit() -> str:
    """The commit of the Stasis source benchmarked, with '+dirty' if src/ has changes."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def environment(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "command": [sys.executable, *sys.argv], "host": platform.node(),
        "kernel": platform.release(), "cpus": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1),
        "versions": tool_versions(bench.tools), "stasis_commit": stasis_commit(),
        "borg_chunker": args.borg_chunker, "repeat": args.repeat,
    }


def run_all(bench: Bench, cache: Path, args: argparse.Namespace,
            report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every repetition; the tool order rotates so no tool always runs first."""
    tools, sparse = list(bench.tools), []
    for run in range(args.repeat):
        bench.run = run
        bench.tools = tools[run % len(tools):] + tools[:run % len(tools)]
        log(f"=== repetition {run + 1} of {args.repeat}")
        if not args.sparse_only:
            report["image"] = run_main_bench(bench, cache, args)
        if args.sparse or args.sparse_only:
            sparse += sparse_memory(bench, cache, args.seed)
    bench.tools = tools
    return sparse


def print_report(bench: Bench, summary: list[StepResult], sparse: list[dict[str, Any]],
                 report: dict[str, Any]) -> None:
    print_tables(summary)
    print_sparse(sparse)
    runs = f"median of {report['repeat']} runs" if report["repeat"] > 1 else "one run"
    print(f"\nwall s, CPU s, sizes: {runs}; min-max: range of wall s; memory: highest run.")
    print("RSS = wait4 ru_maxrss (largest process); tree = sampled sum over the process tree;")
    print("S/peer t = Stasis time / peer time; ×faster = peer time / Stasis time;")
    print("S/peer mem uses max(RSS, tree); S/peer size compares repo MiB (+MiB for the 1 % step).")
    print("\nTargets:")
    for line in report["targets"]:
        print(f"  {line}")
    if report["floors"]:
        print("\nWhat the disk and the CPU alone cost (same run):")
        for line in report["floors"]:
            print(f"  {line}")
    if not bench.caches_dropped:
        print("NOTE: the page cache could not be dropped; timings include warm caches")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tools = ["stasis"] if args.sparse_only else args.tools
    check_environment(tools)
    cache = args.cache_dir.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="work-", dir=cache))).resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    chosen = make_tools(tools, work, args.borg_chunker, args.stasis_chunk_size)
    bench = Bench(work, chosen, logs, keep=args.keep)
    log(f"work dir {work}; tools {', '.join(tools)}")
    report = environment(bench, args)
    started = time.monotonic()
    try:
        sparse_runs = run_all(bench, cache, args, report)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary, sparse = summarize(bench.results), summarize_sparse(sparse_runs)
    report.update(
        summary=[{**asdict(r), "peak_mib": r.peak_mib} for r in summary], sparse=sparse,
        runs=[{**asdict(r), "peak_mib": r.peak_mib} for r in bench.results],
        sparse_runs=sparse_runs, caches_dropped=bench.caches_dropped, failures=bench.failures,
        runtime_s=round(time.monotonic() - started, 1),
        targets=targets(summary, sparse, bench.floors,
                        _median(bench.disk_mib_s) if bench.disk_mib_s else None,
                        report.get("image", {}).get("allocated_mib")),
        disk_mib_s=bench.disk_mib_s, backup_floors=bench.floors,
        floors=floors(summary, _median(bench.disk_mib_s) if bench.disk_mib_s else None,
                      report.get("image", {}).get("allocated_mib"), bench.floors),
    )
    print_report(bench, summary, sparse, report)
    print(f"\nbenchmark runtime {report['runtime_s']} s; results in {write_json(report)}")
    for failure in bench.failures:
        print(f"FAILURE: {failure}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
