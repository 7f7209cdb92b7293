"""An S3 repository that fails, as a user meets it on the command line: each fault
gives one clear sentence and a stable exit code, and loses nothing.

Wrong credentials, a bucket that holds something else, credentials that may not
delete, throttling (retried; past the retry budget an error, nothing committed), a
clock the server refuses, and the server killed in the middle of a VM's backup. (A
wrong endpoint and an unknown bucket: tests/backends/test_s3.py's CLI tests; a
stalled connection: its fault tests, with a short read timeout.) Everything runs on
SeaweedFS, a prefix of one bucket per test.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stasis.backends import open_backend
from stasis.repository import Repository
from tests.cli.test_vm_cli import busy_guest  # noqa: F401 - a fixture
from tests.conftest import BIN, CHEAP_KDF, PASSPHRASE, Cli, images_equal, mixed_image
from tests.s3proxy import S3Proxy
from tests.s3servers import S3Server, skewed_clock_env

_prefixes = itertools.count(1)


@pytest.fixture(scope="module")
def bucket(seaweedfs: S3Server) -> str:
    return seaweedfs.new_bucket()


@pytest.fixture
def prefix() -> str:
    return f"t{next(_prefixes)}"


@pytest.fixture
def s3(cli: Cli, seaweedfs: S3Server, bucket: str, prefix: str) -> Cli:
    """The CLI on a new repository in a prefix of the module's bucket."""
    url = seaweedfs.url(bucket, prefix)
    Repository.init(open_backend(url), passphrase=PASSPHRASE.encode(), chunk_size=256 << 10,
                    kdf=CHEAP_KDF)
    cli.env["STASIS_REPO"] = url
    return cli


@pytest.fixture(scope="module")
def proxy(seaweedfs: S3Server) -> Iterator[S3Proxy]:
    with S3Proxy(seaweedfs.endpoint, profile=seaweedfs.profile) as p:
        yield p


def _keys(server: S3Server, bucket: str, prefix: str) -> dict[str, int]:
    client, found, token = server.client(), {}, None
    while True:
        page = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/",
                                      **({"ContinuationToken": token} if token else {}))
        found.update({o["Key"]: o["Size"] for o in page.get("Contents", ())})
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated"):
            return found


def _points(cli: Cli, **kw: Any) -> list[str]:
    listed = cli.ok("list", "--json", **kw).json()
    assert isinstance(listed, list)
    return [p["id"] for p in listed]


def _clean(err: str) -> None:
    assert "Traceback" not in err and "botocore" not in err, err


def test_wrong_credentials_are_named_and_nothing_is_written(
        s3: Cli, seaweedfs: S3Server, bucket: str, prefix: str, tmp_path: Path) -> None:
    before = _keys(seaweedfs, bucket, prefix)
    url = f"s3://{bucket}/{prefix}?endpoint={seaweedfs.endpoint}&region=us-east-1"
    wrong = {"AWS_ACCESS_KEY_ID": "stasis-admin", "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    for args in (["list"], ["backup", "image", str(mixed_image(tmp_path / "a.raw", 2 << 20)),
                            "--name", "a"]):
        r = s3(*args, "--repo", url, env=wrong)
        assert r.code == 42, r.err
        assert "rejected the credentials" in r.err and seaweedfs.endpoint in r.err
        assert "AWS_SECRET_ACCESS_KEY" in r.err
        _clean(r.err)
    assert _keys(seaweedfs, bucket, prefix) == before


def test_a_bucket_that_is_not_a_repository_is_refused_and_left_alone(
        cli: Cli, seaweedfs: S3Server, bucket: str, prefix: str, tmp_path: Path) -> None:
    seaweedfs.client().put_object(Bucket=bucket, Key=f"{prefix}/holiday.jpg", Body=b"jpeg")
    before = _keys(seaweedfs, bucket, prefix)
    url = seaweedfs.url(bucket, prefix)
    r = cli("list", "--repo", url)
    assert r.code == 11 and "is not a Stasis repository" in r.err, r.err
    src = mixed_image(tmp_path / "a.raw", 2 << 20)
    r = cli("backup", "image", str(src), "--name", "a", "--repo", url)
    assert r.code == 11 and "Nothing was read or written" in r.err, r.err
    r = cli("repo", "init", "--repo", url)
    assert r.code == 11 and "is not empty" in r.err and "Nothing was written" in r.err, r.err
    _clean(r.err)
    assert _keys(seaweedfs, bucket, prefix) == before


def test_append_only_credentials_back_up_but_prune_and_gc_say_they_may_not_delete(
        s3: Cli, seaweedfs: S3Server, bucket: str, prefix: str, tmp_path: Path) -> None:
    profile = seaweedfs.append_only_profile(bucket)
    append = s3.env["STASIS_REPO"].replace(f"profile={seaweedfs.profile}", f"profile={profile}")
    # Backed up with the maintenance credentials: a backup's lock is an object that an
    # append-only key cannot delete when it is done (the immutability work's to solve).
    for seed in (1, 2):
        src = mixed_image(tmp_path / f"{seed}.raw", 4 << 20, seed=seed)
        s3.ok("backup", "image", str(src), "--name", "a")
    points = _points(s3, env={"STASIS_REPO": append})
    assert len(points) == 2
    for args in (["prune", "--keep-last", "1"], ["gc"]):
        r = s3(*args, "--repo", append)
        assert r.code == 41, r.err
        assert f"refused the deletes that {args[0]} needs: access denied" in r.err
        assert f"Nothing was deleted or locked: {args[0]} did not start" in r.err
        assert "prune and gc need the maintenance credentials" in r.err
        _clean(r.err)
    assert _points(s3) == points  # nothing lost
    # ... and no lock left that these credentials could not remove (it would block gc)
    assert not [k for k in _keys(seaweedfs, bucket, prefix) if "/locks/" in k]
    assert s3.ok("verify", "--deep", "--json").json()["ok"]  # type: ignore[index]
    # The maintenance credentials may.
    s3.ok("prune", "--keep-last", "1")
    s3.ok("gc")
    assert _points(s3) == points[1:]


