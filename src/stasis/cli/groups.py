"""``stasis group`` and ``stasis label``.

Groups are stored in the catalog (``--catalog`` / ``$STASIS_CATALOG``, by default
``<state dir>/catalog.db``); labels live in each domain's libvirt metadata. The
members of a group are worked out again at every backup, so a VM labelled into the
application is in the next point without editing the group.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import quote

import typer
from rich.table import Table

from stasis.app import groups as ops
from stasis.app.models import GroupModel, Resolved
from stasis.cli.common import (
    CatalogOpt,
    ConnectOpt,
    JsonOpt,
    RequireOpt,
    err,
    out,
    print_model,
)
from stasis.cli.remote import remote
from stasis.hypervisor import libvirt_api as lv
from stasis.protection.consistency import DEFAULT_HOOK_TIMEOUT_S

app = typer.Typer(help="Stored groups: VMs captured together at one instant.",
                  no_args_is_help=True)

VmsOpt = Annotated[list[str] | None, typer.Option(
    "--vm", help="A member VM, repeatable; members keep this order.")]
SelectOpt = Annotated[list[str] | None, typer.Option(
    "--select", help="A name glob (fnmatch) selecting VMs, repeatable.")]
LabelOpt = Annotated[list[str] | None, typer.Option(
    "--label", help="KEY=VALUE, repeatable: selects the VMs carrying every one of them.")]
LevelOpt = Annotated[str | None, typer.Option(
    "--consistency", help="crash, filesystem (guest-agent fsfreeze) or application "
                          "(hooks too).")]
PreHostOpt = Annotated[list[str] | None, typer.Option(
    "--pre-host", help="Host command run before the instant, repeatable.")]
PostHostOpt = Annotated[list[str] | None, typer.Option(
    "--post-host", help="Host command run after the instant, repeatable.")]
PreGuestOpt = Annotated[list[str] | None, typer.Option(
    "--pre-guest", help="VM:COMMAND run in the guest before the instant, repeatable.")]
PostGuestOpt = Annotated[list[str] | None, typer.Option(
    "--post-guest", help="VM:COMMAND run in the guest after the instant, repeatable.")]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--hook-timeout", help=f"Seconds each hook may take (default {DEFAULT_HOOK_TIMEOUT_S:g}).",
    show_default=False)]
DescriptionOpt = Annotated[str | None, typer.Option("--description", help="Free text.")]


def _selectors(g: GroupModel) -> str:
    parts = list(g.select)
    if g.labels:
        parts.append(",".join(f"{k}={v}" for k, v in sorted(g.labels.items())))
    return " ".join(parts) or "-"


def _level_text(g: GroupModel) -> str:
    return g.consistency + (f" (requires {g.require})" if g.require else "")


def _now_text(now: Resolved | None) -> str:
    if now is None:
        return "? (libvirt not reachable)"
    text = ", ".join(now.members) or "(none)"
    if now.missing:
        text += f"; missing: {', '.join(now.missing)}"
    return text


def _guest_text(commands: list[dict[str, str]]) -> list[str]:
    return [f"{c['vm']}:{c['command']}" for c in commands]


def _print_group(g: GroupModel) -> None:
    out.print(f"[bold]{g.name}[/]" + (f": {g.description}" if g.description else ""),
              highlight=False)
    out.print(f"  members:     {', '.join(g.members) or '-'}", highlight=False)
    out.print(f"  select:      {', '.join(g.select) or '-'}", highlight=False)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(g.labels.items()))
    out.print(f"  labels:      {labels or '-'}", highlight=False)
    out.print(f"  consistency: {_level_text(g)}", highlight=False)
    h = g.hooks
    items_by_title = (("pre-host", h.get("pre_host", [])), ("post-host", h.get("post_host", [])),
                      ("pre-guest", _guest_text(h.get("pre_guest", []))),
                      ("post-guest", _guest_text(h.get("post_guest", []))))
    for title, items in items_by_title:
        for item in items:
            out.print(f"  {title + ':':<12} {item}", highlight=False)
    if any(items for _, items in items_by_title):
        out.print(f"  timeout:     {h.get('timeout_s', DEFAULT_HOOK_TIMEOUT_S):g} s for each "
                  "hook", highlight=False)
    out.print(f"  now:         {_now_text(g.resolved)}", highlight=False)
    created, updated = (datetime.fromisoformat(t).isoformat(timespec="seconds")
                        for t in (g.created, g.updated))
    out.print(f"  created {created}, updated {updated}", highlight=False)


def _warn_missing(now: Resolved | None) -> None:
    if now is not None and now.missing:
        err.print(f"[bold yellow]warning:[/] no VM named {', '.join(now.missing)} exists now; "
                  "a backup of the group fails until it does.", highlight=False)


# ------------------------------------------------------------------ group commands


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The group's name (also its points' name).")],
    vm: VmsOpt = None,
    select: SelectOpt = None,
    label: LabelOpt = None,
    consistency: Annotated[str, typer.Option(
        "--consistency", help="crash, filesystem or application.")] = "crash",
    require: RequireOpt = None,
    pre_host: PreHostOpt = None,
    post_host: PostHostOpt = None,
    pre_guest: PreGuestOpt = None,
    post_guest: PostGuestOpt = None,
    hook_timeout: TimeoutOpt = None,
    description: DescriptionOpt = None,
    catalog: CatalogOpt = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """Store a group: explicit members, selectors, consistency level and hooks."""
    g = ops.create_group(catalog, name, connect=connect, vms=vm, select=select, labels=label,
                         consistency=consistency, require=require, pre_host=pre_host,
                         post_host=post_host, pre_guest=pre_guest, post_guest=post_guest,
                         hook_timeout=hook_timeout, description=description)
    if json_output:
        print_model(g)
        return
    out.print(f"Group '{name}' created; its members now: {_now_text(g.resolved)}.",
              highlight=False)
    _warn_missing(g.resolved)


@app.command("list")
def list_groups(
    catalog: CatalogOpt = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """List the stored groups, with the members each resolves to now."""
    server = remote()
    groups = ops.list_groups(catalog, connect=connect) if server is None else server.items(
        "/groups", GroupModel.model_validate)
    if json_output:
        print_model(groups)
        return
    if not groups:
        out.print("No groups. Create one with 'stasis group create NAME --vm A --vm B'.")
        return
    table = Table(box=None)
    for col in ("name", "consistency", "members", "selectors", "members now"):
        table.add_column(col)
    for g in groups:
        table.add_row(g.name, _level_text(g), ", ".join(g.members) or "-", _selectors(g),
                      _now_text(g.resolved))
    out.print(table)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Group name.")],
    catalog: CatalogOpt = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """Show a group's definition and the members it resolves to now."""
    server = remote()
    g = ops.show_group(catalog, name, connect=connect) if server is None else server.get(
        f"/groups/{quote(name, safe='')}", GroupModel.model_validate)
    if json_output:
        print_model(g)
    else:
        _print_group(g)


