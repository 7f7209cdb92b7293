"""``stasis verify``: check that points can be restored (each run a job)."""

from __future__ import annotations

from pathlib import Path
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
    other_repository,
    out,
    plural,
    print_model,
    print_queued,
    progress_for,
    warn_unrecorded,
)
from stasis.cli.remote import remote, show_ended_job, start_job
from stasis.repository import Repository


def verify(
    repo: RepoOpt,
    points: Annotated[
        list[str] | None, typer.Argument(help="Points to verify (default: all).")
    ] = None,
    deep: Annotated[bool, typer.Option(help="Read, authenticate and re-hash every chunk.")] = False,
    repair_from: Annotated[str | None, typer.Option(
        "--repair-from", help="Heal each damaged or missing chunk from this repository (a "
        "copy of this one, or its source): a configured name, a path or a URL.",
        show_default=False)] = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    from_passphrase_file: Annotated[Path | None, typer.Option(
        "--from-passphrase-file", help="The passphrase of the repository to repair from, "
        "from this file (else $STASIS_FROM_PASSPHRASE, else the configured repository's "
        "file, else a prompt).")] = None,
    from_key_file: Annotated[Path | None, typer.Option(
        "--from-key-file", help="Open the repository to repair from with this key file.")
    ] = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
    queue: QueueOpt = False,
) -> None:
    """Verify points: quick (every chunk is there) or --deep (every chunk is intact).

    Recorded as a job of kind verify, with each point's outcome: 'stasis status'
    shows it as the last verification of the point's VMs. With --repair-from, each
    chunk found damaged or missing is replaced by the other repository's, opened and
    authenticated with this repository's key once written."""
    server = remote()
    if server is not None:  # --repair-from names one of the server's repositories
        job = start_job(server, "/verifications", {"points": points or None, "deep": deep,
                                                   "repair_from": repair_from},
                        wait=not queue, json_output=json_output, repository=repo or None)
        if job is not None:
            show_ended_job(job, json_output)
        return
    if queue:
        print_queued(queue_job(catalog, "verify", {"repo": repo, "points": points or None,
                                                   "deep": deep, "repair_from": repair_from},
                               by="'stasis verify'"), json_output)
        return
    open_other = None
    if repair_from is not None:
        _location, opener = other_repository(
            repair_from, from_passphrase_file, from_key_file,
            env_var="STASIS_FROM_PASSPHRASE", what="repository to repair from")

        def open_other(_name: str) -> Repository:
            return opener()
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
                      progress=progress, on_report=show, repair_from=repair_from,
                      open_other=open_other)
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
    if report.immutable:
        out.print("Object Lock probe: the storage enforces the repository's locks.")
    for warning in report.warnings:  # 56: the storage no longer enforces the locks
        err.print(f"[bold yellow]warning {warning.code}:[/] {warning.full_text}",
                  highlight=False)
    r = report.repair
    if r is not None:
        out.print(f"Repaired from {r.source_url} ({r.source[:12]}): "
                  f"{plural(len(r.healed), 'chunk')} healed, "
                  f"{plural(len(r.unhealed), 'chunk')} not healed.", highlight=False)
        for h in r.chunks:
            if h.healed:
                out.print(f"  healed: chunk {h.chunk[:16]} ({human(h.bytes_written)})",
                          highlight=False)
            else:
                err.print(f"[red]not healed:[/] chunk {h.chunk[:16]}: {h.reason}",
                          highlight=False)
        for q in r.quarantined_there:
            err.print(f"quarantined in {r.source_url}: {q}", highlight=False)

