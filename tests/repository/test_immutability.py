"""Immutability on real S3 servers: what a point needs is locked by the storage, its
locks are extended, prune and gc respect them, Swift is refused, and append-only
keys back up but cannot prune.

Locks here last seconds (governance mode, retain 3 s, epochs of 1 s), so a test
waits for one to end by polling, never for minutes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from stasis.backends import open_backend
from stasis.errors import BackendAccessDenied, ImmutabilityUnsupported, PointLocked
from stasis.protection.backup import back_up_images
from stasis.repository import Credentials, Repository
from stasis.repository.gc import collect_garbage
from stasis.repository.immutability import PROBES, Immutability
from stasis.repository.repo import chunk_key, index_key, manifest_key, page_key
from stasis.service.prune import prune_points
from stasis.service.retention import RetentionRules
from tests.conftest import CHEAP_KDF, PASSPHRASE, MiB, write_image
from tests.s3servers import S3Server

SHORT = Immutability("governance", retain_s=3, margin_s=1)


@pytest.fixture(params=[
    "seaweedfs", pytest.param("rgw", marks=pytest.mark.slow)])
def locking(request: pytest.FixtureRequest) -> S3Server:
    """A server that enforces Object Lock (each in turn)."""
    server: S3Server = request.getfixturevalue(request.param)
    return server


def new_repo(url: str, imm: Immutability | None = SHORT) -> Repository:
    return Repository.init(open_backend(url), passphrase=PASSPHRASE.encode(), kdf=CHEAP_KDF,
                           chunk_size=64 << 10, immutability=imm)


def keys_of(repo: Repository, point_id: str) -> list[str]:
    """Every object a point needs: its manifest, roots, pages and chunks."""
    m = repo.load_manifest(point_id)
    keys = [manifest_key(point_id)]
    for _vm, disk in m.streams():
        keys.append(index_key(disk.index))
        index = repo.load_index(disk.index)
        keys += [page_key(p) for p in repo.index_pages(index)]
        keys += [chunk_key(n) for _i, n in index.stored()]
    return keys


def wait_unlocked(repo: Repository, key: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = repo.backend.retention(key)
        if found is None or found.until <= datetime.now(UTC):
            return
        assert time.monotonic() < deadline, f"{key} still locked"
        time.sleep(0.2)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_image(tmp_path / "disk.raw", 2 * MiB, [(0, b"a" * 300_000),
                                                        (MiB, b"b" * 200_000)])


def test_every_object_of_a_point_is_locked_and_a_delete_is_refused(
        locking: S3Server, image: Path) -> None:
    bucket = locking.new_bucket(object_lock=True)
    repo = new_repo(locking.url(bucket))
    began = datetime.now(UTC)
    point = back_up_images(repo, [image], name="a")
    keys = keys_of(repo, point.id)
    assert len(keys) >= 4
    for key in keys:
        found = repo.backend.retention(key)
        assert found is not None and found.mode == "GOVERNANCE", key
        assert found.until >= began + timedelta(seconds=SHORT.retain_s), key
    # A plain S3 client with the repository's own credentials: a locked version can be
    # neither deleted nor replaced.
    client = locking.client()
    chunk = keys[-1]
    head = client.head_object(Bucket=bucket, Key=chunk)
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=chunk, VersionId=head["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    original = client.get_object(Bucket=bucket, Key=chunk)["Body"].read()
    client.put_object(Bucket=bucket, Key=chunk, Body=b"overwritten")
    kept = client.get_object(Bucket=bucket, Key=chunk, VersionId=head["VersionId"])
    assert kept["Body"].read() == original
    # Locks, config and keys stay deletable (mutable by design); probes do not pile up.
    assert repo.backend.retention("config") is None
    assert len(list(repo.backend.list(PROBES))) == 1


def test_a_found_object_is_extended_to_the_new_points_lock(
        locking: S3Server, image: Path) -> None:
    repo = new_repo(locking.url(locking.new_bucket(object_lock=True)))
    first = back_up_images(repo, [image], name="a")
    wait_unlocked(repo, manifest_key(first.id))
    committed = datetime.now(UTC)
    second = back_up_images(repo, [image], name="b")  # every chunk found, none written
    for key in keys_of(repo, second.id):
        found = repo.backend.retention(key)
        assert found is not None and found.until >= committed + timedelta(
            seconds=SHORT.retain_s), key


def test_prune_keeps_a_locked_point_and_gc_deletes_only_unlocked_garbage(
        locking: S3Server, image: Path) -> None:
    repo = new_repo(locking.url(locking.new_bucket(object_lock=True)))
    old = back_up_images(repo, [image], name="a")
    with pytest.raises(PointLocked, match="locked by the storage until"):
        repo.remove_point(old.id)
    with open(image, "r+b") as f:
        f.write(b"c" * 100_000)
    new = back_up_images(repo, [image], name="a")
    rules = RetentionRules.of({"last": 1})
    result = prune_points(repo, rules, now=datetime.now(UTC), names=["a"])
    assert result.removed == []
    [why] = [d.reasons for d in result.decisions if d.point.id == old.id]
    assert "locked by the storage until" in why[0]
    wait_unlocked(repo, manifest_key(old.id))
    result = prune_points(repo, rules, now=datetime.now(UTC), names=["a"])
    assert result.removed == [old.id]
    # Garbage of a backup that never committed, locked now: gc keeps it and says so.
    orphan = repo.chunk_name(b"orphan" * 1000)
    repo.store_chunk(orphan, b"orphan" * 1000)
    needed = set(keys_of(repo, new.id))
    report = collect_garbage(repo, wait=30)
    assert report.locked.count >= 1 and report.locked_until is not None
    assert repo.backend.exists(chunk_key(orphan))
    assert all(repo.backend.exists(k) for k in needed)
    wait_unlocked(repo, chunk_key(orphan))
    report = collect_garbage(repo, wait=30)
    assert not repo.backend.exists(chunk_key(orphan))
    assert all(repo.backend.exists(k) for k in needed)


def test_renewal_extends_what_kept_points_need_and_held_points_to_their_hold(
        locking: S3Server, image: Path) -> None:
    repo = new_repo(locking.url(locking.new_bucket(object_lock=True)))
    point = back_up_images(repo, [image], name="a")
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=40)
    repo.hold(point.id, until, "case 42")
    renewed = repo.renew_locks()
    assert renewed["points"] == 1 and renewed["objects"] == len(set(keys_of(repo, point.id)))
    for key in keys_of(repo, point.id):
        found = repo.backend.retention(key)
        assert found is not None and found.until >= until, key
    # Holds are not locked: releasing one stays possible.
    repo.release(point.id)
    # The locks were extended, not shortened: still there until the hold's end.
    with pytest.raises(PointLocked):
        repo.remove_point(point.id)


def test_init_refused_on_swift_and_on_a_bucket_without_object_lock(
        swift: S3Server, seaweedfs: S3Server, tmp_path: Path) -> None:
    with pytest.raises(ImmutabilityUnsupported, match="no Object Lock") as e:
        new_repo(swift.url(swift.new_bucket(object_lock=True)))
    assert e.value.exit_code == 47
    url = seaweedfs.url(seaweedfs.new_bucket())  # created without Object Lock
    with pytest.raises(ImmutabilityUnsupported, match="can only be enabled when a bucket"):
        new_repo(url)
    assert not list(open_backend(url).list())  # nothing of a repository written
    with pytest.raises(ImmutabilityUnsupported, match="local directory"):
        new_repo(str(tmp_path / "local"))


def test_init_creates_a_missing_bucket_with_object_lock(seaweedfs: S3Server) -> None:
    name = f"stasis-lock-{time.time_ns() % 10**9}"
    repo = new_repo(seaweedfs.url(name))
    assert repo.backend.object_lock()
    assert Repository.read_config(open_backend(seaweedfs.url(name)))["immutability"] == {
        "mode": "governance", "retain_s": 3, "margin_s": 1}


@pytest.fixture
def append_only(seaweedfs: S3Server) -> Iterator[tuple[str, str]]:
    """A repository (no Object Lock) and its URL with an append-only key."""
    bucket = seaweedfs.new_bucket()
    new_repo(seaweedfs.url(bucket), None)
    profile = seaweedfs.append_only_profile(bucket)
    yield (seaweedfs.url(bucket),
           f"s3://{bucket}?endpoint={seaweedfs.endpoint}&profile={profile}")


def test_append_only_backups_work_and_prune_and_gc_fail_clearly(
        append_only: tuple[str, str], image: Path) -> None:
    admin_url, append_url = append_only
    writer = Repository.open(open_backend(append_url), credentials=_creds())
    first = back_up_images(writer, [image], name="a")
    # Its lock could not be deleted: it is marked released, and blocks nobody.
    locks = writer.locks.locks()
    assert locks and all(lk.released for lk in locks)
    second = back_up_images(writer, [image], name="a")
    with pytest.raises(BackendAccessDenied, match="access denied") as e:
        writer.remove_point(first.id)
    assert e.value.exit_code == 41 and "append-only" in e.value.hint
    assert writer.load_manifest(first.id)  # nothing lost
    orphan = writer.chunk_name(b"orphan" * 1000)  # garbage: gc has to delete
    writer.store_chunk(orphan, b"orphan" * 1000)
    # Refused before gc takes its lock or deletes anything (Repository.check_may_delete).
    with pytest.raises(BackendAccessDenied, match="the deletes that gc needs") as e:
        collect_garbage(writer, wait=5)
    assert "gc did not start" in str(e.value)
    assert writer.has_chunk(orphan)
    admin = Repository.open(open_backend(admin_url), credentials=_creds())
    collect_garbage(admin, wait=5)  # gc's exclusive lock is not blocked by released ones
    assert not admin.locks.locks()  # and the maintenance key removed them
    assert not admin.has_chunk(orphan)
    assert {p.id for p in admin.points()} == {first.id, second.id}


def _creds() -> Credentials:
    return Credentials(passphrase=PASSPHRASE.encode())
