"""``stasis prune``, ``stasis hold``, ``stasis release`` and ``stasis holds``.

Prune asks :func:`stasis.service.retention.plan` what the rules keep and removes
the rest with :meth:`Repository.remove_point`; holds are objects in the repository.
This module parses options, reads the wall clock (the one place it is read for
retention) and prints.
"""

from __future__ import annotations

import getpass
import re
import socket
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.markup import escape
from rich.table import Table

from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    err,
    open_repo,
    out,
    plural,
    print_json,
)
from stasis.cli.jobs import CatalogOpt, cli_job
from stasis.errors import PointNotFound, UsageError
from stasis.repository import Manifest, ObjectDamaged
from stasis.repository.holds import Hold
from stasis.service.prune import policy_chains, prune_points
from stasis.service.retention import (
    Decision,
    Duration,
    RetentionRules,
    zone_named,
)


def wall_clock() -> datetime:
    """Now, in UTC: what the CLI injects into retention."""
    return datetime.now(UTC)


TimezoneOpt = Annotated[
    str, typer.Option("--timezone", help="Time zone of days, weeks, months (IANA name).")
]


def _warn_damaged(pid: str, e: ObjectDamaged) -> None:
    err.print(f"[yellow]warning:[/] manifest {pid[:12]} is damaged ({e.reason}); it is left "
              "as it is. Run 'stasis verify' for details.", highlight=False)


def _when(t: datetime, zone: ZoneInfo) -> str:
    return t.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def prune(
    repo: RepoOpt,
    policy: Annotated[str | None, typer.Option(
        help="Apply this policy's retention to the chains its runs made (its points carry "
             "its tag); the policy comes from --policies or the catalog.")] = None,
    policies: Annotated[Path | None, typer.Option(
        "--policies", envvar="STASIS_POLICIES", show_default=False,
        help="The policy file, with --policy ($STASIS_POLICIES).")] = None,
    name: Annotated[str | None, typer.Option(help="Only the chain of this point name.")] = None,
    vm: Annotated[str | None, typer.Option(help="Only the points holding this VM, counted "
                                           "as one series across chains.")] = None,
    keep_last: Annotated[int, typer.Option(min=0, help="Keep the N newest points.")] = 0,
    keep_hourly: Annotated[int, typer.Option(min=0, help="Keep the newest of N hours.")] = 0,
    keep_daily: Annotated[int, typer.Option(min=0, help="Keep the newest of N days.")] = 0,
    keep_weekly: Annotated[int, typer.Option(min=0, help="Keep the newest of N ISO "
                                             "weeks.")] = 0,
    keep_monthly: Annotated[int, typer.Option(min=0, help="Keep the newest of N "
                                              "months.")] = 0,
    keep_yearly: Annotated[int, typer.Option(min=0, help="Keep the newest of N years.")] = 0,
    keep_within: Annotated[str | None, typer.Option(help="Keep every point younger than "
                                                    "this (36h, 10d, 2w, 6m, 1y).")] = None,
    min_age: Annotated[str | None, typer.Option(help="Never remove a point younger than "
                                                "this.")] = None,
    timezone: TimezoneOpt = "UTC",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go; delete "
                                          "nothing.")] = False,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Remove the points no retention rule keeps (held points, each VM's newest point
    and points younger than --min-age are always kept). Chunks stay until gc.

    A real prune (not --dry-run) is recorded as a job with each point's fate."""
    by_hand = RetentionRules(
        last=keep_last, hourly=keep_hourly, daily=keep_daily, weekly=keep_weekly,
        monthly=keep_monthly, yearly=keep_yearly,
        within=None if keep_within is None else Duration.parse(keep_within,
                                                               what="--keep-within span"),
        min_age=None if min_age is None else Duration.parse(min_age, what="--min-age span"),
        timezone=timezone,
    )
    names: list[str | None] = [name]
    rules = by_hand
    pol = None
    if policy is not None:
        if by_hand.keeps_anything or name is not None or vm is not None:
            raise UsageError("--policy brings its own rules and chains: give no --keep-*, "
                             "--name or --vm with it; nothing was deleted")
        from stasis.catalog import Catalog
        from stasis.cli.service import find_policy

        with Catalog.open(catalog) as c:
            pol = find_policy(c, policy, policies, doing="deleted")
        rules = pol.retention_rules()
        if not rules.keeps_anything:
            raise UsageError(f"policy '{policy}' has no retention rules: nothing to prune, "
                             "nothing was deleted")
    if not rules.keeps_anything:
        raise UsageError(
            "give at least one --keep-last, --keep-hourly, --keep-daily, --keep-weekly, "
            "--keep-monthly, --keep-yearly or --keep-within: prune never removes every "
            "point by default; nothing was deleted"
        )
    if name is not None and vm is not None:
        raise UsageError("--name and --vm select points in two ways; give one; nothing was "
                         "deleted")
    r = open_repo(repo, passphrase_file, key_file)
    now = wall_clock()
    if pol is not None:
        names = list(policy_chains(r, pol.name))
        if not names:
            raise PointNotFound(f"policy {pol.name}")
    if dry_run:  # changes nothing: not a run to record
        result = prune_points(r, rules, now=now, names=names, vm=vm, dry_run=True,
                              on_damaged=_warn_damaged)
    else:
        with cli_job(catalog, "prune", (f"policy {policy}" if policy else name)
                     or (f"vm {vm}" if vm else "all chains"),
                     vms=[vm] if vm else [], repo=r.id,
                     params={"name": name, "vm": vm, "policy": policy,
                             "rules": rules.to_dict()}) as job:
            result = prune_points(r, rules, now=now, names=names, vm=vm,
                                  on_damaged=_warn_damaged)
            for d in result.decisions:
                job.result[d.point.id] = {
                    "point": d.point.id, "point_name": d.point.name,
                    "time": d.point.time.isoformat(),
                    "action": "keep" if d.keep else "removed", "reasons": list(d.reasons)}
    decisions = result.decisions
    _report(decisions, rules, now, dry_run=dry_run, json_output=json_output)


