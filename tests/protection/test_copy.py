"""Copies between repositories: shared key (objects as they are) and own key
(re-encrypted, renamed), incremental, resumed, dry, rate-limited."""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stasis.app.index import rebuild_index
from stasis.app.status import vm_status
from stasis.backends import open_backend
from stasis.catalog import Catalog, DrillStore
from stasis.catalog.db import CATALOG_FILE
from stasis.errors import CopyRefused, IntegrityError, KeyMismatch
from stasis.protection.backup import back_up_images
from stasis.protection.copy import TokenBucket, copy_mode, copy_points
from stasis.protection.verify import verify
from stasis.recovery.restore import restore_disk
from stasis.repository import Credentials, Manifest, Repository
from stasis.repository.drills import DrillProof, proof_key, proof_name
from stasis.repository.repo import chunk_key
from tests.conftest import CHEAP_KDF, MiB, init_repo, mixed_image, seed_catalog, write_image

DEST_PASSPHRASE = b"the other site's passphrase"
CHUNK = 256 << 10


def _dest(path: Path, *, key_from: Repository | None = None, chunk_size: int = CHUNK
          ) -> Repository:
    return Repository.init(open_backend(path), passphrase=DEST_PASSPHRASE,
                           chunk_size=chunk_size, kdf=CHEAP_KDF, key_from=key_from)


def _reopen_dest(path: Path) -> Repository:
    return Repository.open(open_backend(path), Credentials(passphrase=DEST_PASSPHRASE))


def _objects(root: Path, *prefixes: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for prefix in prefixes for p in (root / prefix).rglob("*")
            if p.is_file() and ".tmp-" not in p.name}


def _change(image: Path, offsets: list[int], seed: int) -> None:
    rnd = random.Random(seed)
    with open(image, "r+b") as f:
        for at in offsets:
            f.seek(at)
            f.write(rnd.randbytes(4096))


@pytest.fixture
def source(tmp_path: Path) -> Repository:
    return init_repo(tmp_path / "src", chunk_size=CHUNK)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return mixed_image(tmp_path / "disk.raw")


def test_shared_key_copies_objects_byte_for_byte(tmp_path: Path, source: Repository,
                                                 image: Path) -> None:
    first = back_up_images(source, [image], name="web")
    _change(image, [5 * MiB], seed=2)
    second = back_up_images(source, [image], name="web")
    dest = _dest(tmp_path / "dst", key_from=source)
    assert dest.key_id == source.key_id and dest.key_from == source.id
    assert dest.id != source.id and dest.chunk_size == source.chunk_size

    report = copy_points(source, dest, source.points())
    assert report.shared_key and report.copied == [first.id, second.id]
    src_objects = _objects(tmp_path / "src", "chunks", "pages", "indexes", "manifests")
    dst_objects = _objects(tmp_path / "dst", "chunks", "pages", "indexes", "manifests")
    assert dst_objects == src_objects  # every object, the same bytes under the same key
    assert report.objects_sent == len(src_objects)
    # The destination opens with its own slot and verifies deep.
    reopened = _reopen_dest(tmp_path / "dst")
    assert verify(reopened, deep=True).ok


def test_own_key_copy_restores_bit_exactly_after_the_source_is_gone(
        tmp_path: Path, source: Repository, image: Path) -> None:
    back_up_images(source, [image], name="web")
    _change(image, [0, 7 * MiB + 100], seed=3)
    last = back_up_images(source, [image], name="web")
    expected = image.read_bytes()
    dest = _dest(tmp_path / "dst")
    report = copy_points(source, dest, source.points())
    assert not report.shared_key and len(report.copied) == 2
    # Renamed: no chunk of the source is there under its source name.
    assert not set(_objects(tmp_path / "src", "chunks")) & set(
        _objects(tmp_path / "dst", "chunks"))
    shutil.rmtree(tmp_path / "src")
    image.unlink()

    reopened = _reopen_dest(tmp_path / "dst")
    assert verify(reopened, deep=True).ok
    copied = reopened.resolve(last.id)
    assert copied.id == last.id and copied.name == "web"
    target = tmp_path / "restored.raw"
    restore_disk(reopened, copied, target=target, fmt="raw")
    assert target.read_bytes() == expected


