"""``stasis policy check`` and ``stasis policy list``: policy files, checked and shown.

Both read the file with :func:`stasis.service.policy.load_policies`, the function the
service loads it with, so what ``check`` accepts is what ``stasis serve`` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stasis.app import policies as ops
from stasis.cli.common import JsonOpt, current_config, out, print_model
from stasis.errors import PolicyError

app = typer.Typer(help="Policies: what to protect, when, how long to keep, whom to tell.",
                  no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="The policy file (TOML; see docs/policies.md).",
                                         show_default=False)]
AfterOpt = Annotated[str | None, typer.Option(
    "--after", help="Show the runs after this instant (ISO 8601; default: now).",
    show_default=False)]


@app.command("check")
def check(file: FileArg, as_json: JsonOpt = False) -> None:
    """Check a policy file; list every problem with its line (exit code 29 if any).

    With a config file naming repositories, a policy's repository and its copies'
    destinations must be among them, a destination not the policy's own repository
    and its key file or passphrase file readable.
    """
    rules = ops.repository_rules(current_config())
    if as_json:
        result = ops.check_policy_file(file, **rules)
        print_model(result)
        if not result.ok:
            raise typer.Exit(PolicyError.exit_code)
        return
    policies = ops.load_policy_file(file, **rules)
    names = ", ".join(p.name for p in policies)
    count = "1 policy" if len(policies) == 1 else f"{len(policies)} policies"
    out.print(f"{file}: {count}, valid ({names})", highlight=False)


@app.command("list")
def list_policies(file: FileArg, as_json: JsonOpt = False, after: AfterOpt = None) -> None:
    """Each policy of a file: members, schedule, and its next runs in its time zone."""
    from stasis.service.duration import format_duration

    start = ops.parse_after(after)
    if as_json:
        print_model(ops.list_policy_file(file, after=start))
        return
    policies = ops.load_policy_file(file)
    table = Table(box=None)
    for col in ("policy", "members", "schedule", "consistency", "rpo", "next runs"):
        table.add_column(col)
    for p in policies:
        runs = "\n".join(t.strftime("%Y-%m-%d %H:%M %Z")
                         for t in p.schedule.upcoming(start, ops.RUNS_SHOWN))
        level = p.consistency + (f" (require {p.require})" if p.require else "")
        table.add_row(p.name, p.members.describe().replace("; ", "\n"),
                      f"{p.schedule.describe()}\n{p.timezone}", level,
                      "-" if p.rpo is None else format_duration(p.rpo), runs)
    out.print(table)
