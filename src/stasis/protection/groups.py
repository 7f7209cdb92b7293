"""Groups: which VMs a group's point holds, worked out again at every run.

A group names its members explicitly and by selectors. A VM is selected when its
name matches one of the group's name globs (``fnmatch``, case-sensitive), or when
it carries every one of the group's labels. The members of a run are the explicit
members first, in the order the group lists them, then the selected VMs sorted by
name, each once. Because the selection is made again at every run, a VM labelled
into the application later is in the next point without editing the group.

An explicit member that does not exist is an error for a backup (the group says
the application needs it); a selector that matches nothing is not.

:func:`select` is the rule on plain data; :func:`resolve` applies it to what a
libvirt connection holds now.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import libvirt

from stasis.errors import GroupError, UsageError
from stasis.hypervisor import labels as lb
from stasis.protection.consistency import LEVELS, Hooks, level_rank

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


@dataclass
class Group:
    """A group's definition, as the catalog stores it."""

    name: str
    members: list[str] = field(default_factory=list)
    name_globs: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    consistency: str = "crash"
    require: str | None = None
    hooks: Hooks = field(default_factory=Hooks)
    description: str = ""

    @property
    def has_selectors(self) -> bool:
        return bool(self.name_globs or self.labels)


@dataclass
class Resolution:
    """The members of one run, and the explicit members that do not exist."""

    members: list[str]
    missing: list[str]
    selected: list[str] = field(default_factory=list)  # members that came from a selector

    def check(self, group: str) -> list[str]:
        """The members; a :class:`GroupError` if any explicit one is missing or none is left."""
        if self.missing:
            raise GroupError(
                f"group '{group}' names VMs that do not exist: {', '.join(self.missing)}. "
                "Nothing was backed up. Define them, or remove them from the group with "
                f"'stasis group edit {group} --remove-vm NAME'.")
        if not self.members:
            raise GroupError(
                f"group '{group}' has no members now: no VM is named in it or matches its "
                "selectors. Nothing was backed up.")
        return self.members


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"'{name}' is not a group name: 1 to 128 letters, digits, '.', '_', '@', '+' or "
            "'-', starting with a letter or digit. Nothing was changed.")
    return name


def check_level(level: str, option: str = "--consistency") -> str:
    if level not in LEVELS:
        raise UsageError(f"{option} '{level}' is not a consistency level (one of "
                         f"{', '.join(LEVELS)}). Nothing was changed.")
    return level


def effective_level(consistency: str, require: str | None) -> str:
    """The level a run aims at: asking to require more than is attempted raises it."""
    check_level(consistency)
    if require is not None and level_rank(check_level(require, "--require")) > level_rank(
            consistency):
        return require
    return consistency


def check_levels(consistency: str, require: str | None, hooks: Hooks | None = None) -> None:
    """Both are levels, and hooks are given only where they run (``application``)."""
    level = effective_level(consistency, require)
    if hooks and level != "application":
        raise UsageError(
            f"hooks run only at the application consistency level, and this group's is "
            f"'{level}'. Add --consistency application, or drop the hooks. Nothing was "
            "changed.")


def validate(group: Group) -> Group:
    """Raise :class:`UsageError` for a definition that cannot be stored."""
    check_name(group.name)
    for vm in group.members:
        if not vm or vm != vm.strip():
            raise UsageError(f"'{vm}' is not a VM name. Nothing was changed.")
    if len(set(group.members)) != len(group.members):
        raise UsageError("a VM is named twice among the members. Nothing was changed.")
    for glob in group.name_globs:
        if not glob.strip():
            raise UsageError("an empty name glob selects nothing. Nothing was changed.")
    for key, value in group.labels.items():
        lb.check_key(key)
        lb.check_value(key, value)
    check_levels(group.consistency, group.require, group.hooks)
    if not group.hooks.timeout_s > 0:
        raise UsageError(f"the hook timeout must be more than 0 seconds, not "
                         f"{group.hooks.timeout_s:g}. Nothing was changed.")
    return group


def matches(group: Group, name: str, labels: Mapping[str, str]) -> bool:
    """Whether a VM of this name and these labels is selected by the group's selectors."""
    if any(fnmatch.fnmatchcase(name, glob) for glob in group.name_globs):
        return True
    return bool(group.labels) and all(labels.get(k) == v for k, v in group.labels.items())


def select(group: Group, inventory: Mapping[str, Mapping[str, str]]) -> Resolution:
    """Resolve ``group`` against ``inventory``: every VM's name and its labels."""
    members = [vm for vm in group.members if vm in inventory]
    missing = [vm for vm in group.members if vm not in inventory]
    explicit = set(group.members)
    selected = sorted(vm for vm, labels in inventory.items()
                      if vm not in explicit and matches(group, vm, labels))
    return Resolution(members=members + selected, missing=missing, selected=selected)


def inventory(conn: libvirt.virConnect, *, with_labels: bool = True) -> dict[str, dict[str, str]]:
    """Every domain the connection holds, running or not, with its labels."""
    found: dict[str, dict[str, str]] = {}
    for dom in conn.listAllDomains():
        try:
            name = dom.name()
            found[name] = lb.get_labels(dom) if with_labels else {}
        except libvirt.libvirtError:
            continue  # undefined while listing: it is gone, not a member
    return found


def resolve(conn: libvirt.virConnect, group: Group) -> Resolution:
    """The members of ``group`` now (explicit first, then selected by name), and the missing."""
    return select(group, inventory(conn, with_labels=bool(group.labels)))


@dataclass
class GroupBackup:
    """What one run of a group backs up: its VMs now, and the level and hooks it asks."""

    vms: list[str]
    missing: list[str]  # explicit members that do not exist
    consistency: str
    require: str | None
    hooks: Hooks | None  # only at the application level, where hooks run


def plan_backup(conn: libvirt.virConnect, group: Group, *, consistency: str,
                require: str | None, hooks: Hooks | None,
                extra: list[str] | None = None) -> GroupBackup:
    """The run of ``group`` now: its members (then ``extra`` VMs), at ``consistency``.

    ``consistency``, ``require`` and ``hooks`` are what this run asks, already chosen
    by the caller between its own and the group's (a command's options, a policy's
    settings); hooks are kept only where they run, at the application level.
    """
    r = resolve(conn, group)
    vms = list(dict.fromkeys(r.members + (extra or [])))
    level = effective_level(consistency, require)
    return GroupBackup(vms, r.missing, consistency, require,
                       hooks if level == "application" and hooks else None)