@app.command("edit")
def edit(
    name: Annotated[str, typer.Argument(help="Group name.")],
    add_vm: Annotated[list[str] | None, typer.Option(
        "--add-vm", "--vm", help="Add a member VM (at the end), repeatable.")] = None,
    remove_vm: Annotated[list[str] | None, typer.Option(
        "--remove-vm", help="Remove a member VM, repeatable.")] = None,
    add_select: Annotated[list[str] | None, typer.Option(
        "--add-select", "--select", help="Add a name glob, repeatable.")] = None,
    remove_select: Annotated[list[str] | None, typer.Option(
        "--remove-select", help="Remove a name glob, repeatable.")] = None,
    add_label: Annotated[list[str] | None, typer.Option(
        "--add-label", "--label", help="Add (or change) a label selector KEY=VALUE.")] = None,
    remove_label: Annotated[list[str] | None, typer.Option(
        "--remove-label", help="Remove the label selector of KEY, repeatable.")] = None,
    consistency: LevelOpt = None,
    require: RequireOpt = None,
    no_require: Annotated[bool, typer.Option(
        "--no-require", help="Require no level (the point is committed at any).")] = False,
    pre_host: PreHostOpt = None,
    post_host: PostHostOpt = None,
    pre_guest: PreGuestOpt = None,
    post_guest: PostGuestOpt = None,
    clear_hooks: Annotated[bool, typer.Option(
        "--clear-hooks", help="Remove every hook first (then add those given).")] = False,
    hook_timeout: TimeoutOpt = None,
    description: DescriptionOpt = None,
    catalog: CatalogOpt = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """Change a group: members, selectors, level, required level, hooks, description.

    Everything asked is checked first; if any part is refused, nothing is changed.
    """
    change = ops.GroupChange(
        add_vms=add_vm or [], remove_vms=remove_vm or [], add_select=add_select or [],
        remove_select=remove_select or [], add_labels=add_label or [],
        remove_labels=remove_label or [], consistency=consistency, require=require,
        no_require=no_require, pre_host=pre_host or [], post_host=post_host or [],
        pre_guest=pre_guest or [], post_guest=post_guest or [], clear_hooks=clear_hooks,
        hook_timeout=hook_timeout, description=description)
    g = ops.edit_group(catalog, name, change, connect=connect)
    if json_output:
        print_model(g)
        return
    out.print(f"Group '{name}' changed; its members now: {_now_text(g.resolved)}.",
              highlight=False)
    _warn_missing(g.resolved)


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Group name.")],
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Delete a stored group. Its points stay in the repository."""
    gone = ops.delete_group(catalog, name)
    if json_output:
        print_model(gone)
        return
    out.print(f"Group '{name}' deleted; its points stay in the repository.", highlight=False)


# ------------------------------------------------------------------ labels


def label(
    vm: Annotated[str, typer.Argument(help="VM name.")],
    assignments: Annotated[list[str] | None, typer.Argument(
        help="KEY=VALUE to set; none: show the VM's labels.", show_default=False)] = None,
    remove: Annotated[list[str] | None, typer.Option(
        "--remove", help="Remove the label KEY, repeatable.")] = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """Show, set or remove a VM's labels (kept in its libvirt metadata).

    Groups that select on labels pick the change up at their next backup.
    """
    result = ops.vm_labels(connect, vm, assignments=assignments, remove=remove)
    if json_output:
        print_model(result)
        return
    if not result.labels:
        out.print(f"{vm} has no labels.", highlight=False)
        return
    for key in sorted(result.labels):
        out.print(f"{key}={result.labels[key]}", highlight=False)
