"""Copies to S3 and repairs between sites: ``copy`` into a repository on SeaweedFS
(shared key and own key) and once on Ceph RGW; a copy whose S3 server is killed
mid-copy fails clearly, commits nothing but whole points, and a rerun after the
server is back sends only what is missing; ``verify --repair-from`` heals a chunk
corrupted on disk in a local repository from its S3 copy, and one damaged on S3 from
the local source, and says what it could not heal. One bucket per server, a prefix
per test."""

from __future__ import annotations

import random
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from stasis.backends import open_backend
from stasis.errors import StasisError
from stasis.protection.backup import back_up_images
from stasis.protection.copy import copy_points
from stasis.protection.verify import verify
from stasis.recovery.restore import restore_disk
from stasis.repository import Credentials, Repository
from stasis.repository.repo import chunk_key
from tests.conftest import CHEAP_KDF, MiB, init_repo, mixed_image

DEST_PASSPHRASE = b"the other site's passphrase"
CHUNK = 256 << 10


@pytest.fixture(scope="module")
def weed_bucket(seaweedfs: Any) -> str:
    return str(seaweedfs.new_bucket())


def _s3_dest(server: Any, bucket: str, *, key_from: Repository | None = None) -> str:
    url = str(server.url(bucket, f"t-{uuid.uuid4().hex[:10]}"))
    Repository.init(open_backend(url), passphrase=DEST_PASSPHRASE, chunk_size=CHUNK,
                    kdf=CHEAP_KDF, key_from=key_from)
    return url


def _open(url: str) -> Repository:
    return Repository.open(open_backend(url), Credentials(passphrase=DEST_PASSPHRASE))


def _change(image: Path, seed: int, count: int = 6) -> None:
    rnd = random.Random(seed)
    with open(image, "r+b") as f:
        for _ in range(count):
            f.seek(rnd.randrange(0, 20 * MiB))
            f.write(rnd.randbytes(4096))


@pytest.fixture
def source(tmp_path: Path) -> Repository:
    return init_repo(tmp_path / "src", chunk_size=CHUNK)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return mixed_image(tmp_path / "disk.raw")


def _two_points(source: Repository, image: Path) -> list[str]:
    first = back_up_images(source, [image], name="web")
    _change(image, seed=2)
    second = back_up_images(source, [image], name="web")
    return [first.id, second.id]


def _copy_and_restore(source: Repository, url: str, image: Path, tmp_path: Path,
                      *, shared: bool) -> None:
    made = _two_points(source, image)
    report = copy_points(source, _open(url), source.points())
    assert report.shared_key is shared and report.copied == made
    again = copy_points(source, _open(url), source.points())
    assert again.objects_sent == 0 and again.skipped == made
    there = _open(url)
    assert verify(there, deep=True).ok
    target = tmp_path / "restored.raw"
    restore_disk(there, there.resolve(made[-1]), target=target, fmt="raw")
    assert target.read_bytes() == image.read_bytes()


@pytest.mark.parametrize("shared", [True, False], ids=["shared-key", "own-key"])
def test_copy_to_seaweedfs(seaweedfs: Any, weed_bucket: str, source: Repository,
                           image: Path, tmp_path: Path, shared: bool) -> None:
    url = _s3_dest(seaweedfs, weed_bucket, key_from=source if shared else None)
    _copy_and_restore(source, url, image, tmp_path, shared=shared)


@pytest.mark.slow
def test_copy_to_rgw(rgw: Any, source: Repository, image: Path, tmp_path: Path) -> None:
    url = _s3_dest(rgw, rgw.new_bucket())
    _copy_and_restore(source, url, image, tmp_path, shared=False)


