"""``stasis list`` and ``stasis show``: the recovery points of a repository."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer
from rich.table import Table

from stasis.app import points as ops
from stasis.app.models import PointDetail, PointSummary
from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    PointArg,
    RepoOpt,
    err,
    human,
    open_repo,
    out,
    print_model,
)
from stasis.cli.remote import remote
from stasis.repository import ObjectDamaged


def _warn_damaged(pid: str, e: ObjectDamaged) -> None:
    err.print(f"[yellow]warning:[/] manifest {pid[:12]} is damaged ({e.reason}); "
              "run 'stasis verify' for details")


def list_points(
    repo: RepoOpt,
    name: Annotated[str | None, typer.Option(help="Only points of this name.")] = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List recovery points, oldest first."""
    server = remote()
    points = ops.list_points(open_repo(repo, passphrase_file, key_file), name=name,
                             on_damaged=_warn_damaged) if server is None else server.items(
        "/points", PointSummary.model_validate, repository=repo or None, name=name)
    if json_output:
        print_model(points)
        return
    table = Table(box=None)
    for col in ("id", "name", "time", "size", "read", "disks", "tags"):
        table.add_column(col)
    for p in points:
        table.add_row(p.id[:12], p.name, p.time[:19].replace("T", " "), human(p.size),
                      human(p.bytes_read), str(p.disks),
                      " ".join(f"{k}={v}" for k, v in p.tags.items()))
    out.print(table)


def show(
    point: PointArg,
    repo: RepoOpt,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show one recovery point in full."""
    server = remote()
    m = ops.show_point(open_repo(repo, passphrase_file, key_file), point) if server is None \
        else server.get(f"/points/{quote(point, safe='')}", PointDetail.model_validate,
                        repository=repo or None)
    if json_output:
        print_model(m)
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
