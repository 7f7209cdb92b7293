"""Immutability on the command line, on real S3 servers: ``stasis verify`` probes the
Object Lock of an immutable repository (warning 56 when the storage does not enforce
it any more), ``stasis policy check`` (and ``stasis serve`` loading the file) refuses
a retention that the lock outlives, and ``stasis repo init --immutable`` on Swift is
refused with nothing left behind.

Repositories are made in-process (a cheap KDF) with locks of seconds in governance
mode, as tests/repository/test_immutability.py does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stasis.app.serve import service
from stasis.backends import open_backend
from stasis.catalog.db import CATALOG_FILE
from stasis.errors import PolicyError
from stasis.protection.backup import back_up_images
from stasis.repository import Repository
from stasis.repository.immutability import PROBES, Immutability
from tests.conftest import CHEAP_KDF, PASSPHRASE, Cli, MiB, seed_catalog, write_image
from tests.s3servers import S3Server

SHORT = Immutability("governance", retain_s=3, margin_s=1)


@pytest.fixture
def cli_s3(cli: Cli, catalog_template: Path) -> Cli:
    """The CLI with its catalog migrated already; each test names its repository."""
    seed_catalog(catalog_template, Path(cli.env["STASIS_STATE_DIR"]) / CATALOG_FILE)
    return cli


def _immutable_repo(server: S3Server, tmp_path: Path, imm: Immutability = SHORT) -> str:
    """An immutable repository with one point, in a new bucket with Object Lock."""
    url = server.url(server.new_bucket(object_lock=True))
    repo = Repository.init(open_backend(url), passphrase=PASSPHRASE.encode(), kdf=CHEAP_KDF,
                           chunk_size=64 << 10, immutability=imm)
    image = write_image(tmp_path / "disk.raw", 2 * MiB, [(0, b"a" * 300_000)])
    back_up_images(repo, [image], name="a")
    return url


def _objects(server: S3Server, bucket: str) -> dict[str, bytes]:
    client, found, token = server.client(), {}, None
    while True:
        page = client.list_objects_v2(Bucket=bucket,
                                      **({"ContinuationToken": token} if token else {}))
        for o in page.get("Contents", ()):
            found[o["Key"]] = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated"):
            return found


def _copied(source: S3Server, url: str, to: S3Server) -> tuple[str, str]:
    """Every current object of the repository at ``url`` copied, as they are, into a
    new bucket without Object Lock on ``to``: its config still says immutable."""
    bucket = to.new_bucket()
    client = to.client()
    for key, body in _objects(source, url.split("//", 1)[1].split("?", 1)[0]).items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return bucket, to.url(bucket)


def _verify_job(cli: Cli) -> dict[str, Any]:
    jobs = cli.ok("jobs", "--json").json()
    assert isinstance(jobs, list)
    job = next(j for j in jobs if j["kind"] == "verify")  # the newest first
    shown = cli.ok("job", "show", str(job["id"]), "--log", "--json").json()
    assert isinstance(shown, dict)
    return shown


def test_verify_of_an_immutable_repository_probes_its_lock_and_clears_old_probes(
        cli_s3: Cli, seaweedfs: S3Server, tmp_path: Path) -> None:
    url = _immutable_repo(seaweedfs, tmp_path)
    bucket = url.split("//", 1)[1].split("?", 1)[0]
    # A probe of an earlier verify, its lock long ended: the next probe removes it.
    stale = f"{PROBES}{int((datetime.now(UTC) - timedelta(hours=1)).timestamp())}-0000abcd"
    seaweedfs.client().put_object(Bucket=bucket, Key=stale, Body=b"stasis object lock probe\n")
    result = cli_s3.ok("verify", "--json", env={"STASIS_REPO": url}).json()
    assert isinstance(result, dict)
    assert result["ok"] and result["points"] == 1
    assert result["immutable"] is True and result["warnings"] == []
    probes = [k for k in _objects(seaweedfs, bucket) if k.startswith(PROBES)]
    assert stale not in probes and len(probes) == 2  # init's and this verify's, locked
    text = cli_s3.ok("verify", env={"STASIS_REPO": url})
    assert "Object Lock probe: the storage enforces" in text.out and "warning" not in text.err
    job = _verify_job(cli_s3)
    assert job["result"]["object-lock"] == {"probe": "object-lock", "ok": True, "warnings": []}


def test_verify_warns_56_when_the_bucket_does_not_enforce_the_lock_and_changes_nothing(
        cli_s3: Cli, seaweedfs: S3Server, tmp_path: Path) -> None:
    url = _immutable_repo(seaweedfs, tmp_path)
    bucket, copy = _copied(seaweedfs, url, seaweedfs)  # a bucket without Object Lock
    before = _objects(seaweedfs, bucket)
    r = cli_s3("verify", "--json", env={"STASIS_REPO": copy})
    assert r.code == 0, r.err  # a warning: the points themselves verify
    result = r.json()
    assert isinstance(result, dict)
    assert result["ok"] and result["points"] == 1 and result["immutable"] is False
    [warning] = result["warnings"]
    assert warning["code"] == 56 and warning["kind"] == "NotImmutable"
    assert "is not immutable any more: the storage has no Object Lock enabled" \
        in warning["message"] and "Nothing was changed" in warning["message"]
    assert _objects(seaweedfs, bucket) == before  # no probe, nothing else either
    text = cli_s3("verify", env={"STASIS_REPO": copy})
    assert text.code == 0 and "warning 56:" in text.err and "not immutable any more" in text.err
    job = _verify_job(cli_s3)
    assert job["state"] == "succeeded"
    assert job["result"]["object-lock"]["ok"] is False
    assert job["result"]["object-lock"]["warnings"][0]["code"] == 56
    assert any(line["level"] == "warning" and "not immutable any more" in line["text"]
               for line in job["log"])


def test_swift_refuses_init_immutable_and_a_copied_immutable_config_warns_56(
        cli_s3: Cli, swift: S3Server, seaweedfs: S3Server, tmp_path: Path) -> None:
    # The user asks for a bucket with Object Lock: Swift's s3api accepts, enforces nothing.
    bucket = swift.new_bucket(object_lock=True)
    r = cli_s3("repo", "init", "--immutable", "1", "--repo", swift.url(bucket))
    assert r.code == 47, r.err
    assert "cannot be made immutable: the storage has no Object Lock enabled" in r.err, r.err
    assert "Nothing of the repository was written" in r.err and "Traceback" not in r.err
    client = swift.client()
    assert client.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert not client.list_object_versions(Bucket=bucket).get("Versions")
    # A repository made immutable elsewhere, its objects moved to Swift: verify says so.
    _bucket, copy = _copied(seaweedfs, _immutable_repo(seaweedfs, tmp_path), swift)
    result = cli_s3.ok("verify", "--json", env={"STASIS_REPO": copy}).json()
    assert isinstance(result, dict)
    assert result["ok"] and result["immutable"] is False
    assert [w["code"] for w in result["warnings"]] == [56]


POLICY = """\
[[policy]]
name = "vault"
vms = ["db"]
every = "1h"
repository = "vault"

