"""Policy files: a valid one read whole, and every invalid case named by its line."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from stasis.errors import PolicyError
from stasis.service.policy import key_lines, load_policies, parse_policies
from stasis.service.schedule import CronSchedule, IntervalSchedule
from tests.conftest import BIN

GOOD = """\
# two policies
[[policy]]
name = "nightly"
vms = ["web1", "web2"]
groups = ["shop"]
select = ["db-*"]
labels = { app = "shop" }
cron = "30 2 * * *"
timezone = "Europe/Berlin"
consistency = "application"
require = "filesystem"
rpo = "26h"

[policy.hooks]
pre_host = ["/usr/local/bin/quiesce"]
pre_guest = [
  { vm = "db-1", command = "pg_ctl checkpoint" },
]
timeout = "2m"

[policy.retention]
keep_last = 3
keep_daily = 7
keep_weekly = 5
keep_within = "2d"
min_age = "1h"

[policy.notify]
on = ["failure", "rpo"]
webhooks = ["http://127.0.0.1:9/hook"]

[policy.notify.email]
host = "127.0.0.1"
port = 2525
from = "stasis@example.com"
to = ["ops@example.com"]

[[policy]]
name = "frequent"
vms = ["db-1"]
every = "15m"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policies.toml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as e:
        load_policies(path)
    assert e.value.exit_code == 29
    lines = str(e.value).splitlines()[1:]
    assert len(lines) == len(e.value.problems)
    return [line.removeprefix(f"{path}:") for line in lines]


def test_valid_file_is_read_whole(tmp_path: Path) -> None:
    nightly, frequent = load_policies(write(tmp_path, GOOD))
    assert nightly.name == "nightly" and nightly.origin.endswith("policies.toml:2")
    assert nightly.members.vms == ("web1", "web2")
    assert nightly.members.groups == ("shop",)
    assert nightly.members.select == ("db-*",)
    assert dict(nightly.members.labels) == {"app": "shop"}
    assert isinstance(nightly.schedule, CronSchedule)
    assert nightly.schedule.expression == "30 2 * * *" and nightly.timezone == "Europe/Berlin"
    assert (nightly.consistency, nightly.require) == ("application", "filesystem")
    assert nightly.hooks.pre_host == ["/usr/local/bin/quiesce"]
    assert nightly.hooks.pre_guest[0].vm == "db-1" and nightly.hooks.timeout_s == 120
    r = nightly.retention
    assert r.counts == {"last": 3, "hourly": 0, "daily": 7, "weekly": 5, "monthly": 0,
                        "yearly": 0}
    assert (r.keep_within, r.min_age) == ("2d", "1h")
    assert nightly.rpo == timedelta(hours=26)
    assert nightly.notify.on == {"failure", "rpo"}
    assert nightly.notify.webhooks == ("http://127.0.0.1:9/hook",)
    assert nightly.notify.email is not None and nightly.notify.email.port == 2525
    assert nightly.source.startswith("[[policy]]\nname = \"nightly\"")
    assert "frequent" not in nightly.source
    # The retention engine's own rules, in the policy's zone.
    rules = nightly.retention_rules()
    assert (rules.last, rules.daily, rules.timezone) == (3, 7, "Europe/Berlin")
    assert rules.within.fixed == timedelta(days=2)
    assert isinstance(frequent.schedule, IntervalSchedule)
    assert frequent.schedule.every == timedelta(minutes=15) and frequent.timezone == "UTC"
    assert frequent.consistency == "crash" and frequent.rpo is None
    assert frequent.retention.keeps_everything


def test_every_problem_is_listed_with_its_line(tmp_path: Path) -> None:
    text = """\
[[policy]]
name = "nightly"
vms = ["web1"]
cron = "61 2 * * *"
timezone = "Mars/Olympus"
consistency = "filesystem"
require = "application"
rpo = "26 hours"
colour = "blue"

[policy.retention]
keep_daily = "seven"
keep_weekly = -1
keep_dialy = 3

[[policy]]
name = "other"
vms = ["db"]
consistency = "quantum"
every = "7h"
"""
    got = problems_of(tmp_path, text)
    assert got == [
        '4: policy \'nightly\': cron must be a 5-field cron expression such as "0 2 * * *", '
        'not "61 2 * * *" (bad minute)',
        "5: policy 'nightly': timezone must be an IANA time zone such as UTC or "
        'Europe/Berlin, not "Mars/Olympus"',
        "7: policy 'nightly': require 'application' is above consistency 'filesystem': a run "
        "never reaches more than it attempts; raise consistency or lower require",
        "8: policy 'nightly': rpo must be a duration such as 90s, 15m, 26h, 7d or 1h30m, "
        'not "26 hours"',
        "9: policy 'nightly': unknown key 'colour' (known: consistency, copy, cron, "
        "description, drill, every, groups, hooks, labels, name, notify, repository, "
        "require, retention, rpo, select, timezone, vms)",
        "12: policy 'nightly': retention.keep_daily must be a whole number >= 0, not \"seven\"",
        "13: policy 'nightly': retention.keep_weekly must be a whole number >= 0, not -1",
        "14: policy 'nightly': unknown key 'keep_dialy' in retention "
        "(did you mean 'keep_daily'?)",
        "19: policy 'other': consistency must be one of crash, filesystem, application, "
        'not "quantum"',
        "20: policy 'other': every must be an interval such as 15m, 1h, 6h or 1d, not \"7h\" "
        "(must divide a day (e.g. 15m, 1h, 6h) or be whole days (e.g. 2d, 1w))",
    ]