def test_throttling_is_retried_and_the_backup_succeeds(
        s3: Cli, proxy: S3Proxy, bucket: str, prefix: str, tmp_path: Path) -> None:
    src = mixed_image(tmp_path / "a.raw", 4 << 20)
    failed = proxy.failed
    proxy.fail(6, "503", method="PUT")
    s3.ok("backup", "image", str(src), "--name", "a", "--repo", proxy.url(bucket, prefix))
    assert proxy.failed - failed == 6
    s3.ok("restore", "disk", "a@latest", "--to", str(tmp_path / "out.raw"))
    assert images_equal(src, tmp_path / "out.raw")


def test_throttling_past_the_retry_budget_is_an_error_and_commits_nothing(
        s3: Cli, proxy: S3Proxy, seaweedfs: S3Server, bucket: str, prefix: str,
        tmp_path: Path) -> None:
    src = mixed_image(tmp_path / "a.raw", 4 << 20)
    s3.ok("backup", "image", str(src), "--name", "a")
    points = _points(s3)
    manifests = {k for k in _keys(seaweedfs, bucket, prefix) if "/manifests/" in k}
    changed = mixed_image(tmp_path / "b.raw", 4 << 20, seed=2)
    proxy.fail(10_000, "503", method="PUT")
    try:
        r = s3("backup", "image", str(changed), "--name", "a", "--repo",
               proxy.url(bucket, prefix))
    finally:
        proxy.heal()
    assert r.code == 21, r.err
    assert "SlowDown" in r.err and "8 attempts" in r.err
    assert "Nothing was committed" in r.err or "nothing was committed" in r.err
    _clean(r.err)
    assert _points(s3) == points
    assert {k for k in _keys(seaweedfs, bucket, prefix) if "/manifests/" in k} == manifests
    s3.ok("backup", "image", str(changed), "--name", "a", "--repo", proxy.url(bucket, prefix))
    assert len(_points(s3)) == 2


def test_a_clock_the_server_refuses_is_said_so(s3: Cli) -> None:
    r = s3("list", env=skewed_clock_env("+1h"), subprocess=True)
    assert r.code == 43, r.err
    assert "clock" in r.err and "RequestTimeTooSkewed" in r.err and "NTP" in r.err
    _clean(r.err)
    assert _points(s3) == []  # the same command with the clock right works


# --- the server killed in the middle of a backup ------------------------------------


def _chunks(server: S3Server, bucket: str, prefix: str) -> int:
    return sum(1 for k in _keys(server, bucket, prefix) if "/chunks/" in k)


@pytest.mark.vm
def test_the_server_killed_mid_backup_commits_nothing_and_the_next_backups_work(
        kit: Any, busy_guest: Any, s3: Cli, seaweedfs: S3Server,  # noqa: F811
        bucket: str, prefix: str, tmp_path: Path) -> None:
    import libvirt

    from stasis.hypervisor import libvirt_api as lv

    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o711)
    s3.env["STASIS_SCRATCH_DIR"] = str(scratch)
    repo_id = Repository.read_config(open_backend(s3.env["STASIS_REPO"]))["id"]
    # The first backup reads 256 MiB of random data: it writes chunks for seconds.
    before = _chunks(seaweedfs, bucket, prefix)
    proc = subprocess.Popen([str(BIN), "backup", "vm", busy_guest.name], env=s3.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _chunks(seaweedfs, bucket, prefix) < before + 40 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert proc.poll() is None, f"backup ended before the kill: {proc.stderr.read()}"  # type: ignore[union-attr]
        seaweedfs.kill()
        _out, err = proc.communicate(timeout=300)
    finally:
        seaweedfs.start()
    assert proc.returncode == 44, err
    assert "cannot be reached" in err and "nothing was committed" in err.lower(), err
    _clean(err)
    dom = busy_guest.domain
    assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
    assert lv.checkpoints(dom, lv.chain_prefix(repo_id)) == []
    assert list(scratch.iterdir()) == []
    assert _points(s3) == []
    # Started again: the next backup works (full: no chain was begun), the one after it
    # is incremental from it, and it restores exactly (its chunks are mostly the full's,
    # so this restore reads both points).
    for n in range(2):
        if n:
            busy_guest.write_pattern("vda", 200 << 20, 1 << 20, byte=0x5A)
            busy_guest.sync()
            ref = tmp_path / "ref.raw"
            subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw",
                            str(busy_guest.disks["vda"].path), str(ref)], check=True)
        point = s3.ok("backup", "vm", busy_guest.name, "--json").json()
        assert isinstance(point, dict)
        vda = next(d for d in point["vms"][0]["disks"] if d["target"] == "vda")
        assert vda["mode"] == ("incremental" if n else "full"), vda
    out = tmp_path / "out.raw"
    s3.ok("restore", "disk", point["id"], "--disk", "vda", "--to", str(out), "--format", "raw")
    assert images_equal(ref, out)
    assert s3.ok("doctor", "--json").json() == []
