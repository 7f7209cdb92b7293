"""Retention against tables of dates checked by hand: ISO weeks, month and year ends,
DST in Europe/Berlin and America/New_York, holds, minimum age, each VM's newest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stasis.errors import UsageError
from stasis.repository.holds import Hold
from stasis.service.retention import Decision, Duration, PointInfo, RetentionRules, plan


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def points(*times: str, name: str = "web", vms: tuple[str, ...] = ("web",)) -> list[PointInfo]:
    """Points whose id is their UTC time as written, so tables read as dates."""
    return [PointInfo(id=t, name=name, time=at(t), vms=vms) for t in times]


def kept(decisions: list[Decision]) -> dict[str, list[str]]:
    return {d.point.id: list(d.reasons) for d in decisions if d.keep}


def removed(decisions: list[Decision]) -> set[str]:
    return {d.point.id for d in decisions if not d.keep}


NOW = at("2030-01-01T00:00:00Z")  # after every table, so min age and holds stay out


# ------------------------------------------------------------------ ISO weeks

YEAR_END = points(
    "2020-12-27T12:00Z",  # Sunday, 2020-W52
    "2020-12-28T12:00Z",  # Monday, 2020-W53 (2020 has 53 ISO weeks)
    "2020-12-31T12:00Z",  # Thursday, 2020-W53
    "2021-01-03T12:00Z",  # Sunday, still 2020-W53
    "2021-01-04T12:00Z",  # Monday, 2021-W01
    "2021-01-05T12:00Z",  # Tuesday, 2021-W01
)


def test_weekly_across_iso_week_53() -> None:
    d = plan(YEAR_END, RetentionRules(weekly=3), now=NOW)
    assert kept(d) == {
        "2021-01-05T12:00Z": ["weekly 2021-W01", "newest of vm web"],
        "2021-01-03T12:00Z": ["weekly 2020-W53"],
        "2020-12-27T12:00Z": ["weekly 2020-W52"],
    }
    assert removed(d) == {"2021-01-04T12:00Z", "2020-12-31T12:00Z", "2020-12-28T12:00Z"}
    assert [x.reasons for x in d if not x.keep] == [("no rule keeps it",)] * 3


def test_rules_count_on_their_own_and_every_reason_is_named() -> None:
    d = plan(YEAR_END, RetentionRules(daily=2, weekly=2, monthly=2), now=NOW)
    assert kept(d) == {
        "2021-01-05T12:00Z": ["daily 2021-01-05", "weekly 2021-W01", "monthly 2021-01",
                              "newest of vm web"],
        "2021-01-04T12:00Z": ["daily 2021-01-04"],
        "2021-01-03T12:00Z": ["weekly 2020-W53"],
        "2020-12-31T12:00Z": ["monthly 2020-12"],
    }
    assert removed(d) == {"2020-12-28T12:00Z", "2020-12-27T12:00Z"}


def test_keep_last_and_yearly() -> None:
    d = plan(YEAR_END, RetentionRules(last=2, yearly=5), now=NOW)
    assert kept(d) == {
        "2021-01-05T12:00Z": ["last #1", "yearly 2021", "newest of vm web"],
        "2021-01-04T12:00Z": ["last #2"],
        "2020-12-31T12:00Z": ["yearly 2020"],
    }
    # Fewer than 5 years have points: each year's newest is kept, nothing more.
    assert removed(d) == {"2021-01-03T12:00Z", "2020-12-28T12:00Z", "2020-12-27T12:00Z"}


# --------------------------------------------------------- month and year ends

MONTH_ENDS = points(
    "2023-12-31T23:59:59Z",
    "2024-01-01T00:00:00Z",
    "2024-01-31T23:00:00Z",
    "2024-02-01T01:00:00Z",
    "2024-02-29T12:00:00Z",  # leap day
    "2024-03-01T00:30:00Z",
)


def test_month_and_year_ends_in_utc() -> None:
    d = plan(MONTH_ENDS, RetentionRules(monthly=3, yearly=2), now=NOW)
    assert kept(d) == {
        "2024-03-01T00:30:00Z": ["monthly 2024-03", "yearly 2024", "newest of vm web"],
        "2024-02-29T12:00:00Z": ["monthly 2024-02"],
        "2024-01-31T23:00:00Z": ["monthly 2024-01"],
        "2023-12-31T23:59:59Z": ["yearly 2023"],
    }
    assert removed(d) == {"2024-02-01T01:00:00Z", "2024-01-01T00:00:00Z"}


def test_month_and_year_ends_in_new_york() -> None:
    # Five hours behind UTC in winter: 2024-03-01 00:30Z is 29 February 19:30 EST,
    # 2024-02-01 01:00Z is 31 January, 2024-01-01 00:00Z is New Year's Eve 2023.
    d = plan(MONTH_ENDS, RetentionRules(monthly=3, yearly=2, timezone="America/New_York"),
             now=NOW)
    assert kept(d) == {
        "2024-03-01T00:30:00Z": ["monthly 2024-02", "yearly 2024", "newest of vm web"],
        "2024-02-01T01:00:00Z": ["monthly 2024-01"],
        "2024-01-01T00:00:00Z": ["monthly 2023-12", "yearly 2023"],
    }
    assert removed(d) == {"2024-02-29T12:00:00Z", "2024-01-31T23:00:00Z",
                          "2023-12-31T23:59:59Z"}


# ---------------------------------------------------------------------- DST

BERLIN_SPRING = points(
    "2026-03-27T23:30Z",  # 28 March 00:30 CET
    "2026-03-28T22:30Z",  # 28 March 23:30 CET
    "2026-03-28T23:30Z",  # 29 March 00:30 CET
    "2026-03-29T21:30Z",  # 29 March 23:30 CEST (the day had 23 hours)
    "2026-03-29T22:30Z",  # 30 March 00:30 CEST
)


def test_daily_over_spring_forward_in_berlin() -> None:
    d = plan(BERLIN_SPRING, RetentionRules(daily=3, timezone="Europe/Berlin"), now=NOW)
    assert kept(d) == {
        "2026-03-29T22:30Z": ["daily 2026-03-30", "newest of vm web"],
        "2026-03-29T21:30Z": ["daily 2026-03-29"],
        "2026-03-28T22:30Z": ["daily 2026-03-28"],
    }
    assert removed(d) == {"2026-03-28T23:30Z", "2026-03-27T23:30Z"}


def test_the_same_points_by_utc_days() -> None:
    d = plan(BERLIN_SPRING, RetentionRules(daily=3), now=NOW)
    assert kept(d) == {
        "2026-03-29T22:30Z": ["daily 2026-03-29", "newest of vm web"],
        "2026-03-28T23:30Z": ["daily 2026-03-28"],
        "2026-03-27T23:30Z": ["daily 2026-03-27"],
    }
    assert removed(d) == {"2026-03-29T21:30Z", "2026-03-28T22:30Z"}


def test_hourly_over_spring_forward_in_berlin() -> None:
    # 02:00 CET does not exist: 01:59 CET is followed by 03:00 CEST.
    d = plan(points("2026-03-29T00:30Z", "2026-03-29T01:10Z", "2026-03-29T01:50Z",
                    "2026-03-29T02:20Z"),
             RetentionRules(hourly=3, timezone="Europe/Berlin"), now=NOW)
    assert kept(d) == {
        "2026-03-29T02:20Z": ["hourly 2026-03-29 04:00 CEST", "newest of vm web"],
        "2026-03-29T01:50Z": ["hourly 2026-03-29 03:00 CEST"],
        "2026-03-29T00:30Z": ["hourly 2026-03-29 01:00 CET"],
    }
    assert removed(d) == {"2026-03-29T01:10Z"}


def test_hourly_over_fall_back_in_berlin_counts_the_repeated_hour_twice() -> None:
    d = plan(points(
        "2026-10-24T23:30Z",  # 01:30 CEST
        "2026-10-25T00:15Z",  # 02:15 CEST
        "2026-10-25T00:45Z",  # 02:45 CEST
        "2026-10-25T01:15Z",  # 02:15 CET, the same wall-clock hour an hour later
        "2026-10-25T01:45Z",  # 02:45 CET
    ), RetentionRules(hourly=2, timezone="Europe/Berlin"), now=NOW)
    assert kept(d) == {
        "2026-10-25T01:45Z": ["hourly 2026-10-25 02:00 CET", "newest of vm web"],
        "2026-10-25T00:45Z": ["hourly 2026-10-25 02:00 CEST"],
    }
    assert removed(d) == {"2026-10-25T01:15Z", "2026-10-25T00:15Z", "2026-10-24T23:30Z"}


def test_daily_over_the_25_hour_day_in_berlin() -> None:
    pts = points(
        "2026-10-24T22:30Z",  # 25 October 00:30 CEST
        "2026-10-25T22:30Z",  # 25 October 23:30 CET, 24 real hours later, same day
        "2026-10-25T23:30Z",  # 26 October 00:30 CET
    )
    berlin = plan(pts, RetentionRules(daily=2, timezone="Europe/Berlin"), now=NOW)
    assert kept(berlin) == {
        "2026-10-25T23:30Z": ["daily 2026-10-26", "newest of vm web"],
        "2026-10-25T22:30Z": ["daily 2026-10-25"],
    }
    assert removed(berlin) == {"2026-10-24T22:30Z"}
    utc = plan(pts, RetentionRules(daily=2), now=NOW)
    assert removed(utc) == {"2026-10-25T22:30Z"}


NEW_YORK_FALL = points(
    "2026-10-31T03:30Z",  # 30 October 23:30 EDT
    "2026-11-01T04:30Z",  # 1 November 00:30 EDT
    "2026-11-01T05:30Z",  # 01:30 EDT
    "2026-11-01T06:30Z",  # 01:30 EST: clocks went back at 02:00 EDT
    "2026-11-02T04:30Z",  # 1 November 23:30 EST (the day had 25 hours)
    "2026-11-02T05:30Z",  # 2 November 00:30 EST
)


def test_daily_and_hourly_over_fall_back_in_new_york() -> None:
    d = plan(NEW_YORK_FALL, RetentionRules(daily=3, hourly=4, timezone="America/New_York"),
             now=NOW)
    assert kept(d) == {
        "2026-11-02T05:30Z": ["hourly 2026-11-02 00:00 EST", "daily 2026-11-02",
                              "newest of vm web"],
        "2026-11-02T04:30Z": ["hourly 2026-11-01 23:00 EST", "daily 2026-11-01"],
        "2026-11-01T06:30Z": ["hourly 2026-11-01 01:00 EST"],
        "2026-11-01T05:30Z": ["hourly 2026-11-01 01:00 EDT"],
        "2026-10-31T03:30Z": ["daily 2026-10-30"],
    }
    assert removed(d) == {"2026-11-01T04:30Z"}


def test_weekly_over_spring_forward_in_new_york() -> None:
    # 8 March 2026, 02:00 EST -> 03:00 EDT. Sunday 23:30 local ends ISO week 10.
    d = plan(points(
        "2026-03-02T05:30Z",  # Monday 2 March 00:30 EST, 2026-W10
        "2026-03-09T03:30Z",  # Sunday 8 March 23:30 EDT, still 2026-W10
        "2026-03-09T04:30Z",  # Monday 9 March 00:30 EDT, 2026-W11
    ), RetentionRules(weekly=2, timezone="America/New_York"), now=NOW)
    assert kept(d) == {
        "2026-03-09T04:30Z": ["weekly 2026-W11", "newest of vm web"],
        "2026-03-09T03:30Z": ["weekly 2026-W10"],
    }
    assert removed(d) == {"2026-03-02T05:30Z"}


# -------------------------------------------------- keep-within and durations


def test_keep_within_counts_calendar_months_back_from_now() -> None:
    now = at("2026-03-31T12:00:00Z")  # one month earlier: 28 February 12:00
    d = plan(points("2026-02-28T11:59:59Z", "2026-02-28T12:00:00Z", "2026-03-30T00:00:00Z"),
             RetentionRules(within=Duration.parse("1m")), now=now)
    assert kept(d) == {
        "2026-03-30T00:00:00Z": ["within 1m", "newest of vm web"],
        "2026-02-28T12:00:00Z": ["within 1m"],
    }
    assert removed(d) == {"2026-02-28T11:59:59Z"}


@pytest.mark.parametrize(("text", "months", "fixed"), [
    ("36h", 0, timedelta(hours=36)),
    ("10d", 0, timedelta(days=10)),
    ("2w", 0, timedelta(weeks=2)),
    ("6m", 6, timedelta(0)),
    ("1y", 12, timedelta(0)),
    ("1y6m", 18, timedelta(0)),
    ("1d12h", 0, timedelta(hours=36)),
    ("0", 0, timedelta(0)),
])
def test_durations(text: str, months: int, fixed: timedelta) -> None:
    d = Duration.parse(text)
    assert (d.months, d.fixed) == (months, fixed)


@pytest.mark.parametrize("text", ["", "10", "d", "3x", "1.5d", "-1d", "10 d x", "1y-2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError, match="is not a"):
        Duration.parse(text)


def test_a_year_back_from_a_leap_day() -> None:
    assert Duration.parse("1y").before(at("2024-02-29T06:00:00Z")) == at("2023-02-28T06:00:00Z")


# ---------------------------------------------------- holds, min age, newest


def test_active_and_expired_holds() -> None:
    now = at("2026-06-01T00:00:00Z")
    pts = points("2026-01-01T00:00Z", "2026-02-01T00:00Z", "2026-03-01T00:00Z",
                 "2026-05-31T00:00Z")
    holds = {
        "2026-01-01T00:00Z": Hold("2026-01-01T00:00Z", None, "legal case 42"),
        "2026-02-01T00:00Z": Hold("2026-02-01T00:00Z", at("2026-05-01T00:00:00Z"), "audit"),
        "2026-03-01T00:00Z": Hold("2026-03-01T00:00Z", at("2026-06-01T00:00:01Z"), "audit"),
    }
    d = plan(pts, RetentionRules(last=1), now=now, holds=holds)
    assert kept(d) == {
        "2026-05-31T00:00Z": ["last #1", "newest of vm web"],
        "2026-03-01T00:00Z": ["held until 2026-06-01T00:00:01+00:00: audit"],
        "2026-01-01T00:00Z": ["held until released: legal case 42"],
    }
    assert removed(d) == {"2026-02-01T00:00Z"}
    gone = next(x for x in d if not x.keep)
    assert gone.reasons == ("no rule keeps it (its hold ended 2026-05-01T00:00:00+00:00)",)
    # The same hold one second later has ended too.
    later = plan(pts, RetentionRules(last=1), now=at("2026-06-01T00:00:01Z"), holds=holds)
    assert removed(later) == {"2026-02-01T00:00Z", "2026-03-01T00:00Z"}


def test_min_age_keeps_young_points_only() -> None:
    now = at("2026-06-10T12:00:00Z")
    pts = points("2026-06-01T00:00Z", "2026-06-08T11:59Z", "2026-06-08T12:01Z",
                 "2026-06-10T00:00Z")
    d = plan(pts, RetentionRules(last=1, min_age=Duration.parse("2d")), now=now)
    assert kept(d) == {
        "2026-06-10T00:00Z": ["last #1", "newest of vm web", "younger than min age 2d"],
        "2026-06-08T12:01Z": ["younger than min age 2d"],
    }
    assert removed(d) == {"2026-06-01T00:00Z", "2026-06-08T11:59Z"}


def test_newest_point_of_a_vm_inside_an_older_group_point() -> None:
    # db left the group after the first point: that point is db's newest and stays.
    pts = [
        *points("2026-01-01T00:00Z", name="app", vms=("db", "web")),
        *points("2026-01-02T00:00Z", "2026-01-03T00:00Z", name="app", vms=("web",)),
        *points("2026-01-04T00:00Z", name="web", vms=("web",)),
    ]
    d = plan(pts, RetentionRules(last=1), now=NOW, name="app")
    assert kept(d) == {
        "2026-01-03T00:00Z": ["last #1"],  # web's newest is the later single point
        "2026-01-01T00:00Z": ["newest of vm db"],
    }
    assert removed(d) == {"2026-01-02T00:00Z"}
    assert {x.series for x in d} == {"chain app"}


def test_by_vm_the_points_holding_it_are_one_series() -> None:
    pts = [
        *points("2026-01-01T00:00Z", name="app", vms=("db", "web")),
        *points("2026-01-02T00:00Z", name="web", vms=("web",)),
        *points("2026-01-03T00:00Z", name="app", vms=("db", "web")),
        *points("2026-01-03T12:00Z", name="other", vms=("mail",)),
    ]
    d = plan(pts, RetentionRules(last=2), now=NOW, vm="web")
    assert kept(d) == {
        "2026-01-03T00:00Z": ["last #1", "newest of vm db", "newest of vm web"],
        "2026-01-02T00:00Z": ["last #2"],
    }
    assert removed(d) == {"2026-01-01T00:00Z"}  # the mail point is not in the selection
    every = plan(pts, RetentionRules(last=1), now=NOW)
    assert {x.series for x in every} == {"chain app", "chain web", "chain other"}
    assert removed(every) == {"2026-01-01T00:00Z"}


def test_rules_that_keep_nothing_are_refused() -> None:
    pts = points("2026-01-01T00:00Z", "2026-01-02T00:00Z")
    with pytest.raises(UsageError, match="refusing to remove every point"):
        plan(pts, RetentionRules(min_age=Duration.parse("1d")), now=NOW)
    with pytest.raises(UsageError, match="not both"):
        plan(pts, RetentionRules(last=1), now=NOW, name="web", vm="web")
    with pytest.raises(UsageError, match="unknown time zone"):
        RetentionRules(last=1, timezone="Mars/Olympus")
    with pytest.raises(UsageError, match="count of 0 or more"):
        RetentionRules(last=-1)


# ----------------------------------------------------------------- property

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
START = datetime(2020, 1, 1, tzinfo=UTC)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[PointInfo], RetentionRules, datetime,
                                        dict[str, Hold], str | None, str | None]:
    n = draw(st.integers(min_value=0, max_value=40))
    pts = []
    for i in range(n):
        minutes = draw(st.integers(min_value=0, max_value=3 * 366 * 24 * 60))
        vms = tuple(sorted(draw(st.sets(st.sampled_from(["a", "b", "c", "d"]), min_size=1))))
        pts.append(PointInfo(id=f"{i:04x}", name=draw(st.sampled_from(["x", "y", "g"])),
                             time=START + timedelta(minutes=minutes), vms=vms))
    now = START + timedelta(minutes=draw(st.integers(min_value=0, max_value=4 * 366 * 24 * 60)))
    holds = {}
    for p in pts:
        if draw(st.booleans()) and draw(st.booleans()):
            offset = draw(st.one_of(st.none(), st.integers(min_value=-1000, max_value=1000)))
            until = None if offset is None else now + timedelta(hours=offset)
            holds[p.id] = Hold(p.id, until, "p")
    counts = [draw(st.integers(min_value=0, max_value=5)) for _ in range(6)]
    within = draw(st.one_of(st.none(), st.sampled_from(["36h", "10d", "2w", "6m", "1y"])))
    if not any(counts) and within is None:
        counts[0] = draw(st.integers(min_value=1, max_value=5))
    min_age = draw(st.one_of(st.none(), st.sampled_from(["0", "1h", "2d", "1m"])))
    rules = RetentionRules(
        *counts, within=None if within is None else Duration.parse(within),
        min_age=None if min_age is None else Duration.parse(min_age),
        timezone=draw(st.sampled_from(ZONES)),
    )
    selection = draw(st.sampled_from([(None, None), ("x", None), (None, "a")]))
    return pts, rules, now, holds, *selection


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_prune_never_removes_a_vms_newest_a_held_or_a_young_point(
    case: tuple[list[PointInfo], RetentionRules, datetime, dict[str, Hold],
                str | None, str | None],
) -> None:
    pts, rules, now, holds, name, vm = case
    decisions = plan(pts, rules, now=now, holds=holds, name=name, vm=vm)
    selected = [p for p in pts if (name is None or p.name == name) and (vm is None or vm in p.vms)]
    assert sorted(d.point.id for d in decisions) == sorted(p.id for p in selected)
    gone = removed(decisions)
    for v in {v for p in pts for v in p.vms}:
        newest = max((p for p in pts if v in p.vms), key=lambda p: (p.time, p.id))
        assert newest.id not in gone
    for pid, h in holds.items():
        if h.active(now):
            assert pid not in gone
    if rules.min_age is not None:
        young_since = rules.min_age.before(now, rules.zone)
        assert not [p for p in selected if p.id in gone and p.time > young_since]
    for d in decisions:
        assert d.reasons and (d.keep or d.reasons[0].startswith("no rule keeps it"))
    if rules.last:
        series: dict[str, list[Decision]] = {}
        for d in decisions:
            series.setdefault(d.series, []).append(d)
        for members in series.values():
            assert sum(d.keep for d in members) >= min(rules.last, len(members))
