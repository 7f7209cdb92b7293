"""``stasis verify``: check that points can be restored (each run a job)."""

from __future__ import annotations

from typing import Annotated

import typer

from stasis.app.models import VerifyResult
from stasis.app.submit import queue as queue_job
from stasis.app.verify import verify_points
from stasis.cli.common import (
    CatalogOpt,
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    QueueOpt,
    RepoOpt,
    err,
    human,
    open_repo,
    out,
    plural,
    print_model,
    print_queued,
    progress_for,
    warn_unrecorded,
)


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
    queue: QueueOpt = False,
) -> None:
    """Verify points: quick (every chunk is there) or --deep (every chunk is intact).

    Recorded as a job of kind verify, with each point's outcome: 'stasis status'
    shows it as the last verification of the point's VMs."""
    if queue:
        print_queued(queue_job(catalog, "verify", {"repo": repo, "points": points or None,
                                                   "deep": deep}, by="'stasis verify'"),
                     json_output)
        return
    r = open_repo(repo, passphrase_file, key_file)
    progress = progress_for(json_output)

    def show(report: VerifyResult) -> None:
        progress.finish()
        if json_output:
            print_model(report)
        else:
            _print(report)

    try:
        verify_points(r, points, deep=deep, catalog=catalog, warn=warn_unrecorded,
                      progress=progress, on_report=show)
    finally:
        progress.finish()


def _print(report: VerifyResult) -> None:
    kind = "deep" if report.deep else "quick"
    out.print(f"Verified ({kind}) {plural(report.points, 'point')}, "
              f"{plural(report.chunks, 'chunk')}"
              + (f", {human(report.bytes_checked)} read" if report.deep else "") + ".")
    for p in report.problems:
        err.print(f"[red]damaged:[/] {p.description}")
    for q in report.quarantined:
        err.print(f"quarantined: {q}")