[policy.retention]
keep_daily = 7
{extra}
"""


def test_policy_check_refuses_a_retention_the_lock_outlives(
        cli_s3: Cli, seaweedfs: S3Server, tmp_path: Path) -> None:
    url = seaweedfs.url(seaweedfs.new_bucket(object_lock=True))
    vault = Repository.init(open_backend(url), passphrase=PASSPHRASE.encode(), kdf=CHEAP_KDF,
                            immutability=Immutability("governance", retain_s=10 * 86400,
                                                      margin_s=86400))
    secret = tmp_path / "vault.pass"
    secret.write_text(f"{PASSPHRASE}\n")
    secret.chmod(0o600)
    config = tmp_path / "stasis.toml"
    config.write_text(f'default_repository = "vault"\n[repositories.vault]\nurl = "{url}"\n'
                      f'passphrase_file = "{secret}"\n')
    policies = tmp_path / "p.toml"
    policies.write_text(POLICY.format(extra='min_age = "3d"'))
    r = cli_s3("--config", str(config), "policy", "check", str(policies))
    assert r.code == 29, r.err
    assert f"{policies}:7: policy 'vault': retention at the immutable repository 'vault' " \
           "keeps a point for as little as 3 days" in r.err, r.err
    assert "shorter than its Object Lock of 10 days: prune could not delete its points on " \
           "time (the lock outlives the retention)" in r.err, r.err
    # stasis serve loads the file with the repositories it opened: refused the same way.
    with pytest.raises(PolicyError, match="shorter than its Object Lock of 10 days"), \
            service(lambda: ({"vault": vault}, "vault"), policies=policies,
                    catalog=str(tmp_path / "serve.db"), connect="test:///default"):
        pass
    policies.write_text(POLICY.format(extra='min_age = "10d"'))
    checked = cli_s3.ok("--config", str(config), "policy", "check", "--json", str(policies))
    assert checked.json() == {"file": str(policies), "ok": True, "policies": ["vault"],
                              "problems": []}
