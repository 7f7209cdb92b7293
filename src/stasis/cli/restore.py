"""``stasis restore``: bring back a disk, a whole VM, or every VM of a group's point.

Each restore is recorded as a job of kind ``restore``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stasis.app import restore as ops
from stasis.app.submit import queue as queue_job
from stasis.cli.common import (
    CatalogOpt,
    ConnectOpt,
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    PointArg,
    QueueOpt,
    RepoOpt,
    VmOpt,
    human,
    open_repo,
    out,
    print_model,
    print_queued,
    progress_for,
    warn_unrecorded,
)
from stasis.cli.remote import remote, show_ended_job, start_job
from stasis.hypervisor import libvirt_api as lv
from stasis.recovery.group import DEFAULT_SUFFIX

app = typer.Typer(help="Restore from recovery points.", no_args_is_help=True)

StorageOpt = Annotated[Path | None, typer.Option(help="Directory for the disks (default: "
                                                 "/var/lib/libvirt/images); made when "
                                                 "missing.")]
PoolOpt = Annotated[str | None, typer.Option(help="libvirt storage pool for the disks: each "
                                             "becomes a volume made through the pool "
                                             "(instead of --storage).")]


def _made(storage: str, created: bool) -> str:
    return f" (made the directory {storage})" if created else ""


@app.command("disk")
def disk(
    point: PointArg,
    repo: RepoOpt,
    to: Annotated[Path | None, typer.Option("--to", help="Target image file or block device; "
                                            "with --pool, the new volume's name (default: "
                                            "VM-restored-DISK.qcow2 or .img).")] = None,
    pool: Annotated[str | None, typer.Option(help="Write the disk to a new volume of this "
                                             "libvirt storage pool.")] = None,
    vm: VmOpt = None,
    disk_name: Annotated[str | None, typer.Option("--disk", help="Disk of the VM (if it has "
                                                  "several).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="qcow2 or raw (default: the "
                                            "source's format).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing target.")] = False,
    connect: ConnectOpt = lv.DEFAULT_URI,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Restore one disk of a point to an image file or a block device, or to a new
    volume of a libvirt storage pool (--pool)."""
    if to is None and pool is None:
        raise typer.BadParameter("give the target: --to PATH, or --pool NAME",
                                 param_hint="--to")
    progress = progress_for(json_output)
    try:
        result = ops.restore_disk(lambda: open_repo(repo, passphrase_file, key_file), point,
                                  to=to, catalog=catalog, warn=warn_unrecorded, vm=vm,
                                  disk=disk_name, fmt=fmt, force=force, progress=progress,
                                  pool=pool, connect=connect)
    finally:
        progress.finish()
    if json_output:
        print_model(result)
    else:
        where = (f"the volume {result.volume} of pool {result.pool} ({result.target})"
                 if result.pool else result.target)
        out.print(f"Restored {result.vm}/{result.disk} of point {result.point[:12]} to "
                  f"{where} ({result.format}, {human(result.virtual_size)}, wrote "
                  f"{human(result.bytes_written)}) in {result.duration_s:.1f} s.")


