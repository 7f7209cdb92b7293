"""Schedules checked by hand: cron and intervals, DST days in Europe/Berlin, missed runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from stasis.service.duration import format_duration, parse_duration
from stasis.service.rpo import rpo_status
from stasis.service.schedule import make_schedule

BERLIN = "Europe/Berlin"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(runs: list[datetime]) -> list[str]:
    return [r.isoformat() for r in runs]


def test_cron_daily_across_spring_forward() -> None:
    # 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    s = make_schedule(cron="30 2 * * *", timezone=BERLIN)
    assert iso(s.upcoming(utc(2026, 3, 27, 12), 4)) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # once that day, right after the jump
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_cron_daily_across_fall_back() -> None:
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice, runs once.
    s = make_schedule(cron="30 2 * * *", timezone=BERLIN)
    assert iso(s.upcoming(utc(2026, 10, 23, 12), 3)) == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    # Asked from inside the repeated hour (the second 02:10), the next is tomorrow's.
    assert s.next_after(utc(2026, 10, 25, 1, 10)).isoformat() == "2026-10-26T02:30:00+01:00"
    assert s.latest_at_or_before(utc(2026, 10, 25, 1, 10)).isoformat() == (
        "2026-10-25T02:30:00+02:00")
    m = s.missed(datetime.fromisoformat("2026-10-24T02:30:00+02:00"), utc(2026, 10, 26, 12))
    assert m is not None and m.count == 2  # the 25th counted once
    half = make_schedule(cron="*/30 * * * *", timezone=BERLIN)
    assert half.next_after(utc(2026, 10, 25, 1, 10)).isoformat() == "2026-10-25T02:30:00+01:00"
    assert half.latest_at_or_before(utc(2026, 10, 25, 1, 10)).isoformat() == (
        "2026-10-25T02:00:00+01:00")


def test_cron_every_30_minutes_runs_through_both_passes_of_the_hour() -> None:
    s = make_schedule(cron="*/30 * * * *", timezone=BERLIN)
    assert iso(s.upcoming(utc(2026, 10, 24, 23, 10), 5)) == [
        "2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00", "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
    ]


def test_cron_in_utc_and_weekdays() -> None:
    s = make_schedule(cron="0 2 * * 1", timezone="UTC")  # Mondays 02:00
    assert iso(s.upcoming(utc(2026, 3, 1, 0), 2)) == [
        "2026-03-02T02:00:00+00:00", "2026-03-09T02:00:00+00:00"]
    assert s.next_after(utc(2026, 3, 2, 2)).isoformat() == "2026-03-09T02:00:00+00:00"
    assert s.latest_at_or_before(utc(2026, 3, 2, 2)).isoformat() == "2026-03-02T02:00:00+00:00"


def test_interval_in_real_time_across_dst() -> None:
    s = make_schedule(every=parse_duration("6h"), timezone=BERLIN)
    assert iso(s.upcoming(utc(2026, 3, 28, 12), 6)) == [
        "2026-03-28T18:00:00+01:00", "2026-03-29T00:00:00+01:00",
        "2026-03-29T07:00:00+02:00", "2026-03-29T13:00:00+02:00",
        "2026-03-29T19:00:00+02:00", "2026-03-30T00:00:00+02:00",
    ]
    q = make_schedule(every=parse_duration("1h"), timezone=BERLIN)
    runs = q.upcoming(utc(2026, 10, 24, 21, 30), 26)  # local midnight to midnight, 25 hours
    assert runs[0].isoformat() == "2026-10-25T00:00:00+02:00"
    assert runs[25].isoformat() == "2026-10-26T00:00:00+01:00"
    gaps = {b.astimezone(UTC) - a.astimezone(UTC) for a, b in pairwise(runs)}
    assert gaps == {timedelta(hours=1)}  # no hour skipped or doubled


def test_interval_of_days_and_weeks() -> None:
    s = make_schedule(every=parse_duration("1w"), timezone=BERLIN)
    assert iso(s.upcoming(utc(2026, 3, 28, 12), 2)) == [
        "2026-03-30T00:00:00+02:00", "2026-04-06T00:00:00+02:00"]  # Mondays
    s = make_schedule(every=parse_duration("1d"), timezone="UTC")
    assert s.next_after(utc(2026, 1, 1)).isoformat() == "2026-01-02T00:00:00+00:00"
    assert s.latest_at_or_before(utc(2026, 1, 1)).isoformat() == "2026-01-01T00:00:00+00:00"


def test_missed_runs_are_reported_once() -> None:
    s = make_schedule(cron="0 2 * * *", timezone=BERLIN)
    last = datetime.fromisoformat("2026-03-25T02:00:00+01:00")
    # Up the next morning before 02:00: nothing missed.
    assert s.missed(last, utc(2026, 3, 26, 0, 59)) is None
    # Down for five days: five slots passed, one run (for the latest) is due.
    m = s.missed(last, utc(2026, 3, 30, 12))
    assert m is not None
    assert (m.first.isoformat(), m.latest.isoformat(), m.count, m.count_is_exact) == (
        "2026-03-26T02:00:00+01:00", "2026-03-30T02:00:00+02:00", 5, True)
    # The slot itself counts as due at its own instant.
    m = s.missed(last, datetime.fromisoformat("2026-03-26T02:00:00+01:00"))
    assert m is not None and m.count == 1
    assert s.missed(None, utc(2026, 3, 30)) is None  # never ran: waits for its slot
    # A year of a 1-minute interval is not walked: counted up to the limit.
    q = make_schedule(every=parse_duration("1m"), timezone="UTC")
    m = q.missed(utc(2025, 1, 1), utc(2026, 1, 1, 0, 0, 30))
    assert m is not None and m.count == 1000 and not m.count_is_exact
    assert m.latest == utc(2026, 1, 1)


def test_bad_schedules_and_naive_instants() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        make_schedule(timezone="UTC")
    with pytest.raises(ValueError, match="not a time zone"):
        make_schedule(cron="0 2 * * *", timezone="Nowhere/City")
    with pytest.raises(ValueError, match="divide a day"):
        make_schedule(every=timedelta(hours=7))
    with pytest.raises(ValueError, match="no time zone"):
        make_schedule(cron="0 2 * * *").next_after(datetime(2026, 1, 1))


def test_durations() -> None:
    assert parse_duration("26h") == timedelta(hours=26)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)
    assert format_duration(timedelta(hours=26)) == "1d2h"
    for bad in ("", "26", "h", "1.5h", "30m1h", "1h1h", "-5m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_rpo_met_and_breached() -> None:
    target = timedelta(hours=26)
    now = utc(2026, 3, 30, 12)
    met = rpo_status(utc(2026, 3, 29, 12), now, target)
    assert met.met and met.age == timedelta(hours=24) and met.margin == timedelta(hours=2)
    assert met.over == timedelta(0) and met.breach_at == utc(2026, 3, 30, 14)
    edge = rpo_status(utc(2026, 3, 29, 10), now, target)
    assert edge.met and edge.margin == timedelta(0)  # exactly at the target: still met
    late = rpo_status(utc(2026, 3, 29, 9, 30), now, target)
    assert late.breached and late.over == timedelta(minutes=30)
    assert late.describe() == "RPO 1d2h breached by 30m: newest good point is 1d2h30m old"
    none = rpo_status(None, now, target)
    assert none.breached and none.age is None and "no good point" in none.describe()
    future = rpo_status(now + timedelta(minutes=5), now, target)
    assert future.met and future.age == timedelta(0)
