"""``stasis verify``: check that points can be restored."""

from __future__ import annotations

from typing import Annotated

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
from stasis.errors import IntegrityError
from stasis.protection.verify import verify as run_verify


def verify(
    repo: RepoOpt,
    points: Annotated[
        list[str] | None, typer.Argument(help="Points to verify (default: all).")
    ] = None,
    deep: Annotated[bool, typer.Option(help="Read, authenticate and re-hash every chunk.")] = False,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Verify points: quick (every chunk is there) or --deep (every chunk is intact)."""
    r = open_repo(repo, passphrase_file, key_file)
    chosen = [r.resolve(p) for p in points] if points else None
    progress = progress_for(json_output)
    try:
        report = run_verify(r, chosen, deep=deep, progress=progress)
    finally:
        progress.finish()
    if json_output:
        print_json(report.to_dict())
    else:
        kind = "deep" if deep else "quick"
        out.print(f"Verified ({kind}) {plural(report.points, 'point')}, "
                  f"{plural(report.chunks, 'chunk')}"
                  + (f", {human(report.bytes_checked)} read" if deep else "") + ".")
        for p in report.problems:
            err.print(f"[red]damaged:[/] {p.describe()}")
        for q in report.quarantined:
            err.print(f"quarantined: {q}")
    if not report.ok:
        raise IntegrityError(
            f"verify found {len(report.problems)} problem(s); the damaged chunks were moved to "
            "quarantine and the next backup that meets their data stores it again."
        )
