"""``stasis policy check`` and ``stasis policy list``: policy files, checked and shown.

Both read the file with :func:`stasis.service.policy.load_policies`, the function the
service loads it with, so what ``check`` accepts is what ``stasis serve`` runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from stasis.cli.common import JsonOpt, out, print_json
from stasis.errors import PolicyError, UsageError

if TYPE_CHECKING:  # pydantic and the policy models load only for policy commands
    from stasis.service.policy import Policy

app = typer.Typer(help="Policies: what to protect, when, how long to keep, whom to tell.",
                  no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="The policy file (TOML; see docs/policies.md).",
                                         show_default=False)]
AfterOpt = Annotated[str | None, typer.Option(
    "--after", help="Show the runs after this instant (ISO 8601; default: now).",
    show_default=False)]
RUNS_SHOWN = 3


def _after(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--after '{text}' is not an ISO 8601 time "
                         "(e.g. 2026-03-29T00:00:00+01:00)") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def policy_summary(p: Policy, after: datetime, runs: int = RUNS_SHOWN) -> dict[str, Any]:
    from stasis.service.duration import format_duration
    from stasis.service.notify import redact_url
    from stasis.service.schedule import CronSchedule, IntervalSchedule

    s = p.schedule
    schedule: dict[str, Any] = {"timezone": s.timezone}
    if isinstance(s, CronSchedule):
        schedule["cron"] = s.expression
    elif isinstance(s, IntervalSchedule):
        schedule["every"] = format_duration(s.every)
    email = p.notify.email
    return {
        "name": p.name,
        "description": p.description,
        "origin": p.origin,
        "members": {"vms": list(p.members.vms), "groups": list(p.members.groups),
                    "select": list(p.members.select), "labels": dict(p.members.labels)},
        "schedule": schedule,
        "next_runs": [t.isoformat() for t in s.upcoming(after, runs)],
        "consistency": p.consistency,
        "require": p.require,
        "hooks": p.hooks.to_dict() if p.hooks else None,
        "retention": {k: v for k, v in vars(p.retention).items()},
        "rpo": None if p.rpo is None else format_duration(p.rpo),
        "notify": {
            "on": sorted(p.notify.on),
            "webhooks": [redact_url(u) for u in p.notify.webhooks],
            "email": None if email is None else {"server": f"{email.host}:{email.port}",
                                                  "from": email.sender,
                                                  "to": list(email.to)},
        },
    }


@app.command("check")
def check(file: FileArg, as_json: JsonOpt = False) -> None:
    """Check a policy file; list every problem with its line (exit code 29 if any)."""
    from stasis.service.policy import check_text, load_policies

    if as_json:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            load_policies(file)  # raises the PolicyError that says why
            raise
        policies, problems = check_text(text)
        print_json({"file": str(file), "ok": not problems,
                    "policies": [p.name for p in policies],
                    "problems": [{"line": p.line, "policy": p.policy, "message": p.text,
                                  "text": p.render(str(file))} for p in problems]})
        if problems:
            raise typer.Exit(PolicyError.exit_code)
        return
    policies = load_policies(file)
    names = ", ".join(p.name for p in policies)
    count = "1 policy" if len(policies) == 1 else f"{len(policies)} policies"
    out.print(f"{file}: {count}, valid ({names})", highlight=False)


@app.command("list")
def list_policies(file: FileArg, as_json: JsonOpt = False, after: AfterOpt = None) -> None:
    """Each policy of a file: members, schedule, and its next runs in its time zone."""
    from stasis.service.duration import format_duration
    from stasis.service.policy import load_policies

    policies = load_policies(file)
    start = _after(after)
    if as_json:
        print_json([policy_summary(p, start) for p in policies])
        return
    table = Table(box=None)
    for col in ("policy", "members", "schedule", "consistency", "rpo", "next runs"):
        table.add_column(col)
    for p in policies:
        runs = "\n".join(t.strftime("%Y-%m-%d %H:%M %Z")
                         for t in p.schedule.upcoming(start, RUNS_SHOWN))
        level = p.consistency + (f" (require {p.require})" if p.require else "")
        table.add_row(p.name, p.members.describe().replace("; ", "\n"),
                      f"{p.schedule.describe()}\n{p.timezone}", level,
                      "-" if p.rpo is None else format_duration(p.rpo), runs)
    out.print(table)
