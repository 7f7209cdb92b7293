"""When a policy runs: a cron expression or an interval, in the policy's time zone.

Both kinds answer the same questions about instants (aware datetimes; naive ones are
refused): the next run after an instant, the latest run at or before one, and which
runs were missed between the last run and now. Nothing here reads the clock.

Cron expressions have the five classic fields and are evaluated by ``cronsim`` on the
policy's wall clock, the way Debian's cron does across DST changes:

- a time the clock skips (02:30 on the spring-forward day in Europe/Berlin) runs once,
  right after the jump (03:00 there);
- a time the clock shows twice (02:30 on the fall-back day) runs once, at its first
  occurrence, unless the hour field is a wildcard or a range (``*/30 * * * *`` runs
  every 30 minutes of real time, both passes of the hour included).

Intervals (``every = "15m"``) measure real time, so a DST change neither skips nor
doubles a run. An interval that divides a day (1m, 15m, 1h, 6h, 24h, ...) starts again
at every local midnight: ``every = "6h"`` runs at 00:00, 06:00, 12:00 and 18:00
local time on ordinary days, and on a DST day every 6h of real time from midnight
(00:00, 07:00, 13:00, 19:00 on 2026-03-29 in Europe/Berlin). An interval of whole
days runs at local midnight, every Nth day counted from Monday 0001-01-01 (``7d``
and ``1w`` run on Mondays). Other intervals (7h, 25h) are refused: they would drift
around the clock.

A service that was down catches up once: :meth:`Schedule.missed` reports the slots
that passed unrun, and the service runs a single job for all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from stasis.service.duration import format_duration

DAY = timedelta(days=1)
MIN_INTERVAL = timedelta(minutes=1)
MISSED_COUNT_LIMIT = 1000  # counting stops here: a year of a 1m policy is not walked
_TINY = timedelta(microseconds=1)
_FOLD = timedelta(hours=3)  # more than any DST shift


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; :class:`ValueError` if there is none of that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"'{name}' is not a time zone (an IANA name such as UTC or "
                         "Europe/Berlin)") from None


def check_cron(expression: str) -> str:
    """``expression`` if it is a valid five-field cron expression, else :class:`ValueError`."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"'{expression}' is not a cron expression: it needs 5 fields "
                         f"(minute hour day-of-month month day-of-week), not {len(fields)}")
    try:
        it = CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
        next(it)
    except CronSimError as e:
        raise ValueError(f"'{expression}' is not a cron expression: "
                         f"{str(e).lower() or 'bad field'}") from None
    except StopIteration:
        raise ValueError(f"'{expression}' never matches a date") from None
    return expression


def check_interval(every: timedelta) -> timedelta:
    """``every`` if a schedule can run at it, else :class:`ValueError` saying why."""
    if every < MIN_INTERVAL:
        raise ValueError("an interval must be at least 1m")
    if every % timedelta(seconds=1):
        raise ValueError("an interval must be whole seconds")
    if DAY % every and every % DAY:
        raise ValueError("an interval must divide a day (e.g. 15m, 1h, 6h) or be whole "
                         "days (e.g. 2d, 1w)")
    return every


@dataclass(frozen=True)
class Missed:
    """Runs that were due after the last run and not run by ``now``.

    ``latest`` is the one the service runs (once, for all of them); ``count`` stops at
    :data:`MISSED_COUNT_LIMIT`, and ``count_is_exact`` says whether it did.
    """

    first: datetime
    latest: datetime
    count: int
    count_is_exact: bool


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant.isoformat()} has no time zone; schedules take aware "
                         "instants")
    return instant.astimezone(UTC)


