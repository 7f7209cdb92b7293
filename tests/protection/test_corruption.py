"""Damage anywhere in stored data is caught by verify --deep and by restore."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from stasis.errors import IntegrityError
from stasis.protection.backup import back_up_images
from stasis.protection.verify import verify
from stasis.recovery.restore import restore_disk
from stasis.repository import Manifest, Repository
from stasis.repository.repo import chunk_key, index_key, manifest_key
from tests.conftest import images_equal, leftovers, mixed_image


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position % len(data)] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture(params=["aes", "none"])
def any_repo(request: pytest.FixtureRequest, repo: Repository,
             plain_repo: Repository) -> Repository:
    return repo if request.param == "aes" else plain_repo


@pytest.fixture
def backed_up(any_repo: Repository, tmp_path: Path) -> tuple[Repository, Manifest, Path]:
    src = mixed_image(tmp_path / "src.raw")
    return any_repo, back_up_images(any_repo, [src], name="src"), src


@pytest.mark.parametrize("where", ["header", "nonce-or-start", "middle", "tag-or-end"])
def test_flipped_chunk_byte_is_caught_and_quarantined(
    backed_up: tuple[Repository, Manifest, Path], tmp_path: Path, where: str
) -> None:
    repo, point, src = backed_up
    index = repo.load_index(point.vms[0].disks[0].index)
    entry, name = list(index.stored())[1]
    path = Path(repo.url) / chunk_key(name)
    size = path.stat().st_size
    positions = {"header": 2, "nonce-or-start": 6, "middle": size // 2, "tag-or-end": size - 3}
    flip(path, positions[where])

    out = tmp_path / "out.raw"
    with pytest.raises(IntegrityError) as caught:
        restore_disk(repo, point, target=out)
    message = str(caught.value)
    assert point.id[:12] in message and "src.raw" in message
    assert f"offset {entry * index.chunk_size}" in message
    assert not out.exists() and leftovers(tmp_path) == []
    assert not path.exists()  # quarantined by the restore that met it
    assert any((Path(repo.url) / "quarantine").iterdir())

    report = verify(repo, deep=True)
    assert not report.ok  # still referenced, now missing
    # The next backup meeting the same data stores it again; every point heals.
    back_up_images(repo, [src], name="src")
    assert verify(repo, deep=True).ok
    restore_disk(repo, point, target=out)
    assert images_equal(src, out)


def test_verify_deep_reports_point_disk_offset(
    backed_up: tuple[Repository, Manifest, Path],
) -> None:
    repo, point, _src = backed_up
    index = repo.load_index(point.vms[0].disks[0].index)
    entry, name = list(index.stored())[-1]
    flip(Path(repo.url) / chunk_key(name), 100)
    assert verify(repo, deep=False).ok  # quick only checks presence
    report = verify(repo, deep=True)
    (problem,) = report.problems
    assert (problem.point, problem.vm, problem.disk) == (point.id, "src", "src.raw")
    assert problem.offset == entry * index.chunk_size
    assert len(report.quarantined) == 1
    # Now missing: the quick check sees it too.
    assert not verify(repo, deep=False).ok


def test_any_flipped_manifest_byte_is_caught(
    backed_up: tuple[Repository, Manifest, Path], tmp_path: Path
) -> None:
    repo, point, _src = backed_up
    path = Path(repo.url) / manifest_key(point.id)
    original = path.read_bytes()
    for position in [*random.Random(3).sample(range(len(original)), 12), 0, len(original) - 1]:
        path.write_bytes(original)
        flip(path, position)
        report = verify(repo, deep=True)
        assert [p.object for p in report.problems] == [f"manifest {point.id[:12]}"]
        assert repo.points() == []  # a damaged manifest is never taken for a point


def test_flipped_index_byte_is_caught(
    backed_up: tuple[Repository, Manifest, Path], tmp_path: Path
) -> None:
    repo, point, _src = backed_up
    disk = point.vms[0].disks[0]
    flip(Path(repo.url) / index_key(disk.index), 40)
    report = verify(repo, deep=False)
    assert "disk index" in report.problems[0].object
    with pytest.raises(IntegrityError, match="disk index"):
        restore_disk(repo, point, target=tmp_path / "x.raw")
    assert not (tmp_path / "x.raw").exists()


def test_random_access_readers_catch_and_quarantine_a_flipped_chunk(
    backed_up: tuple[Repository, Manifest, Path]
) -> None:
    """Files from a point and NBD exports read chunks one at a time through one reader:
    alone (a file system walk) or from many threads at once (nbdkit's), the same checks."""
    from concurrent.futures import ThreadPoolExecutor

    from stasis.recovery.diskread import DiskReader

    repo, point, _src = backed_up
    vm, disk = point.vms[0], point.vms[0].disks[0]
    index = repo.load_index(disk.index)
    (first, _), (entry, name) = next(iter(index.stored())), list(index.stored())[1]
    flip(Path(repo.url) / chunk_key(name), 100)
    offset = entry * index.chunk_size
    good = DiskReader.open(repo, point, vm, disk).read_at(first * index.chunk_size, 10)
    assert len(good) == 10
    def threaded() -> bytes:
        shared = DiskReader.open(repo, point, vm, disk)
        with ThreadPoolExecutor(4) as pool:
            reads = [pool.submit(shared.read_at, offset, 10) for _ in range(8)]
            return b"".join(r.result() for r in reads)

    for read in (lambda: DiskReader.open(repo, point, vm, disk).read_at(offset, 10),
                 threaded):
        with pytest.raises(IntegrityError) as caught:
            read()
        message = str(caught.value)
        assert point.id[:12] in message and disk.name in message and f"offset {offset}" in message
    assert not (Path(repo.url) / chunk_key(name)).exists()  # quarantined by the first reader
    assert any((Path(repo.url) / "quarantine").iterdir())
