"""Work started for a principal (a REST API user): checked against what the principal
may touch, queued for the service as a job that names who started it and whose it
is, audited, and never queued twice.

- A tenant's principal backs up and restores only its own VMs and points
  (:class:`~stasis.app.scope.Scope`); anything else answers as if it did not exist.
  A backup of host images is the system's alone.
- A tenant restores only to the places it is allowed: a new VM's or disk's files
  under one of its ``restore_dirs`` or in a libvirt pool among its ``restore_pools``
  (so a restore as new must name its storage or pool), a network among its
  ``restore_networks`` (no network named keeps the VM's own). In place is allowed:
  it writes over the tenant's own VM. A tenant with no dirs or pools allowed
  restores in place only. A refusal names the target (TargetNotAllowed).
- Verify, prune, gc and copies work on a whole repository, which is the system's:
  a tenant's principal is refused them (403, PermissionDenied), whatever its role.
- A backup asked again while one of the same VMs (the same group, the same policy)
  on the same repository is queued or running is not queued again, nor a finalize
  of an instant VM being finalized: the job that waits or runs is the answer
  (``existing``). Within one process the check and the
  queueing are one step, so two requests at once make one job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stasis.app.audit import record
from stasis.app.auth import Principal, Tenant
from stasis.app.kinds import (
    KINDS,
    BackupGroupParams,
    BackupImagesParams,
    BackupVmsParams,
    CloneParams,
    DrillParams,
    Env,
    FinalizeParams,
    Params,
    PolicyParams,
    PruneParams,
    RestoreDiskParams,
    RestoreGroupParams,
    RestoreVmParams,
    Where,
    opened,
    parse_params,
    run_here,
)
from stasis.app.models import JobStarted, PruneReport, job_model
from stasis.app.points import resolve_point
from stasis.app.scope import Scope
from stasis.errors import (
    GroupError,
    InstantNotFound,
    PermissionDenied,
    PolicyNotFound,
    TargetNotAllowed,
    UsageError,
)

if TYPE_CHECKING:
    from stasis.catalog import Catalog, Job
    from stasis.repository import Repository

# The check for a job of the same work and the queueing of a new one, as one step.
_QUEUEING = threading.Lock()

# Repository-wide kinds: the system's alone.
SYSTEM_WIDE = frozenset({"verify", "prune", "gc", "copy"})


def system_only(who: Principal, permission: str, what: str) -> None:
    """Refuse a tenant's principal the repository-wide work ``what``."""
    if who.tenant is not None:
        raise PermissionDenied(permission, f"{who.shown}, bound to tenant "
                                           f"'{who.tenant.name}' ({what} is system-wide)")


def _owner(catalog: Catalog, table: str, name: str) -> tuple[bool, str | None]:
    """Whether the group or policy ``name`` is stored, and its tenant."""
    from sqlalchemy import select

    from stasis.catalog.models import GroupRow, PolicyRow

    row = GroupRow if table == "groups" else PolicyRow
    with catalog.session(write=False) as session:
        found = session.execute(select(row.tenant).where(row.name == name)).first()
    return (found is not None, found[0] if found is not None else None)


def _under(path: Path, dirs: tuple[str, ...]) -> bool:
    if not path.is_absolute():
        return False
    p = Path(path).resolve()
    return any(p.is_relative_to(Path(d).resolve()) for d in dirs)


def _allowed(t: Tenant) -> str:
    places = [f"dirs {', '.join(t.restore_dirs)}" if t.restore_dirs else "",
              f"pools {', '.join(t.restore_pools)}" if t.restore_pools else "",
              f"networks {', '.join(t.restore_networks)}" if t.restore_networks else ""]
    shown = "; ".join(p for p in places if p)
    return shown or "its own VMs in place (no restore dir, pool or network is allowed to it)"


def check_pool(t: Tenant, pool: str) -> None:
    """Refuse (TargetNotAllowed) a libvirt pool not among tenant ``t``'s restore_pools."""
    if pool not in t.restore_pools:
        raise TargetNotAllowed(t.name, "storage pool", pool, _allowed(t))


