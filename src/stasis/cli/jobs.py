"""``stasis jobs``, ``stasis job show`` and ``stasis job cancel``: job history from the
catalog, and stopping a job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from stasis.app.jobs import list_jobs, show_job
from stasis.app.models import JobModel
from stasis.app.submit import cancel_job
from stasis.cli.common import CatalogOpt, JsonOpt, human, out, print_model

app = typer.Typer(help="One job: its result and log, or cancel it.", no_args_is_help=True)


def _when(t: str | None) -> str:
    return datetime.fromisoformat(t).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _duration(job: JobModel) -> str:
    d = job.duration_s
    return "-" if d is None else f"{d:.1f} s"


def _outcome(kind: str, res: Any) -> str:
    """One entry of a job's result (a VM's, a point's, a step's) in a few words."""
    res = res.to_json() if hasattr(res, "to_json") else res
    if not isinstance(res, dict):
        return str(res)
    if res.get("error"):
        return f"failed: {res['error']}"
    if res.get("probe") == "object-lock":  # a verify's probe of an immutable repository
        return "the storage enforces the Object Lock" if res.get("ok") else "; ".join(
            f"warning {w['code']}: {w['message']}" for w in res.get("warnings", []))
    point = str(res.get("point") or "")[:12]
    if kind == "backup" and point:
        return f"point {point}, {res.get('consistency', '')}"
    if kind == "restore" and point:
        where = res.get("restored_as") or ", ".join(res.get("disks", {}).values())
        return f"from point {point} as {where}"
    if kind == "verify" and point:
        return f"point {point} '{res.get('point_name', '')}' intact"
    if kind == "copy" and point:
        return (f"point {point} '{res.get('point_name', '')}' {res.get('action')}: "
                f"{res.get('objects_sent', 0)} object(s) sent "
                f"({human(int(res.get('bytes_sent') or 0))}), "
                f"{res.get('objects_present', 0)} present")
    if kind == "prune" and point:
        return f"{res.get('action')} point {point}: {'; '.join(res.get('reasons', []))}"
    return ", ".join(f"{k} {v}" for k, v in res.items()
                     if isinstance(v, str | int | float) and not isinstance(v, bool)) or "-"


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
    found = list_jobs(catalog, state=state, kind=kind, policy=policy, limit=limit)
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
        table.add_row(str(j.id), j.kind, j.name, j.policy or "-", j.state, _when(j.started),
                      _duration(j), human(j.bytes_read), human(j.bytes_written),
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
    job = show_job(catalog, job_id, with_log=show_log or json_output)
    if json_output:
        print_model(job)
        return
    out.print(f"Job {job.id}: {job.kind} {job.name}", highlight=False)
    for key, value in (("state", job.state), ("policy", job.policy or "-"),
                       ("VMs", ", ".join(job.vms) or "-"), ("repository", job.repo or "-"),
                       ("queued", _when(job.queued)), ("started", _when(job.started)),
                       ("ended", _when(job.ended)), ("took", _duration(job)),
                       ("read", human(job.bytes_read)), ("written", human(job.bytes_written)),
                       ("runner", f"pid {job.pid} on {job.host}" if job.pid else "-")):
        out.print(f"  {key:<11}{value}", highlight=False)
    if job.error:
        out.print(f"  {'error':<11}{job.error}", highlight=False)
    for what, res in job.result.items():
        out.print(f"  {what}: {_outcome(job.kind, res)}", highlight=False)
    if show_log:
        out.print("Log:")
        for line in job.log or []:
            out.print(f"  {_when(line['time'])} {line['level']:<7} {line['text']}",
                      highlight=False)


@app.command("cancel")
def cancel(
    job_id: Annotated[int, typer.Argument(help="The job's id ('stasis jobs' lists them).")],
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Cancel a job: a queued one never starts, a running one is interrupted.

    A running job ends interrupted with nothing committed: its service stops it at
    its next tick, or the command running it on this host gets SIGTERM."""
    done = cancel_job(catalog, job_id)
    if json_output:
        print_model(done)
        return
    what = {"interrupted": "cancelled before it started",
            "cancel requested": "asked to stop: its service interrupts it",
            "terminated": "sent SIGTERM: the command running it stops"}[done.action]
    out.print(f"Job {done.job}: {what}; 'stasis job show {done.job}' shows how it ended.",
              highlight=False)
