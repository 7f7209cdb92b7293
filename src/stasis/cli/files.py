"""``stasis files``: list, find and extract files of a point without restoring its disk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer
from pydantic import TypeAdapter
from rich.markup import escape

from stasis.app import files as ops
from stasis.app.models import FileEntry, VolumeRow
from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    PointArg,
    RepoOpt,
    VmOpt,
    err,
    human,
    open_repo,
    out,
    plural,
    print_model,
)
from stasis.cli.remote import remote

app = typer.Typer(help="Files from a point, read straight from the repository (no restore, "
                  "no mount).", no_args_is_help=True)

_ROW: TypeAdapter[FileEntry | VolumeRow] = TypeAdapter(FileEntry | VolumeRow)

DiskOpt = Annotated[str | None, typer.Option("--disk", help="Disk of the VM (if it has "
                                             "several).")]


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _entry_line(e: FileEntry, shown: str) -> str:
    size = "" if e.type == "dir" else str(e.size)
    link = f" -> {e.link}" if e.link is not None else ""
    slash = "/" if e.type == "dir" else ""
    return f"{e.mode_text} {size:>12} {_time(e.mtime_ns)}  {shown}{slash}{link}"


def _volume_line(v: VolumeRow) -> str:
    fs = v.filesystem or "-"
    label = f" '{v.label}'" if v.filesystem and v.label else ""
    note = f"  ({v.error})" if v.error and not v.filesystem else ""
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
    server = remote()
    listing = ops.list_files(open_repo(repo, passphrase_file, key_file), point, path, vm=vm,
                             disk=disk) if server is None else server.items(
        f"/points/{quote(point, safe='')}/files", _ROW.validate_python, path=path, vm=vm,
        disk=disk, repo=repo or None, sort="name")
    if json_output:
        print_model(listing)
        return
    for x in listing:
        if isinstance(x, VolumeRow):
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

    With --server the files arrive as a tar.zst archive and are written into a
    directory .stasis-get-*.partial inside --to, moved into place only once all of it
    has arrived and checked (a download cut short moves nothing); an archive naming
    anything outside --to, a hard link or a device is refused whole (exit code 69).
    The chunks are read by the server: the report's loads is 0 and its skipped empty.
    """
    server = remote()
    if server is None:
        result = ops.extract_files(open_repo(repo, passphrase_file, key_file), point, paths,
                                   to, vm=vm, disk=disk, force=force)
    else:
        point_id = server.get(f"/points/{quote(point, safe='')}", lambda d: str(d["id"]),
                              repository=repo or None)
        with server.stream(f"/points/{point_id}/files/archive", path=paths,
                           format="tar.zst", vm=vm, disk=disk, repo=repo or None) as pieces:
            result = ops.unpack_archive(pieces, point_id, to, force=force,
                                        source=f"the Stasis server at {server.server}")
    if json_output:
        print_model(result)
        return
    read = f"{plural(result.loads, 'chunk')} read" if server is None else \
        f"streamed from {server.server}"
    for s in result.skipped:
        err.print(f"[yellow]skipped:[/] {escape(s['path'])}: {escape(s['reason'])}",
                  highlight=False)
    out.print(f"Extracted {plural(result.files, 'file')} ({human(result.bytes)}), "
              f"{plural(result.dirs, 'directory').replace('directorys', 'directories')} and "
              f"{plural(result.symlinks, 'symlink')} of point {result.point[:12]} to "
              f"{result.target} in "
              f"{result.duration_s:.2f} s ({read}).",
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
    def show(e: FileEntry, several: bool) -> None:
        if not json_output:
            where = f"{e.vm}/{e.disk}: " if several else ""
            out.print(f"{where}{e.path}" + ("/" if e.type == "dir" else ""),
                      markup=False, highlight=False)

    server = remote()
    if server is not None:
        found = server.items(f"/points/{quote(point, safe='')}/files/find",
                             FileEntry.model_validate, pattern=pattern, vm=vm, disk=disk,
                             repo=repo or None)
        several = len({(e.vm, e.disk) for e in found}) > 1  # the disks it found on
        for e in found:
            show(e, several)
    else:
        found = ops.find_files(open_repo(repo, passphrase_file, key_file), point, pattern,
                               vm=vm, disk=disk, on_found=show)
    if json_output:
        print_model(found)
