"""A policy's drill section, and its targets: parsed and checked like the rest of a
policy file; the newest drill against ``rto`` and ``max_age``; a breach told once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stasis.catalog import DrillRecord
from stasis.errors import PolicyError
from stasis.service.drill_status import drill_status
from stasis.service.notify import Notifier
from stasis.service.policy import parse_policies
from tests.clocks import ManualClock

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
