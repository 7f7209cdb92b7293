"""``stasis jobs``, ``stasis job show`` and ``stasis job cancel``: job history from the
catalog, and stopping a job."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from stasis.app.jobs import list_jobs, show_job
from stasis.app.models import CancelResult, JobLogPage, JobModel, job_model
from stasis.app.submit import cancel_job
from stasis.cli.common import CatalogOpt, JsonOpt, human, out, print_model
from stasis.cli.remote import Remote, remote
from stasis.cli.render import print_job, took_text, when_text

app = typer.Typer(help="One job: its result and log, or cancel it.", no_args_is_help=True)


def jobs(
    state: Annotated[str | None, typer.Option(
        help="Only jobs in this state: queued, running, succeeded, failed, interrupted.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind (backup, ...).")] = None,
    policy: Annotated[str | None, typer.Option(help="Only the jobs of this policy.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    server = remote()
    found = list_jobs(catalog, state=state, kind=kind, policy=policy, limit=limit
                      ) if server is None else server.items(
        "/jobs", job_model, most=limit, state=state, kind=kind, policy=policy)
    if json_output:
        print_model(found)
        return
    if not found:
        out.print("No jobs.")
        return
    table = Table(box=None)
    for col in ("id", "kind", "name", "policy", "state", "started", "took", "read", "written",
                "error"):
        table.add_column(col)
    for j in found:
        table.add_row(str(j.id), j.kind, j.name, j.policy or "-", j.state, when_text(j.started),
                      took_text(j), human(j.bytes_read), human(j.bytes_written),
                      (j.error or "")[:60])
    out.print(table)


@app.command("show")
def show(
    job_id: Annotated[int, typer.Argument(help="The job's id ('stasis jobs' lists them).")],
    show_log: Annotated[bool, typer.Option("--log", help="Print the job's log too.")] = False,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show one job: state, times, bytes, per-VM result, error, and its log."""
    server = remote()
    job = show_job(catalog, job_id, with_log=show_log or json_output) if server is None \
        else _remote_job(server, job_id, with_log=show_log or json_output)
    if json_output:
        print_model(job)
        return
    print_job(job, show_log)


@app.command("cancel")
def cancel(
    job_id: Annotated[int, typer.Argument(help="The job's id ('stasis jobs' lists them).")],
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Cancel a job: a queued one never starts, a running one is interrupted.

    A running job ends interrupted with nothing committed: its service stops it at
    its next tick, or the command running it on this host gets SIGTERM."""
    server = remote()
    done = cancel_job(catalog, job_id) if server is None else server.post(
        f"/jobs/{job_id}/cancel", CancelResult.model_validate)
    if json_output:
        print_model(done)
        return
    what = {"interrupted": "cancelled before it started",
            "cancel requested": "asked to stop: its service interrupts it",
            "terminated": "sent SIGTERM: the command running it stops"}[done.action]
    out.print(f"Job {done.job}: {what}; 'stasis job show {done.job}' shows how it ended.",
              highlight=False)


def _remote_job(server: Remote, job_id: int, *, with_log: bool) -> JobModel:
    """The job from the server, with its log read page after page when asked."""
    job = server.job(job_id)
    if with_log:
        lines: list[dict[str, object]] = []
        offset = 0
        while True:
            page = server.get(f"/jobs/{job_id}/log", JobLogPage.model_validate, offset=offset)
            lines.extend(line.model_dump(mode="json", exclude={"offset"})
                         for line in page.lines)
            if not page.lines:
                break
            offset = page.next
        job.log = lines
    return job