@pytest.mark.parametrize("shared", [True, False], ids=["shared-key", "own-key"])
def test_an_incremental_copy_sends_and_reads_only_the_changes(
        tmp_path: Path, source: Repository, image: Path, shared: bool) -> None:
    back_up_images(source, [image], name="web")
    dest = _dest(tmp_path / "dst", key_from=source if shared else None)
    full = copy_points(source, dest, source.points())
    # Two chunks change, both in the one page of this disk (96 entries of 256).
    _change(image, [2 * MiB + 10, 20 * MiB + 10], seed=4)
    second = back_up_images(source, [image], name="web")
    chunks_new = second.vms[0].disks[0].chunks_new
    assert chunks_new == 2

    report = copy_points(source, dest, source.points())
    assert report.copied == [second.id] and len(report.skipped) == 1
    # 2 chunks, the one page that changed, the root, the manifest.
    assert report.objects_sent == chunks_new + 3
    assert report.objects_sent < full.objects_sent
    assert report.chunks_read == chunks_new  # nothing else read at the source
    assert report.bytes_read < 2 * CHUNK + 1
    assert verify(dest, deep=True).ok


def test_a_rerun_sends_nothing_again_and_a_resumed_copy_sends_only_what_is_missing(
        tmp_path: Path, source: Repository, image: Path) -> None:
    back_up_images(source, [image], name="web")
    dest = _dest(tmp_path / "dst")
    full = copy_points(source, dest, source.points())
    again = copy_points(source, dest, source.points())
    assert again.objects_sent == 0 and again.skipped == full.copied

    # A copy interrupted before its commit: objects without a manifest.
    other = _dest(tmp_path / "dst2")
    copy_points(source, other, source.points())
    (manifest,) = (tmp_path / "dst2" / "manifests").iterdir()
    manifest.unlink()
    chunks = sorted((tmp_path / "dst2" / "chunks").rglob("*"))
    removed = [p for p in chunks if p.is_file()][:3]
    for p in removed:
        p.unlink()
    resumed = copy_points(source, _reopen_dest(tmp_path / "dst2"), source.points())
    assert resumed.copied == full.copied
    assert resumed.objects_sent == len(removed) + 1  # the chunks lost, the manifest
    assert verify(_reopen_dest(tmp_path / "dst2"), deep=True).ok


def test_dry_run_sends_nothing_and_says_what_would_go(tmp_path: Path, source: Repository,
                                                       image: Path) -> None:
    back_up_images(source, [image], name="web")
    dest = _dest(tmp_path / "dst")
    before = _objects(tmp_path / "dst", "")
    dry = copy_points(source, dest, source.points(), dry_run=True)
    assert _objects(tmp_path / "dst", "") == before  # (locks come and go)
    assert dry.dry_run and dry.points[0].action == "would copy"
    real = copy_points(source, dest, source.points())
    assert (dry.objects_sent, dry.bytes_sent) == (real.objects_sent, real.bytes_sent)


def test_deletions_and_holds_do_not_propagate(tmp_path: Path, source: Repository,
                                              image: Path) -> None:
    m = back_up_images(source, [image], name="web")
    source.hold(m.id, None, "case 7")
    dest = _dest(tmp_path / "dst")
    copy_points(source, dest, source.points())
    assert dest.holds() == {}  # a hold stays at its site
    source.release(m.id)
    source.remove_point(m.id)
    report = copy_points(source, dest, source.points())
    assert report.points == []
    assert dest.point_ids() == [m.id]
    assert verify(dest, deep=True).ok


def test_a_point_of_several_disks_is_copied_whole(tmp_path: Path, source: Repository,
                                                  image: Path) -> None:
    other = write_image(tmp_path / "data.raw", 3 * MiB + 5120,  # a short last chunk
                        [(MiB, random.Random(9).randbytes(MiB + 7))])
    m = back_up_images(source, [image, other], name="app")
    dest = _dest(tmp_path / "dst")
    copy_points(source, dest, [m])
    target = tmp_path / "data.out"
    restore_disk(dest, dest.resolve(m.id), target=target, disk="data.raw", fmt="raw")
    assert target.read_bytes() == other.read_bytes()


