"""``stasis catalog``: the catalog's index of points, and rebuilding it.

``stasis catalog rebuild`` makes the points index again from the repository alone
(at a disaster-recovery site the repository is all there is); ``stasis catalog
points`` lists the index without opening the repository.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from stasis.app.index import indexed_points, rebuild_index
from stasis.cli.common import (
    CatalogOpt,
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    err,
    human,
    open_repo,
    out,
    print_model,
)

app = typer.Typer(help="The catalog: the index of points, rebuilt from a repository.",
                  no_args_is_help=True)


@app.command("rebuild")
def rebuild(
    repo: RepoOpt,
    catalog: CatalogOpt = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Recreate the index of the repository's points from its manifests alone."""
    def on_damaged(pid: str, e: Exception) -> None:
        err.print(f"[yellow]warning:[/] manifest {pid[:12]} is damaged ({e}); it is not "
                  "indexed. 'stasis verify' tells more.", highlight=False)

    result = rebuild_index(lambda: open_repo(repo, passphrase_file, key_file), catalog=catalog,
                           on_damaged=on_damaged)
    for key in result.damaged_drills:
        err.print(f"[yellow]warning:[/] the drill proof {key} is damaged; it is not "
                  "recorded.", highlight=False)
    if json_output:
        print_model(result)
        return
    out.print(f"Indexed {result.points} points of the repository {result.url} in the catalog "
              f"{result.catalog}" + (f", and {result.drills} drill(s) newer than it knew"
                                     if result.drills else "") + ".", highlight=False)


@app.command("points")
def points(
    repo: Annotated[str | None, typer.Option(
        "--repo", "-r", envvar="STASIS_REPO", show_default=False,
        help="Only the points of this repository (its config is read; no key needed).")] = None,
    name: Annotated[str | None, typer.Option(help="Only points of this name.")] = None,
    vm: Annotated[str | None, typer.Option(help="Only points holding this VM.")] = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List the indexed points, oldest first (as 'stasis list', from the catalog)."""
    found = indexed_points(catalog=catalog, location=repo, name=name, vm=vm)
    if json_output:
        print_model(found)
        return
    table = Table(box=None)
    for col in ("id", "name", "time", "kind", "size", "read", "VMs"):
        table.add_column(col)
    for p in found:
        table.add_row(p.id[:12], p.name, p.time[:19].replace("T", " "), p.kind,
                      human(p.size), human(p.bytes_read), ", ".join(p.vms))
    out.print(table)
