"""``stasis verify``: check that points can be restored (each run a job)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    err,
    human,
    open_repo,
    out,
    plural,
    print_json,
    progress_for,
)
from stasis.cli.jobs import CatalogOpt, cli_job
from stasis.errors import IntegrityError
from stasis.protection.verify import VerifyReport
from stasis.protection.verify import verify as run_verify
from stasis.repository import Manifest

if TYPE_CHECKING:
    from stasis.service.jobs import JobRun


def verify(
    repo: RepoOpt,
    points: Annotated[
        list[str] | None, typer.Argument(help="Points to verify (default: all).")
    ] = None,
    deep: Annotated[bool, typer.Option(help="Read, authenticate and re-hash every chunk.")] = False,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Verify points: quick (every chunk is there) or --deep (every chunk is intact).

    Recorded as a job of kind verify, with each point's outcome: 'stasis status'
    shows it as the last verification of the point's VMs."""
    r = open_repo(repo, passphrase_file, key_file)
    chosen = [r.resolve(p) for p in points] if points else None
    covered = chosen if chosen is not None else r.points()
    vms = list(dict.fromkeys(vm.name for m in covered for vm in m.vms))
    name = ",".join(dict.fromkeys(m.name for m in covered)) if chosen else "all points"
    progress = progress_for(json_output)
    with cli_job(catalog, "verify", name, vms=vms, repo=r.id,
                 params={"deep": deep, "points": [m.id for m in chosen or []]}) as job:
        try:
            report = run_verify(r, chosen, deep=deep, progress=progress)
        finally:
            progress.finish()
        _record(job, covered, report)
        _print(report, deep=deep, json_output=json_output)
        if not report.ok:
            raise IntegrityError(
                f"verify found {len(report.problems)} problem(s); the damaged chunks were "
                "moved to quarantine and the next backup that meets their data stores it "
                "again."
            )


def _record(job: JobRun, covered: list[Manifest], report: VerifyReport) -> None:
    """Each point's outcome in the job's result, keyed by point id."""
    for m in covered:
        problems = [p.describe() for p in report.problems if p.point == m.id]
        job.result[m.id] = {"point": m.id, "point_name": m.name,
                            "vms": [vm.name for vm in m.vms], "ok": not problems,
                            "problems": problems,
                            "error": f"{len(problems)} problem(s)" if problems else None}
    for p in report.problems:  # a problem outside the chosen points (a damaged manifest)
        if p.point not in job.result:
            job.result[p.point] = {"point": p.point, "ok": False, "problems": [p.describe()],
                                   "error": p.problem}
    job.bytes_read = report.bytes_checked
    job.log("info", f"verified ({'deep' if report.deep else 'quick'}) {report.points} "
            f"point(s), {report.chunks} chunk(s), {report.bytes_checked} bytes read; "
            f"{len(report.problems)} problem(s), {len(report.quarantined)} quarantined")
    for q in report.quarantined:
        job.log("warning", f"quarantined: {q}")


def _print(report: VerifyReport, *, deep: bool, json_output: bool) -> None:
    if json_output:
        print_json(report.to_dict())
        return
    kind = "deep" if deep else "quick"
    out.print(f"Verified ({kind}) {plural(report.points, 'point')}, "
              f"{plural(report.chunks, 'chunk')}"
              + (f", {human(report.bytes_checked)} read" if deep else "") + ".")
    for p in report.problems:
        err.print(f"[red]damaged:[/] {p.describe()}")
    for q in report.quarantined:
        err.print(f"quarantined: {q}")
