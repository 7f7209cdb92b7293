"""Restore's writes: bit-exact from writer threads, holes left as holes, durable before
success, and a failed write leaves nothing that looks like a finished image."""

from __future__ import annotations

import errno
import fcntl
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stasis.blockio.raw import RawFile, supports_direct
from stasis.errors import TargetError
from stasis.protection.backup import back_up_images
from stasis.recovery import restore
from stasis.recovery.restore import restore_disk
from stasis.repository import Manifest, Repository
from tests.conftest import MiB, allocated, images_equal, leftovers, write_image


def _holey_image(path: Path) -> Path:
    """Chunks (256 KiB in the test repository) holding data with zero runs of 64 KiB
    and more inside them, and an end that is not a multiple of 4 KiB."""
    rnd = random.Random(7)
    size = 6 * MiB + 1536  # the last range cannot be written with O_DIRECT
    return write_image(path, size, [
        (0, rnd.randbytes(64 << 10)),  # then 192 KiB of zeros in the same chunk
        (MiB, rnd.randbytes(64 << 10)),
        (MiB + (128 << 10), rnd.randbytes(64 << 10)),  # a 64 KiB zero run between
        (3 * MiB + 100, rnd.randbytes(300 << 10)),  # across a chunk boundary
        (size - 5000, rnd.randbytes(5000)),
    ])


def _nonzero_bytes(path: Path, block: int = 64 << 10) -> int:
    """Bytes of ``path`` in blocks of ``block`` that are not all zeros."""
    data = path.read_bytes()
    return sum(len(data[o:o + block]) for o in range(0, len(data), block)
               if data[o:o + block].count(0) != len(data[o:o + block]))


@pytest.fixture
def holey(repo: Repository, tmp_path: Path) -> tuple[Path, Manifest, int]:
    src = _holey_image(tmp_path / "holey.raw")
    return src, back_up_images(repo, [src], name="holey"), _nonzero_bytes(src)


def _record_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bool]]:
    """(offset, length, O_DIRECT) of every pwrite, from any thread."""
    calls: list[tuple[int, int, bool]] = []
    real = os.pwrite

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        calls.append((offset, len(data), direct))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    return calls


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_holes_stay_holes_and_zeros_are_never_written(
    repo: Repository, holey: tuple[Path, Manifest, int], tmp_path: Path, fmt: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, point, data = holey
    calls = _record_writes(monkeypatch)
    out = tmp_path / f"out.{fmt}"
    result = restore_disk(repo, point, target=out, fmt=fmt)
    assert images_equal(src, out)
    assert result.bytes_written == data  # the non-zero runs only, nothing more
    if fmt == "raw":
        assert allocated(out) <= data + (64 << 10)
        assert sum(length for _o, length, _d in calls) == data
        if supports_direct(str(out)):
            # Every aligned range went past the page cache; only the tail did not.
            buffered = [(o, n) for o, n, direct in calls if not direct]
            assert buffered == [(o, n) for o, n, _d in calls if (o | n) % 4096]
            assert len(buffered) == 1


def test_the_image_is_fsynced_before_it_is_renamed_into_place(
    repo: Repository, holey: tuple[Path, Manifest, int], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, point, _data = holey
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.fstat(fd).st_ino))

    def replace(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        events.append(("replace", os.stat(a).st_ino))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    for fmt in ("raw", "qcow2"):
        events.clear()
        out = tmp_path / f"synced.{fmt}"
        restore_disk(repo, point, target=out, fmt=fmt)
        inode = os.stat(out).st_ino
        renamed = events.index(("replace", inode))
        assert ("fsync", inode) in events[:renamed]  # the data was durable first
        parent = os.stat(tmp_path).st_ino
        assert ("fsync", parent) in events[renamed:]  # and then the rename
        assert images_equal(src, out)


def _fail_third_write(monkeypatch: pytest.MonkeyPatch) -> OSError:
    error = OSError(errno.EIO, "Input/output error")
    real = RawFile.write
    count = [0]

    def write(self: RawFile, data: bytes | memoryview, offset: int) -> None:
        count[0] += 1
        if count[0] == 3:
            raise error
        real(self, data, offset)

    monkeypatch.setattr(RawFile, "write", write)
    return error


def test_a_failed_write_raises_it_and_leaves_nothing_at_the_target(
    repo: Repository, holey: tuple[Path, Manifest, int], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _src, point, _data = holey
    error = _fail_third_write(monkeypatch)
    out = tmp_path / "out" / "disk.raw"
    out.parent.mkdir()
    with pytest.raises(TargetError) as caught:
        restore_disk(repo, point, target=out, fmt="raw")
    assert caught.value.__cause__ is error  # the writer thread's own error
    assert "Nothing was left at the target" in str(caught.value)
    assert list(out.parent.iterdir()) == []
    assert leftovers(tmp_path) == []


def test_a_full_disk_mid_restore_leaves_nothing_at_the_target(
    repo: Repository, tmp_path: Path, tmpfs: Path,
) -> None:
    # The writer threads' writes fail there (O_DIRECT where the kernel has it for
    # tmpfs, 6.6 and later, else through the page cache).
    src = write_image(tmp_path / "big.raw", 16 * MiB, [(0, os.urandom(8 * MiB))])
    point = back_up_images(repo, [src])
    out = tmpfs / "disk.raw"
    with pytest.raises(TargetError) as caught:
        restore_disk(repo, point, target=out, fmt="raw")
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC
    assert list(tmpfs.iterdir()) == []


def test_writes_wait_for_a_writer_with_bounded_memory(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Slow writes hold up the compute threads instead of piling verified chunks up."""
    monkeypatch.setattr(restore, "WRITE_BYTES", 0)  # the bound: 2 chunks per writer
    src = write_image(tmp_path / "many.raw", 16 * MiB, [(0, os.urandom(16 * MiB))])
    point = back_up_images(repo, [src])
    waiting = [0]
    peak = [0]
    lock = threading.Lock()
    real: Callable[[RawFile, bytes | memoryview, int], None] = RawFile.write
    loaded = restore.load_verified

    def load(*args: object, **kw: object) -> bytes:
        data = loaded(*args, **kw)  # type: ignore[arg-type]
        with lock:
            waiting[0] += 1
            peak[0] = max(peak[0], waiting[0])
        return data

    def write(self: RawFile, data: bytes | memoryview, offset: int) -> None:
        time.sleep(0.005)
        real(self, data, offset)
        with lock:
            waiting[0] -= 1

    monkeypatch.setattr(restore, "load_verified", load)
    monkeypatch.setattr(RawFile, "write", write)
    out = tmp_path / "many.out"
    restore_disk(repo, point, target=out, fmt="raw", workers=2)
    assert images_equal(src, out)
    # At most 2 per writer submitted and not yet written, and one more held by each of
    # the 2 compute threads while it waits to submit; unbounded, all 64 would pile up.
    assert peak[0] <= 2 * restore.WRITERS + 2
