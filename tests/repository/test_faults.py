"""Storage faults during every operation that writes or reads a repository, injected by
the seeded fault backend (src/stasis_testkit/faults.py): disk full and I/O errors,
throttling, 500s, timeouts and resets through every retry, an unreachable store, torn
puts, and lost writes at a crash.

Each runs on a local repository; those where the store's kind matters run on
SeaweedFS as well (the fault backend wraps the real S3 backend).

After each fault, the same invariants, checked by a fresh process's view of the store:
the operation failed with the storage error's own message and exit code (never a
traceback, never success); no point appeared that the operation did not finish and no
committed point was lost; a deep verify is clean; every committed point restores
bit-exactly; and once the store is healthy again the same operation succeeds.
"""

from __future__ import annotations

import random
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from stasis.backends import open_backend
from stasis.backends.base import Backend
from stasis.errors import BackendError, BackendUnreachable, RepositoryFull, StasisError
from stasis.protection.backup import back_up_images
from stasis.protection.copy import copy_points
from stasis.protection.verify import verify
from stasis.recovery.restore import restore_disk
from stasis.repository import Credentials, Repository
from stasis.repository.gc import collect_garbage
from stasis_testkit.faults import Crashed, Fault, FaultyBackend
from tests.conftest import CHEAP_KDF, PASSPHRASE, MiB, images_equal, init_repo, mixed_image
from tests.s3servers import S3Server

CHUNK = 64 << 10
DEST_PASSPHRASE = b"the second site's passphrase"
FAILING = ("enospc", "eio", "slowdown", "server-error", "timeout", "reset", "unreachable",
           "torn")
# On S3 the kinds a network store meets (the rest are the local runs'), to keep CI short.
S3_KINDS = ("slowdown", "reset", "torn")
EXIT = {"enospc": RepositoryFull.exit_code, "unreachable": BackendUnreachable.exit_code}


