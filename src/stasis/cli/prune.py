"""``stasis prune``, ``stasis hold``, ``stasis release`` and ``stasis holds``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from stasis.app import prune as ops
from stasis.app.models import HoldRow, PruneReport, Released
from stasis.app.submit import queue as queue_job
from stasis.cli.common import (
    CatalogOpt,
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    PointArg,
    QueueOpt,
    RepoOpt,
    err,
    open_repo,
    out,
    plural,
    print_model,
    print_queued,
    warn_unrecorded,
)
from stasis.cli.remote import remote, show_ended_job, start_job
from stasis.errors import UsageError
from stasis.repository import ObjectDamaged
from stasis.service.retention import PERIOD_RULES, zone_named

TimezoneOpt = Annotated[
    str, typer.Option("--timezone", help="Time zone of days, weeks, months (IANA name).")
]


def _warn_damaged(pid: str, e: ObjectDamaged) -> None:
    err.print(f"[yellow]warning:[/] manifest {pid[:12]} is damaged ({e.reason}); it is left "
              "as it is. Run 'stasis verify' for details.", highlight=False)


def keep_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with a ``--keep-RULE N`` option per rule of the retention table
    (:data:`~stasis.service.retention.PERIOD_RULES`), before its ``keep_within``
    parameter; it gets their values as ``counts``, by rule name."""
    signature = inspect.signature(command, eval_str=True)
    params = [p for p in signature.parameters.values() if p.name != "counts"]
    at = next(n for n, p in enumerate(params) if p.name == "keep_within")
    options = [inspect.Parameter(rule.key, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=0,
                                 annotation=Annotated[int, typer.Option(min=0, help=rule.help)])
               for rule in PERIOD_RULES]

    @functools.wraps(command)
    def with_counts(**given: Any) -> None:
        counts = {rule.name: given.pop(rule.key) for rule in PERIOD_RULES}
        command(**given, counts=counts)

    with_counts.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*params[:at], *options, *params[at:]])
    return with_counts


@keep_options
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
    queue: QueueOpt = False,
    *,
    counts: dict[str, int],
) -> None:
    """Remove the points no retention rule keeps (held points, each VM's newest point
    and points younger than --min-age are always kept). Chunks stay until gc.

    A real prune (not --dry-run) is recorded as a job with each point's fate."""
    rules = ops.retention_rules(counts, within=keep_within, min_age=min_age, timezone=timezone)
    server = remote()
    if server is not None:
        if policies is not None:
            raise UsageError("--policies names a file of this host; against a server, "
                             "--policy names one of the server's; nothing was pruned")
        body = {**ops.rule_params(rules), "policy": policy, "name": name, "vm": vm}
        if dry_run:
            print_or_show(server.post("/prunes", PruneReport.model_validate,
                                      {**{k: v for k, v in body.items() if v is not None},
                                       "dry_run": True}, repository=repo or None),
                          json_output)
            return
        job = start_job(server, "/prunes", body, wait=not queue, json_output=json_output,
                        repository=repo or None)
        if job is not None:
            show_ended_job(job, json_output)
        return
    if queue:
        print_queued(queue_job(catalog, "prune", {
            "repo": repo, **ops.rule_params(rules), "policy": policy, "name": name, "vm": vm,
            "dry_run": dry_run}, by="'stasis prune'"), json_output)
        return
    report = ops.prune(lambda: open_repo(repo, passphrase_file, key_file), rules=rules,
                       catalog=catalog, warn=warn_unrecorded, policy=policy, policies=policies,
                       name=name, vm=vm, dry_run=dry_run, on_damaged=_warn_damaged)
    print_or_show(report, json_output)


def print_or_show(report: PruneReport, json_output: bool) -> None:
    if json_output:
        print_model(report)
    else:
        _print_report(report)


def _print_report(report: PruneReport) -> None:
    zone = zone_named(report.rules["timezone"])
    dry_run = report.dry_run
    table = Table(box=None)
    for col in ("id", "name", "time", "action", "why"):
        table.add_column(col)
    for d in report.points:
        action = "keep" if d.keep else ("would remove" if dry_run else "removed")
        style = "" if d.keep else "red"
        table.add_row(d.id[:12], escape(d.name), ops.when(datetime.fromisoformat(d.time), zone),
                      f"[{style}]{action}[/]" if style else action, escape("; ".join(d.reasons)))
    out.print(table)
    verb = "would remove" if dry_run else "removed"
    gone = report.removed
    out.print(f"{report.rules_text}: kept {plural(len(report.kept), 'point')}, {verb} "
              f"{len(gone)}" + (" (dry run: nothing was deleted)." if dry_run else
                                ". Their chunks stay until 'stasis gc'." if gone else "."),
              highlight=False)


def hold(
    point: PointArg,
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
    server = remote()
    row = ops.hold(lambda: open_repo(repo, passphrase_file, key_file), point, until=until,
                   reason=reason, timezone=timezone) if server is None else server.post(
        f"/points/{quote(point, safe='')}/hold", HoldRow.model_validate,
        {"reason": reason, "until": until, "timezone": timezone}, repository=repo or None)
    if json_output:
        print_model(row)
        return
    out.print(f"Point [bold]{row.point[:12]}[/] '{escape(row.name or '')}' is "
              f"{escape(row.description)}.", highlight=False)


def release(
    point: PointArg,
    repo: RepoOpt,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Lift a point's hold: retention decides about it again."""
    server = remote()
    result = ops.release(lambda: open_repo(repo, passphrase_file, key_file), point
                         ) if server is None else server.delete(
        f"/points/{quote(point, safe='')}/hold", Released.model_validate,
        repository=repo or None)
    if json_output:
        print_model(result)
        return
    if not result.released:
        out.print(f"Point {result.point[:12]} was not held; nothing changed.")
    else:
        out.print(f"Released point {result.point[:12]} (it was "
                  f"{escape(result.description or '')}).", highlight=False)


def holds(
    repo: RepoOpt,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List held points, expired holds too."""
    rows = ops.list_holds(lambda: open_repo(repo, passphrase_file, key_file),
                          on_damaged=_warn_damaged)
    if json_output:
        print_model(rows)
        return
    table = Table(box=None)
    for col in ("id", "name", "time", "until", "state", "reason", "by"):
        table.add_column(col)
    for row in rows:
        state = ("damaged" if row.damaged else "active" if row.active else "expired")
        if not row.point_exists:
            state += ", point gone"
        table.add_row(row.point[:12], escape(row.name or "-"),
                      (row.time or "-")[:19].replace("T", " "),
                      (row.until or "until released")[:19].replace("T", " "), state,
                      escape(row.reason), escape(row.by))
    out.print(table)
