"""``stasis vms``, ``stasis backup vm``, ``stasis restore vm`` and ``stasis doctor``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import libvirt
import typer
from rich.table import Table

from stasis.blockio.nbd import socket_base
from stasis.cli.backup import backup_result, parse_tags, print_backup
from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    ProgressBoard,
    RepoOpt,
    err,
    human,
    open_repo,
    out,
    print_json,
    progress_for,
)
from stasis.cli.jobs import CatalogOpt, cli_job
from stasis.errors import JobNotEnded
from stasis.hypervisor import libvirt_api as lv
from stasis.hypervisor.domain import parse
from stasis.protection.consistency import level_rank
from stasis.protection.doctor import doctor as run_doctor
from stasis.protection.vm import back_up_vms
from stasis.recovery.vm import VmRestoreResult, restore_vm
from stasis.repository import Manifest, Repository
from stasis.settings import run_dir, scratch_dir

if TYPE_CHECKING:
    from stasis.service.jobs import JobRun

ConsistencyOpt = Annotated[str, typer.Option(
    help="crash, filesystem (guest-agent fsfreeze) or application (hooks too).")]
RequireOpt = Annotated[str | None, typer.Option(
    help="Fail, committing nothing, where a VM cannot reach this level.")]
ConnectOpt = Annotated[str, typer.Option("--connect", "-c", envvar="STASIS_CONNECT",
                                         help="libvirt URI.")]


def vms(
    connect: ConnectOpt = lv.DEFAULT_URI,
    repo: Annotated[str | None, typer.Option(
        "--repo", "-r", envvar="STASIS_REPO",
        help="Repository to tell protection and newest points from.")] = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List libvirt VMs with their disks and newest point."""
    conn = lv.connect(connect)
    r: Repository | None = open_repo(repo, passphrase_file, key_file) if repo else None
    latest: dict[str, Any] = {}
    if r is not None:
        for p in r.points():
            for vm in p.vms:
                if vm.kind == "vm":
                    latest[vm.name] = p
    rows = []
    for dom in sorted(conn.listAllDomains(), key=lambda d: d.name()):
        running = dom.isActive()
        info = parse(lv.domain_xml(dom, inactive=not running))
        disks = []
        for d in info.disks:
            size = alloc = None
            with contextlib.suppress(libvirt.libvirtError):  # shown without sizes, not fatal
                size, alloc = lv.block_info(dom, d.target)
            disks.append({"target": d.target, "format": d.format, "source": d.source,
                          "virtual_size": size, "allocated": alloc, "bitmaps": d.bitmaps})
        chain = lv.checkpoints(dom, lv.chain_prefix(r.id)) if r is not None else []
        point = latest.get(dom.name())
        rows.append({
            "name": dom.name(), "uuid": info.uuid, "state": lv.domain_state(dom),
            "disks": disks,
            "protected": (point is not None or bool(chain)) if r is not None else None,
            "checkpoint": chain[-1].name if chain else None,
            "newest_point": {"id": point.id, "time": point.time} if point else None,
        })
    if json_output:
        print_json(rows)
        return
    table = Table(box=None)
    for col in ("name", "state", "disks", "protected", "newest point"):
        table.add_column(col)
    for row in rows:
        disk_text = ", ".join(
            f"{d['target']} {d['format']} {human(d['virtual_size'] or 0)}" for d in row["disks"])
        prot = "-" if row["protected"] is None else ("yes" if row["protected"] else "no")
        newest = row["newest_point"]
        table.add_row(row["name"], row["state"], disk_text, prot,
                      f"{newest['id'][:12]} {newest['time'][:19]}" if newest else "-")
    out.print(table)


