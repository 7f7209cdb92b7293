"""``stasis backup``: make recovery points of images, VMs and groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stasis.cli.common import (
    CatalogOpt,
    ConnectOpt,
    ConsistencyOpt,
    JsonOpt,
    KeyFileOpt,
    NoWaitOpt,
    PassFileOpt,
    ProgressBoard,
    QueueOpt,
    RepoOpt,
    RequireOpt,
    TagOpt,
    err,
    open_repo,
    print_json,
    print_model,
    print_queued,
    progress_for,
    repo_opener,
    warn_unrecorded,
)
from stasis.cli.remote import Remote, backup_results, remote, start_job
from stasis.errors import StasisError
from stasis.hypervisor import DEFAULT_URI

app = typer.Typer(help="Make recovery points.", no_args_is_help=True)

# The application's modules (its Pydantic models, 0.1 s to load) are loaded inside
# each command, after repo_opener has set the key's derivation going beside them.


@app.command("image")
def image(
    paths: Annotated[list[Path], typer.Argument(help="Images (any format QEMU reads) or block "
                                                "devices; all go into one point.")],
    repo: RepoOpt,
    name: Annotated[str | None, typer.Option(help="Point name (default: the first file's "
                                             "name). Points of one name form a chain.")] = None,
    tag: TagOpt = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Source format (default: "
                                            "probed by qemu-img).")] = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Back up disk images or block devices (recorded as a job)."""
    server = remote()
    if server is not None:  # images of the server's host, by their paths there
        from stasis.app import backup as ops

        _remote_backup(server, {"images": [str(p) for p in paths], "name": name,
                                "format": fmt, "tags": ops.parse_tags(tag or []) or None},
                       repo, wait=not no_wait, json_output=json_output, several=False)
        return
    opener = repo_opener(repo, passphrase_file, key_file)
    from stasis.app import backup as ops
    from stasis.cli.render import print_backup

    tags = ops.parse_tags(tag or [])
    progress = progress_for(json_output)
    try:
        result = ops.backup_images(opener, paths,
                                   catalog=catalog, warn=warn_unrecorded, name=name,
                                   tags=tags, fmt=fmt, progress=progress)
    finally:
        progress.finish()
    if json_output:
        print_model(result)
    else:
        print_backup(result)


