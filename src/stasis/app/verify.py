"""Verification of points, quick (every chunk is there) or deep (every chunk intact),
recorded as a job of kind verify: ``stasis status`` shows it as the last verification
of the points' VMs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from stasis.app.jobs import Warn, foreground_job
from stasis.app.models import VerifyProblem, VerifyResult
from stasis.errors import IntegrityError
from stasis.progress import Progress
from stasis.protection.verify import VerifyReport
from stasis.protection.verify import verify as run_verify
from stasis.repository import Manifest, Repository

if TYPE_CHECKING:
    from stasis.service.jobs import JobRun


def verify_points(repo: Repository, points: list[str] | None = None, *, deep: bool = False,
                  catalog: str | None, warn: Warn, progress: Progress | None = None,
                  on_report: Callable[[VerifyResult], None] | None = None) -> VerifyResult:
    """Verify ``points`` (ids, prefixes or NAME@latest; None: every point).

    Raises IntegrityError when anything is damaged or missing, after ``on_report``
    heard the whole report (an interface shows it before the error).
    """
    chosen = [repo.resolve(p) for p in points] if points else None
    covered = chosen if chosen is not None else repo.points()
    vms = list(dict.fromkeys(vm.name for m in covered for vm in m.vms))
    name = ",".join(dict.fromkeys(m.name for m in covered)) if chosen else "all points"
    with foreground_job(catalog, "verify", name, warn=warn, vms=vms, repo=repo.id,
                        params={"deep": deep, "points": [m.id for m in chosen or []]}) as job:
        report = run_verify(repo, chosen, deep=deep, progress=progress)
        _record(job, covered, report)
        result = VerifyResult(
            ok=report.ok, deep=report.deep, points=report.points, chunks=report.chunks,
            bytes_checked=report.bytes_checked, quarantined=list(report.quarantined),
            problems=[VerifyProblem(**p.__dict__, description=p.describe())
                      for p in report.problems])
        if on_report is not None:
            on_report(result)
        if not report.ok:
            raise IntegrityError(
                f"verify found {len(report.problems)} problem(s); the damaged chunks were "
                "moved to quarantine and the next backup that meets their data stores it "
                "again."
            )
    return result


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
