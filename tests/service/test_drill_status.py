"""A policy's drill section, and its targets: parsed and checked like the rest of a
policy file; the newest drill against ``rto`` and ``max_age``; a breach told once; each
group's row in ``stasis status``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stasis.backends import open_backend
from stasis.catalog import Catalog, DrillRecord, DrillStore, GroupStore, PointIndex
from stasis.catalog.db import CATALOG_FILE
from stasis.errors import PolicyError
from stasis.protection.groups import Group
from stasis.repository import Credentials, Manifest, Repository, VmRecord
from stasis.repository.drills import DrillProof
from stasis.service.drill_status import drill_status
from stasis.service.notify import Notifier
from stasis.service.policy import parse_policies
from tests.clocks import ManualClock
from tests.conftest import PASSPHRASE, Cli

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
POLICY = """
[[policy]]
name = "app"
groups = ["shop"]
cron = "0 2 * * *"
[policy.drill]
cron = "0 4 * * 6"
mode = "instant"
checks = ["console:login:", "tcp@db~30:5432", "exec@db:pg_isready"]
rto = "15m"
max_age = "7d"
"""


def record(*, passed: bool = True, rto: float | None = 120.0,
           ago: timedelta = timedelta(hours=1)) -> DrillRecord:
    return DrillRecord("vm", "db", "d1", "ab" * 16, "shop", "instant", passed, rto,
                       NOW - ago - timedelta(minutes=5), NOW - ago,
                       failure=None if passed else "check tcp:5432 on db did not pass")


def test_the_drill_section_is_parsed_and_bad_checks_are_problems_with_a_line() -> None:
    (p,) = parse_policies(POLICY)
    assert p.drill is not None and p.drill.schedule is not None
    assert (p.drill.mode, p.drill.rto, p.drill.max_age) == (
        "instant", timedelta(minutes=15), timedelta(days=7))
    assert p.drill.checks == ("console:login:", "tcp@db~30:5432", "exec@db:pg_isready")
    assert p.drill.schedule.next_after(NOW).weekday() == 5  # Saturday 04:00
    (plain,) = parse_policies(POLICY.split("[policy.drill]")[0])
    assert plain.drill is None
    with pytest.raises(PolicyError) as e:
        parse_policies(POLICY.replace('"tcp@db~30:5432"', '"tcp:http"')
                       .replace('mode = "instant"', 'mode = "sideways"'))
    text = str(e.value)
    assert "the port must be a number from 1 to 65535" in text
    assert "drill.checks[1] is not a drill check (tcp:http: the port" in text
    assert "drill.mode" in text


def test_a_drill_pool_is_parsed_and_checked_against_storage_and_instant_mode() -> None:
    (p,) = parse_policies(POLICY.replace('mode = "instant"', 'mode = "restore"\npool = "fast"'))
    assert p.drill is not None and (p.drill.mode, p.drill.pool) == ("restore", "fast")
    with pytest.raises(PolicyError) as e:
        parse_policies(POLICY.replace('mode = "instant"',
                                      'mode = "instant"\npool = "fast"\nstorage = "/srv/d"'))
    text = str(e.value)
    assert "policies.toml:9: policy 'app': drill has both pool and storage" in text
    assert "an instant drill restores no disk" in text
    with pytest.raises(PolicyError) as e:
        parse_policies(POLICY.replace('cron = "0 4 * * 6"', 'cron = "0 4 * * 6"\nevery = "1d"'))
    assert "drill has both cron and every" in str(e.value)


@pytest.mark.parametrize(("newest", "state", "reason"), [
    (None, "breached", "never drilled"),
    (record(), "met", None),
    (record(rto=1200.0), "breached", "measured RTO 1200s is over the target 15m"),
    (record(ago=timedelta(days=8)), "breached", "older than 1w"),
    (record(passed=False, rto=None), "breached", "the newest drill failed (check tcp"),
])
def test_the_newest_drill_against_rto_and_max_age(newest: DrillRecord | None, state: str,
                                                  reason: str | None) -> None:
    status = drill_status("db", newest, NOW, rto=timedelta(minutes=15),
                          max_age=timedelta(days=7))
    assert status.state == state
    if reason is None:
        assert status.reasons == () and "passed" in status.describe()
    else:
        assert any(reason in r for r in status.reasons), status.reasons
    # Without targets, only a failed drill is a breach.
    free = drill_status("db", newest, NOW, rto=None, max_age=None)
    assert free.state == ("none" if newest is None else
                          "breached" if not newest.passed else "met")


def test_a_drill_breach_is_told_once_and_its_end_if_asked() -> None:
    (p,) = parse_policies(POLICY.replace('[policy.drill]', '[policy.notify]\n'
                                         'on = ["drill", "recovered"]\n'
                                         'webhooks = ["http://h/"]\n[policy.drill]'))
    told: list[object] = []
    n = Notifier(clock=ManualClock(NOW), send=lambda cfg, ev: told.append(ev) or [])
    slow = drill_status("db", record(rto=1200.0), NOW, rto=p.drill.rto,  # type: ignore[union-attr]
                        max_age=None)
    good = drill_status("db", record(), NOW, rto=p.drill.rto, max_age=None)  # type: ignore[union-attr]
    n.drill_checked(p, slow)
    n.drill_checked(p, slow)
    assert [e.kind for e in told] == ["drill"]  # type: ignore[attr-defined]
    assert n.breached == frozenset()  # the RPO's breaches are another matter
    n.drill_checked(p, good)
    assert [e.kind for e in told] == ["drill", "recovered"]  # type: ignore[attr-defined]
    payload = told[0].payload()  # type: ignore[attr-defined]
    assert payload["event"] == "drill" and payload["drill"]["subject"] == "db"
    assert payload["drill"]["rto_target_s"] == 900.0


def test_status_shows_each_group_with_its_newest_drill_against_the_targets(
        cli_repo: Cli, tmp_path: Path) -> None:
    """``stasis status --groups``: per group (with group points, stored, named by a
    policy or drilled), its newest group point and its drill against the strictest
    targets of the policies naming it; text and --json."""
    now = datetime.now(UTC)
    policies = tmp_path / "policies.toml"
    policies.write_text(POLICY + POLICY.replace('name = "app"', 'name = "app-strict"')
                        .replace('rto = "15m"', 'rto = "10m"').replace('"shop"',
                                                                       '"shop", "never"'))
    repo = Repository.open(open_backend(cli_repo.repo), Credentials(passphrase=PASSPHRASE.encode()))
    shop = Manifest(id="ab" * 16, name="shop", kind="group",
                    time=(now - timedelta(hours=3)).isoformat(timespec="seconds"),
                    vms=[VmRecord(name="db", kind="vm"), VmRecord(name="web", kind="vm")])
    repo.commit(shop)
    with Catalog.open(str(Path(cli_repo.env["STASIS_STATE_DIR"]) / CATALOG_FILE)) as c:
        PointIndex(c).add(repo, shop)
        GroupStore(c).create(Group(name="stored", members=["x1"]))
        drills = DrillStore(c)
        drills.record(DrillRecord("group", "shop", "d1", shop.id, "shop", "restore", True,
                                  720.0, now - timedelta(hours=2, minutes=15),
                                  now - timedelta(hours=2), checks=[]))
        drills.record(DrillRecord("group", "old", "d0", "cd" * 16, "old", "instant", True,
                                  30.0, now - timedelta(days=9), now - timedelta(days=9),
                                  checks=[]))
    rows = {r["group"]: r for r in cli_repo.ok("status", "--groups", "--json",
                                               "--policies", str(policies)).json()}
    assert sorted(rows) == ["never", "old", "shop", "stored"]
    s = rows["shop"]
    assert (s["vms"], s["newest_point"], s["policies"]) == (["db", "web"], shop.id,
                                                            ["app", "app-strict"])
    assert 3 * 3600 - 60 < s["age_s"] < 3 * 3600 + 60 and s["next_run"]
    # 12 minutes: within the 15m target of app, over app-strict's 10m (the strictest).
    d = s["drill"]
    assert (d["last_drill"], d["passed"], d["rto_s"], d["rto_target_s"]) == (
        "d1", True, 720.0, 600.0)
    assert d["state"] == "breached" and d["reasons"] == [
        "measured RTO 720s is over the target 10m"]
    assert d["max_age_s"] == 7 * 86400 and 2 * 3600 - 60 < d["age_s"] < 2 * 3600 + 60
    assert rows["never"]["drill"]["state"] == "breached"
    assert rows["never"]["drill"]["reasons"] == ["never drilled"]
    # Drilled but held to no target: met however old; a stored group alone: no drill.
    assert rows["old"]["drill"]["state"] == "met" and rows["old"]["policies"] == []
    assert rows["stored"]["drill"] is None and rows["stored"]["vms"] == ["x1"]
    text = cli_repo.ok("status", "--policies", str(policies)).out
    assert "drill target breached (group shop): shop: drill d1 passed, RTO 720s" in text
    assert "breached, RTO 720s" in text and "db, web" in text
    assert cli_repo.ok("status", "--groups", "--policies", str(policies)).out.count(
        "drill target breached (group") == 2  # shop and never
    # A drill proof in the repository (as a copy brings one from another site) is
    # learned by 'status --repo' ($STASIS_REPO here) where the catalog knows none newer.
    ended = (now - timedelta(minutes=30)).replace(microsecond=0)
    repo.record_drill(DrillProof("vm", "db", "d9", shop.id, "instant", True, 25.0,
                                 ended - timedelta(minutes=1), ended, host="site-a"))
    repo.record_drill(DrillProof("group", "shop", "d8", shop.id, "instant", True, 25.0,
                                 now - timedelta(days=30), now - timedelta(days=30)))
    vms = {r["vm"]: r for r in cli_repo.ok("status", "--json").json()}
    assert vms["db"]["drill"]["last_drill"] == "d9" and vms["db"]["drill"]["rto_s"] == 25.0
    older = cli_repo.ok("status", "--groups", "--json").json()
    assert next(r for r in older if r["group"] == "shop")["drill"]["last_drill"] == "d1"