def test_a_copy_survives_its_s3_server_killed_mid_copy(
        seaweedfs: Any, weed_bucket: str, source: Repository, image: Path) -> None:
    for seed in range(3):
        _change(image, seed=10 + seed, count=100)  # each point changes most chunks
        back_up_images(source, [image], name="web")
    url = _s3_dest(seaweedfs, weed_bucket)
    dest = _open(url)
    watch = open_backend(url)
    outcome: dict[str, Any] = {}
    committed: list[str] = []

    def run() -> None:
        try:
            # 2 MiB/s: each point takes seconds to send, so the kill lands inside the
            # second point's copy whatever the load.
            outcome["report"] = copy_points(source, dest, source.points(), rate=2 * MiB,
                                            on_point=lambda p: committed.append(p.id))
        except StasisError as e:
            outcome["error"] = e

    def chunks() -> int:
        return sum(1 for _ in watch.list("chunks/"))

    worker = threading.Thread(target=run)
    worker.start()
    pause = threading.Event()
    try:
        # Killed once the first point is committed and objects of the second arrived.
        while not committed and worker.is_alive():
            pause.wait(0.05)
        first = chunks()
        while chunks() < first + 5 and worker.is_alive():
            pause.wait(0.05)
        seaweedfs.kill()
        worker.join(120)
        assert not worker.is_alive()
    finally:
        seaweedfs.start()
    error = outcome.get("error")
    assert error is not None, outcome  # the copy failed, and says where
    assert error.exit_code in (21, 44) and seaweedfs.endpoint in error.message, error.message
    # Nothing committed there beyond whole points, each of which verifies deep.
    there = _open(url)
    ids = sorted(there.point_ids())
    assert set(committed) <= set(ids) and 1 <= len(ids) < 3
    assert verify(there, deep=True).ok
    resumed = copy_points(source, _open(url), source.points())
    assert sorted(resumed.skipped) == ids and len(resumed.copied) == 3 - len(ids)
    # What the killed copy had sent of the next point was found there, not sent again.
    assert resumed.objects_present >= 5
    final = _open(url)
    assert len(final.point_ids()) == 3 and verify(final, deep=True).ok


def _corrupt_file(repo_root: Path, name: bytes) -> None:
    path = repo_root / chunk_key(name)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _a_chunk(repo: Repository, point: str) -> bytes:
    m = repo.load_manifest(point)
    root = repo.load_index(m.vms[0].disks[0].index)
    return next(n for n in root.names() if n != bytes(len(n)))


@pytest.mark.parametrize("shared", [True, False], ids=["shared-key", "own-key"])
def test_repair_a_local_chunk_from_the_s3_copy_and_back(
        seaweedfs: Any, weed_bucket: str, source: Repository, image: Path, tmp_path: Path,
        shared: bool) -> None:
    made = _two_points(source, image)
    url = _s3_dest(seaweedfs, weed_bucket, key_from=source if shared else None)
    copy_points(source, _open(url), source.points())
    # A chunk corrupted on disk at the local source: healed from S3.
    bad = _a_chunk(source, made[-1])
    _corrupt_file(tmp_path / "src", bad)
    report = verify(source, deep=True, repair_from=_open(url))
    assert report.problems and all(p.healed for p in report.problems)
    assert report.ok and report.repair is not None
    assert report.repair.healed == [bad.hex()] and report.repair.unhealed == []
    assert report.quarantined  # the damaged bytes stay in quarantine, as verify does
    assert verify(source, deep=True).ok
    # A chunk damaged on S3: healed from the local source.
    there = _open(url)
    bad_there = _a_chunk(there, made[0])
    there.backend.put(chunk_key(bad_there), b"not a sealed chunk at all")
    report = verify(there, deep=True, repair_from=source)
    assert report.ok and report.repair is not None
    assert report.repair.healed == [bad_there.hex()]
    assert verify(_open(url), deep=True).ok
    target = tmp_path / "restored.raw"
    restore_disk(_open(url), _open(url).resolve(made[-1]), target=target, fmt="raw")
    assert target.read_bytes() == image.read_bytes()


def test_repair_says_what_it_could_not_heal(seaweedfs: Any, weed_bucket: str,
                                            source: Repository, image: Path,
                                            tmp_path: Path) -> None:
    made = _two_points(source, image)
    url = _s3_dest(seaweedfs, weed_bucket)
    copy_points(source, _open(url), source.points())
    bad = _a_chunk(source, made[-1])
    there = _open(url)
    # Damaged at both sites: quarantined at both, healed at neither. The copy's name
    # of the chunk is its entry at the same place of the same point there.
    _corrupt_file(tmp_path / "src", bad)
    here = list(source.load_index(source.load_manifest(made[-1]).vms[0].disks[0].index)
                .names())
    plain_name = list(there.load_index(there.load_manifest(made[-1]).vms[0].disks[0].index)
                      .names())[here.index(bad)]
    there.backend.put(chunk_key(plain_name), b"damaged here too")
    report = verify(source, deep=True, repair_from=_open(url))
    assert not report.ok and report.repair is not None
    assert report.repair.healed == [] and report.repair.unhealed == [bad.hex()]
    (healing,) = report.repair.chunks
    assert "too" in healing.reason and healing.points
    assert len(report.repair.quarantined_there) == 1  # moved aside there, as verify does
    assert not any(p.healed for p in report.problems)
    # Run again: the chunk is missing at both sites now (quarantined), still not healed.
    again = verify(source, deep=True, repair_from=_open(url))
    assert again.repair is not None and again.repair.unhealed == [bad.hex()]
    assert "missing" in again.repair.chunks[0].reason