@app.command("vm")
def restore_vm_cmd(
    point: PointArg,
    repo: RepoOpt,
    vm: VmOpt = None,
    name: Annotated[str | None, typer.Option(help="Name of the new VM (default: "
                                             "NAME-restored).")] = None,
    storage: StorageOpt = None,
    pool: PoolOpt = None,
    network: Annotated[str | None, typer.Option(help="Connect every interface to this "
                                                "libvirt network.")] = None,
    start: Annotated[bool, typer.Option(help="Start the VM once defined.")] = False,
    in_place: Annotated[bool, typer.Option(help="Restore over the original VM, which must "
                                           "be shut off.")] = False,
    connect: ConnectOpt = lv.DEFAULT_URI,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
    queue: QueueOpt = False,
) -> None:
    """Restore a whole VM, as a new VM or in place."""
    if pool is not None and storage is not None:
        raise typer.BadParameter("--pool and --storage are two places for the disks: give "
                                 "one", param_hint="--pool")
    server = remote()
    if server is not None:  # the storage is a directory of the server's host
        job = start_job(server, "/restores", {
            "what": "vm", "point": point, "vm": vm, "name": name,
            "storage": str(storage) if storage else None, "network": network,
            "start": start, "in_place": in_place,
            **({"pool": pool} if pool is not None else {})}, wait=not queue,
            json_output=json_output, repository=repo or None)
        if job is not None:
            show_ended_job(job, json_output)
        return
    if queue:
        print_queued(queue_job(catalog, "restore.vm", {
            "repo": repo, "point": point, "vm": vm, "name": name,
            "storage": str(storage.resolve()) if storage else None, "network": network,
            "start": start, "in_place": in_place, "pool": pool},
            by="'stasis restore vm'"), json_output)
        return
    progress = progress_for(json_output)
    try:
        result = ops.restore_vm(connect, lambda: open_repo(repo, passphrase_file, key_file),
                                point, catalog=catalog, warn=warn_unrecorded, vm=vm, name=name,
                                storage=storage, network=network, start=start,
                                in_place=in_place, progress=progress, pool=pool)
    finally:
        progress.finish()
    if json_output:
        print_model(result)
        return
    where = ("in place" if result.in_place
             else f"as {result.name} in the storage pool {result.pool}" if result.pool
             else f"as {result.name} in {result.storage}"
             + _made(result.storage, result.storage_created))
    out.print(f"Restored VM {result.vm} of point {result.point[:12]} {where}"
              + (" and started it" if result.started else "") + f" in {result.duration_s:.1f} s.")
    for d in result.disks:
        vol = f"volume {d.volume}, " if d.volume else ""
        out.print(f"  {d.disk}: {vol}{d.target} ({d.format}, {human(d.virtual_size)})")


@app.command("group")
def restore_group_cmd(
    point: PointArg,
    repo: RepoOpt,
    suffix: Annotated[str, typer.Option(help="Appended to each VM's name to name its "
                                        "copy.")] = DEFAULT_SUFFIX,
    storage: StorageOpt = None,
    pool: PoolOpt = None,
    network: Annotated[str | None, typer.Option(help="Connect every interface to this "
                                                "libvirt network (an isolated one lets the "
                                                "copies run beside the originals).")] = None,
    start: Annotated[bool, typer.Option(help="Start the VMs once all are defined.")] = False,
    order: Annotated[str | None, typer.Option(help="VMs of the point to start first, in "
                                              "this order (A,B,...), each running before "
                                              "the next; the rest follow in point order. "
                                              "Needs --start.")] = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Restore every VM of a point as new VMs (NAME+SUFFIX), all or nothing.

    Everything is checked before anything is written; if a VM fails later, the
    domains and disks this command created are removed again.
    """
    if pool is not None and storage is not None:
        raise typer.BadParameter("--pool and --storage are two places for the disks: give "
                                 "one", param_hint="--pool")
    names = ops.parse_order(order)
    progress = progress_for(json_output)
    try:
        result = ops.restore_group(connect, lambda: open_repo(repo, passphrase_file, key_file),
                                   point, catalog=catalog, warn=warn_unrecorded, suffix=suffix,
                                   storage=storage, network=network, start=start, order=names,
                                   progress=progress, pool=pool)
    finally:
        progress.finish()
    if json_output:
        print_model(result)
        return
    place = (f"the storage pool {result.pool}" if result.pool
             else result.storage + _made(result.storage, result.storage_created))
    out.print(f"Restored {len(result.vms)} VMs of point {result.point[:12]} in {place}"
              + (f" on network {result.network}" if result.network else "")
              + f" in {result.duration_s:.1f} s:")
    for v in result.vms:
        disks = ", ".join(f"{d.disk} {human(d.virtual_size)}" for d in v.disks)
        out.print(f"  {v.vm} as {v.name} ({disks})")
    for n, s in enumerate(result.starts, 1):
        out.print(f"  {n}. started {s.name}: running after {s.running_after_s:.2f} s")
