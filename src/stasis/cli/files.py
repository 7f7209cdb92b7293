"""``stasis files``: list, find and extract files of a point without restoring its disk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

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
)
from stasis.errors import DiskNotFound
from stasis.recovery.files import DiskFiles, Entry, Volume, extract

app = typer.Typer(help="Files from a point, read straight from the repository (no restore, "
                  "no mount).", no_args_is_help=True)

PointArg = Annotated[str, typer.Argument(help="Point id, unique prefix, or NAME@latest.")]
VmOpt = Annotated[str | None, typer.Option("--vm", help="VM of the point (if it has several).")]
DiskOpt = Annotated[str | None, typer.Option("--disk", help="Disk of the VM (if it has "
                                             "several).")]


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _entry_line(e: Entry, shown: str) -> str:
    size = "" if e.type == "dir" else str(e.size)
    link = f" -> {e.link}" if e.link is not None else ""
    slash = "/" if e.type == "dir" else ""
    return f"{e.mode_text} {size:>12} {_time(e.mtime_ns)}  {shown}{slash}{link}"


def _volume_line(v: Volume) -> str:
    fs = v.fs.type if v.fs else "-"
    label = f" '{v.fs.label}'" if v.fs and v.fs.label else ""
    note = f"  ({v.error})" if v.error and not v.fs else ""
    name = v.name or "(whole disk)"
    return f"{name:<20} {human(v.size):>10}  {fs:<6}{label}  {v.description}{note}"


@app.command("ls")
def ls(
    point: PointArg,
    repo: RepoOpt,
    path: Annotated[str, typer.Argument(help="Directory or file; on a disk of several "
                                        "volumes VOLUME:/PATH (p2:/etc, vg0/root:/).")] = "/",
    vm: VmOpt = None,
    disk: DiskOpt = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List a directory of a disk of a point (its volumes at the top of a disk of several)."""
    r = open_repo(repo, passphrase_file, key_file)
    m = r.resolve(point)
    with r.shared_lock(f"files ls {m.id[:12]}"):
        files = DiskFiles.open(r, m, vm=vm, disk=disk)
        listing = files.ls(path)
    if json_output:
        print_json([x.to_dict() for x in listing])
        return
    for x in listing:
        if isinstance(x, Volume):
            out.print(_volume_line(x), markup=False, highlight=False)
        else:
            out.print(_entry_line(x, x.name if len(listing) > 1 or x.type != "file"
                                  else x.path), markup=False, highlight=False)


@app.command("get")
def get(
    point: PointArg,
    paths: Annotated[list[str], typer.Argument(help="Files or directories (recursively); "
                                               "VOLUME:/PATH on a disk of several volumes.")],
    to: Annotated[Path, typer.Option("--to", help="Existing directory to extract into.")],
    repo: RepoOpt,
    vm: VmOpt = None,
    disk: DiskOpt = None,
    force: Annotated[bool, typer.Option(help="Replace files that exist in --to.")] = False,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Extract files, directories and symlinks of a point into a directory.

    Modes and modification times are kept; symlinks stay symlinks; nothing is
    written outside --to whatever the names in the file system, and nothing there
    is replaced without --force.
    """
    r = open_repo(repo, passphrase_file, key_file)
    m = r.resolve(point)
    with r.shared_lock(f"files get {m.id[:12]}"):
        files = DiskFiles.open(r, m, vm=vm, disk=disk)
        result = extract(files, paths, to, force=force)
    if json_output:
        print_json(result.to_dict())
        return
    for s in result.skipped:
        err.print(f"[yellow]skipped:[/] {escape(s['path'])}: {escape(s['reason'])}",
                  highlight=False)
    out.print(f"Extracted {plural(result.files, 'file')} ({human(result.bytes)}), "
              f"{plural(result.dirs, 'directory').replace('directorys', 'directories')} and "
              f"{plural(result.symlinks, 'symlink')} of point {m.id[:12]} to {result.target} in "
              f"{result.duration_s:.2f} s ({plural(result.loads, 'chunk')} read).",
              markup=False, highlight=False)


@app.command("find")
def find(
    point: PointArg,
    pattern: Annotated[str, typer.Argument(help="Glob on the name (*.conf), or on the whole "
                                           "path when it holds a '/' (/etc/*/*.conf).")],
    repo: RepoOpt,
    vm: VmOpt = None,
    disk: DiskOpt = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Find files of a point by name or path (every disk unless --vm/--disk narrow it)."""
    r = open_repo(repo, passphrase_file, key_file)
    m = r.resolve(point)
    pairs = [(v, d) for v, d in m.disks()
             if (vm is None or v.name == vm) and (disk is None or d.name == disk)]
    if not pairs:
        listing = ", ".join(f"{v.name}/{d.name}" for v, d in m.disks())
        raise DiskNotFound(f"point {m.id[:12]} has no disk matching --vm {vm} --disk {disk} "
                           f"(it has: {listing})")
    found: list[dict[str, Any]] = []
    with r.shared_lock(f"files find {m.id[:12]}"):
        for v, d in pairs:
            files = DiskFiles.of_disk(r, m, v, d)
            for e in files.find(pattern):
                found.append({"vm": v.name, "disk": d.name, **e.to_dict()})
                if not json_output:
                    where = f"{v.name}/{d.name}: " if len(pairs) > 1 else ""
                    out.print(f"{where}{e.path}" + ("/" if e.type == "dir" else ""),
                              markup=False, highlight=False)
    if json_output:
        print_json(found)