@dataclass
class Site:
    url: str  # a directory or an s3:// URL
    passphrase: bytes
    images: dict[str, Path]  # point id -> the image it holds

    def store(self) -> Backend:
        return open_backend(self.url)

    def open(self, *faults: Fault, seed: int = 0) -> tuple[Repository, FaultyBackend]:
        backend = FaultyBackend(self.store(), faults, seed=seed)
        return Repository.open(backend, Credentials(passphrase=self.passphrase)), backend

    def committed(self) -> list[str]:
        return Repository.open(self.store(), Credentials(passphrase=self.passphrase)).point_ids()

    def check(self, tmp: Path) -> None:
        """What the next process finds: exactly the committed points, each whole."""
        repo = Repository.open(self.store(), Credentials(passphrase=self.passphrase))
        assert set(repo.point_ids()) == set(self.images)
        report = verify(repo, deep=True)
        assert report.ok, report.problems[:3]
        for point in repo.points():
            out = tmp / f"check-{point.id[:12]}.raw"
            restore_disk(repo, point, target=out)
            assert images_equal(out, self.images[point.id]), point.id
            out.unlink()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A repository with two points of two images (one changed since): copied per test."""
    base = tmp_path_factory.mktemp("faults")
    repo = init_repo(base / "repo", chunk_size=CHUNK)
    first = mixed_image(base / "a.raw", 6 * MiB, seed=1)
    second = mixed_image(base / "b.raw", 6 * MiB, seed=2)
    images = {back_up_images(repo, [first], name="a").id: first,
              back_up_images(repo, [second], name="b").id: second}
    return base, images


@pytest.fixture
def site(seeded: tuple[Path, dict[str, Path]], tmp_path: Path) -> Site:
    """A local copy of the seeded repository."""
    base, images = seeded
    shutil.copytree(base / "repo", tmp_path / "repo")
    return Site(str(tmp_path / "repo"), PASSPHRASE.encode(), dict(images))


@pytest.fixture(scope="module")
def weed_bucket(seaweedfs: S3Server) -> str:
    return seaweedfs.new_bucket()


@pytest.fixture(params=["local", "seaweedfs"])
def any_site(request: pytest.FixtureRequest, seeded: tuple[Path, dict[str, Path]],
             tmp_path: Path) -> Site:
    """The seeded repository locally, or the same two points on SeaweedFS."""
    if request.param == "local":
        site: Site = request.getfixturevalue("site")
        return site
    server: S3Server = request.getfixturevalue("seaweedfs")
    url = server.url(request.getfixturevalue("weed_bucket"), f"f-{uuid.uuid4().hex[:10]}")
    repo = Repository.init(open_backend(url), passphrase=PASSPHRASE.encode(),
                           chunk_size=CHUNK, kdf=CHEAP_KDF)
    images = {back_up_images(repo, [image], name=image.stem).id: image
              for image in sorted(set(seeded[1].values()))}
    return Site(url, PASSPHRASE.encode(), images)


def _second(tmp: Path, like: Site) -> Site:
    """An empty second site of the same kind as ``like``."""
    url = (str(tmp / "second") if like.url.startswith("/")
           else like.url.rsplit("?", 1)[0] + "-second?" + like.url.rsplit("?", 1)[1])
    Repository.init(open_backend(url), passphrase=DEST_PASSPHRASE, chunk_size=CHUNK,
                    kdf=CHEAP_KDF)
    return Site(url, DEST_PASSPHRASE, {})


def _new_image(tmp: Path, seed: int) -> Path:
    return mixed_image(tmp / f"new-{seed}.raw", 6 * MiB, seed=100 + seed)


def _fails_as_storage(kind: str, run: Callable[[], object]) -> StasisError:
    with pytest.raises(BackendError) as e:
        run()
    assert e.value.exit_code == EXIT.get(kind, BackendError.exit_code), e.value.message
    assert "injected" in e.value.message  # the store's own words reach the person
    return e.value


def _on_both(kinds: tuple[str, ...] = FAILING,
             s3_kinds: tuple[str, ...] = S3_KINDS) -> pytest.MarkDecorator:
    """Every kind on the local store, ``s3_kinds`` on SeaweedFS."""
    return pytest.mark.parametrize(
        ("any_site", "kind"), [("local", k) for k in kinds] + [("seaweedfs", k) for k in s3_kinds],
        indirect=["any_site"])


@_on_both()
def test_a_backup_that_meets_a_storage_fault_commits_nothing(any_site: Site, tmp_path: Path,
                                                             kind: str) -> None:
    site = any_site
    rnd = random.Random(f"backup/{kind}")
    image = _new_image(tmp_path, 1)
    at = rnd.randrange(1, 40)  # a chunk put somewhere in the backup's first half
    repo, _ = site.open(Fault(kind, ("put",), prefix="chunks/", at=at))
    error = _fails_as_storage(kind, lambda: back_up_images(repo, [image], name="new"))
    if kind == "enospc":
        assert "not committed" in error.message
    site.check(tmp_path)
    repo, _ = site.open()
    site.images[back_up_images(repo, [image], name="new").id] = image
    site.check(tmp_path)


@pytest.mark.parametrize("kind", FAILING)
def test_a_fault_at_the_manifest_commits_nothing(site: Site, tmp_path: Path,
                                                 kind: str) -> None:
    image = _new_image(tmp_path, 2)
    repo, _ = site.open(Fault(kind, ("put", "put_if_absent"), prefix="manifests/", at=1))
    _fails_as_storage(kind, lambda: back_up_images(repo, [image], name="new"))
    site.check(tmp_path)


@pytest.mark.parametrize("kind", ["eio", "slowdown", "reset", "unreachable"])
def test_a_restore_that_meets_a_read_fault_leaves_no_target(site: Site, tmp_path: Path,
                                                            kind: str) -> None:
    repo, _ = site.open(Fault(kind, ("get",), prefix="chunks/", at=5))
    point = repo.points()[-1]
    target = tmp_path / "restored.raw"
    error = _fails_as_storage(kind, lambda: restore_disk(repo, point, target=target))
    assert not target.exists(), "a half-restored image was left looking complete"
    assert str(target) in error.message or "not completed" in error.message
    site.check(tmp_path)


@pytest.mark.parametrize("kind", ["eio", "slowdown", "reset", "unreachable"])
def test_a_gc_that_meets_a_fault_loses_no_point(site: Site, tmp_path: Path,
                                                kind: str) -> None:
    repo, _ = site.open()
    older = repo.points()[0]
    repo.remove_point(older.id)  # its unique chunks become garbage
    del site.images[older.id]
    for calls, at in ((("list",), 2), (("get",), 3), (("delete",), 4)):
        repo, _ = site.open(Fault(kind, calls, at=at))
        _fails_as_storage(kind, lambda r=repo: collect_garbage(r, wait=5))  # type: ignore[misc]
        site.check(tmp_path)
    repo, _ = site.open()
    report = collect_garbage(repo, wait=5)
    assert report.chunks.count > 0  # the garbage was there, and is gone now
    site.check(tmp_path)


@_on_both(s3_kinds=("server-error", "torn"))
def test_a_copy_that_meets_a_fault_at_the_second_site_commits_nothing_there(
        any_site: Site, tmp_path: Path, kind: str) -> None:
    site = any_site
    second = _second(tmp_path, site)
    src, _ = site.open()
    at = random.Random(f"copy/{kind}").randrange(1, 60)
    dst, _ = second.open(Fault(kind, ("put", "put_if_absent"), at=at))
    _fails_as_storage(kind, lambda: copy_points(src, dst, src.points()))
    # A point the copy finished before the fault is committed there, and whole.
    second.images = {pid: site.images[pid] for pid in second.committed()}
    second.check(tmp_path)
    dst, _ = second.open()
    copy_points(src, dst, src.points())
    second.images = dict(site.images)
    second.check(tmp_path)
    site.check(tmp_path)


@pytest.mark.parametrize("kind", ["eio", "timeout", "unreachable"])
def test_a_config_that_cannot_be_read_is_a_storage_failure_not_damage(site: Site,
                                                                    kind: str) -> None:
    error = _fails_as_storage(kind, lambda: site.open(Fault(kind, ("get",), prefix="config",
                                                            at=1)))
    assert "damaged" not in error.message and "reading config" in error.message


@pytest.mark.parametrize("kind", ["eio", "slowdown", "unreachable"])
def test_removing_a_point_that_meets_a_fault_keeps_it_whole(site: Site, tmp_path: Path,
                                                            kind: str) -> None:
    repo, _ = site.open(Fault(kind, ("delete",), prefix="manifests/", at=1))
    victim = repo.points()[0].id
    _fails_as_storage(kind, lambda: repo.remove_point(victim))
    site.check(tmp_path)  # still listed, still restorable


def test_faults_at_random_calls_never_make_a_wrong_repository(any_site: Site,
                                                               tmp_path: Path) -> None:
    """A seeded storm: every kind on every call with a small probability, through
    backups, a copy, a point removal and gc, many times over; after each failure the
    invariants hold and the failed step is done again on a healthy store."""
    site = any_site
    second = _second(tmp_path, site)
    failed = 0
    for seed in range(12 if site.url.startswith("/") else 2):
        rnd = random.Random(seed)
        storm = [Fault(kind, ("put",) if kind == "torn" else
                       ("get", "put", "delete", "list", "exists", "size"), probability=0.004)
                 for kind in FAILING]
        image = _new_image(tmp_path, seed)
        step = rnd.choice(["backup", "copy", "remove", "gc"])

        def run(repo: Repository, dst: Repository, image: Path = image,
                step: str = step) -> None:
            if step == "backup":
                site.images[back_up_images(repo, [image], name=image.stem).id] = image
            elif step == "copy":
                copy_points(repo, dst, repo.points())
            elif step == "remove" and len(site.images) > 1:
                victim = sorted(site.images)[0]
                repo.remove_point(victim)
                del site.images[victim]
            elif step == "gc":
                collect_garbage(repo, wait=5)

        try:
            repo, _ = site.open(*storm, seed=seed)
            dst, _ = second.open(*storm, seed=seed + 1000)
            run(repo, dst)
        except BackendError as e:
            failed += 1
            assert "injected" in e.message
            if step == "remove":  # the manifest's delete may have happened or not
                site.images = {pid: site.images[pid] for pid in site.committed()}
            run(site.open()[0], second.open()[0])
        site.check(tmp_path)
        second.images = {pid: site.images[pid] for pid in second.committed()
                         if pid in site.images}
    assert failed > 0  # the storm did reach the operations


@pytest.mark.parametrize(("any_site", "at"), [("local", 3), ("local", 17), ("local", 41),
                                             ("seaweedfs", 17)], indirect=["any_site"])
def test_writes_lost_at_a_crash_are_never_trusted_by_the_next_backup(
        any_site: Site, tmp_path: Path, at: int) -> None:
    """The host dies mid-backup: the chunks it put and had not synced are gone. The next
    process backs up the same image again; its point must not name a lost chunk."""
    site = any_site
    image = _new_image(tmp_path, 3)
    repo, backend = site.open(Fault("lost", ("put",), prefix="chunks/", probability=1.0),
                              Fault("crash", ("put",), prefix="chunks/", at=at))
    with pytest.raises(Crashed):
        back_up_images(repo, [image], name="new", workers=1)
    assert not backend.unsynced  # the crash dropped them
    site.check(tmp_path)
    repo, _ = site.open()
    site.images[back_up_images(repo, [image], name="new").id] = image
    site.check(tmp_path)


def test_a_lock_whose_release_fails_neither_fails_the_work_nor_blocks_this_process(
        any_site: Site, tmp_path: Path) -> None:
    """The backup is committed even though its lock could not be deleted; a gc in the
    same (long-running, as serve is) process is not held off by it."""
    site = any_site
    image = _new_image(tmp_path, 4)
    repo, backend = site.open(Fault("eio", ("delete",), prefix="locks/", at=1))
    site.images[back_up_images(repo, [image], name="new").id] = image
    assert [f.key.split("/")[0] for f in backend.log] == ["locks"]
    assert list(site.store().list("locks/"))
    repo, _ = site.open()
    collect_garbage(repo, wait=0)  # Locked if the backup's lock still counted as held
    assert not list(site.store().list("locks/"))
    site.check(tmp_path)


def test_a_read_that_fails_mid_backup_says_nothing_was_committed(site: Site,
                                                                 tmp_path: Path) -> None:
    """The backup had written chunks when a lookup failed: 'the repository was not
    changed' (true of that one call) is not what the person must hear."""
    repo, _ = site.open(Fault("unreachable", ("size",), prefix="chunks/", at=3))
    error = _fails_as_storage("unreachable",
                              lambda: back_up_images(repo, [_new_image(tmp_path, 5)],
                                                     name="new"))
    assert "Nothing was committed" in error.message
    assert "was not changed" not in error.message
    site.check(tmp_path)
