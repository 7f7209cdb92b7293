"""``stasis clone SOURCE``, ``stasis clone list`` and ``stasis clone delete``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from stasis.app import clone as ops
from stasis.cli.common import (
    ConnectOpt,
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    VmOpt,
    credentials,
    err,
    human,
    open_repo_for_export,
    out,
    print_model,
    progress_for,
)
from stasis.hypervisor import libvirt_api as lv


class _SourceFirst(TyperGroup):
    """``stasis clone SOURCE …`` makes one; ``list`` and ``delete`` are subcommands (a
    source named like them is given as ``stasis clone create SOURCE``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_SourceFirst, no_args_is_help=True,
                  help="Clones: a new VM with its own identity from a point or a VM's "
                       "present state; 'stasis clone SOURCE --name NEW' makes one.")


@app.command("create", hidden=True)
def create(
    source: Annotated[str, typer.Argument(help=(
        "A point (id, unique prefix, NAME@latest) or a VM name. It is a point when it "
        "resolves as one, a VM when a VM of that name exists; when it is both, give "
        "--from-vm or more of the point's id."))],
    name: Annotated[str, typer.Option(help="Name of the new VM.")],
    repo: RepoOpt,
    vm: VmOpt = None,
    linked: Annotated[bool, typer.Option(help="Disks are qcow2 overlays on an export of the "
                                         "point: no data is copied. The point is held "
                                         "while the clone lives.")] = False,
    storage: Annotated[Path | None, typer.Option(help="Directory for the disks (default: "
                                                 "/var/lib/libvirt/images); made when "
                                                 "missing.")] = None,
    pool: Annotated[str | None, typer.Option(help="libvirt storage pool for a full clone's "
                                             "disks: each becomes a volume made through "
                                             "the pool (instead of --storage).")] = None,
    network: Annotated[str | None, typer.Option(help="Connect every interface to this "
                                                "libvirt network.")] = None,
    start: Annotated[bool, typer.Option(help="Start the clone once defined.")] = False,
    from_vm: Annotated[bool, typer.Option(help="SOURCE is a VM: clone its present state "
                                          "(a point of it is taken first).")] = False,
    connect: ConnectOpt = lv.DEFAULT_URI,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Make a new VM from a point or from a VM's present state (taken as a point first).

    Without --linked the disks are a full sparse copy of the point. The clone gets a
    new name, UUID and MAC addresses.
    """
    if pool is not None and storage is not None:
        raise typer.BadParameter("--pool and --storage are two places for the disks: give "
                                 "one", param_hint="--pool")
    progress = progress_for(json_output)
    try:
        result = ops.clone(connect, lambda: open_repo_for_export(repo, passphrase_file,
                                                                 key_file),
                           source, name=name, vm=vm, linked=linked, storage=storage,
                           network=network, start=start, from_vm=from_vm, progress=progress,
                           pool=pool)
    finally:
        progress.finish()
    if json_output:
        print_model(result)
        return
    if result.point_taken:
        out.print(f"Took point {result.point[:12]} of VM {result.vm} (its present state) "
                  "to clone it.")
    kind = "linked clone" if result.linked else "full clone"
    out.print(f"Made {result.name}, a {kind} of VM {result.vm} of point {result.point[:12]}"
              + (", and started it" if result.started else "")
              + f", in {result.duration_s:.1f} s; {human(result.bytes_written)} written.")
    out.print(f"  uuid {result.uuid}; MAC {', '.join(result.macs) or '-'}")
    for disk, path in result.disks.items():
        vol = f"volume {result.volumes[disk]} of pool {result.pool}, " \
            if disk in result.volumes else ""
        out.print(f"  {disk}: {vol}{path}")
    if result.linked:
        out.print(f"Its disks are served by export pid {result.export_pid}; point "
                  f"{result.point[:12]} is held while it lives. 'stasis clone delete "
                  f"{result.name}' removes it.")


@app.command("list")
def list_cmd(
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """Linked clones, with their point and export."""
    rows = ops.list_clones(connect)
    if json_output:
        print_model(rows)
        return
    if not rows:
        out.print("No linked clones.")
        return
    table = Table(box=None)
    for col in ("name", "from", "point", "state", "vm", "written", "export pid"):
        table.add_column(col)
    for row in rows:
        table.add_row(row.name, row.vm, row.point[:12], row.state, row.vm_state,
                      human(row.bytes_written), str(row.export_pid or "-"))
    out.print(table)


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="The linked clone.")],
    connect: ConnectOpt = lv.DEFAULT_URI,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Stop and undefine a linked clone, stop its export, remove its overlays; its
    point's hold is released with the point's last clone.

    A full clone is an ordinary VM: virsh undefine removes it.
    """
    result = ops.delete_clone(connect, name, credentials(passphrase_file, key_file))
    if json_output:
        print_model(result)
    else:
        out.print(f"Deleted {name}: " + (", ".join(result.removed) or "nothing was left"))
        out.print(f"Point {result.point[:12]} is "
                  + (result.hold if result.hold else "no longer held") + ".")
    if result.warning:
        err.print(f"[yellow]warning:[/] {result.warning}", highlight=False)


def register(root: typer.Typer) -> None:
    """Add ``stasis clone`` to the ``stasis`` command tree."""
    root.add_typer(app, name="clone")
