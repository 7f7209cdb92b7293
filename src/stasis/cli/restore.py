"""``stasis restore``: bring back disks (and, next, whole VMs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    human,
    open_repo,
    out,
    print_json,
    progress_for,
)
from stasis.recovery.restore import restore_disk
from stasis.settings import run_dir

app = typer.Typer(help="Restore from recovery points.", no_args_is_help=True)


@app.command("disk")
def disk(
    point: Annotated[str, typer.Argument(help="Point id, unique prefix, or NAME@latest.")],
    to: Annotated[Path, typer.Option("--to", help="Target image file or block device.")],
    repo: RepoOpt,
    vm: Annotated[str | None, typer.Option(help="VM of the point (if it has several).")] = None,
    disk_name: Annotated[str | None, typer.Option("--disk", help="Disk of the VM (if it has "
                                                  "several).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="qcow2 or raw (default: the "
                                            "source's format).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing target.")] = False,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Restore one disk of a point to an image file or a block device."""
    r = open_repo(repo, passphrase_file, key_file)
    m = r.resolve(point)
    progress = progress_for(json_output)
    try:
        result = restore_disk(r, m, target=to, vm=vm, disk=disk_name, fmt=fmt, force=force,
                              progress=progress, run_dir=run_dir())
    finally:
        progress.finish()
    if json_output:
        print_json(result.to_dict())
    else:
        out.print(f"Restored {result.vm}/{result.disk} of point {m.id[:12]} to {result.target} "
                  f"({result.format}, {human(result.virtual_size)}, wrote "
                  f"{human(result.bytes_written)}) in {result.duration_s:.1f} s.")
