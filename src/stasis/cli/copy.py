"""``stasis copy``: copy points to a second repository (each run a job)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stasis.app.copy import copy_points
from stasis.app.models import CopyResult
from stasis.app.submit import queue as queue_job
from stasis.cli.common import (
    CatalogOpt,
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    QueueOpt,
    RepoOpt,
    human,
    open_repo,
    other_repository,
    out,
    parse_size,
    plural,
    print_model,
    print_queued,
    progress_for,
    warn_unrecorded,
)
from stasis.errors import UsageError
from stasis.repository import Repository


def copy(
    to: Annotated[str, typer.Option(
        "--to", help="The destination: the name of a repository of the config file, or "
                     "a path or URL.", show_default=False)],
    repo: RepoOpt,
    points: Annotated[list[str] | None, typer.Argument(
        help="Points to copy: ids, unique prefixes or NAME@latest.")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Copy every point of this name (a chain).")] = None,
    vm: Annotated[str | None, typer.Option("--vm", help="Copy every point holding this VM.")
                  ] = None,
    all_points: Annotated[bool, typer.Option("--all", help="Copy every point.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would be sent; send nothing.")] = False,
    limit_rate: Annotated[str | None, typer.Option(
        "--limit-rate", help="At most this many bytes a second sent (K, M, G suffixes: "
                             "10M).")] = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    to_passphrase_file: Annotated[Path | None, typer.Option(
        "--to-passphrase-file", help="The destination's passphrase, from this file (else "
        "$STASIS_TO_PASSPHRASE, else the configured repository's file, else a prompt).")
    ] = None,
    to_key_file: Annotated[Path | None, typer.Option(
        "--to-key-file", help="Open the destination with this key file.")] = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
    queue: QueueOpt = False,
) -> None:
    """Copy points to another repository, sending only what it lacks.

    Each point is committed at the destination once everything it needs is there, and
    keeps its id. Interrupted, run it again: it goes on where it stopped. Deletions
    and holds are never copied. A destination created with 'stasis repo init
    --copy-key-from' gets the objects as they are; one with its own key gets them
    re-encrypted."""
    rate = parse_size(limit_rate) if limit_rate is not None else None
    if rate is not None and rate <= 0:
        raise UsageError("--limit-rate takes a positive rate (for example 10M); nothing "
                         "was copied")
    if queue:
        print_queued(queue_job(catalog, "copy", {
            "repo": repo, "to": to, "points": points or None, "name": name, "vm": vm,
            "all": all_points, "dry_run": dry_run, "limit_rate": rate},
            by="'stasis copy'"), json_output)
        return
    _location, open_destination = other_repository(
        to, to_passphrase_file, to_key_file, env_var="STASIS_TO_PASSPHRASE",
        what="destination")
    opened: list[Repository] = []

    def destination(_to: str) -> Repository:
        if not opened:
            opened.append(open_destination())
        return opened[0]

    progress = progress_for(json_output)
    try:
        result = copy_points(lambda: open_repo(repo, passphrase_file, key_file), destination,
                             to=to, points=points, name=name, vm=vm, all_points=all_points,
                             dry_run=dry_run, limit_rate=rate, catalog=catalog,
                             warn=warn_unrecorded, progress=progress)
    finally:
        progress.finish()
    if json_output:
        print_model(result)
    else:
        _print(result)


def _print(r: CopyResult) -> None:
    how = "as they are (shared key)" if r.shared_key else "re-encrypted (own key)"
    verb = "Would copy" if r.dry_run else "Copied"
    out.print(f"{verb} {plural(len(r.copied), 'point')} to {r.destination_url} "
              f"({r.destination[:12]}), objects {how}; "
              f"{plural(len(r.skipped), 'point')} there already.", highlight=False)
    sent = "would be sent" if r.dry_run else "sent"
    out.print(f"{plural(r.objects_sent, 'object')} {sent} ({human(r.bytes_sent)}), "
              f"{plural(r.objects_present, 'object')} present and not sent; "
              f"{plural(r.chunks_read, 'chunk')} read at the source "
              f"({human(r.bytes_read)}) in {r.duration_s:.1f} s.", highlight=False)
    if r.drills_sent or r.drills_present:
        out.print(f"Drill proofs: {r.drills_sent} {sent}, {r.drills_present} there already.",
                  highlight=False)
    for p in r.points:
        action = "there already" if p.action == "present" else p.action
        out.print(f"  {p.id[:12]}  {p.name}  {p.time}  {action}", highlight=False)
