"""A policy's copy section: checked (unknown destination, the source itself, a
destination that cannot be unlocked), run by the service as copy jobs (its own
schedule here; after every run in tests/service/test_serve_vm.py), the destination's
retention applied there and not at the source, nothing it pruned sent again, and the
lag per site in status. Points are made of images: no guest needed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from stasis.app.config import Config, ConfigFile, RepositoryConfig
from stasis.app.policies import repository_rules
from stasis.backends import open_backend
from stasis.catalog import Catalog, JobStore, PointIndex
from stasis.errors import HypervisorError
from stasis.protection.backup import back_up_images
from stasis.repository import Credentials, Repository
from stasis.service.policy import check_text, parse_policies
from stasis.service.runner import Service
from stasis.service.status import vm_status
from tests.clocks import ManualClock
from tests.conftest import CHEAP_KDF, init_repo, mixed_image, reopen, seed_catalog

DEST_PASSPHRASE = b"the other site's passphrase"

POLICY = """
[[policy]]
name = "nightly"
vms = ["disk"]
every = "1d"
repository = "local"

[policy.retention]
keep_last = 5

[[policy.copy]]
to = "offsite"
every = "1m"

[policy.copy.retention]
keep_last = 1
"""


def _problems(text: str, **rules: object) -> list[str]:
    return [p.text for p in check_text(text, **rules)[1]]  # type: ignore[arg-type]


def test_policy_check_refuses_a_destination_unknown_the_source_or_locked(
        tmp_path: Path) -> None:
    served = {"repositories": {"local", "offsite"}}
    assert _problems(POLICY, **served) == []
    assert _problems(POLICY.replace('to = "offsite"', 'to = "remote"'), **served) == [
        "copy destination 'remote' is not a repository the service serves (configured: "
        "local, offsite)"]
    assert _problems(POLICY.replace('to = "offsite"', 'to = "local"'), **served) == [
        "copy destination 'local' is the policy's own repository: a copy goes to another "
        "site"]
    # A policy naming no repository backs up into the default one.
    default = POLICY.replace('repository = "local"\n', "").replace('"offsite"', '"local"')
    assert _problems(default, **served, default_repository="local") == [
        "copy destination 'local' is the policy's own repository: a copy goes to another "
        "site"]
    assert _problems(POLICY.replace('every = "1m"', 'every = "1m"\ncron = "0 3 * * *"'),
                     **served) == ["copy has both cron and every: give one of them (or "
                                   "neither, to copy after every run)"]
    assert _problems(POLICY + '\n[[policy.copy]]\nto = "offsite"\n', **served) == [
        "copy names the destination 'offsite' twice"]
    assert "unknown key 'keep_dialy'" in _problems(
        POLICY.replace("keep_last = 1", "keep_dialy = 1"), **served)[0]
    # Unlocked from the config: the destination's key file must be readable.
    secret = tmp_path / "local.pass"
    secret.write_text("x")
    config = Config(tmp_path / "stasis.toml", ConfigFile(
        default_repository="local",
        repositories={"local": RepositoryConfig(url="/r/local", passphrase_file=str(secret)),
                      "offsite": RepositoryConfig(url="/r/offsite",
                                                  key_file=str(tmp_path / "gone.key"))}))
    rules = repository_rules(config)
    assert _problems(POLICY, **rules) == [
        f"copy destination 'offsite' cannot be unlocked from the config: its key_file "
        f"{tmp_path / 'gone.key'} does not exist"]


def test_one_table_or_several_and_the_retention_there(tmp_path: Path) -> None:
    one = parse_policies(POLICY.replace("[[policy.copy]]", "[policy.copy]"))[0]
    several = parse_policies(POLICY)[0]
    assert [c.to for c in one.copies] == [c.to for c in several.copies] == ["offsite"]
    target = several.copies[0]
    assert not target.after_runs and several.copy_retention(target).counts["last"] == 1
    after = parse_policies(POLICY.replace('every = "1m"\n', "").replace(
        "\n[policy.copy.retention]\nkeep_last = 1\n", ""))[0]
    assert after.copies[0].after_runs
    assert after.copy_retention(after.copies[0]) == after.retention  # the policy's own


def no_libvirt() -> object:
    raise HypervisorError("libvirt is not used by a copy")


def test_the_service_copies_on_schedule_prunes_there_only_and_status_shows_the_lag(
        tmp_path: Path, catalog_template: Path) -> None:
    clock = ManualClock(datetime.now(UTC))
    src = init_repo(tmp_path / "src")
    dst = Repository.init(open_backend(tmp_path / "dst"), passphrase=DEST_PASSPHRASE,
                          chunk_size=src.chunk_size, kdf=CHEAP_KDF)
    image = mixed_image(tmp_path / "disk.raw", size=4 << 20)
    made = []
    for seed in range(3):
        mixed_image(image, size=4 << 20, seed=seed)
        made.append(back_up_images(src, [image], name="disk", tags={"policy": "nightly"}))
    manual = back_up_images(src, [image], name="disk-manual")
    for d in ("run", "scratch"):
        (tmp_path / d).mkdir()
    url = str(seed_catalog(catalog_template, tmp_path / "catalog.db"))
    policies = parse_policies(POLICY, repositories={"local", "offsite"})
    with Catalog.open(url, clock=clock) as c:
        s = Service(c, policies, repositories={
            "local": lambda: reopen(src),
            "offsite": lambda: Repository.open(open_backend(tmp_path / "dst"),
                                               Credentials(passphrase=DEST_PASSPHRASE))},
            connect=no_libvirt, run_dir=tmp_path / "run", scratch_dir=tmp_path / "scratch")
        s.start()
        PointIndex(c).sync(src)  # as the backup jobs would have indexed them
        # Before any copy: the destination holds nothing, the lag is every point.
        row = next(r for r in vm_status(c, clock.now()) if r.vm == "disk")
        source, offsite = row.sites
        assert (source.role, source.repository, source.newest_point) == (
            "source", "local", made[-1].id)
        assert (offsite.role, offsite.repository, offsite.newest_point, offsite.lag_points,
                offsite.lag_s) == ("copy", "offsite", None, 3, None)

        def copy_slot() -> dict[str, object]:
            clock.tick(seconds=61)
            s.tick()
            for r in list(s.running.values()):
                r.thread.join(120)
            jobs = JobStore(c).list(kind="copy", limit=1)
            assert jobs and jobs[0].state == "succeeded", jobs and jobs[0].error
            return jobs[0].result

        result = copy_slot()
        assert set(result) == {m.id for m in made}  # the policy's points, not the manual one
        there = reopen_dst(tmp_path)
        assert [p.id for p in there.points()] == [made[-1].id]  # keep_last = 1 there
        assert {p.id for p in reopen(src).points()} == {*(m.id for m in made), manual.id}
        row = next(r for r in vm_status(c, clock.now()) if r.vm == "disk")
        assert (row.sites[1].newest_point, row.sites[1].lag_points, row.sites[1].lag_s) == (
            made[-1].id, 0, 0.0)
        # A new point at the source: the copy lags by one point and the time between.
        mixed_image(image, size=4 << 20, seed=9)
        newer = back_up_images(src, [image], name="disk", tags={"policy": "nightly"})
        PointIndex(c).sync(src)
        row = next(r for r in vm_status(c, clock.now()) if r.vm == "disk")
        lag = row.sites[1]
        assert lag.lag_points == 1 and lag.newest_point == made[-1].id
        gap = (datetime.fromisoformat(newer.time) - datetime.fromisoformat(made[-1].time))
        assert lag.lag_s == pytest.approx(gap.total_seconds())
        # The next slot sends the new point alone: what the destination pruned stays gone.
        result = copy_slot()
        assert set(result) == {newer.id}
        assert [p.id for p in reopen_dst(tmp_path).points()] == [newer.id]
        assert len(reopen(src).points()) == 5
        row = next(r for r in vm_status(c, clock.now()) if r.vm == "disk")
        assert row.sites[1].lag_points == 0 and row.sites[1].newest_point == newer.id
        # The catalog indexes the same point in both repositories.
        assert {p.repo for p in PointIndex(c).list() if p.id == newer.id} == {src.id, dst.id}
        s.stop()


def reopen_dst(tmp_path: Path) -> Repository:
    return Repository.open(open_backend(tmp_path / "dst"),
                           Credentials(passphrase=DEST_PASSPHRASE))
