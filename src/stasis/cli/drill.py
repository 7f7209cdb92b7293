"""``stasis drill``: prove a point comes back. Its VMs come up beside the originals
(new names, UUIDs and MACs) in an isolated network, are checked, timed and torn down.

Each drill is recorded as a job of kind ``drill`` with per-check results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stasis.app import drill as ops
from stasis.app.restore import parse_order
from stasis.cli.common import (
    CatalogOpt,
    ConnectOpt,
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    open_repo_for_export,
    out,
    print_model,
    progress_for,
    warn_unrecorded,
)
from stasis.hypervisor import libvirt_api as lv


def drill(
    target: Annotated[str, typer.Argument(help=(
        "A point (id, unique prefix, NAME@latest), or a VM's or a group's name (its "
        "newest point)."))],
    repo: RepoOpt,
    mode: Annotated[str, typer.Option(help="restore: the disks are restored first; "
                                      "instant: the VMs run straight from the "
                                      "repository.")] = "restore",
    network: Annotated[str | None, typer.Option(help=(
        "The isolated libvirt network (no <forward>) to bring the VMs up in; made when "
        "missing and removed afterwards. A network that forwards is refused. Default: a "
        "new one of the drill's own."))] = None,
    check: Annotated[list[str] | None, typer.Option(help=(
        "KIND\\[@VM]\\[~SECONDS]\\[:ARG], repeatable: console:REGEX, agent, exec:COMMAND, "
        "tcp:PORT, script:PATH (gets the VMs and addresses as JSON on stdin). Without "
        "@VM a check runs on every VM."))] = None,
    check_timeout: Annotated[float, typer.Option(help="Seconds a check may take when it "
                                                 "gives no ~SECONDS.")] = 120.0,
    order: Annotated[str | None, typer.Option(help="VM,VM: start these first, in this "
                                              "order (default: the point's order); each "
                                              "VM's checks pass before the next "
                                              "starts.")] = None,
    storage: Annotated[Path | None, typer.Option(help="Directory for the disks or "
                                                 "overlays (default: "
                                                 "/var/lib/libvirt/images).")] = None,
    pool: Annotated[str | None, typer.Option(help=(
        "A restore drill's disks as volumes made through this libvirt storage pool (not "
        "with --storage), deleted through it at the end."))] = None,
    keep: Annotated[bool, typer.Option(help="Leave the VMs and network running at the end "
                                       "('stasis doctor --fix' removes them).")] = False,
    connect: ConnectOpt = lv.DEFAULT_URI,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Bring a point's VMs up in an isolated network, check them, measure the RTO (from
    the start until every check passed), and remove everything the drill made.

    A check that does not pass in time fails the drill (exit code 73) naming the
    check, the VM and its output; the teardown happens all the same.
    """
    checks = ops.parse_checks(check or [], check_timeout)
    progress = progress_for(json_output)
    try:
        result = ops.drill(connect, lambda: open_repo_for_export(repo, passphrase_file,
                                                                 key_file),
                           target, catalog=catalog, warn=warn_unrecorded, mode=mode,
                           network=network, checks=checks, order=parse_order(order),
                           storage=storage, pool=pool, keep=keep, progress=progress)
    finally:
        progress.finish()
    if json_output:
        print_model(result)
        return
    out.print(f"Drill {result.id} of {result.target} (point {result.point[:12]}, "
              f"{result.mode}) in network {result.network}: passed, measured RTO "
              f"{result.rto_s:.1f} s.")
    for v in result.vms:
        out.print(f"  {v.vm} as {v.name}: running after {v.running_after_s:.1f} s"
                  + (f", address {', '.join(v.addresses)}" if v.addresses else ""))
    for c in result.checks:
        label = f"{c.kind}:{c.arg}" if c.arg else c.kind
        out.print(f"  check {label}" + (f" on {c.vm}" if c.vm else "")
                  + f": passed in {c.seconds:.1f} s")
    if result.kept:
        out.print(f"Kept, as asked: 'stasis doctor --fix' removes drill {result.id}.")
    else:
        out.print(f"Removed: {', '.join(result.removed) or 'nothing was made'}.")