def test_a_damaged_source_chunk_is_not_sent_and_nothing_is_committed(
        tmp_path: Path, source: Repository, image: Path) -> None:
    m = back_up_images(source, [image], name="web")
    index = source.load_index(m.vms[0].disks[0].index)
    _i, victim = next(index.stored())
    path = tmp_path / "src" / chunk_key(victim)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    dest = _dest(tmp_path / "dst", key_from=source)
    with pytest.raises(IntegrityError, match="damaged"):
        copy_points(source, dest, [m])
    assert dest.point_ids() == []
    assert not (tmp_path / "dst" / chunk_key(victim)).exists()


def test_refusals(tmp_path: Path, source: Repository) -> None:
    with pytest.raises(CopyRefused, match="same repository"):
        copy_mode(source, source)
    with pytest.raises(CopyRefused, match="chunks of"):
        copy_mode(source, _dest(tmp_path / "big", chunk_size=1 << 20))
    # A destination made with the source's key whose key is not the source's now.
    made = _dest(tmp_path / "shared", key_from=source)
    stranger = _dest(tmp_path / "stranger")
    forged = Repository(stranger.backend, {**stranger.config, "key_from": source.id},
                        stranger.keys)
    with pytest.raises(KeyMismatch) as e:
        copy_mode(source, forged)
    assert e.value.exit_code == 39
    assert copy_mode(source, made) is True
    assert copy_mode(source, stranger) is False


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def now(self):  # type: ignore[no-untyped-def]
        raise AssertionError("not used")


def test_the_token_bucket_lets_through_rate_bytes_a_second() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, burst=500, clock=clock)  # type: ignore[arg-type]
    assert bucket.take(500) == 0  # the burst goes at once
    assert bucket.take(250) == pytest.approx(0.25)
    clock.t += 1.0  # a second idle refills at most the burst
    assert bucket.take(500) == 0
    assert bucket.take(1000) == pytest.approx(1.0)
    # 2250 bytes in 2.25 s of clock since the start (1 s of it idle): the rate held.
    assert bucket.taken == 2250 and bucket.waited == pytest.approx(1.25)
    assert clock.t == pytest.approx(2.25)


def test_a_rate_limited_copy_waits_on_its_clock(tmp_path: Path, source: Repository,
                                                image: Path) -> None:
    back_up_images(source, [image], name="web")
    dest = _dest(tmp_path / "dst")
    clock = FakeClock()
    rate = 1 << 20
    report = copy_points(source, dest, source.points(), rate=rate,
                         clock=clock)  # type: ignore[arg-type]
    burst = max(64 << 10, rate / 4)
    # Everything but the burst waited for its bytes at the rate, manifest included.
    assert report.rate_waited_s == pytest.approx((report.bytes_sent - burst) / rate,
                                                 abs=0.002)


def test_the_service_runs_a_queued_copy_to_one_of_its_repositories(
        tmp_path: Path, source: Repository, image: Path, catalog_template: Path) -> None:
    from stasis.app.submit import submit
    from stasis.catalog import Catalog, JobStore
    from stasis.errors import UsageError
    from stasis.service.runner import Service
    from tests.conftest import seed_catalog
    from tests.service.test_job_kinds import no_libvirt, wait_ended

    m = back_up_images(source, [image], name="web")
    dest = _dest(tmp_path / "dst")
    url = str(seed_catalog(catalog_template, tmp_path / "catalog.db"))
    with pytest.raises(UsageError, match="say which points"):
        submit(url, "copy", {"repo": source.url, "to": "dr"})  # refused before queueing
    for d in ("run", "scratch"):
        (tmp_path / d).mkdir()
    with Catalog.open(url) as c:
        s = Service(c, [], repositories={"prod": lambda: source, "dr": lambda: dest},
                    connect=no_libvirt, run_dir=tmp_path / "run",
                    scratch_dir=tmp_path / "scratch")
        s.start()
        good = submit(url, "copy", {"repo": source.url, "to": "dr", "all": True})
        bad = submit(url, "copy", {"repo": source.url, "to": str(tmp_path / "dst"),
                                   "all": True})
        for _ in range(2):
            s.dispatch()
            wait_ended(s)
        store = JobStore(c)
        job, refused = store.get(good), store.get(bad)
        assert (job.kind, job.state) == ("copy", "succeeded"), job.error
        assert job.result[m.id]["action"] == "copied" and job.bytes_written > 0
        assert refused.state == "failed" and "service's repositories" in (refused.error or "")
        s.stop()
    assert _reopen_dest(tmp_path / "dst").point_ids() == [m.id]


