"""``stasis group``, ``stasis label`` and ``stasis backup group``.

Groups are stored in the catalog (``--catalog`` / ``$STASIS_CATALOG``, by default
``<state dir>/catalog.db``); labels live in each domain's libvirt metadata. The
members of a group are worked out again at every backup, so a VM labelled into the
application is in the next point without editing the group.

The catalog (SQLAlchemy, Alembic) is imported only by the commands that use it, so
every other command starts as fast as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import libvirt
import typer
from rich.table import Table

from stasis.cli.backup import backup_result, parse_tags, print_backup
from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    err,
    open_repo,
    out,
    print_json,
    progress_for,
)
from stasis.cli.jobs import cli_job
from stasis.cli.vms import ConnectOpt
from stasis.errors import GroupError, HypervisorError, UsageError
from stasis.hypervisor import labels as lb
from stasis.hypervisor import libvirt_api as lv
from stasis.protection.consistency import (
    DEFAULT_HOOK_TIMEOUT_S,
    GuestCommand,
    Hooks,
    parse_guest_command,
)
from stasis.protection.groups import (
    Group,
    Resolution,
    check_level,
    check_levels,
    check_name,
    effective_level,
    resolve,
)
from stasis.protection.instant import back_up_members
from stasis.settings import run_dir, scratch_dir

if TYPE_CHECKING:
    from stasis.catalog import GroupStore, StoredGroup

app = typer.Typer(help="Stored groups: VMs captured together at one instant.",
                  no_args_is_help=True)

CatalogOpt = Annotated[str | None, typer.Option(
    "--catalog", envvar="STASIS_CATALOG", show_default=False,
    help="The catalog: a SQLAlchemy URL or a SQLite file "
         "($STASIS_CATALOG; default <state dir>/catalog.db).")]
VmsOpt = Annotated[list[str] | None, typer.Option(
    "--vm", help="A member VM, repeatable; members keep this order.")]
SelectOpt = Annotated[list[str] | None, typer.Option(
    "--select", help="A name glob (fnmatch) selecting VMs, repeatable.")]
LabelOpt = Annotated[list[str] | None, typer.Option(
    "--label", help="KEY=VALUE, repeatable: selects the VMs carrying every one of them.")]
LevelOpt = Annotated[str | None, typer.Option(
    "--consistency", help="crash, filesystem (guest-agent fsfreeze) or application "
                          "(hooks too).")]
RequireOpt = Annotated[str | None, typer.Option(
    "--require", help="The level below which a point fails, committing nothing.")]
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


@contextmanager
def _groups(catalog: str | None) -> Iterator[GroupStore]:
    from stasis.catalog import Catalog, GroupStore

    with Catalog.open(catalog) as c:
        yield GroupStore(c)


def _try_connect(uri: str) -> libvirt.virConnect | None:
    try:
        return lv.connect(uri)
    except HypervisorError:
        return None


def _resolve_now(conn: libvirt.virConnect | None, group: Group) -> Resolution | None:
    if conn is None:
        return None
    try:
        return resolve(conn, group)
    except (HypervisorError, libvirt.libvirtError):
        return None


def _dedupe(values: list[str] | None) -> list[str]:
    return list(dict.fromkeys(values or []))


def _guest(values: list[str] | None) -> list[GuestCommand]:
    return [parse_guest_command(v) for v in values or []]


def _group_dict(stored: StoredGroup, now: Resolution | None) -> dict[str, Any]:
    data = stored.to_dict()
    data["resolved"] = None if now is None else {
        "members": now.members, "missing": now.missing, "selected": now.selected}
    return data


def _selectors(g: Group) -> str:
    parts = list(g.name_globs)
    if g.labels:
        parts.append(",".join(f"{k}={v}" for k, v in sorted(g.labels.items())))
    return " ".join(parts) or "-"


def _level_text(g: Group) -> str:
    return g.consistency + (f" (requires {g.require})" if g.require else "")


def _now_text(now: Resolution | None) -> str:
    if now is None:
        return "? (libvirt not reachable)"
    text = ", ".join(now.members) or "(none)"
    if now.missing:
        text += f"; missing: {', '.join(now.missing)}"
    return text


def _print_group(stored: StoredGroup, now: Resolution | None) -> None:
    g = stored.group
    out.print(f"[bold]{g.name}[/]" + (f": {g.description}" if g.description else ""),
              highlight=False)
    out.print(f"  members:     {', '.join(g.members) or '-'}", highlight=False)
    out.print(f"  select:      {', '.join(g.name_globs) or '-'}", highlight=False)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(g.labels.items()))
    out.print(f"  labels:      {labels or '-'}", highlight=False)
    out.print(f"  consistency: {_level_text(g)}", highlight=False)
    h = g.hooks
    for title, items in (("pre-host", h.pre_host), ("post-host", h.post_host),
                         ("pre-guest", [f"{c.vm}:{c.command}" for c in h.pre_guest]),
                         ("post-guest", [f"{c.vm}:{c.command}" for c in h.post_guest])):
        for item in items:
            out.print(f"  {title + ':':<12} {item}", highlight=False)
    if h:
        out.print(f"  timeout:     {h.timeout_s:g} s for each hook", highlight=False)
    out.print(f"  now:         {_now_text(now)}", highlight=False)
    out.print(f"  created {stored.created.isoformat(timespec='seconds')}, "
              f"updated {stored.updated.isoformat(timespec='seconds')}", highlight=False)


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
    check_name(name)
    group = Group(
        name=name, members=_dedupe(vm), name_globs=_dedupe(select),
        labels=lb.parse_labels(label or []), consistency=check_level(consistency),
        require=check_level(require, "--require") if require else None,
        hooks=Hooks(pre_host=list(pre_host or []), post_host=list(post_host or []),
                    pre_guest=_guest(pre_guest), post_guest=_guest(post_guest),
                    timeout_s=DEFAULT_HOOK_TIMEOUT_S if hook_timeout is None else hook_timeout),
        description=description or "",
    )
    if not group.members and not group.has_selectors:
        raise UsageError(f"group '{name}' would have no members: give --vm, --select or "
                         "--label. Nothing was changed.")
    with _groups(catalog) as store:
        stored = store.create(group)
    now = _resolve_now(_try_connect(connect), stored.group)
    if json_output:
        print_json(_group_dict(stored, now))
        return
    out.print(f"Group '{name}' created; its members now: {_now_text(now)}.", highlight=False)
    _warn_missing(now)


def _warn_missing(now: Resolution | None) -> None:
    if now is not None and now.missing:
        err.print(f"[bold yellow]warning:[/] no VM named {', '.join(now.missing)} exists now; "
                  "a backup of the group fails until it does.", highlight=False)


@app.command("list")
def list_groups(
    catalog: CatalogOpt = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """List the stored groups, with the members each resolves to now."""
    with _groups(catalog) as store:
        groups = store.list()
    conn = _try_connect(connect) if groups else None
    rows = [(s, _resolve_now(conn, s.group)) for s in groups]
    if json_output:
        print_json([_group_dict(s, now) for s, now in rows])
        return
    if not rows:
        out.print("No groups. Create one with 'stasis group create NAME --vm A --vm B'.")
        return
    table = Table(box=None)
    for col in ("name", "consistency", "members", "selectors", "members now"):
        table.add_column(col)
    for s, now in rows:
        g = s.group
        table.add_row(g.name, _level_text(g), ", ".join(g.members) or "-", _selectors(g),
                      _now_text(now))
    out.print(table)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Group name.")],
    catalog: CatalogOpt = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    json_output: JsonOpt = False,
) -> None:
    """Show a group's definition and the members it resolves to now."""
    with _groups(catalog) as store:
        stored = store.must_get(name)
    now = _resolve_now(_try_connect(connect), stored.group)
    if json_output:
        print_json(_group_dict(stored, now))
    else:
        _print_group(stored, now)


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
    if require is not None and no_require:
        raise UsageError("--require and --no-require contradict each other. Nothing was "
                         "changed.")
    new_labels = lb.parse_labels(add_label or [])
    drop_labels = [lb.check_key(t.partition("=")[0]) for t in remove_label or []]
    new_pre_guest, new_post_guest = _guest(pre_guest), _guest(post_guest)
    if consistency is not None:
        check_level(consistency)
    if require is not None:
        check_level(require, "--require")
    asked = [add_vm, remove_vm, add_select, remove_select, add_label, remove_label,
             consistency, require, pre_host, post_host, pre_guest, post_guest, hook_timeout,
             description]
    if not clear_hooks and not no_require and all(a is None for a in asked):
        raise UsageError(f"nothing to change in group '{name}': give an option "
                         f"('stasis group edit --help' lists them).")

    def change(g: Group) -> Group:
        for vm in remove_vm or []:
            if vm not in g.members:
                raise GroupError(f"'{vm}' is not a member of group '{name}' (members: "
                                 f"{', '.join(g.members) or 'none'}). Nothing was changed.")
            g.members.remove(vm)
        g.members += [vm for vm in _dedupe(add_vm) if vm not in g.members]
        for glob in remove_select or []:
            if glob not in g.name_globs:
                raise GroupError(f"'{glob}' is not a name glob of group '{name}' (globs: "
                                 f"{', '.join(g.name_globs) or 'none'}). Nothing was changed.")
            g.name_globs.remove(glob)
        g.name_globs += [s for s in _dedupe(add_select) if s not in g.name_globs]
        for key in drop_labels:
            if key not in g.labels:
                raise GroupError(f"group '{name}' selects on no label '{key}' (labels: "
                                 f"{', '.join(sorted(g.labels)) or 'none'}). Nothing was "
                                 "changed.")
            del g.labels[key]
        g.labels.update(new_labels)
        if consistency is not None:
            g.consistency = consistency
        if require is not None:
            g.require = require
        if no_require:
            g.require = None
        if clear_hooks:
            g.hooks = Hooks(timeout_s=g.hooks.timeout_s)
        g.hooks.pre_host += pre_host or []
        g.hooks.post_host += post_host or []
        g.hooks.pre_guest += new_pre_guest
        g.hooks.post_guest += new_post_guest
        if hook_timeout is not None:
            g.hooks.timeout_s = hook_timeout
        if description is not None:
            g.description = description
        if not g.members and not g.has_selectors:
            raise UsageError(f"group '{name}' would be left with no members and no "
                             "selectors. Nothing was changed; delete it with "
                             f"'stasis group delete {name}' instead.")
        return g

    with _groups(catalog) as store:
        stored = store.update(name, change)
    now = _resolve_now(_try_connect(connect), stored.group)
    if json_output:
        print_json(_group_dict(stored, now))
        return
    out.print(f"Group '{name}' changed; its members now: {_now_text(now)}.", highlight=False)
    _warn_missing(now)


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Group name.")],
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Delete a stored group. Its points stay in the repository."""
    with _groups(catalog) as store:
        gone = store.delete(name)
    if json_output:
        print_json(gone.to_dict())
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
    wanted = lb.parse_labels(assignments or [])
    drop = [lb.check_key(k) for k in remove or []]
    dom = lv.lookup(lv.connect(connect), vm)
    labels = lb.update_labels(dom, wanted, drop) if wanted or drop else lb.get_labels(dom)
    if json_output:
        print_json({"vm": vm, "labels": labels})
        return
    if not labels:
        out.print(f"{vm} has no labels.", highlight=False)
        return
    for key in sorted(labels):
        out.print(f"{key}={labels[key]}", highlight=False)


# ------------------------------------------------------------------ backup group


def backup_group(
    name: Annotated[str, typer.Argument(help="A stored group, or the name of the points "
                                        "of the VMs given with --vm.")],
    repo: RepoOpt,
    vm: Annotated[list[str] | None, typer.Option(
        "--vm", help="A member VM, repeatable (added to a stored group's members).")] = None,
    consistency: LevelOpt = None,
    require: RequireOpt = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    catalog: CatalogOpt = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Back up a group of VMs into one point at one instant.

    With a stored group NAME, its members are resolved now (explicit members, then
    the VMs its globs and labels select) and its level, required level and hooks are
    the defaults that the options override; without one, --vm names the members.
    Every running member is held (suspended, or frozen at the filesystem level) while
    its backup job begins, all in parallel; the window is recorded as frozen_ms. A
    guardian process resumes and thaws the members if Stasis dies inside it.
    """
    tags = parse_tags(tag or [])
    if consistency is not None:
        check_level(consistency)
    if require is not None:
        check_level(require, "--require")
    extra = _dedupe(vm)
    with _groups(catalog) as store:
        stored = store.get(name)
    conn = lv.connect(connect)
    hooks: Hooks | None = None
    if stored is not None:
        g = stored.group
        resolution = resolve(conn, g)
        if resolution.missing:
            resolution.check(name)
        names = list(dict.fromkeys(resolution.members + extra))
        if not names:
            raise GroupError(f"group '{name}' has no members now: no VM is named in it or "
                             "matches its selectors. Nothing was backed up.")
        level = consistency or g.consistency
        required = require if require is not None else g.require
        hooks = g.hooks
    elif not extra:
        raise UsageError(f"there is no stored group named '{name}': give the members with "
                         f"--vm, or store the group with 'stasis group create {name}'. "
                         "Nothing was backed up.")
    else:
        names, level, required = extra, consistency or "crash", require
    if effective_level(level, required) != "application":
        hooks = None  # they run only at the application level (lowered by an option here)
    check_levels(level, required, hooks)
    r = open_repo(repo, passphrase_file, key_file)
    progress = progress_for(json_output)
    try:
        with cli_job(catalog, "backup", name, vms=names, repo=r.id) as job:
            m = back_up_members(conn, r, names, point_name=name, kind="group",
                                run_dir=run_dir(), scratch_dir=scratch_dir(), tags=tags,
                                progress=progress, consistency=level, require=required,
                                hooks=hooks or None)
            job.point(m, r)
    finally:
        progress.finish()
    membership = m.extra.get("group", {})
    if json_output:
        result = backup_result(m)
        result.update({k: membership.get(k, []) for k in ("members", "joined", "left")})
        result["stored_group"] = stored is not None
        print_json(result)
        return
    print_backup(m)
    out.print(f"  members held for {m.timings.get('frozen_ms', 0):.1f} ms")
    if m.parent is not None:
        for key, verb in (("joined", "joined"), ("left", "left")):
            if membership.get(key):
                out.print(f"  {verb} the group since the last point: "
                          f"{', '.join(membership[key])}", highlight=False)
