"""Holds live in the repository: sealed, kept across reopening, and respected by removal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stasis.errors import PointHeld, PointNotFound
from stasis.protection.backup import back_up_images
from stasis.repository import Manifest, Repository
from stasis.repository.holds import KIND_HOLD, Hold
from tests.conftest import reopen

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def commit(repo: Repository, n: int, name: str = "web") -> Manifest:
    m = Manifest(id=f"{n:032x}", name=name, time=f"2026-01-{n:02d}T00:00:00+00:00")
    repo.commit(m)
    return m


def test_holds_persist_across_reopening_and_release(repo: Repository) -> None:
    a, b = commit(repo, 1), commit(repo, 2)
    repo.hold(a.id, None, "legal case 42", by="alice@host", created=NOW)
    repo.hold(b.id, NOW + timedelta(days=30), "audit", created=NOW)
    again = reopen(repo)
    holds = again.holds()
    assert holds == {
        a.id: Hold(a.id, None, "legal case 42", NOW, "alice@host"),
        b.id: Hold(b.id, NOW + timedelta(days=30), "audit", NOW, ""),
    }
    assert holds[a.id].active(NOW + timedelta(days=3650))
    assert holds[b.id].active(NOW) and not holds[b.id].active(NOW + timedelta(days=30))
    # Holding again replaces the hold.
    again.hold(b.id, NOW + timedelta(days=60), "audit extended", created=NOW)
    assert reopen(repo).holds()[b.id].reason == "audit extended"
    released = again.release(a.id)
    assert released is not None and released.reason == "legal case 42"
    assert again.release(a.id) is None  # releasing twice is not an error
    assert set(reopen(repo).holds()) == {b.id}


def test_holds_are_sealed_objects(repo: Repository) -> None:
    a = commit(repo, 1)
    repo.hold(a.id, None, "a secret reason", created=NOW)
    blob = (Path(repo.url) / "holds" / a.id).read_bytes()
    assert blob[1] == KIND_HOLD and b"secret" not in blob  # encrypted like a manifest
    # A hold object moved to another point's name does not open there: it counts as
    # a damaged hold without end, so the point stays protected.
    b = commit(repo, 2)
    (Path(repo.url) / "holds" / b.id).write_bytes(blob)
    damaged = reopen(repo).holds()[b.id]
    assert damaged.damaged and damaged.until is None and damaged.active(NOW)
    assert "damaged hold object" in damaged.reason
    with pytest.raises(PointHeld):
        reopen(repo).remove_point(b.id, now=NOW)


def test_removing_a_held_point_is_refused(repo: Repository) -> None:
    a = commit(repo, 1)
    repo.hold(a.id, NOW + timedelta(days=1), "until tomorrow", created=NOW)
    with pytest.raises(PointHeld) as e:
        repo.remove_point(a.id, now=NOW)
    assert e.value.exit_code == 28 and "Nothing was deleted" in e.value.message
    assert "release" in e.value.message
    assert [m.id for m in reopen(repo).points()] == [a.id]
    # Once the hold has ended the point goes, and its hold with it.
    reopen(repo).remove_point(a.id, now=NOW + timedelta(days=1))
    assert reopen(repo).points() == [] and reopen(repo).holds() == {}


def test_remove_point_deletes_the_manifest_only(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "d.raw"
    src.write_bytes(b"x" * 300_000)
    m = back_up_images(repo, [src], name="web", run_dir=tmp_path / "run")
    root = Path(repo.url)
    chunks = sorted(p.name for p in (root / "chunks").rglob("*") if p.is_file())
    indexes = sorted(p.name for p in (root / "indexes").rglob("*") if p.is_file())
    assert chunks and indexes
    repo.remove_point(m.id, now=NOW)
    assert reopen(repo).points() == []
    assert not (root / "manifests" / m.id).exists()
    # Chunks and indexes wait for gc.
    assert sorted(p.name for p in (root / "chunks").rglob("*") if p.is_file()) == chunks
    assert sorted(p.name for p in (root / "indexes").rglob("*") if p.is_file()) == indexes


def test_unknown_points(repo: Repository) -> None:
    with pytest.raises(PointNotFound):
        repo.hold("ab" * 16, None)
    with pytest.raises(PointNotFound):
        repo.remove_point("ab" * 16)
    with pytest.raises(PointNotFound):
        repo.hold("../config", None)