@app.command("vm")
def backup_vm(
    names: Annotated[list[str], typer.Argument(help="VM names.")],
    repo: RepoOpt,
    connect: ConnectOpt = DEFAULT_URI,
    tag: TagOpt = None,
    parallel: Annotated[int, typer.Option(help="VMs backed up at once.")] = 2,
    consistency: ConsistencyOpt = "crash",
    require: RequireOpt = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
    queue: QueueOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Back up VMs, live and incremental where a checkpoint chain allows.

    Several VMs are backed up in parallel, each into its own point; one failing
    does not stop the others, and the exit code is the first failure's. With
    --consistency filesystem the guest agent freezes the guest's filesystems for the
    instant; a VM without an agent is crash consistent instead (recorded in the
    point), and fails only when --require asks for more.
    """
    server = remote()
    if server is not None:
        from stasis.app import backup as ops

        _remote_backup(server, {"vms": names, "tags": ops.parse_tags(tag or []) or None,
                                "parallel": parallel, "consistency": consistency,
                                "require": require}, repo, wait=not (no_wait or queue),
                       json_output=json_output, several=len(names) > 1)
        return
    opener = None if queue else repo_opener(repo, passphrase_file, key_file)
    from stasis.app import backup as ops
    from stasis.app.submit import queue as queue_job
    from stasis.cli.render import print_backup

    tags = ops.parse_tags(tag or [])
    if queue or opener is None:
        print_queued(queue_job(catalog, "backup.vms", {
            "repo": repo, "vms": names, "tags": tags, "parallel": parallel,
            "consistency": consistency, "require": require}, by="'stasis backup vm'"),
            json_output)
        return
    board = ProgressBoard() if err.is_terminal and not json_output else None
    try:
        outcomes = ops.backup_vms(connect, opener, names, catalog=catalog, warn=warn_unrecorded,
                                  tags=tags, parallel=parallel, consistency=consistency,
                                  require=require, progress=board.lane if board else None)
    finally:
        if board:
            board.close()
    failed = [o for o in outcomes if o.error is not None]
    if json_output:
        if len(outcomes) == 1 and not failed:
            print_model(outcomes[0])
        else:
            print_model(outcomes)
    else:
        for o in outcomes:
            if o.point is not None:
                print_backup(o.point)
    for o in failed[1:] if json_output else failed:
        err.print(f"[bold red]error:[/] {o.name}: {o.error}", highlight=False)
    first = failed[0].error if failed else None
    if first is not None:
        if len(names) == 1:
            raise first
        raise typer.Exit(first.exit_code)


@app.command("group")
def backup_group(
    name: Annotated[str, typer.Argument(help="A stored group, or the name of the points "
                                        "of the VMs given with --vm.")],
    repo: RepoOpt,
    vm: Annotated[list[str] | None, typer.Option(
        "--vm", help="A member VM, repeatable (added to a stored group's members).")] = None,
    consistency: Annotated[str | None, typer.Option(
        "--consistency", help="crash, filesystem (guest-agent fsfreeze) or application "
                              "(hooks too).")] = None,
    require: RequireOpt = None,
    connect: ConnectOpt = DEFAULT_URI,
    tag: TagOpt = None,
    catalog: CatalogOpt = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
    queue: QueueOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Back up a group of VMs into one point at one instant.

    With a stored group NAME, its members are resolved now (explicit members, then
    the VMs its globs and labels select) and its level, required level and hooks are
    the defaults that the options override; without one, --vm names the members.
    Every running member is held (suspended, or frozen at the filesystem level) while
    its backup job begins, all in parallel; the window is recorded as frozen_ms. A
    guardian process resumes and thaws the members if Stasis dies inside it.
    """
    from stasis.app import backup as ops
    from stasis.app.submit import queue as queue_job
    from stasis.cli.render import print_group_backup

    tags = ops.parse_tags(tag or [])
    server = remote()
    if server is not None:
        _remote_backup(server, {"group": name, "vms": vm or None, "consistency": consistency,
                                "require": require, "tags": tags or None}, repo,
                       wait=not (no_wait or queue), json_output=json_output, several=False,
                       group=True)
        return
    if queue:
        print_queued(queue_job(catalog, "backup.group", {
            "repo": repo, "group": name, "vms": vm or [], "consistency": consistency,
            "require": require, "tags": tags}, by="'stasis backup group'"), json_output)
        return
    progress = progress_for(json_output)
    try:
        result = ops.backup_group(connect, lambda: open_repo(repo, passphrase_file, key_file),
                                  name, catalog=catalog, warn=warn_unrecorded, vms=vm,
                                  consistency=consistency, require=require, tags=tags,
                                  progress=progress)
    finally:
        progress.finish()
    if json_output:
        print_model(result)
    else:
        print_group_backup(result)


def _remote_backup(server: Remote, body: dict[str, object], repo: str | None, *, wait: bool,
                   json_output: bool, several: bool, group: bool = False) -> None:
    """A backup through the server: its job followed to the end, then each point
    shown as a local backup shows it; the exit code the first failure's."""
    from stasis.cli.render import print_backup, print_group_backup

    job = start_job(server, "/backups", body, wait=wait, json_output=json_output,
                    repository=repo or None)
    if job is None:
        return
    results = backup_results(server, job, repo)
    failed = [(n, r) for n, r in results if isinstance(r, StasisError)]
    if json_output:
        dumped = [r.to_json() if not isinstance(r, StasisError) else
                  {"name": n, "error": r.message, "exit_code": r.exit_code}
                  for n, r in results]
        print_json(dumped[0] if len(dumped) == 1 and not failed and not several else dumped)
    else:
        for _n, r in results:
            if not isinstance(r, StasisError):
                (print_group_backup if group else print_backup)(r)
    for n, e in failed[1:] if json_output else failed:
        err.print(f"[bold red]error:[/] {n}: {e.message}", highlight=False)
    if failed:
        if not several:
            raise failed[0][1]
        raise typer.Exit(failed[0][1].exit_code)
    if not results:  # the job failed before any VM: its error, with its code
        from stasis.cli.remote import show_ended_job

        show_ended_job(job, json_output)
