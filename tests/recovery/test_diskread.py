"""The one random-access reader of a point's disk, shared by many threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stasis.protection.backup import back_up_images
from stasis.recovery.diskread import DiskReader
from stasis.repository import Repository
from tests.conftest import mixed_image


def test_threads_read_one_reader_and_each_chunk_loads_once(repo: Repository,
                                                           tmp_path: Path) -> None:
    image = mixed_image(tmp_path / "mixed.img")
    point = back_up_images(repo, [image], name="mixed")
    vm, disk = point.disks()[0]
    raw = image.read_bytes()
    reader = DiskReader.open(repo, point, vm, disk)
    stored = len(list(reader.index.stored()))
    gate = threading.Barrier(8)

    def read_all(n: int) -> bool:
        gate.wait()  # every thread asks for the same chunks at once
        step = 64 << 10
        return all(reader.read_at(o, step) == raw[o:o + step]
                   for o in range(n * 4096, len(raw), step))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(read_all, range(8)))
    assert reader.loads == stored  # concurrent misses of one chunk load it once


def test_extents_report_unstored_chunks_as_zero_runs(repo: Repository, tmp_path: Path) -> None:
    image = mixed_image(tmp_path / "mixed.img")
    point = back_up_images(repo, [image], name="mixed")
    vm, disk = point.disks()[0]
    reader = DiskReader.open(repo, point, vm, disk)
    runs = reader.extents(0, reader.size)
    assert sum(n for _, n, _ in runs) == reader.size
    assert [o for o, _, _ in runs] == sorted(o for o, _, _ in runs)
    cs = reader.chunk_size
    zero_chunks = {i for i, name in enumerate(reader.index.names())
                   if i not in dict(reader.index.stored())}
    for o, n, zero in runs:
        for i in range(o // cs, (o + n - 1) // cs + 1):
            assert (i in zero_chunks) == zero
    assert any(zero for _, _, zero in runs) and any(not zero for _, _, zero in runs)
    assert reader.loads == 0  # block status reads no chunk