@pytest.mark.parametrize("shared", [True, False], ids=["shared-key", "own-key"])
def test_a_format_1_repository_copies_into_a_format_2_one(tmp_path: Path,
                                                          shared: bool) -> None:
    import tarfile

    from tests.repository import v1_fixture

    with tarfile.open(v1_fixture.FIXTURE) as tar:
        tar.extractall(tmp_path)  # our own fixture
    old = Repository.open(open_backend(tmp_path / "repo"),
                          Credentials(passphrase=v1_fixture.PASSPHRASE.encode()))
    assert old.format_version == 1
    dest = _dest(tmp_path / "dst", key_from=old if shared else None,
                 chunk_size=v1_fixture.CHUNK_SIZE)
    first, second = old.points()
    copy_points(old, dest, [first])
    report = copy_points(old, dest, [first, second])
    assert report.copied == [second.id]
    # Only the chunks the second point changed are read: 12 writes of 8 KiB.
    assert 0 < report.chunks_read <= 24
    for m, which in ((first, "first"), (second, "second")):
        copied = dest.resolve(m.id)
        version = dest.load_index(copied.vms[0].disks[0].index).version
        assert version == (1 if shared else 2)  # as they are, or rewritten paged
        target = tmp_path / f"{which}.raw"
        restore_disk(dest, copied, target=target, fmt="raw", run_dir=tmp_path)
        assert target.read_bytes() == v1_fixture.image(which)
    assert verify(dest, deep=True).ok


def test_a_shared_key_copy_into_a_format_1_repository_is_refused(
        tmp_path: Path, source: Repository) -> None:
    twin = _dest(tmp_path / "twin", key_from=source)
    old = Repository(twin.backend, {**twin.config, "version": 1}, twin.keys)
    with pytest.raises(CopyRefused, match="repo upgrade"):
        copy_mode(source, old)


class _GcMeanwhile:
    """A progress sink that, once the copy is under way, tries gc at both ends."""

    def __init__(self, repos: list[Repository]) -> None:
        self.repos = repos
        self.refused: list[str] = []

    def start(self, description: str, total: int) -> None:
        from stasis.errors import Locked
        from stasis.repository.gc import collect_garbage

        for r in self.repos:
            with pytest.raises(Locked, match="copy"):
                collect_garbage(r, wait=0)
            self.refused.append(r.id)

    def advance(self, amount: int) -> None:
        pass

    def finish(self) -> None:
        pass


def test_gc_at_either_end_waits_for_a_copy_in_flight(tmp_path: Path, source: Repository,
                                                     image: Path) -> None:
    back_up_images(source, [image], name="web")
    dest = _dest(tmp_path / "dst")
    probe = _GcMeanwhile([source, dest])
    copy_points(source, dest, source.points(), progress=probe)
    assert probe.refused == [source.id, dest.id]
    assert verify(dest, deep=True).ok


@pytest.mark.root
def test_a_destination_that_fills_up_commits_nothing(tmp_path: Path, tmpfs: Path,
                                                     source: Repository) -> None:
    from stasis.errors import RepositoryFull

    big = write_image(tmp_path / "big.raw", 8 * MiB, [(0, random.Random(5).randbytes(8 * MiB))])
    m = back_up_images(source, [big], name="big")
    dest = _dest(tmpfs / "dst")
    with pytest.raises(RepositoryFull):
        copy_points(source, dest, [m])
    assert dest.point_ids() == []