def check_restore_target(t: Tenant, p: Params) -> None:
    """Refuse (TargetNotAllowed) a restore of tenant ``t`` to a place it may not use."""
    storage: Path | None = None
    network: str | None = None
    if isinstance(p, RestoreDiskParams):
        if p.pool is not None:
            check_pool(t, p.pool)
        elif p.to is None or not _under(p.to, t.restore_dirs):
            raise TargetNotAllowed(t.name, "path", str(p.to), _allowed(t))
        return
    if isinstance(p, RestoreVmParams):
        if p.in_place:
            return
        storage, network = p.storage, p.network
    elif isinstance(p, RestoreGroupParams):
        storage, network = p.storage, p.network
    else:
        return
    if p.pool is not None:
        check_pool(t, p.pool)
    elif storage is None:
        raise TargetNotAllowed(t.name, "storage", "(none given: beside the original disks)",
                               _allowed(t))
    elif not _under(storage, t.restore_dirs):
        raise TargetNotAllowed(t.name, "storage", str(storage), _allowed(t))
    if network is not None and network not in t.restore_networks:
        raise TargetNotAllowed(t.name, "network", network, _allowed(t))


def check_scope(catalog: Catalog, where: Scope, p: Params, repo: Repository) -> None:
    """Refuse what ``where``'s principal may not start (another tenant's VM, point,
    group or policy answers as a missing one)."""
    who = where.principal
    if where.everything:
        return
    assert who.tenant is not None
    if KINDS[p.op].job_kind in SYSTEM_WIDE:
        system_only(who, "repositories:maintain", f"a {p.op}")
    if isinstance(p, BackupImagesParams):
        system_only(who, "backups:run", "a backup of host images")
    if isinstance(p, BackupVmsParams):
        for vm in p.vms:
            where.check_vm(vm, "this server")
    elif isinstance(p, BackupGroupParams):
        for vm in p.vms:
            where.check_vm(vm, "this server")
        stored, tenant = _owner(catalog, "groups", p.group)
        if (stored and not where.owns_defined(tenant)) or (not stored and not p.vms):
            raise GroupError(f"there is no stored group named '{p.group}'. Nothing was "
                             "backed up.")
    elif isinstance(p, PolicyParams):
        stored, tenant = _owner(catalog, "policies", p.policy)
        if not stored:
            raise PolicyNotFound(f"No policy named {p.policy!r}.")
        where.check_policy(p.policy, tenant)
    elif isinstance(p, RestoreVmParams | RestoreDiskParams | RestoreGroupParams):
        # among the tenant's points alone: a prefix shared with another tenant's point
        # is neither ambiguous nor a hint of it (the job gets the full id, below)
        resolve_point(repo, p.point, owned=where.owns_vms)
        if isinstance(p, RestoreVmParams | RestoreDiskParams) and p.vm is not None:
            where.check_vm(p.vm, "this server")
        check_restore_target(who.tenant, p)
    elif isinstance(p, CloneParams):
        from stasis.app.instant import check_targets

        resolve_point(repo, p.point, owned=where.owns_vms)
        check_targets(who.tenant, storage=p.storage, network=p.network, pool=p.pool)
        if p.name not in who.tenant.vms:
            # The clone must be the tenant's once made: by its name (labels are not
            # copied).
            raise UsageError(f"tenant {who.tenant.name} owns VMs by name or label; a clone "
                             f"named {p.name!r} would not be its own. Nothing was made.")
    elif isinstance(p, DrillParams):
        # A drill makes networks and brings VMs up beside the originals: the system's.
        system_only(who, "restores:run", "a drill")
    elif isinstance(p, FinalizeParams):
        if _instant_owner(p.name) != who.tenant.name:
            raise InstantNotFound(f"No instant VM named '{p.name}' was started here. "
                                  "'stasis instant list' shows them.")
        if p.pool is not None:
            check_pool(who.tenant, p.pool)


