"""``stasis gc``: delete the chunks and disk indexes no recovery point references."""

from __future__ import annotations

from typing import Annotated

import typer

from stasis.app.gc import gc as run_gc
from stasis.app.models import GcResult, TallyModel
from stasis.app.submit import queue as queue_job
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
from stasis.repository.gc import DEFAULT_WAIT


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}es" if word.endswith("x") else plural(n, word)


def _tally(t: TallyModel, word: str) -> str:
    return f"{_count(t.count, word)} ({human(t.bytes)})"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def print_report(r: GcResult) -> None:
    verb = "Would delete" if r.dry_run else "Deleted"
    out.print(f"Marked {plural(r.points, 'point')}: {_count(r.indexes_referenced, 'index')}, "
              f"{plural(r.pages_referenced, 'index page')} "
              f"and {plural(r.chunks_referenced, 'chunk')} referenced"
              + (f" ({r.points_marked_late} committed while gc ran)"
                 if r.points_marked_late else "") + ".")
    out.print(f"{verb} {_tally(r.indexes, 'unreferenced index')}, "
              f"{_tally(r.pages, 'unreferenced index page')} and "
              f"{_tally(r.chunks, 'unreferenced chunk')}; kept {_tally(r.kept_chunks, 'chunk')}.")
    if r.temporary_files_checked:
        out.print(f"{verb} {_tally(r.temporary_files, 'temporary file')} that killed writers "
                  "left (older than an hour).")
    if r.quarantined.count:
        out.print(f"Left in quarantine: {_tally(r.quarantined, 'chunk')} that failed "
                  "verification (not deleted; 'stasis verify' tells which points they hurt).")
    if r.locked.count:
        out.print(f"Kept {_tally(r.locked, 'unreferenced object')} that the storage still "
                  f"locks (until {r.locked_until}): a gc after that date deletes them.")
    if r.chunks_missing:
        err.print(f"[bold yellow]warning:[/] {plural(r.chunks_missing, 'referenced chunk')} "
                  "missing from the repository: run 'stasis verify'.", highlight=False)
    out.print(f"{'Would reclaim' if r.dry_run else 'Reclaimed'} {human(r.reclaimed_bytes)} in "
              f"{r.duration_s:.1f} s (backups held off {r.locked_s:.1f} s)."
              + (" Nothing was deleted (--dry-run)." if r.dry_run else ""))


def gc(
    repo: RepoOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be deleted; "
                                          "delete nothing.")] = False,
    wait: Annotated[float, typer.Option("--wait", metavar="SECONDS",
                                        help="How long to wait for running backups, restores "
                                        "and gc runs to finish (the sweep needs the "
                                        "repository to itself).")] = DEFAULT_WAIT,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
    queue: QueueOpt = False,
) -> None:
    """Delete chunks, indexes and index pages that no point references; safe while backups
    run."""
    if queue:
        print_queued(queue_job(catalog, "gc", {"repo": repo, "dry_run": dry_run, "wait": wait},
                               by="'stasis gc'"), json_output)
        return
    progress = progress_for(json_output)

    def waiting(holder: str, limit: float) -> None:
        progress.finish()
        err.print(f"gc: waiting up to {_duration(limit)} for {holder} to finish "
                  "(new backups wait only for the sweep)…", highlight=False)

    try:
        report = run_gc(lambda: open_repo(repo, passphrase_file, key_file), catalog=catalog,
                        warn=warn_unrecorded, dry_run=dry_run, wait=wait, progress=progress,
                        on_wait=waiting)
    except KeyboardInterrupt:
        progress.finish()
        err.print("gc stopped: only unreferenced objects were deleted, so every point is "
                  "intact; run gc again to finish.", highlight=False)
        raise
    finally:
        progress.finish()
    if json_output:
        print_model(report)
    else:
        print_report(report)
