"""A byte flipped in every kind of stored object (chunks, indexes and manifests have
their own tests in tests/protection/test_corruption.py): index pages, the config, key
slots, holds and locks. Never a silent wrong restore; ``verify`` reports every kind it
can authenticate or parse; a damaged lock never blocks.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from stasis.backends import LocalBackend, open_backend
from stasis.errors import (
    ConfigCorrupt,
    IntegrityError,
    KeySlotsDamaged,
    PointHeld,
    StasisError,
    WrongPassphrase,
)
from stasis.protection.backup import back_up_images
from stasis.protection.verify import verify
from stasis.recovery.restore import restore_disk
from stasis.repository import Credentials, Repository
from stasis.repository.gc import collect_garbage
from stasis.repository.locks import LockManager
from tests.conftest import CHEAP_KDF, PASSPHRASE, MiB, images_equal, init_repo, mixed_image

CHUNK = 64 << 10
SECOND = b"the second passphrase"


def flip(path: Path, position: int, mask: int = 0x40) -> None:
    data = bytearray(path.read_bytes())
    data[position % len(data)] ^= mask
    path.write_bytes(bytes(data))


def _open(root: Path, passphrase: bytes = PASSPHRASE.encode()) -> Repository:
    return Repository.open(open_backend(root), Credentials(passphrase=passphrase))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A format-2 repository with one point of a 6 MiB image (many index pages)."""
    base = tmp_path_factory.mktemp("damage")
    repo = init_repo(base / "repo", chunk_size=CHUNK)
    image = mixed_image(base / "disk.raw", 6 * MiB)
    back_up_images(repo, [image], name="disk")
    return base / "repo", image


@pytest.fixture
def root(seeded: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(seeded[0], tmp_path / "repo")
    return tmp_path / "repo"


def _objects(root: Path, prefix: str) -> list[Path]:
    return sorted(p for p in (root / prefix).rglob("*") if p.is_file() and ".tmp-" not in p.name)


def test_a_flipped_page_byte_is_reported_and_never_restored(root: Path, seeded: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    pages = _objects(root, "pages")
    assert pages, "the repository has index pages (format 2)"
    rnd = random.Random(7)
    for page in rnd.sample(pages, min(3, len(pages))):
        flip(page, rnd.randrange(page.stat().st_size))
    repo = _open(root)
    report = verify(repo, deep=True)
    assert not report.ok
    assert any(p.object.startswith("index page") for p in report.problems)
    assert all(p.object.startswith("index page") for p in report.problems), report.problems
    with pytest.raises(IntegrityError):
        restore_disk(repo, repo.points()[0], target=tmp_path / "out.raw")
    assert not (tmp_path / "out.raw").exists()


def test_any_flipped_config_byte_refuses_to_open(root: Path) -> None:
    """Damage is ConfigCorrupt (its MAC, its form); in the repository's id it is seen
    first by the key slots, which bind the id: no slot opens (the hint says the config
    may be the cause)."""
    config = root / "config"
    original = config.read_bytes()
    text = original.decode()
    start = text.index('"id": "') + len('"id": "')
    in_id = range(start, text.index('"', start))
    rnd = random.Random(3)
    flips = [(p, rnd.choice([0x01, 0x20, 0x40])) for p in rnd.sample(range(len(text)), 24)]
    for position, mask in [*flips, (in_id[3], 0x01)]:  # the last: another hex digit
        config.write_bytes(original)
        flip(config, position, mask)
        with pytest.raises(StasisError) as e:
            _open(root)
        allowed = (ConfigCorrupt, WrongPassphrase) if position in in_id else (ConfigCorrupt,)
        assert type(e.value) in allowed, (position, e.value.message)
        assert e.value.exit_code in (12, 13)
        assert "config" in e.value.message + str(e.value.hint)
    assert type(e.value) is WrongPassphrase
    config.write_bytes(original)
    assert _open(root).point_ids()


def test_a_damaged_key_slot_is_named_reported_and_removable(root: Path) -> None:
    repo = _open(root)
    (first,) = (s["id"] for s in repo.key_slots())
    second = repo.add_key_slot(kind="passphrase", secret=SECOND, label="second", kdf=CHEAP_KDF)
    slot = root / "keys" / first
    flip(slot, 0)  # '{' becomes ';': no longer JSON
    with pytest.raises(KeySlotsDamaged) as e:
        _open(root)  # only the damaged slot held this passphrase
    assert f"keys/{first}" in e.value.message and e.value.exit_code == 13
    repo = _open(root, SECOND)
    assert {s["id"]: s["kind"] for s in repo.key_slots()} == {first: "damaged",
                                                              second: "passphrase"}
    problems = verify(repo).problems
    assert [p.object for p in problems] == [f"key slot {first}"]
    assert problems[0].describe().startswith(f"key slot {first} not a readable key slot")
    repo.remove_key_slot(first)
    assert verify(repo).ok


def test_a_key_slot_damaged_inside_its_wrapped_key_cannot_be_told_from_a_wrong_passphrase(
        root: Path) -> None:
    """The wrap is authenticated encryption: damage and a wrong secret look the same."""
    (slot,) = _objects(root, "keys")
    text = slot.read_text()
    at = text.index('"wrapped": "') + len('"wrapped": "') + 5
    flip(slot, at, 0x01)
    with pytest.raises(WrongPassphrase) as e:
        _open(root)
    assert not isinstance(e.value, KeySlotsDamaged)


def test_a_damaged_hold_still_protects_its_point_and_is_reported(root: Path) -> None:
    repo = _open(root)
    (point,) = repo.point_ids()
    repo.hold(point, None, "legal case 42")
    (hold,) = _objects(root, "holds")
    flip(hold, hold.stat().st_size // 2)
    repo = _open(root)
    for deep in (False, True):
        problems = verify(repo, deep=deep).problems
        assert [p.object for p in problems] == [f"hold {point[:12]}"]
        assert "damaged hold object" in problems[0].problem
    with pytest.raises(PointHeld):
        repo.remove_point(point)
    assert repo.point_ids() == [point]


def test_a_damaged_lock_blocks_nothing_and_is_removed_by_the_next_taker(
        root: Path, seeded: tuple[Path, Path], tmp_path: Path) -> None:
    locks = LockManager(LocalBackend(root))
    with locks.hold("exclusive", "gc"):
        (lock,) = _objects(root, "locks")
        taken = lock.read_bytes()
    lock.write_bytes(taken)  # a gc's exclusive lock left behind ...
    flip(lock, 0)  # ... and damaged: its holder can no longer be known
    repo = _open(root)
    point = back_up_images(repo, [seeded[1]], name="again")  # not held off
    assert not _objects(root, "locks"), "the damaged lock was left in place"
    lock.write_bytes(bytes(taken[:-1]) + b"!")
    collect_garbage(repo, wait=0)  # an exclusive taker is not held off either
    assert not _objects(root, "locks")
    restore_disk(repo, point, target=tmp_path / "out.raw")
    assert images_equal(tmp_path / "out.raw", seeded[1])
