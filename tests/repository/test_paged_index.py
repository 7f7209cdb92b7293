"""Format 2's paged disk indexes in a real repository, and format 1 repositories made by
the release that wrote them: both restore bit-exact, verify, take new points and are
collected, and a format 1 repository moves to format 2 on request only."""

from __future__ import annotations

import json
import os
import random
import tarfile
from pathlib import Path

import pytest

from stasis.backends import open_backend
from stasis.errors import IntegrityError
from stasis.protection.backup import back_up_images
from stasis.protection.verify import verify
from stasis.recovery.restore import restore_disk
from stasis.repository import Credentials, Manifest, Repository
from stasis.repository.gc import collect_garbage
from stasis.repository.index import PAGE_ENTRIES, V1, V2
from stasis.repository.repo import DEFAULT_CHUNK_SIZE, REPO_VERSION, index_key, page_key
from tests.conftest import CHEAP_KDF, PASSPHRASE, Cli, MiB, write_image
from tests.repository import v1_fixture

CHUNK = 64 << 10


def keys(root: Path, prefix: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / prefix).rglob("*") if p.is_file()}


def restored(repo: Repository, point: Manifest, tmp: Path) -> bytes:
    target = tmp / f"restored-{point.id[:8]}.raw"
    restore_disk(repo, point, target=target, fmt="raw", run_dir=tmp)
    try:
        return target.read_bytes()
    finally:
        target.unlink()


def root_version(repo: Repository, point: Manifest) -> int:
    return repo.load_index(point.vms[0].disks[0].index).version


@pytest.fixture
def v1_repo(tmp_path: Path) -> Repository:
    with tarfile.open(v1_fixture.FIXTURE) as tar:
        tar.extractall(tmp_path)  # our own fixture
    return Repository.open(open_backend(tmp_path / "repo"),
                           Credentials(passphrase=v1_fixture.PASSPHRASE.encode()))


def test_a_new_repository_is_format_2_with_1_mib_chunks(tmp_path: Path) -> None:
    repo = Repository.init(open_backend(tmp_path / "r"), passphrase=b"p", kdf=CHEAP_KDF)
    assert (repo.format_version, repo.chunk_size) == (REPO_VERSION, DEFAULT_CHUNK_SIZE)
    assert (REPO_VERSION, DEFAULT_CHUNK_SIZE) == (2, 1 << 20)
    assert json.loads((tmp_path / "r" / "config").read_text())["version"] == 2


