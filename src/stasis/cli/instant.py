"""``stasis export``, ``stasis instant …``, ``stasis attach`` and ``stasis detach``."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from stasis.app import instant as ops
from stasis.cli.common import (
    ConnectOpt,
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    PointArg,
    RepoOpt,
    VmOpt,
    human,
    open_repo_for_export,
    out,
    print_model,
)
from stasis.hypervisor import libvirt_api as lv


def export(
    point: PointArg,
    repo: RepoOpt,
    vm: VmOpt = None,
    disk: Annotated[str | None, typer.Option(help="Disk (if the VM has several).")] = None,
    socket: Annotated[Path | None, typer.Option(help="Serve on this unix socket.")] = None,
    port: Annotated[int | None, typer.Option(help="Serve on this TCP port of 127.0.0.1.")] \
        = None,
    writable: Annotated[bool, typer.Option(help="Accept writes, into a local qcow2 overlay; "
                                           "the point never changes.")] = False,
    overlay: Annotated[Path | None, typer.Option(help="Path of the overlay (default: a "
                                                 "temporary file).")] = None,
    keep_overlay: Annotated[bool, typer.Option(help="Keep the overlay at the end.")] = False,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Serve a disk of a point over NBD on localhost until Ctrl-C or SIGTERM.

    Read-only unless --writable. Unstored (all-zero) ranges are holes in block status.
    At the end its sockets, and the overlay unless --keep-overlay, are removed.
    """
    with ops.export(lambda: open_repo_for_export(repo, passphrase_file, key_file), point,
                    vm=vm, disk=disk, socket=socket, port=port, writable=writable,
                    overlay=overlay, keep_overlay=keep_overlay) as info:
        if json_output:
            print_model(info)
        else:
            mode = "read-write (writes go to an overlay)" if writable else "read-only"
            out.print(f"Serving {info.vm}/{info.disk} of point {info.point[:12]} "
                      f"({human(info.virtual_size)}, {mode}) at {info.uri}")
            if info.overlay:
                out.print(f"The overlay {info.overlay} is kept at the end.")
            out.print("Ctrl-C stops it.")
        sys.stdout.flush()
        _wait_for_signal()


def _wait_for_signal() -> None:
    # main.py turns SIGINT and SIGTERM into KeyboardInterrupt: for an export that is the
    # normal end, so it unwinds through the export's cleanup and exits 0.
    stop = threading.Event()
    with contextlib.suppress(KeyboardInterrupt):
        while not stop.wait(3600):
            pass


# --------------------------------------------------------------- stasis instant


class _PointFirst(TyperGroup):
    """``stasis instant POINT …`` starts one; ``list``, ``finalize``, ``discard`` are
    subcommands."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_PointFirst, no_args_is_help=True,
                  help="Instant recovery: run a VM straight from a point, then finalize "
                       "(copy it local) or discard it. 'stasis instant POINT' starts one.")


@app.command("start", hidden=True)
def start(
    point: PointArg,
    repo: RepoOpt,
    vm: VmOpt = None,
    name: Annotated[str | None, typer.Option(help="Name of the new VM (default: "
                                             "NAME-instant).")] = None,
    network: Annotated[str | None, typer.Option(help="Connect every interface to this "
                                                "libvirt network.")] = None,
    storage: Annotated[Path | None, typer.Option(help="Directory for the overlays and, at "
                                                 "finalize, the disks (default: "
                                                 "/var/lib/libvirt/images).")] = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Define and start a VM whose disks are overlays on an export of the point."""
    result = ops.start(connect, lambda: open_repo_for_export(repo, passphrase_file, key_file),
                       point, vm=vm, name=name, network=network, storage=storage)
    if json_output:
        print_model(result)
        return
    out.print(f"Started {result.name} from VM {result.vm} of point {result.point[:12]} in "
              f"{result.duration_s:.1f} s; its disks are served by export pid "
              f"{result.export_pid}.")
    out.print(f"'stasis instant finalize {result.name}' copies it to local storage; "
              f"'stasis instant discard {result.name}' removes it.")


@app.command("list")
def list_cmd(
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """Instant VMs and attached disks running from a repository."""
    rows = ops.running(connect)
    if json_output:
        print_model(rows)
        return
    if not rows:
        out.print("Nothing runs from a repository.")
        return
    table = Table(box=None)
    for col in ("kind", "name", "from", "point", "state", "export pid", "socket"):
        table.add_column(col)
    for row in rows:
        name = row.name + (f" ({row.target})" if row.target else "")
        source = row.vm + (f"/{row.disk}" if row.disk else "")
        table.add_row(row.kind, name, source, row.point[:12], row.state,
                      str(row.export_pid or "-"), row.socket or "-")
    out.print(table)


@app.command("finalize")
def finalize(
    name: Annotated[str, typer.Argument(help="The instant VM.")],
    repo: RepoOpt,
    pool: Annotated[str | None, typer.Option(help="Copy the disks to new volumes of this "
                                             "libvirt storage pool (default: files in the "
                                             "instant VM's storage directory).")] = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Copy an instant VM's disks to local storage while it runs; then stop its export."""
    result = ops.finalize(connect, lambda: open_repo_for_export(repo, passphrase_file,
                                                                key_file), name, pool=pool)
    if json_output:
        print_model(result)
        return
    out.print(f"{name} runs on local disks now ({result.duration_s:.1f} s); its export was "
              "stopped.")
    for disk, path in result.disks.items():
        vol = f"volume {result.volumes[disk]} of pool {result.pool}, " \
            if disk in result.volumes else ""
        out.print(f"  {disk}: {vol}{path}")


@app.command("discard")
def discard(
    name: Annotated[str, typer.Argument(help="The instant VM.")],
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """Stop and undefine an instant VM, stop its export, remove its overlays."""
    result = ops.discard(connect, name)
    if json_output:
        print_model(result)
        return
    out.print(f"Discarded {name}: " + (", ".join(result.removed) if result.removed
                                       else "nothing was left"))


# ------------------------------------------------------------ attach / detach


def attach(
    point: PointArg,
    repo: RepoOpt,
    vm: Annotated[str, typer.Option(help="The VM of the point the disk belongs to.")],
    disk: Annotated[str, typer.Option(help="The disk of that VM.")],
    to: Annotated[str, typer.Option(help="The running VM to attach it to.")],
    target: Annotated[str | None, typer.Option(help="Device name in the guest (default: the "
                                               "first free vdX).")] = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Attach a disk of a point read-only to a running VM, through an export."""
    result = ops.attach(connect, lambda: open_repo_for_export(repo, passphrase_file, key_file),
                        point, vm=vm, disk=disk, to=to, target=target)
    if json_output:
        print_model(result)
        return
    out.print(f"Attached {result.source_vm}/{result.disk} of point {result.point[:12]} to "
              f"{result.vm} as {result.target} (read-only). 'stasis detach {result.vm} "
              f"--target {result.target}' removes it.")


def detach(
    vm: Annotated[str, typer.Argument(help="The VM the disk is attached to.")],
    target: Annotated[str | None, typer.Option(help="Its device name (if several are "
                                               "attached).")] = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """Detach a disk attached from a point and stop its export."""
    result = ops.detach(connect, vm, target)
    if json_output:
        print_model(result)
        return
    out.print(f"Detached {result.target} from {vm}; its export was stopped.")


def register(root: typer.Typer) -> None:
    """Add these commands to the ``stasis`` command tree."""
    root.command("export")(export)
    root.add_typer(app, name="instant")
    root.command("attach")(attach)
    root.command("detach")(detach)