class Schedule(ABC):
    """When a policy runs. Instants in, aware instants in the schedule's zone out."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz

    @property
    def timezone(self) -> str:
        return self.tz.key

    @abstractmethod
    def describe(self) -> str:
        """The schedule as the policy file writes it, e.g. ``cron 0 2 * * *``."""

    @abstractmethod
    def next_after(self, instant: datetime) -> datetime:
        """The first run strictly after ``instant``."""

    @abstractmethod
    def latest_at_or_before(self, instant: datetime) -> datetime:
        """The last run at or before ``instant``."""

    def upcoming(self, instant: datetime, count: int) -> list[datetime]:
        """The next ``count`` runs after ``instant``."""
        out: list[datetime] = []
        for run in self.runs_after(instant):
            if len(out) == count:
                break
            out.append(run)
        return out

    def runs_after(self, instant: datetime) -> Iterator[datetime]:
        run = self.next_after(instant)
        while True:
            yield run
            run = self.next_after(run)

    def missed(self, last_run: datetime | None, now: datetime) -> Missed | None:
        """The runs due after ``last_run`` up to and including ``now``, or None.

        ``last_run`` is when the last run was scheduled (its slot), or None for a policy
        that never ran: that one waits for its next slot and has missed nothing.
        """
        if last_run is None:
            return None
        now = _utc(now)  # compare in real time, not on the wall clock
        first = self.next_after(last_run)
        if first > now:
            return None
        latest = self.latest_at_or_before(now)
        count = 0
        exact = False
        for run in self.runs_after(last_run):
            if run > now:
                exact = True
                break
            count += 1
            if count == MISSED_COUNT_LIMIT:
                exact = self.next_after(run) > now
                break
        return Missed(first=first, latest=latest, count=count, count_is_exact=exact)


class CronSchedule(Schedule):
    """A five-field cron expression on the wall clock of ``tz``."""

    def __init__(self, expression: str, tz: ZoneInfo) -> None:
        super().__init__(tz)
        self.expression = check_cron(" ".join(expression.split()))

    def describe(self) -> str:
        return f"cron {self.expression}"

    # Around a DST change the wall clock is not monotonic, and cronsim walks the wall
    # clock: start the walk a window earlier (later, backwards) than asked, and take
    # the nearest run in real time.

    def next_after(self, instant: datetime) -> datetime:
        t = _utc(instant)
        best: tuple[datetime, datetime] | None = None
        for run in CronSim(self.expression, (t - _FOLD).astimezone(self.tz)):
            u = run.astimezone(UTC)
            if u > t and (best is None or u < best[0]):
                best = (u, run)
            if best is not None and u > best[0] + _FOLD:
                break
        assert best is not None
        return best[1]

    def latest_at_or_before(self, instant: datetime) -> datetime:
        t = _utc(instant)
        best: tuple[datetime, datetime] | None = None
        start = (t + _FOLD + _TINY).astimezone(self.tz)
        for run in CronSim(self.expression, start, reverse=True):
            u = run.astimezone(UTC)
            if u <= t and (best is None or u > best[0]):
                best = (u, run)
            if best is not None and u < best[0] - _FOLD:
                break
        assert best is not None
        return best[1]


class IntervalSchedule(Schedule):
    """Every ``every`` of real time, anchored at local midnights (see the module doc)."""

    def __init__(self, every: timedelta, tz: ZoneInfo) -> None:
        super().__init__(tz)
        self.every = check_interval(every)

    def describe(self) -> str:
        return f"every {format_duration(self.every)}"

    def _midnight(self, day: date) -> datetime:
        # A midnight the clock skips maps, with fold=0, to the instant of the jump.
        return datetime.combine(day, time(0), tzinfo=self.tz).astimezone(UTC)

    def _slots_of(self, day: date) -> tuple[datetime, datetime]:
        """The first slot of ``day`` and the first instant of the next day."""
        return self._midnight(day), self._midnight(day + DAY)

    def _runs_on(self, day: date) -> bool:
        return self.every <= DAY or (day.toordinal() - 1) % (self.every // DAY) == 0

    def next_after(self, instant: datetime) -> datetime:
        t = _utc(instant)
        day = t.astimezone(self.tz).date() - DAY
        while True:
            start, end = self._slots_of(day)
            if self._runs_on(day) and t < end:
                if self.every >= DAY:
                    if start > t:
                        return start.astimezone(self.tz)
                else:
                    k = 0 if t < start else (t - start) // self.every + 1
                    run = start + k * self.every
                    if run < end:
                        return run.astimezone(self.tz)
            day += DAY

    def latest_at_or_before(self, instant: datetime) -> datetime:
        t = _utc(instant)
        day = t.astimezone(self.tz).date() + DAY
        while True:
            start, end = self._slots_of(day)
            if self._runs_on(day) and start <= t:
                if self.every >= DAY:
                    return start.astimezone(self.tz)
                last = -((start - end) // self.every) - 1  # the last k with start+k*every < end
                k = min((t - start) // self.every, last)
                return (start + k * self.every).astimezone(self.tz)
            day -= DAY


def make_schedule(*, cron: str | None = None, every: timedelta | None = None,
                  timezone: str = "UTC") -> Schedule:
    """The schedule of a policy: exactly one of ``cron`` and ``every``."""
    if (cron is None) == (every is None):
        raise ValueError("a schedule is either cron or every, exactly one of them")
    tz = zone(timezone)
    if cron is not None:
        return CronSchedule(cron, tz)
    assert every is not None
    return IntervalSchedule(every, tz)
