"""Retention: which recovery points a set of rules keeps, and why.

The rules are data (:data:`PERIOD_RULES`, as Borg's PRUNE rules), the decision is a
pure function of the points, the holds, the rules and an instant ``now`` that the
caller passes in (the CLI its wall clock, tests whatever date they check). Nothing
here reads the clock or touches a repository.

Semantics, as Borg and restic: each rule on its own walks a series of points newest
first and keeps the newest point of each of its periods until it has kept N
periods; a point is kept when any rule keeps it, and every rule that keeps it is
named. Periods are local calendar periods in the rules' time zone, so a day is a
local date (23 or 25 hours long across a DST change) and an hour is a local hour
with its UTC offset (the repeated hour of a fall-back change is two hours). Weeks
are ISO weeks (``%G-W%V``: 2020-12-31 is in 2020-W53, 2021-01-04 starts 2021-W01).

Whatever the rules say, a point is never removed when it is held at ``now``, when
it is the newest point holding some VM (across every chain, group points too), or
when it is younger than the minimum age.
"""

from __future__ import annotations

import calendar
import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stasis.errors import UsageError
from stasis.repository.holds import Hold
from stasis.repository.manifest import Manifest

# --------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class PeriodRule:
    """Keep the newest point of each of the N newest periods that have points."""

    name: str  # the rule's word in reasons and option names ("daily": --keep-daily)
    period: Callable[[str, datetime], str]  # (point id, local time) -> period key
    label: str  # the reason a kept point gets; {key} the period, {n} its rank
    help: str  # what a count N of it keeps, for --keep-NAME's help

    @property
    def key(self) -> str:
        """Its count's name in policy files, options and reports: ``keep_daily``."""
        return f"keep_{self.name}"


def _pattern(fmt: str) -> Callable[[str, datetime], str]:
    return lambda _point_id, local: local.strftime(fmt)


PERIOD_RULES: tuple[PeriodRule, ...] = (
    PeriodRule("last", lambda point_id, _local: point_id, "last #{n}",
               "Keep the N newest points."),
    # %Z keeps the two 02:00 hours of a fall-back night apart (CEST, then CET).
    PeriodRule("hourly", _pattern("%Y-%m-%d %H:00 %Z"), "hourly {key}",
               "Keep the newest of N hours."),
    PeriodRule("daily", _pattern("%Y-%m-%d"), "daily {key}", "Keep the newest of N days."),
    PeriodRule("weekly", _pattern("%G-W%V"), "weekly {key}", "Keep the newest of N ISO weeks."),
    PeriodRule("monthly", _pattern("%Y-%m"), "monthly {key}", "Keep the newest of N months."),
    PeriodRule("yearly", _pattern("%Y"), "yearly {key}", "Keep the newest of N years."),
)

# ----------------------------------------------------------------- durations

_UNITS = {"h": "hours", "d": "days", "w": "weeks", "m": "months", "y": "years"}
_DURATION = re.compile(r"(\d+)([hdwmy])")


@dataclass(frozen=True)
class Duration:
    """A span such as ``36h``, ``10d``, ``2w``, ``6m`` or ``1y6m``.

    Hours, days and weeks are fixed lengths (a day is 24 hours); months and years
    are calendar months counted on the local date (31 March less 1m is the last
    day of February), as people mean them.
    """

    months: int = 0
    fixed: timedelta = timedelta(0)
    text: str = "0"

    @classmethod
    def parse(cls, text: str, *, what: str = "duration") -> Duration:
        spec = text.strip().lower()
        if spec == "0":
            return cls()
        parts = _DURATION.findall(spec)
        if not parts or "".join(n + u for n, u in parts) != spec:
            raise UsageError(
                f"'{text}' is not a {what}: give a number and a unit, h (hours), d (days), "
                "w (weeks), m (months) or y (years), e.g. 36h, 10d, 2w, 6m, 1y, 1y6m"
            )
        months = 0
        fixed = timedelta(0)
        for number, unit in parts:
            n = int(number)
            if unit == "y":
                months += 12 * n
            elif unit == "m":
                months += n
            else:
                fixed += timedelta(**{_UNITS[unit]: n})
        return cls(months=months, fixed=fixed, text=spec)

    def __str__(self) -> str:
        return self.text

    def _shift(self, t: datetime, sign: int, zone: ZoneInfo) -> datetime:
        if self.months:
            local = t.astimezone(zone)
            index = local.year * 12 + (local.month - 1) + sign * self.months
            year, month = divmod(index, 12)
            month += 1
            day = min(local.day, calendar.monthrange(year, month)[1])
            t = local.replace(year=year, month=month, day=day)
        return (t + sign * self.fixed).astimezone(UTC)

    def before(self, t: datetime, zone: ZoneInfo | None = None) -> datetime:
        """The instant this long before ``t``."""
        return self._shift(t, -1, zone or ZoneInfo("UTC"))

    def after(self, t: datetime, zone: ZoneInfo | None = None) -> datetime:
        """The instant this long after ``t``."""
        return self._shift(t, 1, zone or ZoneInfo("UTC"))

    def shortest(self) -> timedelta:
        """The least time this span can last: its fixed part, plus its months at their
        shortest over a leap cycle (``1m`` is 28 days, ``1y`` 365, ``1m`` before
        31 March ends on the last day of February)."""
        if not self.months:
            return self.fixed
        zone = ZoneInfo("UTC")
        start = datetime(2024, 1, 1, 12, tzinfo=UTC)
        return min(t - self.before(t, zone)
                   for t in (start + timedelta(days=d) for d in range(4 * 366)))


def zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"unknown time zone '{name}': give an IANA name such as UTC, Europe/Berlin "
            "or America/New_York"
        ) from None


@dataclass(frozen=True)
class RetentionRules:
    """What to keep: counts per period rule, a span to keep whole, a minimum age.

    A count of 0 turns its rule off. ``within`` keeps every point younger than the
    span at ``now``; ``min_age`` keeps every point younger than it, whatever the
    other rules say, and is no reason to keep anything on its own.
    """

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | None = None
    min_age: Duration | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        for rule in PERIOD_RULES:
            n = getattr(self, rule.name)
            if not isinstance(n, int) or n < 0:
                raise UsageError(f"--keep-{rule.name} takes a count of 0 or more, not {n!r}")
        zone_named(self.timezone)

    @classmethod
    def of(cls, counts: Mapping[str, int], *, within: Duration | None = None,
           min_age: Duration | None = None, timezone: str = "UTC") -> RetentionRules:
        """Rules from a count per rule of :data:`PERIOD_RULES`, by name (``{"daily": 7}``);
        a rule not named keeps nothing."""
        unknown = sorted(set(counts) - {rule.name for rule in PERIOD_RULES})
        if unknown:
            raise ValueError(f"no retention rule named {', '.join(unknown)}")
        by_name: dict[str, Any] = dict(counts)
        return dataclasses.replace(cls(within=within, min_age=min_age, timezone=timezone),
                                   **by_name)

    @property
    def zone(self) -> ZoneInfo:
        return zone_named(self.timezone)

    def counts(self) -> list[tuple[PeriodRule, int]]:
        return [(rule, getattr(self, rule.name)) for rule in PERIOD_RULES
                if getattr(self, rule.name) > 0]

    def shortest_keep(self) -> timedelta:
        """The least time every point is kept, whatever the other points: the longer
        of ``within`` and ``min_age`` (each at its shortest). The count rules give no
        such bound: a point that a newer one replaces in its period (or among the
        last N) goes at the next prune, however young."""
        spans = [d.shortest() for d in (self.within, self.min_age) if d is not None]
        return max(spans, default=timedelta(0))

    @property
    def keeps_anything(self) -> bool:
        """Whether any rule keeps points (a minimum age alone keeps none for good)."""
        return bool(self.counts()) or self.within is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            **{rule.key: getattr(self, rule.name) for rule in PERIOD_RULES},
            "keep_within": None if self.within is None else str(self.within),
            "min_age": None if self.min_age is None else str(self.min_age),
            "timezone": self.timezone,
        }

    def describe(self) -> str:
        parts = [f"keep-{rule.name} {n}" for rule, n in self.counts()]
        if self.within is not None:
            parts.append(f"keep-within {self.within}")
        if self.min_age is not None:
            parts.append(f"min-age {self.min_age}")
        return ", ".join(parts) + f" ({self.timezone})"


# ------------------------------------------------------------ points, decisions


@dataclass(frozen=True)
class PointInfo:
    """What retention needs of a point: its id, chain, instant and VMs."""

    id: str
    name: str
    time: datetime  # aware
    vms: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, m: Manifest) -> PointInfo:
        return cls(id=m.id, name=m.name, time=parse_time(m.time),
                   vms=tuple(vm.name for vm in m.vms))


def parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Decision:
    """Keep or remove one point, with every reason (or the reason it goes)."""

    point: PointInfo
    keep: bool
    reasons: tuple[str, ...]
    series: str  # what the rules counted in: "chain web", "vm db"

    def to_dict(self, zone: ZoneInfo | None = None) -> dict[str, Any]:
        return {
            "id": self.point.id,
            "name": self.point.name,
            "time": self.point.time.astimezone(zone or UTC).isoformat(),
            "vms": list(self.point.vms),
            "series": self.series,
            "keep": self.keep,
            "reasons": list(self.reasons),
        }


@dataclass
class _Why:
    rules: list[str] = field(default_factory=list)
    guards: list[str] = field(default_factory=list)


def _newest_first(points: Sequence[PointInfo]) -> list[PointInfo]:
    return sorted(points, key=lambda p: (p.time, p.id), reverse=True)


def _series(
    points: list[PointInfo], name: str | None, vm: str | None
) -> list[tuple[str, list[PointInfo]]]:
    if vm is not None:
        return [(f"vm {vm}", [p for p in points if vm in p.vms])]
    if name is not None:
        return [(f"chain {name}", [p for p in points if p.name == name])]
    chains: dict[str, list[PointInfo]] = {}
    for p in points:
        chains.setdefault(p.name, []).append(p)
    return [(f"chain {n}", chain) for n, chain in sorted(chains.items())]


def plan(
    points: Sequence[PointInfo],
    rules: RetentionRules,
    *,
    now: datetime,
    holds: Mapping[str, Hold] | None = None,
    name: str | None = None,
    vm: str | None = None,
) -> list[Decision]:
    """Decide every selected point, oldest first.

    ``points`` is every point of the repository: the newest point of each VM is
    found among all of them, also outside the selection. The selection is one
    chain (``name``), the points holding one VM (``vm``, one series across chains
    and group points), or every point with each chain counted on its own.
    Refuses rules that keep nothing, so a slip cannot delete every point.
    """
    if not rules.keeps_anything:
        raise UsageError(
            "no retention rule given (keep-last, -hourly, -daily, -weekly, -monthly, -yearly "
            "or -within): refusing to remove every point; nothing was deleted"
        )
    if name is not None and vm is not None:
        raise UsageError("select points by chain name or by VM, not both")
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    zone = rules.zone
    holds = holds or {}
    ordered = _newest_first(points)
    newest_of: dict[str, list[str]] = {}
    seen: set[str] = set()
    for p in ordered:
        for vm_name in p.vms:
            if vm_name not in seen:
                seen.add(vm_name)
                newest_of.setdefault(p.id, []).append(vm_name)
    within_since = None if rules.within is None else rules.within.before(now, zone)
    young_since = None if rules.min_age is None else rules.min_age.before(now, zone)

    decisions: list[Decision] = []
    for series_name, series in _series(ordered, name, vm):
        why = {p.id: _Why() for p in series}
        for rule, count in rules.counts():
            last_key: str | None = None
            kept = 0
            for p in series:
                key = rule.period(p.id, p.time.astimezone(zone))
                if key == last_key:
                    continue
                last_key = key
                kept += 1
                why[p.id].rules.append(rule.label.format(key=key, n=kept))
                if kept == count:
                    break
        for p in series:
            reasons = why[p.id]
            if within_since is not None and p.time >= within_since:
                reasons.rules.append(f"within {rules.within}")
            hold = holds.get(p.id)
            if hold is not None and hold.active(now):
                reasons.guards.append(hold.describe())
            reasons.guards.extend(f"newest of vm {v}" for v in newest_of.get(p.id, []))
            if young_since is not None and p.time > young_since:
                reasons.guards.append(f"younger than min age {rules.min_age}")
            kept_by = tuple(reasons.rules + reasons.guards)
            if kept_by:
                decisions.append(Decision(p, True, kept_by, series_name))
                continue
            gone = "no rule keeps it"
            if hold is not None and hold.until is not None:
                gone += f" (its hold ended {hold.until.astimezone(UTC).isoformat()})"
            decisions.append(Decision(p, False, (gone,), series_name))
    return sorted(decisions, key=lambda d: (d.point.time, d.point.id))
