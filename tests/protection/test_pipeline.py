"""The backup's pipeline: chunks are written by writer threads while the compute goes
on. A failed put reaches the caller as the same error with nothing committed, a
cancel stops the run, and the chunks waiting for a writer are bounded."""

from __future__ import annotations

import errno
import random
import threading
import time
from pathlib import Path

import pytest

from stasis.backends import LocalBackend
from stasis.blockio.raw import RawFile
from stasis.errors import RepositoryFull
from stasis.parallel import Cancelled
from stasis.protection import backup
from stasis.protection.backup import back_up_images
from stasis.recovery.restore import restore_disk
from stasis.repository import Repository
from stasis.repository.repo import chunk_key
from tests.conftest import (
    CHEAP_KDF,
    PASSPHRASE,
    MiB,
    images_equal,
    mixed_image,
    reopen,
    write_image,
)

CHUNK = 256 << 10


class SlowStore(LocalBackend):
    """A local store whose chunk puts can be held, or fail from the n-th one."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.gate.set()
        self.fail_from: int | None = None
        self.puts = 0
        self.threads: set[str] = set()
        self._count = threading.Lock()

    def put(self, key: str, data: bytes | memoryview) -> None:
        if key.startswith("chunks/"):
            with self._count:
                self.puts += 1
                n = self.puts
            self.threads.add(threading.current_thread().name)
            self.gate.wait()
            if self.fail_from is not None and n >= self.fail_from:
                raise OSError(errno.ENOSPC, "No space left on device")
        super().put(key, data)


@pytest.fixture
def store(tmp_path: Path) -> SlowStore:
    return SlowStore(tmp_path / "repo")


@pytest.fixture
def slow_repo(store: SlowStore) -> Repository:
    return Repository.init(store, passphrase=PASSPHRASE.encode(), chunk_size=CHUNK,
                           kdf=CHEAP_KDF)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return mixed_image(tmp_path / "disk.raw")


def test_chunks_are_put_by_writer_threads_and_restore_bit_exact(
    slow_repo: Repository, store: SlowStore, image: Path, tmp_path: Path
) -> None:
    point = back_up_images(slow_repo, [image], name="d")
    assert store.threads and all(t.startswith("backup-put") for t in store.threads)
    # Committed means durable: a fresh instance of the store sees every chunk.
    fresh = reopen(slow_repo)
    index = fresh.load_index(point.vms[0].disks[0].index)
    for _i, name in index.stored():
        assert fresh.backend.exists(chunk_key(name))
    restore_disk(fresh, point, target=tmp_path / "out.raw", fmt="raw")
    assert images_equal(image, tmp_path / "out.raw")


def test_a_failed_put_on_a_writer_is_raised_and_nothing_is_committed(
    slow_repo: Repository, store: SlowStore, image: Path
) -> None:
    store.fail_from = 5  # after four chunks were written
    with pytest.raises(RepositoryFull) as e:
        back_up_images(slow_repo, [image], name="d")
    # The same error as a put on the caller's thread: translated once, at the boundary.
    assert e.value.exit_code == 18 and "not committed" in e.value.message
    assert reopen(slow_repo).points() == []
    store.fail_from = None
    assert back_up_images(slow_repo, [image], name="d").vms[0].disks[0].chunks_new > 0


def test_chunks_waiting_for_a_writer_are_bounded(
    slow_repo: Repository, store: SlowStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = write_image(tmp_path / "big.raw", 16 * MiB, [(0, random.randbytes(16 * MiB))])
    sealed: list[bytes] = []
    real_seal = slow_repo.seal_chunk

    def counting(name: bytes, data: bytes | memoryview) -> bytes:
        sealed.append(name)
        return real_seal(name, data)

    monkeypatch.setattr(slow_repo, "seal_chunk", counting)
    monkeypatch.setattr(backup, "WRITE_BYTES", CHUNK)  # the depth is then 2 per writer
    store.gate.clear()  # every put waits
    done: list[object] = []
    run = threading.Thread(target=lambda: done.append(back_up_images(slow_repo, [image],
                                                                     name="d")))
    run.start()
    depth = max(2 * backup.WRITERS, backup.WRITE_BYTES // CHUNK)
    workers = 4  # ordered_map's default on any machine with at most 2 cores
    bound = depth + backup.WRITERS + workers  # queued, being written, and sealing
    try:
        last, still = -1, 0
        while still < 20:  # until the pipeline stands still behind the held puts
            time.sleep(0.02)
            still, last = (still + 1, last) if len(sealed) == last else (0, len(sealed))
        assert 0 < len(sealed) <= bound
        assert not done
    finally:
        store.gate.set()
        run.join()
    assert done and len(sealed) > 2 * bound  # the image had far more to store


def test_cancel_stops_the_run_with_writes_in_flight(
    slow_repo: Repository, store: SlowStore, image: Path
) -> None:
    store.gate.clear()
    cancel = threading.Event()
    raised: list[BaseException] = []

    reader = RawFile(str(image))
    source = backup.DiskSource(name="disk", reader=reader, virtual_size=reader.size,
                               format="raw")

    def run() -> None:
        try:
            with slow_repo.shared_lock("test"):
                backup.back_up_disks(slow_repo, [source], name="d", kind="image",
                                     vms=[backup.VmRecord(name="d", kind="images")],
                                     cancel=cancel)
        except BaseException as e:
            raised.append(e)
        finally:
            reader.close()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        while store.puts == 0:
            time.sleep(0.01)
        cancel.set()
    finally:
        store.gate.set()
        worker.join()
    assert raised and isinstance(raised[0], Cancelled)
    assert reopen(slow_repo).points() == []



@pytest.mark.parametrize("parallel", [4, 16])
def test_the_writers_follow_the_requests_the_store_serves_at_once(
    tmp_path: Path, parallel: int
) -> None:
    store = SlowStore(tmp_path / "repo")
    store.parallel_requests = parallel  # a network store's (S3: 16)
    repo = Repository.init(store, passphrase=PASSPHRASE.encode(), chunk_size=CHUNK,
                           kdf=CHEAP_KDF)
    image = write_image(tmp_path / "big.raw", 16 * MiB, [(0, random.randbytes(16 * MiB))])
    store.gate.clear()  # every put waits: each writer holds one
    failed: list[BaseException] = []

    def run() -> None:
        try:
            back_up_images(repo, [image], name="d")
        except BaseException as e:
            failed.append(e)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 60
    while store.puts < parallel and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.01)
    store.gate.set()
    t.join()
    assert not failed
    # as many writers as the store asks for (the queue of 2 each fits in 32 MiB)
    assert len(store.threads) == parallel == backup.writer_count(parallel, CHUNK)


def test_writers_and_readers_stay_within_their_queue() -> None:
    from stasis.parallel import default_workers
    from stasis.recovery.restore import reader_count

    assert backup.writer_count(16, 1 * MiB) == 16
    assert backup.writer_count(16, 4 * MiB) == 4  # 2 × 4 × 4 MiB = 32 MiB
    assert backup.writer_count(4, 1 * MiB) == 4 == backup.writer_count(1, 32 * MiB)
    assert reader_count(16, 1 * MiB) == max(16, default_workers())
    assert reader_count(16, 4 * MiB) == reader_count(4, 1 * MiB) == default_workers()
