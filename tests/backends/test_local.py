"""The local backend's durability: which directories a sync makes durable.

A host crash cannot be staged here, so these tests watch the fsyncs themselves
(the real ones still run): a rename or unlink is durable once its directory is
fsynced, and a directory new to the store once its parent is too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stasis.backends import local
from stasis.backends.local import LocalBackend


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = local._fsync_dir

    def spy(path: Path) -> None:
        calls.append(path)
        real(path)

    monkeypatch.setattr(local, "_fsync_dir", spy)
    return calls


def test_sync_covers_what_was_put_found_and_deleted(tmp_path: Path, fsynced: list[Path]) -> None:
    root = tmp_path / "store"
    mine, other = LocalBackend(root), LocalBackend(root)
    other.put("chunks/cd/theirs", b"x")  # another writer, not synced yet
    other.put("chunks/ef/untouched", b"z")
    other.put("manifests/old", b"m")
    fsynced.clear()

    mine.put("chunks/ab/mine", b"y")
    assert mine.exists("chunks/cd/theirs")  # found: a manifest may name it
    mine.delete("manifests/old")
    mine.sync()

    done = set(fsynced)
    for must in ("chunks/ab", "chunks/cd", "chunks", "manifests", ""):
        assert root / must in done if must else root in done, must
    assert root / "chunks/ef" not in done  # nothing of this run is there
    # Children before parents: a new directory's entry is written after its content.
    assert fsynced.index(root / "chunks/ab") < fsynced.index(root / "chunks")
    assert fsynced.index(root / "chunks") < fsynced.index(root)


def test_sync_cost_follows_the_run_not_the_store(tmp_path: Path, fsynced: list[Path]) -> None:
    root = tmp_path / "store"
    filler = LocalBackend(root)
    for i in range(64):
        filler.put(f"chunks/{i:02x}/obj{i}", b"o")
    backend = LocalBackend(root)
    fsynced.clear()

    backend.sync()
    assert fsynced == []  # nothing touched, nothing to make durable

    backend.put("chunks/00/new", b"n")
    backend.sync()
    assert set(fsynced) == {root / "chunks/00", root / "chunks", root}
    fsynced.clear()
    backend.put("chunks/00/newer", b"n")
    backend.sync()
    assert fsynced == [root / "chunks/00"]  # its ancestors were made durable already


def test_a_failed_sync_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LocalBackend(tmp_path / "store")
    backend.put("chunks/ab/x", b"x")
    real = local._fsync_dir

    def failing(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(local, "_fsync_dir", failing)
    with pytest.raises(OSError):
        backend.sync()
    calls: list[Path] = []
    monkeypatch.setattr(local, "_fsync_dir", lambda p: (calls.append(p), real(p)))
    backend.sync()
    assert tmp_path / "store" / "chunks/ab" in calls
