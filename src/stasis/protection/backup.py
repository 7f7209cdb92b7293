"""The backup data path: NBD export → chunks → repository → index → manifest.

For each disk: block status gives the extents that hold data (and, for an
incremental, the dirty ones); the chunks to read are those extents aligned to the
chunk grid. Each chunk is read, checked for zeros, named by the keyed hash, and
stored only if the repository lacks it, by writer threads, so that reading, hashing,
compression and encryption go on while a put waits on its fsync. The disk index is
the parent's with the read entries replaced: its pages without a changed entry are the
parent's, and the others are stored as they fill. The manifest is written last, after
every chunk and index it references is durable (the backend's put is durable when it
returns).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stasis import __version__
from stasis.blockio import BlockReader, images
from stasis.blockio.nbd import QemuNbd
from stasis.blockio.raw import RawFile
from stasis.errors import BackendError, SourceUnreadable, UsageError
from stasis.parallel import Background, Cancelled, ordered_map
from stasis.progress import NoProgress, Progress
from stasis.repository import (
    ZERO_NAME,
    DiskIndex,
    DiskRecord,
    Manifest,
    ObjectDamaged,
    Repository,
    VmRecord,
)
from stasis.repository.index import IndexBuilder
from stasis.repository.repo import new_point_id, utc_now_iso


@dataclass
class DiskSource:
    """One disk to back up."""

    name: str
    reader: BlockReader
    virtual_size: int
    format: str
    source: str = ""
    format_options: dict[str, Any] = field(default_factory=dict)
    # Incremental: the parent's index and the extents changed since it was taken.
    parent_index: DiskIndex | None = None
    changed: Callable[[], Iterable[tuple[int, int]]] | None = None
    reason: str = ""
    vm: int = 0  # which VmRecord of the point it belongs to
    role: str = "disk"  # disk, or a file's role (nvram, kernel...)
    checkpoint: str = ""
    source_kind: str = "file"

    @property
    def incremental(self) -> bool:
        return self.parent_index is not None and self.changed is not None


@dataclass
class ChunkPlan:
    read: list[int]  # entry numbers to read
    # Incremental: the entries that changed since the parent (the others are the
    # parent's); None for a full backup, where every entry not read is zero.
    changed: set[int] | None
    bytes_to_read: int
    # Incremental: for a chunk only partly dirty, the dirty (start, end) ranges within
    # it. Only those are read from the source; the rest comes from the parent's chunk.
    partial: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    chunk_bytes: int = 0  # what the chunks to read span: the progress bar's total


def _by_chunk(ranges: Iterable[tuple[int, int]], chunk_size: int
              ) -> dict[int, list[tuple[int, int]]]:
    """Split extents along the chunk grid: chunk number -> [(start, end)] within it."""
    found: dict[int, list[tuple[int, int]]] = {}
    for off, length in ranges:
        end = off + length
        while off < end:
            i = off // chunk_size
            stop = min(end, (i + 1) * chunk_size)
            pieces = found.setdefault(i, [])
            start = off - i * chunk_size
            if pieces and pieces[-1][1] == start:
                pieces[-1] = (pieces[-1][0], stop - i * chunk_size)
            else:
                pieces.append((start, stop - i * chunk_size))
            off = stop
    return found


def plan_chunks(src: DiskSource, chunk_size: int) -> ChunkPlan:
    """Which chunks hold data (and changed): block status, aligned to the grid."""
    size = src.virtual_size
    data = set(_by_chunk(src.reader.data_extents(size), chunk_size))
    partial: dict[int, list[tuple[int, int]]] = {}
    if src.changed is None or src.parent_index is None:
        read = sorted(data)
        changed = None
        total = sum(min(chunk_size, size - i * chunk_size) for i in read)
    else:
        dirty = _by_chunk(src.changed(), chunk_size)
        read = sorted(set(dirty) & data)
        changed = set(dirty)
        total = 0
        for i in read:
            length = min(chunk_size, size - i * chunk_size)
            covered = sum(e - s for s, e in dirty[i])
            if covered < length:
                partial[i] = dirty[i]
                total += covered
            else:
                total += length
    spanned = sum(min(chunk_size, size - i * chunk_size) for i in read)
    return ChunkPlan(read=read, changed=changed, bytes_to_read=total, partial=partial,
                     chunk_bytes=spanned)


# Writer threads for the puts: each put waits on its fsync (locally, where the
# journal commits several together) or on the network (S3). At least WRITERS, up to
# the backend's parallel_requests while that many chunks, twice over, fit in
# WRITE_BYTES (S3 at 1 MiB chunks: 16 writers, 73 against 56 MiB/s PUT with 4 on
# SeaweedFS; at 4 MiB: 4, where its PUTs peak).
WRITERS = 4
NOT_COMMITTED = ("Nothing was committed: the point is not in the repository (its chunks "
                 "written so far are reused by the next backup or removed by gc), and the "
                 "points committed before are intact.")
WRITE_BYTES = 32 << 20  # sealed chunks waiting for a writer, at most (or 2 per writer)


def writer_count(parallel_requests: int, chunk_size: int) -> int:
    """Threads that put (or write) chunks at once, for a store that serves
    ``parallel_requests`` best: the queue of 2 per writer stays within WRITE_BYTES."""
    return max(WRITERS, min(parallel_requests, WRITE_BYTES // (2 * chunk_size)))


@dataclass
class _Stats:
    bytes_read: int = 0
    bytes_new: int = 0
    stored_new: int = 0
    chunks_new: int = 0


class ChunkStore:
    """Reads, names and stores chunks for one backup run, across all its disks."""

    def __init__(self, repo: Repository, *, workers: int | None = None, progress: Progress,
                 cancel: threading.Event | None = None) -> None:
        self.repo = repo
        self.cancel = cancel or threading.Event()
        self.workers = workers
        self.progress = progress
        self.chunk_size = repo.chunk_size
        self._zeros = bytes(self.chunk_size)
        self._seen: set[bytes] = set()
        self._seen_lock = threading.Lock()
        self._writes: Background | None = None  # while back_up runs

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Puts off the compute threads: a chunk sealed is handed to a writer, and the
        compute goes on while it is written and fsynced. At most WRITE_DEPTH sealed
        chunks wait, so memory stays bounded. On a normal exit every put has finished
        (the caller may then store the index and commit); a failed put is raised here,
        the same error, and nothing is committed."""
        writers = writer_count(self.repo.backend.parallel_requests, self.chunk_size)
        depth = max(2 * writers, WRITE_BYTES // self.chunk_size)
        with Background(workers=writers, depth=depth, name="backup-put") as writes:
            self._writes = writes
            try:
                yield
                writes.join()
            finally:
                self._writes = None

    def _read(self, src: DiskSource, i: int, ranges: list[tuple[int, int]] | None,
              stats: _Stats) -> bytes:
        """The chunk's content now: read whole, or only its dirty ranges laid over the
        parent point's chunk (verified like every read), so the source is read exactly
        where it changed."""
        offset = i * self.chunk_size
        length = min(self.chunk_size, src.virtual_size - offset)
        if ranges and src.parent_index is not None:
            base_name = src.parent_index.name(i)
            try:
                base = (bytes(length) if base_name == ZERO_NAME
                        else self.repo.load_chunk(base_name))
            except ObjectDamaged:
                base = b""  # the parent's copy is unusable: read the whole chunk
                with contextlib.suppress(BackendError):
                    self.repo.quarantine_chunk(base_name)  # promise 2: met, moved aside
            if len(base) == length:
                buf = bytearray(base)
                for start, end in ranges:
                    buf[start:end] = src.reader.read(offset + start, end - start)
                return bytes(buf)
            with self._seen_lock:  # fell back to a whole read: count it
                stats.bytes_read += length - sum(e - s for s, e in ranges)
        return src.reader.read(offset, length)

    def _one(self, src: DiskSource, i: int, stats: _Stats,
             partial: dict[int, list[tuple[int, int]]]) -> bytes:
        if self.cancel.is_set():
            raise Cancelled()
        offset = i * self.chunk_size
        length = min(self.chunk_size, src.virtual_size - offset)
        data = self._read(src, i, partial.get(i), stats)
        self.progress.advance(length)
        if data == (self._zeros if length == self.chunk_size else bytes(length)):
            return ZERO_NAME
        name = self.repo.chunk_name(data)
        with self._seen_lock:
            if name in self._seen:
                return name
        if not self.repo.has_chunk(name):
            blob = self.repo.seal_chunk(name, data)
            stored = len(blob)
            writes = self._writes
            assert writes is not None, "chunks are stored within back_up"
            writes.submit(lambda: self.repo.put_chunk(name, blob))
            with self._seen_lock:
                stats.bytes_new += length
                stats.stored_new += stored
                stats.chunks_new += 1
        with self._seen_lock:
            self._seen.add(name)
        return name

    def back_up(self, src: DiskSource, plan: ChunkPlan) -> tuple[DiskIndex, _Stats]:
        stats = _Stats(bytes_read=plan.bytes_to_read)
        index = IndexBuilder(src.virtual_size, self.chunk_size, base=src.parent_index,
                             changed=plan.changed, emit=self.repo.page_emitter())
        results = ordered_map(
            lambda i: self._one(src, i, stats, plan.partial), plan.read, workers=self.workers,
            name="backup",
        )
        with self._writing(), contextlib.closing(results):
            for i, name in results:
                index.set(i, name)
        return index.finish(), stats


def back_up_disks(
    repo: Repository,
    sources: Sequence[DiskSource],
    *,
    name: str,
    kind: str,
    vms: list[VmRecord],
    tags: dict[str, str] | None = None,
    point_id: str | None = None,
    parent: Manifest | None = None,
    point_time: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    extra_timings: dict[str, float] | None = None,
    cancel: threading.Event | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Back up ``sources`` (already open) into one point and commit it.

    Each source names the VmRecord of ``vms`` it belongs to. The caller holds a
    shared repository lock. Setting ``cancel`` (from another thread) stops the run
    with :class:`Cancelled` before anything is committed.
    """
    progress = progress or NoProgress()
    started = time.time()
    point_time = point_time or utc_now_iso()
    store = ChunkStore(repo, workers=workers, progress=progress, cancel=cancel)
    try:
        plans = [plan_chunks(src, repo.chunk_size) for src in sources]
        progress.start(f"backup {name}", sum(p.chunk_bytes for p in plans))
        for src, plan in zip(sources, plans, strict=True):
            index, stats = store.back_up(src, plan)
            index_name = repo.store_index(index)
            vm = vms[src.vm]
            (vm.disks if src.role == "disk" else vm.files).append(
                DiskRecord(
                    name=src.name,
                    index=index_name,
                    virtual_size=src.virtual_size,
                    format=src.format,
                    source=src.source,
                    mode="incremental" if src.incremental else "full",
                    reason=src.reason,
                    bytes_read=stats.bytes_read,
                    bytes_new=stats.bytes_new,
                    stored_new=stats.stored_new,
                    chunks_new=stats.chunks_new,
                    format_options=src.format_options,
                    checkpoint=src.checkpoint,
                    source_kind=src.source_kind,
                )
            )
        progress.finish()
    except BackendError as e:
        raise e.instead(NOT_COMMITTED) from e
    except OSError as e:
        # The repository's failures arrive translated (BackendError): an OSError here
        # is the source's.
        raise SourceUnreadable(", ".join(s.source or s.name for s in sources),
                               e.strerror or str(e)) from e
    ended = time.time()
    manifest = Manifest(
        id=point_id or new_point_id(),
        name=name,
        time=point_time,
        kind=kind,
        parent=parent.id if parent else None,
        tags=dict(tags or {}),
        host=socket.gethostname(),
        chunk_size=repo.chunk_size,
        vms=vms,
        timings={"start": started, "end": ended, "duration_s": round(ended - started, 3),
                 **(extra_timings or {})},
        stasis_version=__version__,
        extra=dict(extra or {}),
    )
    if store.cancel.is_set():
        raise Cancelled()
    repo.commit(manifest)
    return manifest


@contextlib.contextmanager
def open_reader(
    info: images.ImageInfo, run_dir: str | Path | None = None
) -> Iterator[BlockReader]:
    """Read raw images and devices directly; everything else through qemu-nbd."""
    if info.format == "raw":
        raw = RawFile(info.path, direct=True)  # read once: past the page cache
        try:
            yield raw
        finally:
            raw.close()
    else:
        with QemuNbd(info.path, info.format, run_dir=run_dir) as export:
            yield export


def _disk_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = p.name or "disk"
        candidate, n = base, 2
        while candidate in names:
            candidate, n = f"{base}-{n}", n + 1
        names.append(candidate)
    return names


def back_up_images(
    repo: Repository,
    paths: Sequence[str | Path],
    *,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    fmt: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    run_dir: str | Path | None = None,
) -> Manifest:
    """Back up disk images or block devices into one point named ``name``."""
    if not paths:
        raise UsageError("give at least one image or block device to back up")
    infos = [images.inspect(p, fmt) for p in paths]  # every source checked before any write
    point_name = name or Path(paths[0]).name
    point_time = utc_now_iso()
    with repo.shared_lock(f"backup {point_name}"):
        parent = repo.latest(point_name)
        with contextlib.ExitStack() as stack:
            sources = []
            for info, disk_name in zip(infos, _disk_names([Path(p) for p in paths]), strict=True):
                reader = stack.enter_context(open_reader(info, run_dir))
                sources.append(
                    DiskSource(
                        name=disk_name,
                        reader=reader,
                        virtual_size=info.virtual_size,
                        format=info.format,
                        source=str(Path(info.path).resolve()),
                        format_options=info.options,
                        reason="disk image: every allocated range read, "
                        "known chunks not stored again",
                    )
                )
            vm = VmRecord(name=point_name, kind="images")
            return back_up_disks(
                repo,
                sources,
                name=point_name,
                kind="image",
                vms=[vm],
                tags=tags,
                parent=parent,
                point_time=point_time,
                progress=progress,
                workers=workers,
            )
