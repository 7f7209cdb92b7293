"""The retention step after a policy's run: its rules over the chains it made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from stasis.protection.backup import back_up_images
from stasis.repository import Repository
from stasis.service.jobs import JobRun
from stasis.service.policy import parse_policies
from stasis.service.prune import policy_chains, policy_retention
from tests.conftest import mixed_image

POLICY = """
[[policy]]
name = "nightly"
vms = ["web"]
every = "1d"

[policy.retention]
keep_last = 2
"""


def test_policy_retention_prunes_only_the_policys_chains(repo: Repository,
                                                         tmp_path: Path) -> None:
    policy = parse_policies(POLICY)[0]
    image = mixed_image(tmp_path / "web.raw")
    made = [back_up_images(repo, [image], name="web", tags={"policy": "nightly"})
            for _ in range(4)]
    other = [back_up_images(repo, [image], name="db", tags={"policy": "other"})
             for _ in range(3)]
    manual = back_up_images(repo, [image], name="web-manual")
    assert policy_chains(repo, "nightly") == ["web"]
    run = JobRun(store=None, job=None)
    policy_retention(repo, policy, datetime.now(UTC) + timedelta(seconds=1), run)
    left = {p.id for p in repo.points()}
    assert left == {made[-2].id, made[-1].id, *(p.id for p in other), manual.id}
    assert sorted(run.result["retention"]["removed"]) == sorted(p.id for p in made[:2])
    # Run again: nothing more goes.
    policy_retention(repo, policy, datetime.now(UTC) + timedelta(seconds=1), run)
    assert {p.id for p in repo.points()} == left


def test_the_keep_keys_and_options_are_the_retention_tables_rules() -> None:
    """A policy's retention keys and prune's --keep-* options come from PERIOD_RULES."""
    import inspect

    from stasis.cli.prune import prune
    from stasis.service.policy.schema import KNOWN_KEYS
    from stasis.service.retention import PERIOD_RULES

    keys = [rule.key for rule in PERIOD_RULES]
    assert set(keys) | {"keep_within", "min_age"} == KNOWN_KEYS["retention"]
    options = [name for name in inspect.signature(prune).parameters if name.startswith("keep_")]
    assert options == [*keys, "keep_within"]
    text = POLICY.replace("keep_last = 2", "\n".join(f"{key} = {n + 1}"
                                                     for n, key in enumerate(keys)))
    retention = parse_policies(text)[0].retention
    assert retention.counts == {rule.name: n + 1 for n, rule in enumerate(PERIOD_RULES)}
    rules = retention.rules("Europe/Berlin")
    assert [(rule.name, n) for rule, n in rules.counts()] == [
        (rule.name, n + 1) for n, rule in enumerate(PERIOD_RULES)]
    assert rules.to_dict() == {**{key: n + 1 for n, key in enumerate(keys)},
                               "keep_within": None, "min_age": None,
                               "timezone": "Europe/Berlin"}