def test_a_group_point_is_copied_with_every_member_and_file(
        tmp_path: Path, source: Repository, catalog_template: Path) -> None:
    """A point of kind group, made here from image files (no guest needed): two VMs,
    each with a disk, one with an NVRAM file beside it."""
    import contextlib

    from stasis.blockio import images
    from stasis.protection.backup import DiskSource, back_up_disks, open_reader
    from stasis.repository import VmRecord

    rnd = random.Random(21)
    files = {
        ("db", "vda"): write_image(tmp_path / "db.raw", 4 * MiB, [(0, rnd.randbytes(MiB))]),
        ("web", "vda"): write_image(tmp_path / "web.raw", 2 * MiB, [(MiB, rnd.randbytes(9000))]),
        ("web", "nvram"): write_image(tmp_path / "nvram.fd", 128 << 10,
                                      [(0, rnd.randbytes(4096))]),
    }
    vms = [VmRecord(name="db", kind="vm"), VmRecord(name="web", kind="vm")]
    with source.shared_lock("test"), contextlib.ExitStack() as stack:
        sources = [
            DiskSource(name=disk, reader=stack.enter_context(open_reader(images.inspect(p))),
                       virtual_size=images.inspect(p).virtual_size, format="raw",
                       vm=0 if vm == "db" else 1, role="nvram" if disk == "nvram" else "disk")
            for (vm, disk), p in files.items()]
        m = back_up_disks(source, sources, name="app", kind="group", vms=vms)
    assert m.kind == "group" and [len(v.files) for v in m.vms] == [0, 1]
    # The newest drills of the group and its VMs go with it (re-sealed for the own-key
    # destination); another VM's, whose points are not copied, stays.
    for kind, subject in (("group", "app"), ("vm", "db"), ("vm", "web"), ("vm", "other")):
        source.record_drill(_proof(kind, subject, "d1", m.id, hours_ago=5))
    dest = _dest(tmp_path / "dst")
    report = copy_points(source, dest, [m])
    assert (report.drills_sent, report.drills_present) == (3, 0)
    _drills_copied_and_learned(tmp_path, source, dest, m, catalog_template)
    copied = dest.resolve(m.id)
    assert (copied.kind, [v.name for v in copied.vms]) == ("group", ["db", "web"])
    assert verify(dest, deep=True).ok
    for (vm, disk), p in files.items():
        if disk == "nvram":
            record = copied.vms[1].files[0]
            index = dest.load_index(record.index)
            data = b"".join(dest.load_chunk(n) if n != bytes(32) else bytes(index.chunk_length(i))
                            for i, n in enumerate(index.names()))
            assert data == p.read_bytes()
            continue
        target = tmp_path / f"{vm}.out"
        restore_disk(dest, copied, target=target, vm=vm, disk=disk, fmt="raw")
        assert target.read_bytes() == p.read_bytes()


NOW = datetime.now(UTC)


def _proof(kind: str, subject: str, drill: str, point: str, *, hours_ago: float,
           passed: bool = True) -> DrillProof:
    """A drill proof as ``stasis drill`` writes it (app/drill.py)."""
    started = (NOW - timedelta(hours=hours_ago)).replace(microsecond=0)
    return DrillProof(kind, subject, drill, point, "restore", passed,
                      40.0 if passed else None, started, started + timedelta(seconds=45),
                      host="site-a", checks=[{"kind": "tcp", "arg": "5432", "vm": "db",
                                              "passed": passed, "seconds": 3.0}])


