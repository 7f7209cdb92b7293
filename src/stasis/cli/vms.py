"""``stasis vms`` (the VM inventory) and ``stasis doctor`` (debris of interrupted work)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from stasis.app.doctor import doctor as run_doctor
from stasis.app.inventory import list_vms
from stasis.app.models import VmRow
from stasis.cli.common import (
    ConnectOpt,
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    err,
    human,
    open_repo,
    out,
    print_model,
)
from stasis.cli.remote import remote
from stasis.hypervisor import libvirt_api as lv


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
    server = remote()
    if server is not None:  # the server's VMs, told from its (or --repo's) repository
        rows = server.items("/vms", VmRow.model_validate, repository=repo)
    else:
        rows = list_vms(lv.connect(connect),
                        open_repo(repo, passphrase_file, key_file) if repo else None)
    if json_output:
        print_model(rows)
        return
    table = Table(box=None)
    for col in ("name", "state", "disks", "protected", "newest point"):
        table.add_column(col)
    for row in rows:
        disk_text = ", ".join(
            f"{d.target} {d.format} {human(d.virtual_size or 0)}" for d in row.disks)
        prot = "-" if row.protected is None else ("yes" if row.protected else "no")
        newest = row.newest_point
        table.add_row(row.name, row.state, disk_text, prot,
                      f"{newest.id[:12]} {newest.time[:19]}" if newest else "-")
    out.print(table)


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
    report = run_doctor(connect, (lambda: open_repo(repo, passphrase_file, key_file))
                        if repo else None, fix=fix)
    if json_output:
        print_model(report.findings)
    else:
        if not report.findings:
            out.print("Nothing left behind.")
        for f in report.findings:
            verb = "removed" if f.fixed else "found"
            out.print(f"{verb} {f.kind}: {f.what}")
        if report.findings and not fix:
            err.print("Run 'stasis doctor --fix' to remove it.")
    if report.exit_code:  # what --fix could not remove (a libvirt job libvirt will not end)
        raise typer.Exit(report.exit_code)
