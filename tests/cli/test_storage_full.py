"""A repository whose filesystem is full, for real (a small tmpfs mount): prune and gc
still run, in the space the repository set aside for them, and free space; a copy to a
full second site commits nothing there and completes once space is freed. (A backup
that fills the disk: tests/cli/test_bad_input.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from stasis.backends.local import RESERVE
from tests.conftest import Cli, MiB, images_equal, init_repo, leftovers

pytestmark = pytest.mark.root

DEST_PASS = "the second site's passphrase"


def _remount(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


def _fill(mount: Path) -> Path:
    """Take every free block of the filesystem; the file is deleted to free them."""
    filler = mount / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(bytes(64 << 10))
                f.flush()
        except OSError:
            pass
    os.sync()
    return filler


def _random(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))  # incompressible: it takes its size in the store
    return path


def _points(cli: Cli, repo: Path) -> list[str]:
    listed = cli.ok("list", "--repo", str(repo), "--json").json()
    assert isinstance(listed, list)
    return [str(p["id"]) for p in listed]


@pytest.fixture
def full_repo(cli: Cli, tmpfs: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A repository with two points of one name (3 MiB each, no chunk in common) on a
    filesystem with no block free; answers the repository, the newer image, the filler."""
    _remount(tmpfs, "8M")
    repo = tmpfs / "repo"
    init_repo(repo)
    assert (repo / RESERVE).stat().st_size > 0  # set aside at init
    older, newer = _random(tmp_path / "v1.raw", 3 * MiB), _random(tmp_path / "v2.raw", 3 * MiB)
    for image in (older, newer):
        cli.ok("backup", "image", str(image), "--repo", str(repo), "--name", "web")
    filler = _fill(tmpfs)
    r = cli("backup", "image", str(_random(tmp_path / "v3.raw", MiB)), "--repo", str(repo),
            "--name", "web")
    assert r.code == 18 and "full" in r.err, r.err  # full indeed
    return repo, newer, filler


def test_prune_and_gc_run_on_a_full_repository_and_free_its_space(
        cli: Cli, full_repo: tuple[Path, Path, Path], tmp_path: Path) -> None:
    repo, newer, filler = full_repo
    before = _points(cli, repo)
    cli.ok("prune", "--repo", str(repo), "--name", "web", "--keep-last", "1")
    assert _points(cli, repo) == before[1:]
    assert not (repo / RESERVE).exists()  # its lock was written in the space set aside
    gc = cli.ok("gc", "--repo", str(repo), "--json").json()
    assert isinstance(gc, dict) and gc["chunks"]["bytes"] >= 3 * MiB - 4096
    assert (repo / RESERVE).exists()  # set aside again now that there is room
    assert not list((repo / "locks").iterdir()) and leftovers(repo) == []
    cli.ok("verify", "--deep", "--repo", str(repo))
    out = tmp_path / "web.out"
    cli.ok("restore", "disk", "web@latest", "--repo", str(repo), "--to", str(out))
    assert images_equal(out, newer)
    filler.unlink()
    cli.ok("backup", "image", str(newer), "--repo", str(repo), "--name", "web")


def test_without_the_space_set_aside_prune_says_the_disk_is_full_and_deletes_nothing(
        cli: Cli, full_repo: tuple[Path, Path, Path]) -> None:
    """A repository made before the reserve existed (or whose reserve a prune used and
    no gc has set aside again): the refusal is clear and nothing is half done."""
    repo, _newer, filler = full_repo
    (repo / RESERVE).unlink()
    _fill(repo.parent)  # the reserve's blocks too
    before = _points(cli, repo)
    r = cli("prune", "--repo", str(repo), "--name", "web", "--keep-last", "1")
    assert r.code == 18 and "full" in r.err and "Free space" in r.err, r.err
    assert _points(cli, repo) == before
    filler.unlink()
    cli.ok("prune", "--repo", str(repo), "--name", "web", "--keep-last", "1")
    assert len(_points(cli, repo)) == 1


def test_a_copy_to_a_full_second_site_commits_nothing_there(cli: Cli, tmpfs: Path,
                                                            tmp_path: Path) -> None:
    source = tmp_path / "source"
    init_repo(source)
    image = _random(tmp_path / "big.raw", 6 * MiB)
    cli.ok("backup", "image", str(image), "--repo", str(source), "--name", "db")
    dest = tmpfs / "dr"  # 3 MiB: the point does not fit
    init_repo(dest, passphrase=DEST_PASS)
    env = {"STASIS_TO_PASSPHRASE": DEST_PASS}
    r = cli("copy", "--repo", str(source), "--to", str(dest), "--all", env=env)
    assert r.code == 18 and "full" in r.err, r.err
    dest_env = {"STASIS_PASSPHRASE": DEST_PASS}
    assert cli.ok("list", "--repo", str(dest), "--json", env=dest_env).json() == []
    assert not list((dest / "locks").iterdir()) and leftovers(dest) == []
    _remount(tmpfs, "32M")
    cli.ok("copy", "--repo", str(source), "--to", str(dest), "--all", env=env)
    cli.ok("verify", "--deep", "--repo", str(dest), env=dest_env)
    out = tmp_path / "db.out"
    cli.ok("restore", "disk", "db@latest", "--repo", str(dest), "--to", str(out), env=dest_env)
    assert images_equal(out, image)
