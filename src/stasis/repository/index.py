"""Disk indexes: the ordered chunk names of one disk at one instant.

Plaintext layout (sealed as kind 2, named by the keyed hash of this plaintext)::

    magic "STIX" | version:u16 = 1 | reserved:u16 | chunk_size:u32 |
    virtual_size:u64 | count:u64 | count × name(32)

Entry i covers bytes [i·chunk_size, min((i+1)·chunk_size, virtual_size)). An
all-zero name means the range reads as zeros and nothing is stored for it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

NAME_LEN = 32
ZERO_NAME = bytes(NAME_LEN)
MAGIC = b"STIX"
_HEADER = struct.Struct("<4sHHIQQ")


class IndexFormatError(Exception):
    pass


def chunk_count(virtual_size: int, chunk_size: int) -> int:
    return -(-virtual_size // chunk_size)


@dataclass
class DiskIndex:
    virtual_size: int
    chunk_size: int
    entries: list[bytes] = field(default_factory=list)

    @classmethod
    def empty(cls, virtual_size: int, chunk_size: int) -> DiskIndex:
        return cls(virtual_size, chunk_size, [ZERO_NAME] * chunk_count(virtual_size, chunk_size))

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 or self.virtual_size < 0:
            raise IndexFormatError("bad geometry")
        if len(self.entries) != chunk_count(self.virtual_size, self.chunk_size):
            raise IndexFormatError(
                f"{len(self.entries)} entries for a disk of {self.virtual_size} bytes"
            )

    def chunk_length(self, i: int) -> int:
        return min(self.chunk_size, self.virtual_size - i * self.chunk_size)

    def stored(self) -> list[tuple[int, bytes]]:
        """(entry number, name) of every entry that is not zero."""
        return [(i, n) for i, n in enumerate(self.entries) if n != ZERO_NAME]

    def encode(self) -> bytes:
        head = _HEADER.pack(
            MAGIC, 1, 0, self.chunk_size, self.virtual_size, len(self.entries)
        )
        return head + b"".join(self.entries)

    @classmethod
    def decode(cls, data: bytes) -> DiskIndex:
        if len(data) < _HEADER.size:
            raise IndexFormatError("index too short")
        magic, version, _r, chunk_size, virtual_size, count = _HEADER.unpack_from(data)
        if magic != MAGIC or version != 1:
            raise IndexFormatError("not a version 1 disk index")
        body = memoryview(data)[_HEADER.size :]
        if len(body) != count * NAME_LEN:
            raise IndexFormatError("index length does not match its count")
        entries = [bytes(body[i : i + NAME_LEN]) for i in range(0, len(body), NAME_LEN)]
        return cls(virtual_size, chunk_size, entries)
