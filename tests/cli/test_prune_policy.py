"""``stasis prune --policy``: a policy's retention over the chains its runs made."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli, mixed_image

pytestmark = pytest.mark.slow

POLICIES = """
[[policy]]
name = "nightly"
vms = ["web"]
every = "1d"

[policy.retention]
keep_last = 1

[[policy]]
name = "bare"
vms = ["db"]
every = "1d"
"""


def test_prune_by_policy(cli_repo: Cli, tmp_path: Path) -> None:
    image = mixed_image(tmp_path / "web.raw")
    policies = tmp_path / "policies.toml"
    policies.write_text(POLICIES)
    ids = [cli_repo.ok("backup", "image", str(image), "--name", "web", "--tag",
                       "policy=nightly", "--json").json()["id"] for _ in range(3)]
    manual = cli_repo.ok("backup", "image", str(image), "--name", "web-manual",
                         "--json").json()["id"]
    dry = cli_repo.ok("prune", "--policy", "nightly", "--policies", str(policies), "--dry-run",
                      "--json").json()
    assert isinstance(dry, dict)
    assert {p["id"] for p in cli_repo.ok("list", "--json").json()} == {*ids, manual}
    real = cli_repo.ok("prune", "--policy", "nightly", "--policies", str(policies),
                       "--json").json()
    assert isinstance(real, dict) and real == {**dry, "dry_run": False, "now": real["now"]}
    assert {p["id"] for p in cli_repo.ok("list", "--json").json()} == {ids[-1], manual}
    # Bad input: nothing is deleted, and the message says why.
    for args, code, words in (
        (["--policy", "bare", "--policies", str(policies)], 2, "no retention rules"),
        (["--policy", "gone", "--policies", str(policies)], None, "no policy named 'gone'"),
        (["--policy", "nightly", "--policies", str(policies), "--keep-last", "2"], 2,
         "own rules"),
    ):
        r = cli_repo("prune", *args)
        assert r.code != 0 and (code is None or r.code == code), r.err
        assert words in r.err
    assert {p["id"] for p in cli_repo.ok("list", "--json").json()} == {ids[-1], manual}