def backup_vm(
    names: Annotated[list[str], typer.Argument(help="VM names.")],
    repo: RepoOpt,
    connect: ConnectOpt = lv.DEFAULT_URI,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    parallel: Annotated[int, typer.Option(help="VMs backed up at once.")] = 2,
    consistency: ConsistencyOpt = "crash",
    require: RequireOpt = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Back up VMs, live and incremental where a checkpoint chain allows.

    Several VMs are backed up in parallel, each into its own point; one failing
    does not stop the others, and the exit code is the first failure's. With
    --consistency filesystem the guest agent freezes the guest's filesystems for the
    instant; a VM without an agent is crash consistent instead (recorded in the
    point), and fails only when --require asks for more.
    """
    level_rank(consistency)
    if require is not None:
        level_rank(require)
    tags = parse_tags(tag or [])
    conn = lv.connect(connect)
    r = open_repo(repo, passphrase_file, key_file)
    board = ProgressBoard() if err.is_terminal and not json_output else None
    targets = list(dict.fromkeys(names))
    try:
        with cli_job(catalog, "backup", ",".join(targets), vms=targets, repo=r.id) as job:
            outcomes = back_up_vms(conn, r, targets, run_dir=run_dir(),
                                   scratch_dir=scratch_dir(), tags=tags,
                                   progress=board.lane if board else None, parallel=parallel,
                                   consistency=consistency, require=require)
            for o in outcomes:
                if o.point is not None:
                    job.point(o.point, r)
                elif o.error is not None:
                    job.failed_part(o.name, o.error)
    finally:
        if board:
            board.close()
    failed = [o for o in outcomes if o.error is not None]
    if json_output:
        data = [backup_result(o.point) if o.point else
                {"name": o.name, "error": o.error.message if o.error else "",
                 "exit_code": o.error.exit_code if o.error else 1} for o in outcomes]
        print_json(data[0] if len(data) == 1 and not failed else data)
    else:
        for o in outcomes:
            if o.point is not None:
                print_backup(o.point)
    for o in failed[1:] if json_output else failed:
        err.print(f"[bold red]error:[/] {o.name}: {o.error}", highlight=False)
    if failed and failed[0].error is not None:
        if len(names) == 1:
            raise failed[0].error
        raise typer.Exit(failed[0].error.exit_code)


def restored_vm_result(job: JobRun, m: Manifest, v: VmRestoreResult) -> None:
    """A restored VM in its restore job's result."""
    written = sum(d.bytes_written for d in v.disks)
    job.result[v.vm] = {"point": m.id, "point_name": m.name, "restored_as": v.name,
                        "in_place": v.in_place, "started": v.started,
                        "disks": {d.disk: d.target for d in v.disks},
                        "bytes_written": written, "error": None}
    job.bytes_written += written


def restore_vm_cmd(
    point: Annotated[str, typer.Argument(help="Point id, unique prefix, or NAME@latest.")],
    repo: RepoOpt,
    vm: Annotated[str | None, typer.Option(help="VM of the point (if it has several).")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the new VM (default: "
                                             "NAME-restored).")] = None,
    storage: Annotated[Path | None, typer.Option(help="Directory for the disks (default: "
                                                 "/var/lib/libvirt/images).")] = None,
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
) -> None:
    """Restore a whole VM, as a new VM or in place."""
    conn = lv.connect(connect)
    r = open_repo(repo, passphrase_file, key_file)
    m = r.resolve(point)
    progress = progress_for(json_output)
    vms = [vm] if vm else [v.name for v in m.vms if v.kind == "vm"][:1]
    try:
        with cli_job(catalog, "restore", m.name, vms=vms, repo=r.id,
                     params={"point": m.id, "name": name, "in_place": in_place,
                             "start": start}) as job:
            result = restore_vm(conn, r, m, vm=vm, name=name, storage=storage,
                                network=network, start=start, in_place=in_place,
                                progress=progress, run_dir=run_dir())
            job.set_vms([result.vm])
            restored_vm_result(job, m, result)
    finally:
        progress.finish()
    if json_output:
        print_json(result.to_dict())
        return
    where = "in place" if result.in_place else f"as {result.name} in {result.storage}"
    out.print(f"Restored VM {result.vm} of point {m.id[:12]} {where}"
              + (" and started it" if result.started else "") + f" in {result.duration_s:.1f} s.")
    for d in result.disks:
        out.print(f"  {d.disk}: {d.target} ({d.format}, {human(d.virtual_size)})")


def doctor(
    fix: Annotated[bool, typer.Option(help="Remove what is found.")] = False,
    repo: Annotated[str | None, typer.Option(
        "--repo", "-r", envvar="STASIS_REPO", help="Repository to check.")] = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Find (and with --fix remove) debris of interrupted work."""
    r = open_repo(repo, passphrase_file, key_file) if repo else None
    conn = lv.connect(connect) if os.path.exists("/run/libvirt") or connect != lv.DEFAULT_URI \
        else None
    dirs = [run_dir(), scratch_dir()]
    dirs += [socket_base(d) for d in dirs]  # sockets of deep directories go elsewhere
    report = run_doctor(conn, r, sorted(set(dirs)), fix=fix)
    stuck = [f for f in report.findings if fix and not f.fixed]
    if json_output:
        print_json([f.__dict__ for f in report.findings])
    else:
        if not report.findings:
            out.print("Nothing left behind.")
        for f in report.findings:
            verb = "removed" if f.fixed else "found"
            out.print(f"{verb} {f.kind}: {f.what}")
        if report.findings and not fix:
            err.print("Run 'stasis doctor --fix' to remove it.")
    if stuck:  # what --fix could not remove (a libvirt job libvirt will not end)
        raise typer.Exit(JobNotEnded.exit_code)
