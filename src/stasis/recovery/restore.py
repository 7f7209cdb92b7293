"""Restore of one disk: manifest → disk index → verified chunks → sparse target.

Compute threads fetch and verify the chunks (:func:`ordered_map`) and hand each
chunk's non-zero ranges to writer threads (:class:`Background`), which write them by
offset while the compute goes on; at most WRITE_BYTES of chunks wait for a writer, so
memory stays bounded whatever the disk's size. A raw file is written directly, past
the page cache where the file system allows (``O_DIRECT``), a qcow2 image through
qemu-nbd, which also writes past the page cache there; either is fsynced once, at
the end, before the restore reports success.

A file target is built under a temporary name beside it and renamed into place
only when complete and flushed, so a failed or interrupted restore never leaves a
file that looks like a finished one: a failed write is raised (the same error) and
the partial file removed. A block device is written in place (only with ``force``),
and so is a new volume of a libvirt pool (:func:`fill_image`), which its caller
deletes through the pool when the restore fails.
Only non-zero ranges are written, so what was unallocated stays so.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stasis.blockio import BlockWriter, images
from stasis.blockio.nbd import QemuNbd
from stasis.blockio.raw import RawFile, supports_direct
from stasis.errors import BackendError, DiskNotFound, TargetError, TargetExists, UsageError
from stasis.parallel import Background, default_workers, ordered_map
from stasis.progress import NoProgress, Progress
from stasis.recovery.diskread import load_verified
from stasis.repository import DiskIndex, DiskRecord, Manifest, Repository, VmRecord

# Zero runs shorter than this are written; longer ones are left as holes.
HOLE_GRANULARITY = 64 * 1024
FORMATS = ("raw", "qcow2")
WRITERS = 4
WRITE_BYTES = 32 << 20  # verified chunks waiting for a writer, at most (or 2 per writer)


def reader_count(parallel_requests: int, chunk_size: int) -> int:
    """Compute threads that fetch and verify chunks: one per core's worth
    (:func:`default_workers`), more where the store serves more requests at once (S3:
    each thread mostly waits on its GET; 16 at 1 MiB chunks took SeaweedFS from 147 to
    199 MiB/s GET), as long as twice that many chunks fit in WRITE_BYTES."""
    return max(default_workers(), min(parallel_requests, WRITE_BYTES // (2 * chunk_size)))


@dataclass
class RestoreResult:
    point: str
    vm: str
    disk: str
    target: str
    format: str
    virtual_size: int
    bytes_written: int
    duration_s: float
    pool: str | None = None  # written to a volume of this libvirt pool
    volume: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def select_disk(point: Manifest, vm: str | None, disk: str | None) -> tuple[VmRecord, DiskRecord]:
    """The one disk of ``point`` that ``vm`` and ``disk`` name (either may be omitted
    when it leaves a single choice)."""
    pairs = point.disks()
    if vm is not None:
        pairs = [(v, d) for v, d in pairs if v.name == vm]
        if not pairs:
            names = ", ".join(v.name for v in point.vms)
            raise DiskNotFound(f"point {point.id[:12]} has no VM named '{vm}' (it has: {names})")
    if disk is not None:
        pairs = [(v, d) for v, d in pairs if d.name == disk]
    if len(pairs) == 1:
        return pairs[0]
    listing = ", ".join(f"{v.name}/{d.name}" for v, d in point.disks())
    if not pairs:
        raise DiskNotFound(f"point {point.id[:12]} has no disk '{disk}' (it has: {listing})")
    raise UsageError(
        f"point {point.id[:12]} has {len(pairs)} disks ({listing}); choose one with --vm and --disk"
    )


def _nonzero_runs(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the runs of ``data`` that are not all zeros, at hole granularity."""
    runs: list[tuple[int, int]] = []
    zero = bytes(HOLE_GRANULARITY)
    start = -1
    n = len(data)
    for pos in range(0, n, HOLE_GRANULARITY):
        end = min(pos + HOLE_GRANULARITY, n)
        is_zero = data[pos:end] == (zero if end - pos == HOLE_GRANULARITY else bytes(end - pos))
        if is_zero:
            if start >= 0:
                runs.append((start, pos))
                start = -1
        elif start < 0:
            start = pos
    if start >= 0:
        runs.append((start, n))
    return runs


