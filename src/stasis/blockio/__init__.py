"""Block I/O: sources and targets of the data path, and their extents.

A source is anything with ``read(offset, length)`` and ``data_extents(size)``: an
NBD export (qemu-nbd for formats that need QEMU, QEMU itself for running VMs,
through libvirt) read with libnbd, one connection per worker thread, or a raw file
or block device read directly (:mod:`stasis.blockio.raw`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class BlockReader(Protocol):
    """What the backup pipeline reads from. ``read`` is called from many threads."""

    def read(self, offset: int, length: int) -> bytes: ...

    def data_extents(self, size: int) -> Iterator[tuple[int, int]]:
        """(offset, length) of every range that may hold non-zero data, in order."""
        ...


class BlockWriter(Protocol):
    """What restore writes to. ``write`` is called from many threads."""

    def write(self, data: bytes | memoryview, offset: int) -> None: ...
