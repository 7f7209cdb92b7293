"""``stasis policy check`` and ``stasis policy list``: policy files, checked and shown
(and with ``--server``, the server's stored policies listed).

Both read the file with :func:`stasis.service.policy.load_policies`, the function the
service loads it with, so what ``check`` accepts is what ``stasis serve`` runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stasis.app import policies as ops
from stasis.app.models import PolicySummary, StoredPolicy
from stasis.cli.common import JsonOpt, current_config, out, print_model
from stasis.cli.remote import remote
from stasis.errors import PolicyError, UsageError

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
def list_policies(
    file: Annotated[Path | None, typer.Argument(
        help="The policy file (TOML; see docs/policies.md); with --server none: the "
        "server's policies.", show_default=False)] = None,
    as_json: JsonOpt = False, after: AfterOpt = None,
) -> None:
    """Each policy of a file: members, schedule, and its next runs in its time zone.

    With --server, the policies stored on the server that it runs (a tenant's: its own;
    templates, which do not run, are left out), shown the same way; --json gives each
    one's summary, as for a file (GET /api/v1/policies has the rest: tenant, last run).
    """
    start = ops.parse_after(after)
    server = remote()
    if server is not None:
        if file is not None:
            raise UsageError(f"with --server, 'stasis policy list' shows the server's "
                             f"policies and takes no FILE ({file}); nothing was done",
                             hint="Run it without --server to list a policy file.")
        summaries = [s.policy for s in server.items(
            "/policies", StoredPolicy.model_validate, template=False,
            after=start.isoformat())]
    elif file is None:
        raise UsageError("give the policy file: 'stasis policy list FILE'; nothing was done")
    else:
        summaries = ops.list_policy_file(file, after=start)
    if as_json:
        print_model(summaries)
        return
    out.print(_table(summaries))


def _table(policies: list[PolicySummary]) -> Table:
    """Policies as ``policy list`` shows them, one row each."""
    from zoneinfo import ZoneInfo

    from stasis.service.policy import Members

    table = Table(box=None)
    for col in ("policy", "members", "schedule", "consistency", "rpo", "next runs"):
        table.add_column(col)
    for p in policies:
        zone = str(p.schedule["timezone"])
        runs = "\n".join(datetime.fromisoformat(t).astimezone(ZoneInfo(zone))
                         .strftime("%Y-%m-%d %H:%M %Z") for t in p.next_runs)
        m = p.members
        members = Members(vms=tuple(m["vms"]), groups=tuple(m["groups"]),
                          select=tuple(m["select"]), labels=dict(m["labels"]))
        schedule = f"cron {p.schedule['cron']}" if "cron" in p.schedule \
            else f"every {p.schedule['every']}"
        level = p.consistency + (f" (require {p.require})" if p.require else "")
        table.add_row(p.name, members.describe().replace("; ", "\n"),
                      f"{schedule}\n{zone}", level, p.rpo or "-", runs)
    return table