def write_index(
    repo: Repository,
    index: DiskIndex,
    target: BlockWriter,
    *,
    point: Manifest,
    vm: VmRecord,
    disk: DiskRecord,
    progress: Progress,
    workers: int | None = None,
) -> int:
    """Write every stored chunk of ``index`` to ``target``; return bytes written.

    On return every write has finished; the first failed one is raised, and the
    writes not started are dropped. Durability is the caller's (one sync at the end).
    """
    where = f"point {point.id[:12]}, VM {vm.name}, disk {disk.name}"
    depth = max(2 * WRITERS, WRITE_BYTES // index.chunk_size)
    with Background(workers=WRITERS, depth=depth, name="restore-write") as writes:

        def one(entry: tuple[int, bytes]) -> int:
            i, _name = entry
            data = load_verified(repo, index, i, where, "The restore target was not completed.")
            runs = _nonzero_runs(data)
            writes.submit(functools.partial(_write_runs, target, data, runs,
                                            i * index.chunk_size, progress))
            return sum(end - start for start, end in runs)

        total = 0
        readers = workers or reader_count(repo.backend.parallel_requests, index.chunk_size)
        results = ordered_map(one, index.stored(), workers=readers, name="restore")
        with contextlib.closing(results):
            for _entry, written in results:
                total += written
        writes.join()
    return total


def _write_runs(target: BlockWriter, data: bytes, runs: list[tuple[int, int]], offset: int,
                progress: Progress) -> None:
    view = memoryview(data)
    for start, end in runs:
        target.write(view[start:end], offset + start)
    progress.advance(len(data))


def restore_disk(
    repo: Repository,
    point: Manifest,
    *,
    target: str | Path,
    vm: str | None = None,
    disk: str | None = None,
    fmt: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
    run_dir: str | Path | None = None,
) -> RestoreResult:
    progress = progress or NoProgress()
    started = time.time()
    vm_rec, disk_rec = select_disk(point, vm, disk)
    target = Path(target)
    try:
        st: os.stat_result | None = target.stat()
    except FileNotFoundError:
        st = None
    is_block = st is not None and stat.S_ISBLK(st.st_mode)
    if st is not None and not force:
        raise TargetExists(target)
    if st is not None and not is_block and not stat.S_ISREG(st.st_mode):
        raise TargetError(target, "it exists and is not a regular file or a block device",
                          "It was left untouched.")
    out_fmt = fmt or (disk_rec.format if disk_rec.format in FORMATS else "qcow2")
    if out_fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not '{out_fmt}'")
    if is_block and out_fmt != "raw":
        raise UsageError("a block device is written raw: use --format raw")
    if not target.parent.is_dir():
        raise TargetError(target, f"the directory {target.parent} does not exist",
                          "Nothing was restored.")

    index = repo.load_disk_index(point, vm_rec, disk_rec)
    with repo.shared_lock(f"restore {point.id[:12]}"):
        if is_block:
            try:
                return _restore_to_block(repo, point, vm_rec, disk_rec, index, target,
                                         progress, workers, run_dir, started)
            except BackendError as e:
                raise e.leaving(f"The block device {target} was partly written: restore "
                                "it again.") from e
        partial = target.parent / f".{target.name}.stasis-partial-{secrets.token_hex(4)}"
        try:
            options = disk_rec.format_options if disk_rec.format == out_fmt else {}
            images.create(partial, out_fmt, disk_rec.virtual_size, options)
            progress.start(f"restore {vm_rec.name}/{disk_rec.name}", index_bytes(index))
            with _open_writer(partial, out_fmt, run_dir) as writer:
                written = write_index(repo, index, writer, point=point, vm=vm_rec,
                                      disk=disk_rec, progress=progress, workers=workers)
            if target.exists() and not force:  # appeared while we worked
                raise TargetExists(target)
            os.replace(partial, target)
            dfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            progress.finish()
        except BackendError as e:  # the repository failed, not the target
            raise e.leaving(f"The restore target {target} was not completed; nothing "
                            "was left at it.") from e
        except OSError as e:
            reason = e.strerror or str(e)
            raise TargetError(target, reason, "Nothing was left at the target.") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    return RestoreResult(point.id, vm_rec.name, disk_rec.name, str(target), out_fmt,
                         disk_rec.virtual_size, written, round(time.time() - started, 3))


def fill_image(
    repo: Repository,
    point: Manifest,
    *,
    target: Path,
    vm: str | None = None,
    disk: str | None = None,
    fmt: str,
    progress: Progress | None = None,
    workers: int | None = None,
    run_dir: str | Path | None = None,
) -> RestoreResult:
    """Write one disk of ``point`` into ``target``, an empty image of ``fmt`` (or a
    block device) at least the disk's size that the caller made for it: a pool's new
    volume, which cannot be renamed into place. It is written in place; on failure
    the caller removes it (the errors say so)."""
    progress = progress or NoProgress()
    started = time.time()
    vm_rec, disk_rec = select_disk(point, vm, disk)
    index = repo.load_disk_index(point, vm_rec, disk_rec)
    with repo.shared_lock(f"restore {point.id[:12]}"):
        try:
            if stat.S_ISBLK(target.stat().st_mode):
                return _restore_to_block(repo, point, vm_rec, disk_rec, index, target,
                                         progress, workers, run_dir, started)
            progress.start(f"restore {vm_rec.name}/{disk_rec.name}", index_bytes(index))
            with _open_writer(target, fmt, run_dir) as writer:
                written = write_index(repo, index, writer, point=point, vm=vm_rec,
                                      disk=disk_rec, progress=progress, workers=workers)
            progress.finish()
        except BackendError as e:  # the repository failed, not the target
            raise e.leaving(f"The volume {target} was not completed and is removed "
                            "again.") from e
        except OSError as e:
            raise TargetError(target, e.strerror or str(e),
                              "The volume is removed again.") from e
    return RestoreResult(point.id, vm_rec.name, disk_rec.name, str(target), fmt,
                         disk_rec.virtual_size, written, round(time.time() - started, 3))


@contextlib.contextmanager
def _open_writer(path: Path, fmt: str, run_dir: str | Path | None) -> Iterator[BlockWriter]:
    """A new image, written directly when raw, else through qemu-nbd; durable on exit.

    Both write past the page cache where the file system allows it (measured on a
    1.4 GiB restore: the copies into the page cache were the largest CPU cost)."""
    direct = supports_direct(str(path))
    if fmt == "raw":
        raw = RawFile(str(path), writable=True, direct=direct)
        try:
            yield raw
            raw.sync()
        finally:
            raw.close()
        return
    with QemuNbd(path, fmt, writable=True, run_dir=run_dir,
                 cache="none" if direct else "writeback") as export:
        yield export
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def index_bytes(index: DiskIndex) -> int:
    return sum(index.chunk_length(i) for i, _ in index.stored())


def _restore_to_block(
    repo: Repository, point: Manifest, vm_rec: VmRecord, disk_rec: DiskRecord, index: DiskIndex,
    target: Path, progress: Progress, workers: int | None, run_dir: str | Path | None,
    started: float,
) -> RestoreResult:
    fd = os.open(target, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    if size < disk_rec.virtual_size:
        raise TargetError(target, f"the device has {size} bytes, the disk needs "
                          f"{disk_rec.virtual_size}", "It was left untouched.")
    progress.start(f"restore {vm_rec.name}/{disk_rec.name}", index_bytes(index))
    with QemuNbd(target, "raw", writable=True, run_dir=run_dir) as export:
        h = export.handle()
        # The device may hold old data: zero it first (a discard where it can).
        step = 1 << 30
        for off in range(0, disk_rec.virtual_size, step):
            h.zero(min(step, disk_rec.virtual_size - off), off)
        written = write_index(repo, index, export, point=point, vm=vm_rec, disk=disk_rec,
                              progress=progress, workers=workers)
    progress.finish()
    return RestoreResult(point.id, vm_rec.name, disk_rec.name, str(target), "raw",
                         disk_rec.virtual_size, written, round(time.time() - started, 3))
