"""Raw files written past the page cache: any range, from many threads, same bytes."""

from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path

import pytest

from stasis.blockio.raw import RawFile, supports_direct

MiB = 1 << 20


def _write_all(path: Path, pieces: list[tuple[int, bytes]], *, direct: bool) -> None:
    raw = RawFile(str(path), writable=True, direct=direct)
    try:
        threads = [threading.Thread(target=raw.write, args=(data, off)) for off, data in pieces]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        raw.sync()
    finally:
        raw.close()


def _pieces(size: int) -> list[tuple[int, bytes]]:
    rnd = random.Random(3)
    return [
        (0, rnd.randbytes(MiB)),  # aligned: O_DIRECT
        (2 * MiB, rnd.randbytes(256 << 10)),
        (3 * MiB + 512, rnd.randbytes(5000)),  # unaligned start and length
        (4 * MiB, rnd.randbytes(4096 * 3 + 1)),  # aligned start, unaligned length
        (size - 1536, rnd.randbytes(1536)),  # the tail of an odd-sized image
    ]


def _expected(size: int, pieces: list[tuple[int, bytes]]) -> bytes:
    buf = bytearray(size)
    for off, data in pieces:
        buf[off:off + len(data)] = data
    return bytes(buf)


@pytest.mark.parametrize("direct", [True, False])
def test_writes_read_back_exactly(tmp_path: Path, direct: bool) -> None:
    size = 6 * MiB + 1536
    path = tmp_path / "img.raw"
    with open(path, "wb") as f:
        f.truncate(size)
    pieces = _pieces(size)
    _write_all(path, pieces, direct=direct)
    assert path.read_bytes() == _expected(size, pieces)
    assert os.stat(path).st_blocks * 512 < 2 * MiB  # untouched ranges stay holes


def test_a_file_system_without_o_direct_is_written_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_open = os.open

    def no_direct(path: str, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:  # what a file system without O_DIRECT answers
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    size = 6 * MiB + 1536
    path = tmp_path / "img.raw"
    with open(path, "wb") as f:
        f.truncate(size)
    assert not supports_direct(str(path))
    pieces = _pieces(size)
    _write_all(path, pieces, direct=True)
    assert path.read_bytes() == _expected(size, pieces)


def test_direct_reads_give_the_bytes_written_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backup reads a raw image with O_DIRECT where it can: every range reads what
    was written, also bytes still dirty in the page cache (not yet written back), the
    short tail of an odd-sized image and unaligned ranges, from several threads."""
    size = 6 * MiB + 1536
    path = tmp_path / "img.raw"
    rnd = random.Random(5)
    content = bytearray(rnd.randbytes(size))
    path.write_bytes(bytes(content))
    os.sync()
    with open(path, "r+b") as f:  # dirty in the page cache when read below
        f.seek(MiB + 4096)
        f.write(b"\xAB" * 8192)
    content[MiB + 4096:MiB + 4096 + 8192] = b"\xAB" * 8192
    direct_reads = []
    real_preadv = os.preadv

    def counting(fd: int, buffers: list[memoryview], offset: int) -> int:
        direct_reads.append(offset)
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", counting)
    ranges = [(i * MiB, MiB) for i in range(7)] + [(3 * MiB + 512, 5000), (4096, 4096)]
    raw = RawFile(str(path), direct=True)
    try:
        got: dict[tuple[int, int], bytes] = {}
        threads = [threading.Thread(target=lambda r=r: got.__setitem__(r, raw.read(*r)))
                   for r in ranges]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        raw.close()
    for off, length in ranges:
        want = bytes(content[off:off + length])
        assert got[(off, length)] == want + bytes(length - len(want)), (off, length)
    if supports_direct(str(path)):
        assert sorted(set(direct_reads)) == sorted({o for o, n in ranges if o % 4096 == 0
                                                    and n % 4096 == 0})
    else:
        assert direct_reads == []
