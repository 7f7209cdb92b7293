"""Listings read each manifest once and still see every commit and deletion at once."""

from __future__ import annotations

from pathlib import Path

from stasis.app import points as ops
from stasis.backends import open_backend
from stasis.repository import Credentials, Repository
from tests.api.resources import commit
from tests.conftest import PASSPHRASE


def _other(repo: Repository, tmp_path: Path) -> Repository:
    """The same repository opened again, as another process (the CLI, a host) would."""
    return Repository.open(open_backend(tmp_path / "repo"),
                           Credentials(passphrase=PASSPHRASE.encode()))


def test_points_committed_and_deleted_by_another_are_seen_at_once(
        repo: Repository, tmp_path: Path) -> None:
    a, b = commit(repo, 1, ["web"]), commit(repo, 2, ["db"])
    assert [p.id for p in ops.find_points(repo)] == [a.id, b.id]
    other = _other(repo, tmp_path)
    c = commit(other, 3, ["web"])
    assert [p.id for p in ops.find_points(repo, vm="web")] == [a.id, c.id]
    other.remove_point(a.id)
    assert [p.id for p in ops.find_points(repo)] == [b.id, c.id]
    assert ops.resolve_point(repo, c.id[:8], owned=lambda vms: vms == ["web"]).id == c.id


def test_a_manifest_is_decoded_once_per_repository(repo: Repository, tmp_path: Path) -> None:
    commit(repo, 1, ["web"])
    first = ops.known_points(repo)
    assert ops.known_points(repo)[0] is first[0]  # kept, not decoded again
    assert ops.known_points(_other(repo, tmp_path))[0] is not first[0]  # its own


def test_a_damaged_manifest_is_told_left_out_and_read_again(
        repo: Repository, tmp_path: Path) -> None:
    good, bad = commit(repo, 1, ["web"]), commit(repo, 2, ["web"])
    (path,) = (tmp_path / "repo").glob(f"manifests/**/{bad.id}")
    sealed = path.read_bytes()
    path.write_bytes(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    damaged: list[str] = []
    assert [p.id for p in ops.find_points(repo, on_damaged=lambda pid, e: damaged.append(pid))
            ] == [good.id]
    assert damaged == [bad.id]
    path.write_bytes(sealed)  # repaired (from a copy): listed again
    assert [p.id for p in ops.find_points(repo)] == [good.id, bad.id]
