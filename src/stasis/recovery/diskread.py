"""Random access to one disk of a point, straight from the repository.

:class:`DiskReader` answers ``read_at(offset, size)`` and ``extents(offset,
length)`` (and, being a read-only binary file object, ``read``/``seek``/``tell``)
from the disk's index: entry *i* covers bytes ``[i·chunk_size, …)``, an all-zero
name reads as zeros without a load, and every stored chunk is fetched and verified
by :func:`load_verified`. Decoded chunks are kept in a small LRU cache of a fixed
number of bytes, so a file system walked through it reads each metadata chunk once
and memory stays bounded whatever the disk's size. ``loads`` counts the chunks
fetched from the repository: what a small read from a large disk costs, in chunks,
for tests and benchmarks to assert on. File-level restore walks file systems
through it and the NBD export's plugin serves its many connections from it.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections import OrderedDict
from concurrent.futures import Future

from stasis.errors import BackendError, IntegrityError
from stasis.repository import DiskIndex, DiskRecord, Manifest, ObjectDamaged, Repository, VmRecord
from stasis.repository.index import ZERO_NAME

DEFAULT_CACHE_BYTES = 64 << 20


def load_verified(repo: Repository, index: DiskIndex, i: int, where: str,
                  consequence: str = "") -> bytes:
    """The plaintext of stored entry ``i`` of ``index``, verified (tag, decompression,
    name, length); a damaged chunk is quarantined and raised as an IntegrityError that
    names ``where`` (point, VM, disk) and the offset, then ``consequence`` (what the
    caller's work is left as)."""
    name = index.name(i)
    offset = i * index.chunk_size
    try:
        data = repo.load_chunk(name)
    except ObjectDamaged as e:
        with contextlib.suppress(BackendError):  # quarantine is best effort
            repo.quarantine_chunk(name)
        raise IntegrityError(
            f"Damaged data in {where}, offset {offset}: chunk {name.hex()[:16]} {e.reason}. "
            "The chunk was moved to quarantine; the next backup that meets the same data "
            "stores it again." + (f" {consequence}" if consequence else "")
        ) from None
    if len(data) != index.chunk_length(i):
        raise IntegrityError(
            f"Chunk {name.hex()[:16]} at offset {offset} of {where} has {len(data)} bytes, "
            f"expected {index.chunk_length(i)}."
        )
    return data


class DiskReader(io.RawIOBase):
    """A read-only, seekable view of one disk of a point.

    ``read_at`` and ``extents`` are thread-safe: many threads may read at once (an
    nbdkit plugin does), and concurrent reads of one chunk load it once. The file
    position of ``read``, ``seek`` and ``tell`` is one per reader, for one thread at
    a time (a file system walked through it).
    """

    def __init__(
        self,
        repo: Repository,
        index: DiskIndex,
        *,
        point: Manifest | None = None,
        vm: VmRecord | None = None,
        disk: DiskRecord | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        super().__init__()
        self.repo = repo
        self.index = index
        self.size = index.virtual_size
        self.chunk_size = index.chunk_size
        self.loads = 0  # chunks fetched from the repository (cache misses)
        self.zero_reads = 0  # zero entries served without a fetch
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._loading: dict[int, Future[bytes]] = {}  # chunks a thread is loading
        self._lock = threading.Lock()
        self._cache_chunks = max(2, cache_bytes // self.chunk_size)
        self._pos = 0
        self._where = (
            f"point {point.id[:12]}, VM {vm.name}, disk {disk.name}"
            if point is not None and vm is not None and disk is not None else "the disk"
        )

    @classmethod
    def open(
        cls, repo: Repository, point: Manifest, vm: VmRecord, disk: DiskRecord, **kw: int
    ) -> DiskReader:
        """A reader of ``disk`` of ``vm`` in ``point`` (its index loaded and verified)."""
        index = repo.load_disk_index(point, vm, disk)
        return cls(repo, index, point=point, vm=vm, disk=disk, **kw)

    # ------------------------------------------------------------------ chunks

    def _chunk(self, i: int) -> bytes | None:
        """The plaintext of entry ``i``, or None when it reads as zeros."""
        if self.index.name(i) == ZERO_NAME:
            with self._lock:
                self.zero_reads += 1
            return None
        with self._lock:
            data = self._cache.get(i)
            if data is not None:
                self._cache.move_to_end(i)
                return data
            loading = self._loading.get(i)
            if loading is None:
                loading = self._loading[i] = Future()
                mine = True
            else:
                mine = False
        if not mine:
            return loading.result()  # another thread loads it: wait for its result
        try:
            data = load_verified(self.repo, self.index, i, self._where)
        except BaseException as e:
            with self._lock:
                del self._loading[i]
            loading.set_exception(e)
            raise
        with self._lock:
            del self._loading[i]
            self.loads += 1
            self._cache[i] = data
            while len(self._cache) > self._cache_chunks:
                self._cache.popitem(last=False)
        loading.set_result(data)
        return data

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer only at the end of the disk)."""
        if offset < 0 or size < 0:
            raise ValueError("negative offset or size")
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        parts: list[bytes] = []
        pos = offset
        while pos < end:
            i, within = divmod(pos, self.chunk_size)
            take = min(self.index.chunk_length(i) - within, end - pos)
            data = self._chunk(i)
            parts.append(bytes(take) if data is None else data[within:within + take])
            pos += take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def extents(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        """(offset, length, is_zero) runs covering [offset, offset+length), by chunk."""
        runs: list[tuple[int, int, bool]] = []
        pos, end = offset, min(offset + length, self.size)
        while pos < end:
            i = pos // self.chunk_size
            stop = min((i + 1) * self.chunk_size, end)
            zero = self.index.name(i) == ZERO_NAME
            if runs and runs[-1][2] == zero:
                o, n, _ = runs[-1]
                runs[-1] = (o, n + stop - pos, zero)
            else:
                runs.append((pos, stop - pos, zero))
            pos = stop
        return runs

    # --------------------------------------------------------------- file-like

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        data = self.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        return n

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
        super().close()