def _report(decisions: list[Decision], rules: RetentionRules, now: datetime, *, dry_run: bool,
            json_output: bool) -> None:
    zone = rules.zone
    kept = [d for d in decisions if d.keep]
    gone = [d for d in decisions if not d.keep]
    if json_output:
        print_json({
            "dry_run": dry_run,
            "now": now.isoformat(),
            "rules": rules.to_dict(),
            "points": [d.to_dict(zone) for d in decisions],
            "kept": [d.point.id for d in kept],
            "removed": [d.point.id for d in gone],
        })
        return
    table = Table(box=None)
    for col in ("id", "name", "time", "action", "why"):
        table.add_column(col)
    for d in decisions:
        action = "keep" if d.keep else ("would remove" if dry_run else "removed")
        style = "" if d.keep else "red"
        table.add_row(d.point.id[:12], escape(d.point.name), _when(d.point.time, zone),
                      f"[{style}]{action}[/]" if style else action,
                      escape("; ".join(d.reasons)))
    out.print(table)
    verb = "would remove" if dry_run else "removed"
    out.print(f"{rules.describe()}: kept {plural(len(kept), 'point')}, {verb} "
              f"{len(gone)}" + (" (dry run: nothing was deleted)." if dry_run else
                                ". Their chunks stay until 'stasis gc'." if gone else "."),
              highlight=False)


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


def _hold_row(h: Hold, m: Manifest | None, now: datetime) -> dict[str, Any]:
    return {
        **h.to_dict(),
        "active": h.active(now),
        "damaged": h.damaged,
        "point_exists": m is not None,
        "name": m.name if m else None,
        "time": m.time if m else None,
    }


def hold(
    point: Annotated[str, typer.Argument(help="Point id, unique prefix, or NAME@latest.")],
    repo: RepoOpt,
    until: Annotated[str | None, typer.Option(help="Until this date (held through it), "
                                              "date-time, or span (90d); default: until "
                                              "released.")] = None,
    reason: Annotated[str, typer.Option(help="Why it is kept (shown by prune and "
                                        "holds).")] = "",
    timezone: TimezoneOpt = "UTC",
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Keep a point past retention: prune never removes it while the hold lasts."""
    zone = zone_named(timezone)
    now = wall_clock()
    end = None if until is None else parse_until(until, now, zone)
    if end is not None and end <= now:
        raise UsageError(f"--until {until} is in the past ({_when(end, zone)}): such a hold "
                         "would keep nothing; nothing was written")
    r = open_repo(repo, passphrase_file, key_file)
    m = r.resolve(point)
    h = r.hold(m.id, end, reason, by=f"{getpass.getuser()}@{socket.gethostname()}",
               created=now)
    if json_output:
        print_json(_hold_row(h, m, now))
        return
    out.print(f"Point [bold]{m.id[:12]}[/] '{escape(m.name)}' is {escape(h.describe())}.",
              highlight=False)


def release(
    point: Annotated[str, typer.Argument(help="Point id, unique prefix, or NAME@latest.")],
    repo: RepoOpt,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Lift a point's hold: retention decides about it again."""
    r = open_repo(repo, passphrase_file, key_file)
    try:
        point_id = r.resolve(point).id
    except PointNotFound:
        # A hold whose point is gone (removed by hand, or a crash mid-removal).
        if point.lower() not in r.holds():
            raise
        point_id = point.lower()
    h = r.release(point_id)
    if json_output:
        print_json({"point": point_id, "released": h is not None,
                    "hold": None if h is None else h.to_dict()})
        return
    if h is None:
        out.print(f"Point {point_id[:12]} was not held; nothing changed.")
    else:
        out.print(f"Released point {point_id[:12]} (it was {escape(h.describe())}).",
                  highlight=False)


def holds(
    repo: RepoOpt,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List held points, expired holds too."""
    r = open_repo(repo, passphrase_file, key_file)
    now = wall_clock()
    points = {m.id: m for m in r.points(on_damaged=_warn_damaged)}
    rows = [_hold_row(h, points.get(pid), now) for pid, h in sorted(r.holds().items())]
    if json_output:
        print_json(rows)
        return
    table = Table(box=None)
    for col in ("id", "name", "time", "until", "state", "reason", "by"):
        table.add_column(col)
    for row in rows:
        state = ("damaged" if row["damaged"] else "active" if row["active"] else "expired")
        if not row["point_exists"]:
            state += ", point gone"
        table.add_row(row["point"][:12], escape(row["name"] or "-"),
                      (row["time"] or "-")[:19].replace("T", " "),
                      (row["until"] or "until released")[:19].replace("T", " "), state,
                      escape(row["reason"]), escape(row["by"]))
    out.print(table)
