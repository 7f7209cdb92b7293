"""Random access to one disk of a point, straight from the repository.

:class:`DiskReader` answers ``read_at(offset, size)`` (and, being a read-only
binary file object, ``read``/``seek``/``tell``) from the disk's index: entry *i*
covers bytes ``[i·chunk_size, …)``, an all-zero name reads as zeros without a
load, and every stored chunk is fetched and verified by
:meth:`Repository.load_chunk`. Decoded chunks are kept in a small LRU cache of a
fixed number of bytes, so a file system walked through it reads each metadata
chunk once and memory stays bounded whatever the disk's size. ``loads`` counts
the chunks fetched from the repository: what a small read from a large disk
costs, in chunks, for tests and benchmarks to assert on.
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict

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
    name = index.entries[i]
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

    Not thread-safe: one reader per thread (they may share a repository).
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
        name = self.index.entries[i]
        if name == ZERO_NAME:
            self.zero_reads += 1
            return None
        data = self._cache.get(i)
        if data is not None:
            self._cache.move_to_end(i)
            return data
        data = load_verified(self.repo, self.index, i, self._where)
        self.loads += 1
        self._cache[i] = data
        while len(self._cache) > self._cache_chunks:
            self._cache.popitem(last=False)
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
        self._cache.clear()
        super().close()
