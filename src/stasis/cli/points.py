"""``stasis list`` and ``stasis show``: the recovery points of a repository."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    err,
    human,
    open_repo,
    out,
    print_json,
)
from stasis.repository import Manifest


def point_summary(m: Manifest) -> dict[str, Any]:
    return {
        "id": m.id,
        "name": m.name,
        "time": m.time,
        "kind": m.kind,
        "size": m.virtual_size,
        "bytes_read": m.bytes_read,
        "parent": m.parent,
        "tags": m.tags,
        "vms": [vm.name for vm in m.vms],
        "disks": len(m.disks()),
    }


def point_detail(m: Manifest) -> dict[str, Any]:
    d = m.to_dict()
    d["size"] = m.virtual_size
    for vm in d["vms"]:
        for disk in vm["disks"]:
            disk["target"] = disk["name"]
    return d


def list_points(
    repo: RepoOpt,
    name: Annotated[str | None, typer.Option(help="Only points of this name.")] = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List recovery points, oldest first."""
    r = open_repo(repo, passphrase_file, key_file)
    points = r.points(on_damaged=lambda pid, e: err.print(
        f"[yellow]warning:[/] manifest {pid[:12]} is damaged ({e.reason}); "
        "run 'stasis verify' for details"))
    if name is not None:
        points = [p for p in points if p.name == name]
    if json_output:
        print_json([point_summary(p) for p in points])
        return
    table = Table(box=None)
    for col in ("id", "name", "time", "size", "read", "disks", "tags"):
        table.add_column(col)
    for p in points:
        table.add_row(p.id[:12], p.name, p.time[:19].replace("T", " "), human(p.virtual_size),
                      human(p.bytes_read), str(len(p.disks())),
                      " ".join(f"{k}={v}" for k, v in p.tags.items()))
    out.print(table)


def show(
    point: Annotated[str, typer.Argument(help="Point id, unique prefix, or NAME@latest.")],
    repo: RepoOpt,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show one recovery point in full."""
    m = open_repo(repo, passphrase_file, key_file).resolve(point)
    if json_output:
        print_json(point_detail(m))
        return
    out.print(f"Point {m.id}")
    out.print(f"  name     {m.name}")
    out.print(f"  time     {m.time}")
    out.print(f"  kind     {m.kind}")
    out.print(f"  parent   {m.parent or '-'}")
    out.print(f"  host     {m.host}")
    if m.tags:
        out.print("  tags     " + " ".join(f"{k}={v}" for k, v in m.tags.items()))
    for vm in m.vms:
        out.print(f"  {vm.kind} {vm.name}")
        for d in vm.disks:
            out.print(f"    {d.name}: {d.format}, {human(d.virtual_size)}, {d.mode}, "
                      f"read {human(d.bytes_read)}, new {human(d.stored_new)} stored"
                      + (f" ({d.reason})" if d.reason else ""))