def test_an_incremental_stores_only_the_pages_it_changed(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    repo = Repository.init(open_backend(root), passphrase=PASSPHRASE.encode(),
                           chunk_size=CHUNK, kdf=CHEAP_KDF)
    size = 6 * PAGE_ENTRIES * CHUNK  # 6 pages of 256 entries: 96 MiB, mostly holes
    rnd = random.Random(3)
    img = write_image(tmp_path / "disk.raw", size, [
        (k * PAGE_ENTRIES * CHUNK, rnd.randbytes(3 * CHUNK)) for k in range(6)])
    original = img.read_bytes()
    first = back_up_images(repo, [img], name="disk")
    assert root_version(repo, first) == V2
    pages_first = keys(root, "pages")
    assert len(pages_first) == 6  # one per page holding data; none for the holes
    with open(img, "r+b") as f:  # change one chunk, in page 4
        f.seek(4 * PAGE_ENTRIES * CHUNK + CHUNK + 100)
        f.write(b"changed")
    second = back_up_images(repo, [img], name="disk")
    new_pages = keys(root, "pages") - pages_first
    assert len(new_pages) == 1
    a = repo.load_index(first.vms[0].disks[0].index)
    b = repo.load_index(second.vms[0].disks[0].index)
    assert [a.page_name(k) == b.page_name(k) for k in range(a.page_count)] == [
        True, True, True, True, False, True]
    assert restored(repo, second, tmp_path) == img.read_bytes()
    assert restored(repo, first, tmp_path) == original  # each point restores on its own


def test_a_format_1_repository_restores_verifies_takes_points_and_upgrades(
        v1_repo: Repository, tmp_path: Path, cli: Cli) -> None:
    repo = v1_repo
    root = Path(repo.url.removeprefix("file://"))
    assert repo.format_version == V1
    points = {p.tags["fixture"]: p for p in repo.points()}
    assert sorted(points) == list(v1_fixture.POINTS)
    for which, point in points.items():
        assert root_version(repo, point) == V1
        assert restored(repo, point, tmp_path) == v1_fixture.image(which)
    report = verify(repo, deep=True)
    assert report.ok and report.points == 2 and report.bytes_checked > 0

    # New points in a format 1 repository stay format 1, so the release that made it
    # can still read them.
    img = v1_fixture.write_image(tmp_path / "disk.raw", "second")
    with open(img, "r+b") as f:
        f.seek(3 << 20)
        f.write(os.urandom(5000))
    third = back_up_images(repo, [img], name="disk")
    assert root_version(repo, third) == V1 and not keys(root, "pages")
    assert restored(repo, third, tmp_path) == img.read_bytes()

    # The upgrade rewrites the config only; old points read as before.
    upgraded = cli.ok("repo", "upgrade", "--repo", str(root), "--json",
                      env={"STASIS_PASSPHRASE": v1_fixture.PASSPHRASE}).json()
    assert upgraded["format_before"] == 1 and upgraded["format_after"] == 2
    again = cli.ok("repo", "upgrade", "--repo", str(root), "--json",
                   env={"STASIS_PASSPHRASE": v1_fixture.PASSPHRASE}).json()
    assert again["format_before"] == again["format_after"] == 2
    repo = Repository.open(open_backend(root),
                           Credentials(passphrase=v1_fixture.PASSPHRASE.encode()))
    assert repo.format_version == V2
    with open(img, "r+b") as f:
        f.seek(7 << 20)
        f.write(os.urandom(5000))
    fourth = back_up_images(repo, [img], name="disk")
    assert root_version(repo, fourth) == V2 and keys(root, "pages")
    assert restored(repo, fourth, tmp_path) == img.read_bytes()
    for which, point in points.items():
        assert restored(repo, point, tmp_path) == v1_fixture.image(which)
    report = verify(repo, deep=True)
    assert report.ok and report.points == 4

    # gc on the mixed repository keeps everything four points need ...
    before = keys(root, "chunks") | keys(root, "indexes") | keys(root, "pages")
    gc = collect_garbage(repo)
    assert gc.reclaimed_bytes == 0
    assert keys(root, "chunks") | keys(root, "indexes") | keys(root, "pages") == before
    # ... and removes the format 2 point's own pages once it is gone
    repo.remove_point(fourth.id)
    gc = collect_garbage(repo)
    assert gc.pages.count >= 1 and not keys(root, "pages")
    assert gc.indexes.count == 1
    for which, point in points.items():
        assert restored(repo, point, tmp_path) == v1_fixture.image(which)
    assert verify(repo, deep=True).ok


def test_a_damaged_page_is_reported_and_stops_gc(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    repo = Repository.init(open_backend(root), passphrase=PASSPHRASE.encode(),
                           chunk_size=CHUNK, kdf=CHEAP_KDF)
    size = 2 * PAGE_ENTRIES * CHUNK
    rnd = random.Random(5)
    img = write_image(tmp_path / "disk.raw", size, [(0, rnd.randbytes(2 * CHUNK)),
                                                  (size - 3 * MiB, rnd.randbytes(MiB))])
    point = back_up_images(repo, [img], name="disk")
    index = repo.load_index(point.vms[0].disks[0].index)
    page = index.page_name(1)
    assert page is not None
    path = root / page_key(page)
    blob = bytearray(path.read_bytes())
    blob[20] ^= 1
    path.write_bytes(bytes(blob))

    report = verify(repo)
    assert not report.ok
    [problem] = report.problems
    assert problem.object.startswith("index page") and problem.disk == "disk.raw"
    assert problem.offset == PAGE_ENTRIES * CHUNK
    with pytest.raises(IntegrityError, match="gc stopped before deleting anything"):
        collect_garbage(repo)
    assert (root / index_key(point.vms[0].disks[0].index)).exists()
    with pytest.raises(IntegrityError, match="index page of point"):
        restored(repo, point, tmp_path)
    assert not list(tmp_path.glob("restored-*"))  # no half-written output left behind