@pytest.mark.parametrize(("body", "line", "needle"), [
    ('cron = "0 2 * *"', 4, "cron must be a 5-field cron expression"),
    ('cron = "0 25 * * *"', 4, "(bad hour)"),
    ('every = "15 minutes"', 4, 'every must be an interval such as 15m'),
    ('every = "30s"', 4, "(must be at least 1m)"),
    ('cron = "0 2 * * *"\ntimezone = "Europe/Berlyn"', 5, "timezone must be an IANA"),
    ('cron = "0 2 * * *"\nrpo = "1 day"', 5, "rpo must be a duration"),
    ('cron = "0 2 * * *"\n[policy.retention]\nkeep_last = -3', 6,
     "retention.keep_last must be a whole number >= 0, not -3"),
    ('cron = "0 2 * * *"\n[policy.retention]\nkeep_yearly = 1.5', 6,
     "retention.keep_yearly must be a whole number >= 0, not 1.5"),
    ('cron = "0 2 * * *"\n[policy.retention]\nkeep_within = "forever"', 6,
     "retention.keep_within must be a span"),
    ('cron = "0 2 * * *"\nconsistency = "paranoid"', 5, "consistency must be one of crash"),
    ('cron = "0 2 * * *"\nrequire = "application"', 5,
     "require 'application' is above consistency 'crash'"),
    ('cron = "0 2 * * *"\n[policy.hooks]\npre_host = ["x"]', 5,
     "hooks run only at consistency 'application'"),
    ('cron = "0 2 * * *"\nvm = ["a"]', 5, "unknown key 'vm' (did you mean 'vms'?)"),
    ('cron = "0 2 * * *"\n[policy.notify]\nwebhooks = ["ftp://x"]', 6,
     "notify.webhooks[0] must be an http:// or https:// URL"),
    ('cron = "0 2 * * *"\n[policy.notify]\non = ["failure", "rpo"]\nwebhooks = ["http://h/"]',
     6, "notify.on has 'rpo' but the policy sets no rpo"),
    ('cron = "0 2 * * *"\n[policy.notify.email]\nhost = "h"\nport = 99999\nto = ["a@b"]',
     7, "notify.email.port must be a TCP port"),
    ('cron = "0 2 * * *"\n[policy.notify.email]\nhost = "h"\nto = ["a@b"]', 5,
     "notify.email.from is missing"),
    ('every = "1h"\ncron = "0 2 * * *"', 4, "has both cron and every"),
    ('timezone = "UTC"', 1, "has no schedule"),
])
def test_each_invalid_case_names_its_line(tmp_path: Path, body: str, line: int,
                                          needle: str) -> None:
    text = f'[[policy]]\nname = "p"\nvms = ["a"]\n{body}\n'
    got = problems_of(tmp_path, text)
    assert any(p.startswith(f"{line}: policy 'p': ") and needle in p for p in got), got


def test_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    text = '[[policy]]\nname = "p"\nvms = ["a"]\ncron = "0 2 * * *\n'
    (got,) = problems_of(tmp_path, text)
    assert got.startswith("4: TOML syntax error: "), got
    text = '[[policy]]\nname = "p"\n\n\nvms = ["a"\ncron = "x"\n'
    (got,) = problems_of(tmp_path, text)
    assert got.startswith("6: TOML syntax error"), got


def test_file_level_problems(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "# nothing\n") == [
        "1: no [[policy]] table: a policy file holds one or more"]
    got = problems_of(tmp_path, '[policy.nightly]\nvms = ["a"]\n')
    assert got[0].startswith("1: policies are [[policy]] tables"), got
    got = problems_of(tmp_path, GOOD + '\n[[policy]]\nname = "nightly"\nvms = ["x"]\n'
                                       'every = "1h"\n')
    assert "44: policy 'nightly': the name is used by the policy at line 3 too" in got[0]
    with pytest.raises(PolicyError, match="no such file"):
        load_policies(tmp_path / "absent.toml")


def test_lines_of_nested_and_inline_keys() -> None:
    text = ('a = 1\n[[policy]]\nname = """multi\nline"""\nvms = [\n  "x",\n  "y",\n]\n'
            'labels = { app = "shop", "k.2" = "v" }\n[policy.retention]\nkeep_last = 2\n'
            '[[policy]]\nname = \'two\'  # comment\nhooks.pre_host = ["x"]\n')
    lines = key_lines(text)
    assert lines[("a",)] == 1
    assert lines[("policy", 0)] == 2
    assert lines[("policy", 0, "name")] == 3
    assert lines[("policy", 0, "vms")] == 5
    assert lines[("policy", 0, "vms", 1)] == 7
    assert lines[("policy", 0, "labels", "k.2")] == 9
    assert lines[("policy", 0, "retention", "keep_last")] == 11
    assert lines[("policy", 1)] == 12
    assert lines[("policy", 1, "hooks", "pre_host")] == 14


