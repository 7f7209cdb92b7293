"""Retention by hand or by a policy (prune), and holds on points.

Prune asks :func:`stasis.service.retention.plan` what the rules keep and removes
the rest; held points, each VM's newest point and points younger than the minimum
age are always kept, and chunks stay until gc. A real prune is a job of kind prune
with every point's fate; a dry run changes nothing and is not recorded. Holds are
objects in the repository.
"""

from __future__ import annotations

import getpass
import re
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

from stasis.app.jobs import Warn
from stasis.app.kinds import PruneParams, env_here, run_here
from stasis.app.models import HoldRow, PointHold, PruneReport, Released
from stasis.app.policies import find_policy
from stasis.clock import SYSTEM_CLOCK
from stasis.errors import PointNotFound, UsageError
from stasis.repository import Manifest, ObjectDamaged, Repository
from stasis.repository.holds import Hold
from stasis.service.retention import Duration, RetentionRules, zone_named

RepoOpener = Callable[[], Repository]
OnDamaged = Callable[[str, ObjectDamaged], None]


def wall_clock() -> datetime:
    """Now, in UTC: what retention and holds are measured against."""
    return SYSTEM_CLOCK.now()


def retention_rules(counts: Mapping[str, int], *, within: str | None = None,
                    min_age: str | None = None, timezone: str = "UTC") -> RetentionRules:
    """Rules given by hand: a count per rule of the table (``{"daily": 7}``), and
    ``within`` and ``min_age`` as spans (36h, 10d, 2w, 6m, 1y)."""
    return RetentionRules.of(
        counts,
        within=None if within is None else Duration.parse(within, what="--keep-within span"),
        min_age=None if min_age is None else Duration.parse(min_age, what="--min-age span"),
        timezone=timezone,
    )


def prune(open_repo: RepoOpener, *, rules: RetentionRules, catalog: str | None, warn: Warn,
          policy: str | None = None, policies: Path | None = None, name: str | None = None,
          vm: str | None = None, dry_run: bool = False,
          on_damaged: OnDamaged | None = None) -> PruneReport:
    """Remove the points that ``rules`` (or ``policy``'s retention, over the chains its
    runs made) do not keep: of chain ``name``, of the points holding ``vm``, or all."""
    params = PruneParams(**rule_params(rules), policy=policy, name=name, vm=vm,
                         dry_run=dry_run)
    env = env_here(catalog=catalog, warn=warn, open_repo=open_repo, on_damaged=on_damaged,
                   find_policy=lambda c, p: find_policy(c, p, policies, doing="deleted"))
    return cast(PruneReport, run_here(params, env))


def rule_params(rules: RetentionRules) -> dict[str, Any]:
    """``rules`` as the parameters of a prune job (what :func:`retention_rules` takes)."""
    return {"keep": {rule.name: n for rule, n in rules.counts()},
            "within": None if rules.within is None else str(rules.within),
            "min_age": None if rules.min_age is None else str(rules.min_age),
            "timezone": rules.timezone}


# --------------------------------------------------------------------- holds

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_until(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """--until: a span from now (30d), a date (held through that day) or a date-time."""
    spec = text.strip()
    if spec and spec[0].isdigit() and spec[-1].lower() in "hdwmy" and "-" not in spec:
        return Duration.parse(spec, what="--until span").after(now, zone)
    try:
        if _DATE.match(spec):
            day = date.fromisoformat(spec) + timedelta(days=1)
            return datetime.combine(day, time(0), zone).astimezone(UTC)
        t = datetime.fromisoformat(spec)
    except ValueError:
        raise UsageError(
            f"'{text}' is not a date: give a date (2026-12-31, held through that day), a "
            "date-time (2026-12-31T18:00, with an offset or in --timezone) or a span from "
            "now (90d, 6m, 1y); nothing was written"
        ) from None
    return (t if t.tzinfo is not None else t.replace(tzinfo=zone)).astimezone(UTC)


def when(t: datetime, zone: ZoneInfo) -> str:
    return t.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def hold_row(h: Hold, m: Manifest | None, now: datetime) -> HoldRow:
    return HoldRow(**h.to_dict(), active=h.active(now), damaged=h.damaged,
                   point_exists=m is not None, name=m.name if m else None,
                   time=m.time if m else None, description=h.describe())


def hold(open_repo: RepoOpener, point: str, *, until: str | None = None, reason: str = "",
         timezone: str = "UTC", by: str | None = None,
         now: datetime | None = None) -> HoldRow:
    """Keep ``point`` past retention until ``until`` (a date, date-time or span; None:
    until released). ``by`` says who (default: this user at this host)."""
    zone = zone_named(timezone)
    now = now or wall_clock()
    end = None if until is None else parse_until(until, now, zone)
    if end is not None and end <= now:
        raise UsageError(f"--until {until} is in the past ({when(end, zone)}): such a hold "
                         "would keep nothing; nothing was written")
    r = open_repo()
    m = r.resolve(point)
    h = r.hold(m.id, end, reason, by=by or f"{getpass.getuser()}@{socket.gethostname()}",
               created=now)
    return hold_row(h, m, now)


def release(open_repo: RepoOpener, point: str) -> Released:
    """Lift the hold of ``point`` (also of a point that is gone)."""
    r = open_repo()
    try:
        point_id = r.resolve(point).id
    except PointNotFound:
        # A hold whose point is gone (removed by hand, or a crash mid-removal).
        if point.lower() not in r.holds():
            raise
        point_id = point.lower()
    h = r.release(point_id)
    return Released(point=point_id, released=h is not None,
                    hold=None if h is None else h.to_dict(),
                    description=None if h is None else h.describe())


def list_holds(open_repo: RepoOpener, *, on_damaged: OnDamaged | None = None,
               now: datetime | None = None) -> list[HoldRow]:
    """Every hold of the repository, expired ones too, by point id."""
    r = open_repo()
    now = now or wall_clock()
    points = {m.id: m for m in r.points(on_damaged=on_damaged)}
    return [hold_row(h, points.get(pid), now) for pid, h in sorted(r.holds().items())]


def hold_of(open_repo: RepoOpener, point: str, *, now: datetime | None = None) -> PointHold:
    """Whether committed point ``point`` (an id) is held now, with its hold (an expired
    one too)."""
    r = open_repo()
    m = r.resolve(point)
    now = now or wall_clock()
    h = r.holds().get(m.id)
    return PointHold(point=m.id, held=h is not None and h.active(now),
                     hold=None if h is None else hold_row(h, m, now))