def _instant_owner(name: str) -> str | None:
    from stasis.app.instant import owner_of

    return owner_of("instant", name)


def _same_work(p: Params, job: Job, repo_id: str) -> bool:
    """Whether queued or running ``job`` does the backup ``p`` asks for."""
    if job.repo != repo_id:
        return False
    op = job.params.get("op") or ("policy" if job.policy else None)
    if op != p.op:
        return False
    if isinstance(p, BackupVmsParams):
        return sorted(set(job.params.get("vms") or job.vms)) == sorted(set(p.vms))
    if isinstance(p, BackupGroupParams):
        return bool(job.params.get("group") == p.group
                    and sorted(job.params.get("vms") or []) == sorted(p.vms))
    if isinstance(p, PolicyParams):
        return job.policy == p.policy
    if isinstance(p, FinalizeParams):
        return bool(job.params.get("name") == p.name)
    return False


def start_job(catalog: Catalog, where: Scope, op: str, params: dict[str, Any], *,
              repo: Repository, wake: Callable[[], None] = lambda: None) -> JobStarted:
    """Queue a job of ``op`` with ``params`` on ``repo`` for the service, for
    ``where``'s principal: validated (UsageError naming the field), checked against
    its scope, audited; a backup of work already queued or running answers that job
    (``existing``). ``wake`` tells the service to look at its queue."""
    from stasis.app.submit import submit
    from stasis.catalog import JobStore

    who = where.principal
    data = {**params, "op": op, "repo": repo.url}
    p = parse_params(data)
    kind = KINDS[p.op]
    kind.check(p)
    try:
        check_scope(catalog, where, p, repo)
        if not where.everything and isinstance(p, RestoreVmParams | RestoreDiskParams
                                               | RestoreGroupParams | CloneParams):
            p = p.model_copy(update={"point": resolve_point(repo, p.point,
                                                            owned=where.owns_vms).id})
    except PermissionDenied as e:
        record(catalog, who, f"{kind.job_kind}.start", f"repository:{repo.id}",
               result="denied", detail={"op": op, "error": e.message})
        raise
    store = JobStore(catalog)
    tenant = who.tenant.name if who.tenant is not None else None
    with _QUEUEING:
        same = [j for j in store.list(states=("queued", "running"), kind=kind.job_kind,
                                      newest_first=False)
                if (kind.job_kind == "backup" or isinstance(p, FinalizeParams))
                and _same_work(p, j, repo.id)]
        if same:
            job = same[0]
            existing = True
        else:
            job = store.get(submit(catalog, op, p, by=who.shown, tenant=tenant,
                                   repo_id=repo.id))
            existing = False
    record(catalog, who, f"{kind.job_kind}.start", f"job:{job.id}",
           detail={"op": op, "vms": job.vms, "name": job.name, "existing": existing})
    if not existing:
        wake()
    return JobStarted(job=job_model(job.to_dict()), existing=existing)


def prune_now(catalog: Catalog, where: Scope, params: dict[str, Any], *,
              repo: Repository, connect: str) -> PruneReport:
    """A prune's decisions computed now, deleting nothing (a dry run: the function
    the job runs, with ``dry_run``)."""
    from stasis.app.policies import find_policy
    from stasis.hypervisor import libvirt_api as lv

    system_only(where.principal, "repositories:maintain", "a prune")
    p = parse_params({**params, "op": "prune", "repo": repo.url, "dry_run": True})
    assert isinstance(p, PruneParams)
    KINDS["prune"].check(p)

    def unrecorded(*_: Any) -> Any:
        raise UsageError("a dry run is not recorded")

    env = Env(open_repo=lambda: repo, connect=lambda: lv.connect(connect),
              catalog=lambda: opened(catalog), record=unrecorded, dirs=Where.default,
              clock=catalog.clock,
              find_policy=lambda c, name: find_policy(c, name, None, doing="pruned"))
    report: PruneReport = run_here(p, env)
    return report