def test_parse_policies_names_the_file() -> None:
    with pytest.raises(PolicyError) as e:
        parse_policies('[[policy]]\nname = "p"\n', file="etc/p.toml")
    assert "etc/p.toml:1: policy 'p': has no members" in str(e.value)


def test_cli_check_and_list(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    ok = subprocess.run([BIN, "policy", "check", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "2 policies, valid (nightly, frequent)" in ok.stdout
    listed = subprocess.run([BIN, "policy", "list", str(path), "--json",
                             "--after", "2026-03-28T12:00:00+00:00"],
                            capture_output=True, text=True, check=True)
    nightly, frequent = json.loads(listed.stdout)
    assert nightly["schedule"] == {"timezone": "Europe/Berlin", "cron": "30 2 * * *"}
    assert nightly["next_runs"] == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00",
                                    "2026-03-31T02:30:00+02:00"]
    assert nightly["members"]["vms"] == ["web1", "web2"]
    assert frequent["next_runs"][0] == "2026-03-28T12:15:00+00:00"
    table = subprocess.run([BIN, "policy", "list", str(path)], capture_output=True,
                           text=True, check=True)
    assert "nightly" in table.stdout and "every 15m" in table.stdout
    bad = write(tmp_path, '[[policy]]\nname = "p"\nvms = ["a"]\ncron = "x"\nrpo = "1y"\n')
    res = subprocess.run([BIN, "policy", "check", str(bad)], capture_output=True, text=True)
    assert res.returncode == 29
    assert f"{bad}:4: policy 'p': cron must be" in res.stderr
    assert f"{bad}:5: policy 'p': rpo must be" in res.stderr
    res = subprocess.run([BIN, "policy", "check", "--json", str(bad)], capture_output=True,
                         text=True)
    assert res.returncode == 29
    report = json.loads(res.stdout)
    assert not report["ok"] and [p["line"] for p in report["problems"]] == [4, 5]


LOCKED = """\
[[policy]]
name = "vault"
vms = ["db"]
every = "1h"
repository = "vault"

[policy.retention]
keep_daily = 7
{extra}

[[policy]]
name = "shipped"
vms = ["web"]
every = "1h"
repository = "local"

[[policy.copy]]
to = "vault"

[policy.copy.retention]
keep_within = "{within}"
"""
THIRTY_DAYS = 30 * 86400


def _locked(extra: str = "", within: str = "60d") -> str:
    return LOCKED.format(extra=extra, within=within)


def test_a_retention_shorter_than_the_lock_of_an_immutable_repository_is_refused() -> None:
    immutable = {"vault": THIRTY_DAYS}
    with pytest.raises(PolicyError) as e:
        parse_policies(_locked('min_age = "2w"', within="1m"), file="p.toml",
                       repositories={"local", "vault"}, immutable=immutable)
    rendered = [p.render("p.toml") for p in e.value.problems]
    assert len(rendered) == 2, rendered
    own, copied = rendered
    assert own.startswith("p.toml:7: policy 'vault': retention at the immutable repository "
                          "'vault' keeps a point for as little as 14 days"), own
    assert "shorter than its Object Lock of 30 days: prune could not delete its points on " \
           "time (the lock outlives the retention)" in own and 'min_age = "30d"' in own
    # A month is 28 days at its shortest: short of a 30-day lock.
    assert copied.startswith("p.toml:20: policy 'shipped': retention at the immutable "
                             "repository 'vault' keeps a point for as little as 28 days"), copied
    # Count rules alone guarantee a point no time at all.
    with pytest.raises(PolicyError, match="guarantees no time at all to a point"):
        parse_policies(_locked(), repositories={"local", "vault"}, immutable=immutable)


def test_a_retention_that_outlasts_the_lock_or_keeps_everything_is_accepted() -> None:
    immutable = {"vault": THIRTY_DAYS}
    repositories = {"local", "vault"}
    accepted = parse_policies(_locked('min_age = "30d"', within="2m"),
                              repositories=repositories, immutable=immutable)
    assert [p.name for p in accepted] == ["vault", "shipped"]
    # No retention at all: nothing is pruned, the locks are renewed for as long as it stays.
    keeps_all = _locked().replace("[policy.retention]\nkeep_daily = 7\n", "") \
        .replace('[policy.copy.retention]\nkeep_within = "60d"\n', "")
    assert "retention" not in keeps_all
    assert parse_policies(keeps_all, repositories=repositories, immutable=immutable)
    # The same short retention at a repository that is not immutable: nothing to say.
    assert parse_policies(_locked(), repositories=repositories, immutable={})
