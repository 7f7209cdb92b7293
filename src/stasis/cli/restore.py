"""``stasis restore``: bring back disks and whole groups of VMs (``restore vm`` is in
:mod:`stasis.cli.vms`). Each restore is recorded as a job of kind ``restore``."""

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
from stasis.cli.jobs import CatalogOpt, cli_job
from stasis.cli.vms import ConnectOpt, restored_vm_result
from stasis.errors import UsageError
from stasis.hypervisor import libvirt_api as lv
from stasis.recovery.group import DEFAULT_SUFFIX, restore_group
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
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Restore one disk of a point to an image file or a block device."""
    r = open_repo(repo, passphrase_file, key_file)
    m = r.resolve(point)
    progress = progress_for(json_output)
    vms = [vm] if vm else [v.name for v in m.vms][:1] if len(m.vms) == 1 else []
    try:
        with cli_job(catalog, "restore", m.name, vms=vms, repo=r.id,
                     params={"point": m.id, "target": str(to), "disk": disk_name,
                             "format": fmt}) as job:
            result = restore_disk(r, m, target=to, vm=vm, disk=disk_name, fmt=fmt,
                                  force=force, progress=progress, run_dir=run_dir())
            job.set_vms([result.vm])
            job.result[result.vm] = {
                "point": m.id, "point_name": m.name, "disks": {result.disk: result.target},
                "format": result.format, "bytes_written": result.bytes_written, "error": None}
            job.bytes_written = result.bytes_written
    finally:
        progress.finish()
    if json_output:
        print_json(result.to_dict())
    else:
        out.print(f"Restored {result.vm}/{result.disk} of point {m.id[:12]} to {result.target} "
                  f"({result.format}, {human(result.virtual_size)}, wrote "
                  f"{human(result.bytes_written)}) in {result.duration_s:.1f} s.")


def restore_group_cmd(
    point: Annotated[str, typer.Argument(help="Point id, unique prefix, or NAME@latest.")],
    repo: RepoOpt,
    suffix: Annotated[str, typer.Option(help="Appended to each VM's name to name its "
                                        "copy.")] = DEFAULT_SUFFIX,
    storage: Annotated[Path | None, typer.Option(help="Directory for the disks (default: "
                                                 "/var/lib/libvirt/images).")] = None,
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
    names = [n.strip() for n in order.split(",") if n.strip()] if order is not None else None
    if order is not None and not names:
        raise UsageError("--order is empty; name the VMs of the point, e.g. --order db,app")
    conn = lv.connect(connect)
    r = open_repo(repo, passphrase_file, key_file)
    m = r.resolve(point)
    progress = progress_for(json_output)
    try:
        with cli_job(catalog, "restore", m.name, vms=[v.name for v in m.vms if v.kind == "vm"],
                     repo=r.id, params={"point": m.id, "suffix": suffix, "start": start,
                                         "network": network}) as job:
            result = restore_group(conn, r, m, suffix=suffix, storage=storage,
                                   network=network, start=start, order=names,
                                   progress=progress, run_dir=run_dir())
            for v in result.vms:
                restored_vm_result(job, m, v)
    finally:
        progress.finish()
    if json_output:
        print_json(result.to_dict())
        return
    out.print(f"Restored {len(result.vms)} VMs of point {m.id[:12]} in {result.storage}"
              + (f" on network {result.network}" if result.network else "")
              + f" in {result.duration_s:.1f} s:")
    for v in result.vms:
        disks = ", ".join(f"{d.disk} {human(d.virtual_size)}" for d in v.disks)
        out.print(f"  {v.vm} as {v.name} ({disks})")
    for n, s in enumerate(result.starts, 1):
        out.print(f"  {n}. started {s.name}: running after {s.running_after_s:.2f} s")
