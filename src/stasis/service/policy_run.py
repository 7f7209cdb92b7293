"""One run of a policy: its members resolved now, backed up, then its retention.

Members become units, each one point: every group of the policy is one group point
at one instant (named after the group); every VM named or selected otherwise is a
point of its own (named after the VM), as ``stasis backup group`` and ``stasis
backup vm`` make them. One unit failing does not stop the others; the job then
fails with the first failure. The same function runs a policy in the service and
in ``stasis policy run`` when no service runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import libvirt

from stasis.catalog import Catalog, GroupStore
from stasis.clock import SYSTEM_CLOCK, Clock
from stasis.errors import GroupError, StasisError
from stasis.parallel import Cancelled
from stasis.progress import Progress
from stasis.protection.capture import back_up_members
from stasis.protection.consistency import Hooks
from stasis.protection.groups import Group, GroupBackup, plan_backup
from stasis.repository import Repository
from stasis.service.jobs import JobRun
from stasis.service.policy import Policy

log = logging.getLogger("stasis.policy")

# Makes the progress sink of each unit's backup, given the job's cancel event.
UnitProgress = Callable[[threading.Event], Progress | None]


@dataclass
class Unit:
    """One point to make: its name, kind (vm or group), VMs, and hooks."""

    name: str
    kind: str
    vms: list[str]
    hooks: Hooks | None = None


@dataclass
class Plan:
    units: list[Unit]
    missing: list[str]  # VMs the policy names that do not exist

    @property
    def vms(self) -> list[str]:
        return list(dict.fromkeys(vm for u in self.units for vm in u.vms))


def plan_units(conn: libvirt.virConnect, catalog: Catalog | None, policy: Policy) -> Plan:
    """The units of ``policy`` now (groups looked up in the catalog, selectors resolved)."""
    m = policy.members
    units: list[Unit] = []
    taken: set[str] = set()
    missing: list[str] = []

    def plan(group: Group, hooks: Hooks | None) -> GroupBackup:
        return plan_backup(conn, group, consistency=policy.consistency,
                           require=policy.require, hooks=hooks)

    for name in m.groups:
        if catalog is None:
            raise GroupError(f"policy '{policy.name}' backs up group '{name}', and the "
                             "catalog holding the groups cannot be used.")
        g = GroupStore(catalog).must_get(name).group
        p = plan(g, policy.hooks if policy.hooks else g.hooks)
        missing += p.missing
        vms = [vm for vm in p.vms if vm not in taken]
        if vms:
            units.append(Unit(name, "group", vms, p.hooks))
            taken.update(vms)
    if m.vms or m.select or m.labels:
        p = plan(Group(name=policy.name, members=list(m.vms), name_globs=list(m.select),
                       labels=dict(m.labels)), policy.hooks or None)
        missing += p.missing
        for vm in p.vms:
            if vm not in taken:
                units.append(Unit(vm, "vm", [vm], p.hooks))
                taken.add(vm)
    return Plan(units, list(dict.fromkeys(missing)))


def run_policy(
    run: JobRun,
    policy: Policy,
    plan: Plan,
    *,
    conn: libvirt.virConnect,
    repo: Repository,
    run_dir: Path,
    scratch_dir: Path,
    retention: Callable[[Repository, Policy, datetime, JobRun], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    unit_progress: UnitProgress | None = None,
) -> None:
    """Back up every unit of ``plan`` into ``repo`` within job ``run``; then retention
    at ``clock``'s time.

    Cancelling ``run.cancel`` stops the unit in flight before it commits
    (:class:`~stasis.parallel.Cancelled`, the job ends interrupted). ``unit_progress``
    makes each unit's progress sink (none by default).
    """
    for vm in plan.missing:
        run.failed_part(vm, GroupError(f"policy '{policy.name}' names VM '{vm}', which does "
                                       "not exist"))
    if not plan.units and not plan.missing:
        run.failed_part(policy.name, GroupError(f"policy '{policy.name}' has no members now: "
                                                "no VM matches it. Nothing was backed up."))
    tags = {"policy": policy.name}
    for unit in plan.units:
        if run.cancel.is_set():
            raise Cancelled()
        log.info("backing up %s %s (%s) at %s consistency", unit.kind, unit.name,
                 ", ".join(unit.vms), policy.consistency)
        try:
            m = back_up_members(conn, repo, unit.vms, point_name=unit.name, kind=unit.kind,
                                run_dir=run_dir, scratch_dir=scratch_dir, tags=tags,
                                cancel=run.cancel,
                                progress=unit_progress(run.cancel) if unit_progress else None,
                                consistency=policy.consistency,
                                require=policy.require, hooks=unit.hooks)
        except StasisError as e:
            run.failed_part(unit.name, e)
            continue
        run.point(m, repo)
    if run.cancel.is_set():
        raise Cancelled()
    if run.failure is None and retention is not None and not policy.retention.keeps_everything:
        retention(repo, policy, clock.now(), run)