def _drills_copied_and_learned(tmp_path: Path, source: Repository, dest: Repository,
                               m: Manifest, catalog_template: Path) -> None:
    """After ``m`` was copied with its drill proofs: what the destination holds, a
    re-run, a newer drill at either site, and the destination's catalog rebuilt."""
    proofs = {(p.subject_kind, p.subject): p for p in _reopen_dest(tmp_path / "dst")
              .drill_proofs()}
    assert set(proofs) == {("group", "app"), ("vm", "db"), ("vm", "web")}
    assert proofs[("group", "app")] == source.drill_proof("group", "app")
    assert not set(_objects(tmp_path / "src", "drills")) & set(
        _objects(tmp_path / "dst", "drills"))  # named with the destination's key
    again = copy_points(source, dest, [m])
    assert (again.drills_sent, again.drills_present) == (0, 3)
    # db drilled since at the second site, web again at the first: a re-run sends
    # web's, and leaves the destination's own newer drill of db.
    dest.record_drill(_proof("vm", "db", "d2", m.id, hours_ago=1, passed=False))
    source.record_drill(_proof("vm", "web", "d3", m.id, hours_ago=2))
    dry = copy_points(source, dest, [m], dry_run=True)
    assert (dry.drills_sent, dry.drills_present) == (1, 2)
    assert dest.drill_proof("vm", "web").drill == "d1"  # type: ignore[union-attr]
    later = copy_points(source, dest, [m])
    assert (later.drills_sent, later.drills_present) == (1, 2)
    assert dest.drill_proof("vm", "web").drill == "d3"  # type: ignore[union-attr]
    assert dest.drill_proof("vm", "db").drill == "d2"  # type: ignore[union-attr]
    # At the second site, with only the repository: the catalog rebuilt knows the
    # drills, and ``stasis status`` shows them per VM and group.
    catalog = str(seed_catalog(catalog_template, tmp_path / "site-b" / CATALOG_FILE))
    rebuilt = rebuild_index(lambda: _reopen_dest(tmp_path / "dst"), catalog=catalog)
    assert (rebuilt.points, rebuilt.drills, rebuilt.damaged_drills) == (1, 3, [])
    rows = {r.vm: r for r in vm_status(catalog)}
    assert rows["web"].drill is not None and rows["web"].drill.last_drill == "d3"
    assert rows["web"].drill.passed and rows["web"].drill.point == m.id
    assert rows["db"].drill is not None and rows["db"].drill.last_drill == "d2"
    assert rows["db"].drill.state == "breached" and not rows["db"].drill.passed
    with Catalog.open(catalog) as c:
        group = DrillStore(c).get("group", "app")
    assert group is not None and (group.drill_id, group.point_name) == ("d1", "app")
    assert group.repo == dest.id and group.rto_s == 40.0 and len(group.checks) == 1
    # Learning again changes nothing.
    assert rebuild_index(lambda: _reopen_dest(tmp_path / "dst"), catalog=catalog).drills == 0
    # A damaged proof at the source is reported, not sent; the others are as before.
    (web,) = [p for p in (tmp_path / "src" / "drills").iterdir()
              if p.name == proof_key(proof_name(source.keys.id, "vm", "web")).split("/")[-1]]
    web.write_bytes(web.read_bytes()[:-1] + bytes([web.read_bytes()[-1] ^ 1]))
    damaged = copy_points(source, dest, [m])
    assert damaged.drills_damaged == [f"drills/{web.name}"]
    assert (damaged.drills_sent, damaged.drills_present) == (0, 2)


@pytest.mark.parametrize("key", ["shared", "own"])
def test_an_empty_object_left_by_a_killed_put_is_written_again(
        tmp_path: Path, source: Repository, image: Path, key: str) -> None:
    """SeaweedFS leaves a 0-byte object under the key of a PUT whose client died after
    its headers (found by the crash matrix: a killed copy's next run trusted it and
    committed a point that did not verify). A backup and a copy write it again."""
    m = back_up_images(source, [image], name="web")
    dest = _dest(tmp_path / "dst", key_from=source if key == "shared" else None)
    copy_points(source, dest, [m])
    dindex = dest.load_index(dest.load_manifest(m.id).vms[0].disks[0].index)
    _i, dvictim = next(dindex.stored())
    (tmp_path / "dst" / chunk_key(dvictim)).write_bytes(b"")  # the killed PUT's object
    (tmp_path / "dst" / "manifests" / m.id).unlink()  # the copy was killed before its commit
    copy_points(source, _reopen_dest(tmp_path / "dst"), [m])
    assert verify(_reopen_dest(tmp_path / "dst"), deep=True).ok

    # The backup's own lookup: an empty chunk object is not a stored chunk.
    _i, victim = next(source.load_index(m.vms[0].disks[0].index).stored())
    (tmp_path / "src" / chunk_key(victim)).write_bytes(b"")
    assert not source.has_chunk(victim)
    back_up_images(source, [image], name="web")
    assert source.has_chunk(victim) and verify(source, deep=True).ok


def test_an_empty_manifest_is_no_point(tmp_path: Path, source: Repository, image: Path) -> None:
    """The commit PUT of a backup whose store went away under it (SeaweedFS leaves a
    0-byte object: found by test_stress through a partition, where a copy then failed
    on a 'damaged source manifest'): no point, for listing, verify and copy alike."""
    m = back_up_images(source, [image], name="web")
    (tmp_path / "src" / "manifests" / ("0" * 32)).write_bytes(b"")
    assert source.point_ids() == [m.id]
    assert verify(source, deep=True).ok
    dest = _dest(tmp_path / "dst", key_from=source)
    assert copy_points(source, dest, source.points()).copied == [m.id]
