"""Job kinds: every operation that runs as a job, named by its ``op``, with the
parameters it takes, the VMs it occupies and the one function that runs it.

A kind is planned, then run. :meth:`Kind.plan` checks the parameters against the
world (opens the repository, resolves points, groups and policies) and says what
the job is called and which VMs it works on; :meth:`Kind.run` does the work inside
a :class:`~stasis.service.jobs.JobRun` and stops (:class:`~stasis.parallel.Cancelled`)
once the run's cancel event is set. A command runs its job here (:func:`run_here`);
``stasis serve`` runs a queued one (see :mod:`stasis.app.submit`) through the same
two functions, with its own repository, libvirt connection and credentials: the
parameters name the repository and never carry a secret.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    model_serializer,
)

from stasis.app.models import (
    BackupFailure,
    BackupResult,
    CloneModel,
    CopiedPoint,
    CopyResult,
    DiskRestore,
    Finalized,
    GcResult,
    GroupRestore,
    PointDecision,
    PruneReport,
    RepairResult,
    VerifyProblem,
    VerifyResult,
    VmBackupOutcome,
    VmRestore,
    WarningModel,
)
from stasis.app.tenants import claim_vm, owner_scope
from stasis.clock import SYSTEM_CLOCK, Clock
from stasis.errors import (
    BackendAccessDenied,
    GroupError,
    IntegrityError,
    NotImmutable,
    PointNotFound,
    StasisError,
    UsageError,
)
from stasis.parallel import Cancelled
from stasis.progress import NoProgress, Progress

if TYPE_CHECKING:
    import libvirt

    from stasis.app.jobs import Warn
    from stasis.catalog import Catalog
    from stasis.protection.verify import VerifyReport
    from stasis.recovery.vm import VmRestoreResult
    from stasis.repository import Credentials, Manifest, ObjectDamaged, Repository
    from stasis.service.jobs import JobRun
    from stasis.service.policy import Policy
    from stasis.service.policy_run import UnitProgress

# ------------------------------------------------------------------ parameters


class Params(BaseModel):
    """What a job of some kind needs to run later, in another process.

    ``repo`` names the repository (a path or URL); None when the caller opened it
    (a command running its job here). Unknown fields are refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    op: str  # the kind, a key of KINDS (each subclass fixes it)
    repo: str | None = None


class BackupImagesParams(Params):
    op: Literal["backup.images"] = "backup.images"
    paths: list[Path]
    name: str | None = None
    tags: dict[str, str] = {}
    format: str | None = None


class BackupVmsParams(Params):
    op: Literal["backup.vms"] = "backup.vms"
    vms: list[str]
    tags: dict[str, str] = {}
    parallel: int = 2
    consistency: str = "crash"
    require: str | None = None


class BackupGroupParams(Params):
    op: Literal["backup.group"] = "backup.group"
    group: str
    vms: list[str] = []  # members added to a stored group's (or all, without one)
    consistency: str | None = None
    require: str | None = None
    tags: dict[str, str] = {}


class _Placed(Params):
    """Params of work that may put disks in a libvirt pool (``pool``). A pool not named
    is left out of the stored params, so such a job's params read as they did before
    pools were a target."""

    @model_serializer(mode="wrap")
    def _no_pool(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("pool", "") is None:
            del data["pool"]
        return data


class RestoreDiskParams(_Placed):
    op: Literal["restore.disk"] = "restore.disk"
    point: str
    to: Path | None = None  # the image or device; with ``pool``, the volume's name
    vm: str | None = None
    disk: str | None = None
    format: str | None = None
    force: bool = False
    pool: str | None = None  # a new volume of this libvirt storage pool


class RestoreVmParams(_Placed):
    op: Literal["restore.vm"] = "restore.vm"
    point: str
    vm: str | None = None
    name: str | None = None
    storage: Path | None = None
    network: str | None = None
    start: bool = False
    in_place: bool = False
    pool: str | None = None  # the disks as volumes of this libvirt storage pool


class RestoreGroupParams(_Placed):
    op: Literal["restore.group"] = "restore.group"
    point: str
    suffix: str
    storage: Path | None = None
    network: str | None = None
    start: bool = False
    order: list[str] | None = None
    pool: str | None = None


class FinalizeParams(_Placed):
    op: Literal["instant.finalize"] = "instant.finalize"
    name: str  # the instant VM
    pool: str | None = None  # copy to volumes of this pool (default: its storage dir)


class CloneParams(_Placed):
    op: Literal["clone"] = "clone"  # a full clone of a point (a linked one is instant)
    point: str
    name: str  # the new VM
    vm: str | None = None
    storage: Path | None = None
    network: str | None = None
    start: bool = False
    pool: str | None = None


class VerifyParams(Params):
    op: Literal["verify"] = "verify"
    points: list[str] | None = None  # None: every point
    deep: bool = False
    # Heal damaged or missing chunks from this repository (a name or location,
    # opened as a copy's destination is).
    repair_from: str | None = None


class PruneParams(Params):
    op: Literal["prune"] = "prune"
    keep: dict[str, int] = {}  # a count per retention rule ({"daily": 7})
    within: str | None = None
    min_age: str | None = None
    timezone: str = "UTC"
    policy: str | None = None  # its retention, over the chains its runs made
    name: str | None = None
    vm: str | None = None
    dry_run: bool = False


class GcParams(Params):
    op: Literal["gc"] = "gc"
    dry_run: bool = False
    wait: float = 600.0  # stasis.repository.gc.DEFAULT_WAIT


class CopyParams(Params):
    op: Literal["copy"] = "copy"
    to: str  # the destination: a configured repository's name, or a location
    points: list[str] | None = None  # ids, prefixes, NAME@latest
    name: str | None = None  # every point of this name
    vm: str | None = None  # every point holding this VM
    all: bool = False
    # The points this policy's runs made that the destination lacks (newer than its
    # newest of each chain), then the policy's retention at the destination.
    policy: str | None = None
    dry_run: bool = False
    limit_rate: int | None = None  # bytes sent a second


class DrillCheckParams(BaseModel):
    """One check of a drill (see :mod:`stasis.recovery.drill.checks`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    kind: str
    arg: str = ""
    vm: str | None = None  # a VM of the point (None: every VM)
    timeout_s: float | None = None  # None: the default


class DrillParams(Params):
    op: Literal["drill"] = "drill"
    target: str  # a point (id, prefix, NAME@latest), a VM's or a group's name
    mode: str = "restore"  # or instant
    network: str | None = None  # None: a new isolated network of the drill's own
    checks: list[DrillCheckParams] = []
    order: list[str] | None = None
    storage: Path | None = None
    pool: str | None = None  # a restore drill's disks as volumes of this libvirt pool
    keep: bool = False
    policy: str | None = None  # the policy whose drill section this runs


class PolicyParams(Params):
    op: Literal["policy"] = "policy"
    policy: str
    slot: str = "now"  # the schedule's slot it runs for (ISO 8601), or "now"


AnyParams = Annotated[
    BackupImagesParams | BackupVmsParams | BackupGroupParams | RestoreDiskParams
    | RestoreVmParams | RestoreGroupParams | VerifyParams | PruneParams | GcParams
    | CopyParams | PolicyParams | FinalizeParams | CloneParams | DrillParams,
    Discriminator("op"),
]
PARAMS: TypeAdapter[AnyParams] = TypeAdapter(AnyParams, config=ConfigDict(defer_build=True))


def parse_params(data: dict[str, Any] | Params) -> Params:
    """The parameters of a job of any kind (``data["op"]`` names it), validated; a
    UsageError says what is wrong."""
    if isinstance(data, Params):
        data = data.model_dump(mode="json")
    if data.get("op") not in KINDS:
        raise UsageError(f"'{data.get('op')}' is not a job kind ({', '.join(KINDS)})")
    try:
        return PARAMS.validate_python(data)
    except ValidationError as e:
        raise UsageError(f"the parameters of a {data['op']} job are not valid: "
                         + "; ".join(f"{'.'.join(str(x) for x in err['loc'][1:]) or 'op'}: "
                                     f"{err['msg']}" for err in e.errors())) from None


def job_params(job_params: dict[str, Any], policy: str | None) -> dict[str, Any]:
    """The registry parameters of a catalog job's ``params``; a policy's job queued
    before kinds were named (params ``{"policy", "slot"}``) is a policy run."""
    if "op" not in job_params and policy is not None:
        return {"op": "policy", **job_params}
    return job_params


# ------------------------------------------------------------------ where a job runs


@dataclass(frozen=True)
class Where:
    """Where a run keeps its own sockets (``run``) and libvirt jobs' scratch files
    (``scratch``, which QEMU's user must reach)."""

    run: Path
    scratch: Path

    @classmethod
    def default(cls) -> Where:
        from stasis.settings import run_dir, scratch_dir

        return cls(run_dir(), scratch_dir())


Recorder = Callable[["Plan", Params], AbstractContextManager["JobRun"]]


@dataclass
class Env:
    """What the process that runs a job provides: its repository (opened with its
    own credentials), libvirt, the catalog, where files go, the clock, and how the
    job is recorded; and what an interface hears while the job runs."""

    open_repo: Callable[[], Repository]
    connect: Callable[[], libvirt.virConnect]
    catalog: Callable[[], AbstractContextManager[Catalog]]
    record: Recorder
    # Found only once the work begins (after the repository opened): a refused
    # command leaves no directory behind.
    dirs: Callable[[], Where]
    clock: Clock = SYSTEM_CLOCK
    find_policy: Callable[[Catalog, str], Policy] | None = None
    retention: Callable[[Repository, Policy, datetime, JobRun], None] | None = None
    unit_progress: UnitProgress | None = None  # a sink per unit of work, given the cancel
    progress: Progress | None = None
    lanes: Callable[[str], Progress] | None = None  # per VM, for backups of several
    on_wait: Callable[[str, float], None] | None = None  # gc waits for a lock holder
    on_report: Callable[[VerifyResult], None] | None = None  # before verify fails
    on_damaged: Callable[[str, ObjectDamaged], None] | None = None
    # A copy's destination, by the name or location its parameters give, opened with
    # this process's credentials for it (None: copies cannot run here).
    open_destination: Callable[[str], Repository] | None = None
    # The repository's credentials, concrete, for a detached export (an instant drill's).
    credentials: Callable[[], Credentials] | None = None
    _repo: Repository | None = field(default=None, repr=False)
    _conn: libvirt.virConnect | None = field(default=None, repr=False)
    _where: Where | None = field(default=None, repr=False)

    def where(self) -> Where:
        if self._where is None:
            self._where = self.dirs()
        return self._where

    def repo(self) -> Repository:
        if self._repo is None:
            self._repo = self.open_repo()
        return self._repo

    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    def sink(self, cancel: threading.Event, lane: str | None = None) -> Progress:
        """The progress sink of the work; it raises Cancelled once ``cancel`` is set."""
        if lane is not None and self.lanes is not None:
            base: Progress = self.lanes(lane)
        elif self.progress is not None:
            base = self.progress
        elif self.unit_progress is not None:
            base = self.unit_progress(cancel) or NoProgress()
        else:
            base = NoProgress()
        return CancelCheck(base, cancel)


class CancelCheck:
    """A progress sink that stops the work (Cancelled) at the next step once the
    job's cancel event is set: before a phase starts and after each piece."""

    def __init__(self, inner: Progress, cancel: threading.Event) -> None:
        self.inner, self.cancel = inner, cancel

    def _check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    def start(self, description: str, total: int) -> None:
        self._check()
        self.inner.start(description, total)
        self._check()

    def advance(self, amount: int) -> None:
        self.inner.advance(amount)
        self._check()

    def finish(self) -> None:
        self.inner.finish()


@dataclass
class Plan:
    """A job planned: its name and VMs, the repository it works on, and what the
    planning found that the run uses (``state``: resolved points, a group's plan)."""

    name: str
    vms: list[str]
    repo: Repository | None = None
    policy: str | None = None
    state: Any = None


P = TypeVar("P", bound=Params)


@dataclass(frozen=True)
class Kind(Generic[P]):
    """One kind of job. ``job_kind`` is the catalog's kind (backup, restore, ...);
    ``occupies_vms``: its VMs may be in no other job at once (a backup, a restore),
    where a verify or a prune only reads what the VMs' points hold."""

    op: str
    job_kind: str
    params: type[P]
    title: Callable[[P], str]  # the job's name before it is planned (a queued job)
    plan: Callable[[P, Env], Plan]
    run: Callable[[P, Plan, JobRun, Env], Any]
    occupies_vms: bool = True
    recorded: Callable[[P], bool] = lambda p: True  # a dry run changes nothing: unrecorded
    check: Callable[[P], None] = lambda p: None  # what is refused before anything is done


def catalog_opener(url: str | None) -> Callable[[], AbstractContextManager[Catalog]]:
    """Opens the catalog at ``url`` (None: the default) for the time a job uses it."""

    def use() -> AbstractContextManager[Catalog]:
        from stasis.catalog import Catalog

        return Catalog.open(url)

    return use


def env_here(*, catalog: str | None, warn: Warn, open_repo: Callable[[], Repository],
             connect: str | None = None, where: Where | None = None, **hear: Any) -> Env:
    """The environment of a job that a command runs in this process: recorded in
    ``catalog`` (or, after ``warn``, unrecorded), with the caller's repository;
    ``hear`` are the :class:`Env` fields an interface listens with (``progress``...)."""
    from stasis.app.jobs import foreground_job
    from stasis.hypervisor import libvirt_api as lv

    def record(plan: Plan, params: Params) -> AbstractContextManager[JobRun]:
        return foreground_job(catalog, KINDS[params.op].job_kind, plan.name,
                              warn=warn, vms=plan.vms,
                              repo=plan.repo.id if plan.repo is not None else None,
                              params=params.model_dump(mode="json"))

    return Env(open_repo=open_repo, connect=lambda: lv.connect(connect or lv.DEFAULT_URI),
               catalog=catalog_opener(catalog), record=record,
               dirs=(lambda: where) if where is not None else Where.default, **hear)


def run_here(params: Params, env: Env) -> Any:
    """Plan and run a job now, in this process, recorded by ``env.record`` (a dry run
    unrecorded); return its result model."""
    from stasis.service.jobs import JobRun

    kind: Kind[Any] = KINDS[params.op]
    plan = kind.plan(params, env)
    if not kind.recorded(params):
        return kind.run(params, plan, JobRun(None, None), env)
    with env.record(plan, params) as job:
        return kind.run(params, plan, job, env)


# ------------------------------------------------------------------ backups


def _images_title(p: BackupImagesParams) -> str:
    return p.name or (p.paths[0].name if p.paths else "images")


def _plan_images(p: BackupImagesParams, env: Env) -> Plan:
    return Plan(_images_title(p), [], env.repo())


def _run_images(p: BackupImagesParams, plan: Plan, job: JobRun, env: Env) -> BackupResult:
    from stasis.protection.backup import back_up_images

    repo = env.repo()
    m = back_up_images(repo, p.paths, name=p.name, tags=dict(p.tags) or None, fmt=p.format,
                       progress=env.sink(job.cancel), run_dir=env.where().run)
    job.set_vms([vm.name for vm in m.vms])
    job.point(m, repo)
    return BackupResult.of(m)


def _check_vms(p: BackupVmsParams) -> None:
    from stasis.protection.consistency import level_rank

    level_rank(p.consistency)
    if p.require is not None:
        level_rank(p.require)


def _repo_meanwhile(env: Env, work: Callable[[], object]) -> Repository:
    """The repository, opened here while ``work`` (which needs no key) runs in a thread.

    Opening a passphrase slot is Argon2id's memory-hard derivation (0.15-0.4 s), which
    releases the GIL: libvirt's connection and the modules the work loads proceed
    meanwhile instead of after it. A prompt for the passphrase stays in this thread.
    Where both fail, ``work``'s error is raised, as when it ran first.
    """
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as e:  # raised in the caller's thread, below
            failed.append(e)

    helper = threading.Thread(target=run, name="prepare", daemon=True)
    helper.start()
    try:
        repo = env.repo()
    except StasisError:
        helper.join()
        if failed:
            raise failed[0] from None
        raise
    helper.join()
    if failed:
        raise failed[0]
    return repo


def _prepare_vms(env: Env) -> None:
    import stasis.protection.vm  # noqa: F401  (loaded beside the key's derivation)

    env.conn()


def _plan_vms(p: BackupVmsParams, env: Env) -> Plan:
    _check_vms(p)
    repo = _repo_meanwhile(env, lambda: _prepare_vms(env))
    return Plan(",".join(dict.fromkeys(p.vms)), list(dict.fromkeys(p.vms)), repo)


def _run_vms(p: BackupVmsParams, plan: Plan, job: JobRun,
             env: Env) -> list[VmBackupOutcome]:
    from stasis.protection.vm import back_up_vms

    repo = env.repo()
    done = back_up_vms(env.conn(), repo, plan.vms, run_dir=env.where().run,
                       scratch_dir=env.where().scratch, tags=dict(p.tags) or None,
                       progress=lambda vm: env.sink(job.cancel, vm), parallel=p.parallel,
                       consistency=p.consistency, require=p.require)
    outcomes = []
    for o in done:
        if o.point is not None:
            job.point(o.point, repo)
            outcomes.append(VmBackupOutcome(name=o.name, point=BackupResult.of(o.point)))
            continue
        error = o.error or StasisError(f"{o.name}: no point was made")
        job.failed_part(o.name, error)
        outcome = VmBackupOutcome(name=o.name, failure=BackupFailure(
            name=o.name, error=error.message, exit_code=error.exit_code))
        outcome.error = error
        outcomes.append(outcome)
    return outcomes


@dataclass
class _GroupPlan:
    stored: bool
    level: str
    require: str | None
    hooks: Any


def _check_group(p: BackupGroupParams) -> None:
    from stasis.protection.groups import check_level

    if p.consistency is not None:
        check_level(p.consistency)
    if p.require is not None:
        check_level(p.require, "--require")


def _plan_group(p: BackupGroupParams, env: Env) -> Plan:
    from stasis.catalog import GroupStore
    from stasis.protection.groups import check_levels, plan_backup

    _check_group(p)
    extra = list(dict.fromkeys(p.vms))
    name = p.group
    conn = env.conn()
    with env.catalog() as c:
        stored = GroupStore(c).get(name)
        owner = owner_scope(c, stored.tenant, conn) if stored is not None else None
    if stored is not None:
        g = stored.group
        gp = plan_backup(conn, g, consistency=p.consistency or g.consistency,
                         require=p.require if p.require is not None else g.require,
                         hooks=g.hooks, extra=extra)
        if owner is not None:
            # a tenant's group acts on the tenant's VMs of now only (see app.tenants)
            gp = replace(gp, vms=[v for v in gp.vms if owner.owns_vm(v)],
                         missing=gp.missing + [v for v in g.members + extra
                                               if v in gp.vms and not owner.owns_vm(v)])
        if gp.missing:
            raise GroupError(
                f"group '{name}' names VMs that do not exist: {', '.join(gp.missing)}. "
                "Nothing was backed up. Define them, or remove them from the group with "
                f"'stasis group edit {name} --remove-vm NAME'.")
        if not gp.vms:
            raise GroupError(f"group '{name}' has no members now: no VM is named in it or "
                             "matches its selectors. Nothing was backed up.")
        names, state = gp.vms, _GroupPlan(True, gp.consistency, gp.require, gp.hooks)
    elif not extra:
        raise UsageError(f"there is no stored group named '{name}': give the members with "
                         f"--vm, or store the group with 'stasis group create {name}'. "
                         "Nothing was backed up.")
    else:
        names, state = extra, _GroupPlan(False, p.consistency or "crash", p.require, None)
    check_levels(state.level, state.require, state.hooks)
    return Plan(name, names, env.repo(), state=state)


def _run_group(p: BackupGroupParams, plan: Plan, job: JobRun, env: Env) -> BackupResult:
    from stasis.protection.capture import back_up_members

    repo, g = env.repo(), plan.state
    m = back_up_members(env.conn(), repo, plan.vms, point_name=plan.name, kind="group",
                        run_dir=env.where().run, scratch_dir=env.where().scratch,
                        tags=dict(p.tags) or None, progress=env.sink(job.cancel),
                        cancel=job.cancel, consistency=g.level, require=g.require,
                        hooks=g.hooks)
    job.point(m, repo)
    return BackupResult.of(m, stored_group=g.stored)


# ------------------------------------------------------------------ restores


def _record_vm(job: JobRun, m: Manifest, v: VmRestoreResult) -> None:
    """A restored VM in its restore job's result."""
    written = sum(d.bytes_written for d in v.disks)
    job.result[v.vm] = {"point": m.id, "point_name": m.name, "restored_as": v.name,
                        "in_place": v.in_place, "started": v.started,
                        "disks": {d.disk: d.target for d in v.disks},
                        "bytes_written": written, "error": None}
    job.bytes_written += written


def _claim(job: JobRun, env: Env, vms: list[str]) -> None:
    """The VMs a tenant's job defined are the tenant's (see app.tenants)."""
    tenant = job.job.tenant if job.job is not None else None
    if tenant is None or not vms:
        return
    with env.catalog() as c:
        for vm in vms:
            claim_vm(c, tenant, vm)


def _check_disk(p: RestoreDiskParams) -> None:
    if p.pool is None and p.to is None:
        raise UsageError("to: a disk restore needs the path of the image to write (or "
                         "--pool); nothing was restored")
    if p.pool is not None and p.force:
        raise UsageError("--force overwrites a file or device; a pool's volume is never "
                         "overwritten: name a new one with --to. Nothing was restored.")


def _check_place(p: RestoreVmParams | RestoreGroupParams | CloneParams) -> None:
    if p.pool is not None and p.storage is not None:
        raise UsageError("--pool and --storage are two places for the disks: give one; "
                         "nothing was restored")
    if isinstance(p, RestoreVmParams) and p.in_place and (p.pool or p.storage):
        raise UsageError("an in-place restore writes over the VM's own disks: it takes no "
                         "--pool or --storage; nothing was restored")


def _plan_disk(p: RestoreDiskParams, env: Env) -> Plan:
    r = env.repo()
    m = r.resolve(p.point)
    vms = [p.vm] if p.vm else [v.name for v in m.vms][:1] if len(m.vms) == 1 else []
    return Plan(m.name, vms, r, state=m)


def _run_disk(p: RestoreDiskParams, plan: Plan, job: JobRun, env: Env) -> DiskRestore:
    from stasis.recovery.restore import restore_disk

    m = plan.state
    if p.pool is not None:
        from stasis.recovery.target import restore_disk_to_pool

        result = restore_disk_to_pool(env.conn(), env.repo(), m, pool=p.pool,
                                      volume=str(p.to) if p.to is not None else None,
                                      vm=p.vm, disk=p.disk, fmt=p.format,
                                      progress=env.sink(job.cancel), run_dir=env.where().run)
    else:
        assert p.to is not None  # _check_disk
        result = restore_disk(env.repo(), m, target=p.to, vm=p.vm, disk=p.disk, fmt=p.format,
                              force=p.force, progress=env.sink(job.cancel),
                              run_dir=env.where().run)
    job.set_vms([result.vm])
    job.result[result.vm] = {
        "point": m.id, "point_name": m.name, "disks": {result.disk: result.target},
        "format": result.format, "bytes_written": result.bytes_written, "error": None,
        **({"pool": result.pool, "volume": result.volume} if result.pool else {})}
    job.bytes_written = result.bytes_written
    return DiskRestore.model_validate(result.to_dict())


def _plan_restore_vm(p: RestoreVmParams, env: Env) -> Plan:
    env.conn()
    r = env.repo()
    m = r.resolve(p.point)
    return Plan(m.name, [p.vm] if p.vm else [v.name for v in m.vms if v.kind == "vm"][:1], r,
                state=m)


def _run_restore_vm(p: RestoreVmParams, plan: Plan, job: JobRun, env: Env) -> VmRestore:
    from stasis.recovery.vm import restore_vm

    result = restore_vm(env.conn(), env.repo(), plan.state, vm=p.vm, name=p.name,
                        storage=p.storage, network=p.network, start=p.start,
                        in_place=p.in_place, progress=env.sink(job.cancel),
                        run_dir=env.where().run, pool=p.pool)
    job.set_vms([result.vm])
    _record_vm(job, plan.state, result)
    if not result.in_place:
        _claim(job, env, [result.name])
    return VmRestore.model_validate(result.to_dict())


def _plan_restore_group(p: RestoreGroupParams, env: Env) -> Plan:
    env.conn()
    r = env.repo()
    m = r.resolve(p.point)
    return Plan(m.name, [v.name for v in m.vms if v.kind == "vm"], r, state=m)


def _run_restore_group(p: RestoreGroupParams, plan: Plan, job: JobRun,
                       env: Env) -> GroupRestore:
    from stasis.recovery.group import restore_group

    result = restore_group(env.conn(), env.repo(), plan.state, suffix=p.suffix,
                           storage=p.storage, network=p.network, start=p.start,
                           order=p.order, progress=env.sink(job.cancel),
                           run_dir=env.where().run, pool=p.pool)
    for v in result.vms:
        _record_vm(job, plan.state, v)
    _claim(job, env, [v.name for v in result.vms if not v.in_place])
    return GroupRestore.model_validate(result.to_dict())


# ------------------------------------------------------------------ instant finalize, clones


def _plan_finalize(p: FinalizeParams, env: Env) -> Plan:
    from stasis.recovery.instant import find_instant

    find_instant(p.name)  # InstantNotFound: nothing to finalize
    env.conn()
    return Plan(p.name, [p.name], env.repo())


def _run_finalize(p: FinalizeParams, plan: Plan, job: JobRun, env: Env) -> Finalized:
    from stasis.recovery.instant import finalize

    # Cancelled before the pivots, the VM runs on from the export, no copy left.
    result = finalize(env.conn(), env.repo(), p.name, progress=env.sink(job.cancel),
                      pool=p.pool)
    job.result[p.name] = {"finalized": p.name, "disks": dict(result.disks), "error": None}
    _claim(job, env, [p.name])
    return Finalized.model_validate(result.to_dict())


def _plan_clone(p: CloneParams, env: Env) -> Plan:
    from stasis.recovery.instant import check_new_vm
    from stasis.recovery.vm import DEFAULT_STORAGE, select_vm

    r = env.repo()
    m = r.resolve(p.point)
    from stasis.recovery.clone import check_pool

    check_pool(env.conn(), p.pool, linked=False)
    check_new_vm(env.conn(), p.name, (p.storage or DEFAULT_STORAGE).absolute(), p.network)
    source = select_vm(m, p.vm).name
    # The source VM, as a restore's, and the new name: never two jobs making one VM.
    return Plan(p.name, list(dict.fromkeys([source, p.name])), r, state=m)


def _run_clone(p: CloneParams, plan: Plan, job: JobRun, env: Env) -> CloneModel:
    from stasis.recovery.clone import full_clone

    m = plan.state
    result = full_clone(env.conn(), env.repo(), m, name=p.name, vm=p.vm, storage=p.storage,
                        network=p.network, start=p.start, run_dir=env.where().run,
                        progress=env.sink(job.cancel), pool=p.pool)
    job.result[result.vm] = {"point": m.id, "point_name": m.name, "cloned_as": result.name,
                             "started": result.started, "disks": dict(result.disks),
                             "bytes_written": result.bytes_written, "error": None}
    job.bytes_written += result.bytes_written
    _claim(job, env, [result.name])
    return CloneModel.model_validate(result.to_dict())


# ------------------------------------------------------------------ verify, prune, gc


def _plan_verify(p: VerifyParams, env: Env) -> Plan:
    repo = env.repo()
    chosen = [repo.resolve(x) for x in p.points] if p.points else None
    covered = chosen if chosen is not None else repo.points()
    vms = list(dict.fromkeys(vm.name for m in covered for vm in m.vms))
    name = ",".join(dict.fromkeys(m.name for m in covered)) if chosen else "all points"
    other = None
    if p.repair_from is not None:
        from stasis.protection.copy import copy_mode

        if env.open_destination is None:
            raise UsageError(f"the repository to repair from, '{p.repair_from}', cannot be "
                             "opened here; nothing was verified")
        other = env.open_destination(p.repair_from)
        copy_mode(other, repo)  # refused before anything is read
    return Plan(name, vms, repo, state=(chosen, covered, other))


def _run_verify(p: VerifyParams, plan: Plan, job: JobRun, env: Env) -> VerifyResult:
    from stasis.protection.verify import verify

    chosen, covered, other = plan.state
    immutable, warnings = _probe_lock(env.repo(), job)
    report = verify(env.repo(), chosen, deep=p.deep, progress=env.sink(job.cancel),
                    repair_from=other)
    _record_verify(job, covered, report)
    result = VerifyResult(
        ok=report.ok, deep=report.deep, points=report.points, chunks=report.chunks,
        bytes_checked=report.bytes_checked, quarantined=list(report.quarantined),
        problems=[VerifyProblem(**x.__dict__, description=x.describe())
                  for x in report.problems],
        repair=None if report.repair is None else RepairResult.model_validate(
            report.to_dict()["repair"]),
        immutable=immutable, warnings=[WarningModel.of(w) for w in warnings])
    if env.on_report is not None:
        env.on_report(result)
    if report.repair is not None and not report.ok:
        raise IntegrityError(
            f"verify found {len(report.damaged)} damaged or missing chunk(s) and healed "
            f"{len(report.repair.healed)} from {report.repair.source_url}; "
            f"{len(report.repair.unhealed)} could not be healed (the other repository "
            "lacks them too, or holds none of their points)"
            + ("" if len(report.problems) == sum(map(len, report.reported.values())) else
               "; damaged indexes or manifests are not repaired") + ".")
    if not report.ok:
        raise IntegrityError(
            f"verify found {len(report.problems)} problem(s); the damaged chunks were "
            "moved to quarantine and the next backup that meets their data stores it "
            "again."
        )
    return result


def _probe_lock(repo: Repository, job: JobRun) -> tuple[bool | None, list[NotImmutable]]:
    """An immutable repository's Object Lock probe, before the points are read: whether
    the storage still enforces the locks (None: not immutable, or not probed), and
    warning 56 when it does not. Only the probe object is written."""
    if repo.immutability is None:
        return None, []
    try:
        reason = repo.probe_lock()
    except BackendAccessDenied as e:  # credentials that may read but not write
        job.log("warning", f"the Object Lock probe could not be written: {e.message}")
        return None, []
    if reason is None:
        job.log("info", f"Object Lock probe: the storage enforces the "
                        f"{repo.immutability.describe()}")
        job.result["object-lock"] = {"probe": "object-lock", "ok": True, "warnings": []}
        return True, []
    warning = NotImmutable(repo.url, reason)
    job.log("warning", warning.full_text)
    job.result["object-lock"] = {"probe": "object-lock", "ok": False,
                                 "warnings": [warning.to_dict()]}
    return False, [warning]


def _record_verify(job: JobRun, covered: list[Manifest], report: VerifyReport) -> None:
    """Each point's outcome in the job's result, keyed by point id."""
    for m in covered:
        problems = [x.describe() for x in report.problems if x.point == m.id]
        left = [x for x in report.problems if x.point == m.id and not x.healed]
        job.result[m.id] = {"point": m.id, "point_name": m.name,
                            "vms": [vm.name for vm in m.vms], "ok": not left,
                            "problems": problems,
                            "error": f"{len(left)} problem(s)" if left else None}
    for x in report.problems:  # a problem outside the chosen points (a damaged manifest)
        if x.point not in job.result:
            job.result[x.point] = {"point": x.point, "ok": False, "problems": [x.describe()],
                                   "error": x.problem}
    job.bytes_read = report.bytes_checked
    job.log("info", f"verified ({'deep' if report.deep else 'quick'}) {report.points} "
            f"point(s), {report.chunks} chunk(s), {report.bytes_checked} bytes read; "
            f"{len(report.problems)} problem(s), {len(report.quarantined)} quarantined")
    for q in report.quarantined:
        job.log("warning", f"quarantined: {q}")
    if report.repair is not None:
        r = report.repair
        job.result["repair"] = {"ok": not r.unhealed, "source": r.source,
                                "healed": r.healed, "unhealed": r.unhealed,
                                "error": None if not r.unhealed else
                                f"{len(r.unhealed)} chunk(s) not healed"}
        for h in r.chunks:
            job.log("info" if h.healed else "error",
                    f"chunk {h.chunk[:16]}: healed from {r.source_url}" if h.healed
                    else f"chunk {h.chunk[:16]}: not healed: {h.reason}")


def _prune_title(p: PruneParams) -> str:
    return (f"policy {p.policy}" if p.policy else p.name) or (
        f"vm {p.vm}" if p.vm else "all chains")


@dataclass
class _PrunePlan:
    rules: Any  # RetentionRules
    names: list[str | None]
    now: datetime


def _check_prune(p: PruneParams) -> Any:
    """The rules given by hand (RetentionRules), checked as far as they go without
    the policy."""
    from stasis.app.prune import retention_rules

    try:
        rules = retention_rules(p.keep, within=p.within, min_age=p.min_age,
                                timezone=p.timezone)
    except ValueError as e:
        raise UsageError(f"{e}; nothing was deleted") from None
    if p.policy is not None:
        if rules.keeps_anything or p.name is not None or p.vm is not None:
            raise UsageError("--policy brings its own rules and chains: give no --keep-*, "
                             "--name or --vm with it; nothing was deleted")
    elif not rules.keeps_anything:
        raise UsageError(
            "give at least one --keep-last, --keep-hourly, --keep-daily, --keep-weekly, "
            "--keep-monthly, --keep-yearly or --keep-within: prune never removes every "
            "point by default; nothing was deleted"
        )
    if p.name is not None and p.vm is not None:
        raise UsageError("--name and --vm select points in two ways; give one; nothing was "
                         "deleted")
    return rules


def _plan_prune(p: PruneParams, env: Env) -> Plan:
    from stasis.service.prune import policy_chains

    rules = _check_prune(p)
    pol = None
    if p.policy is not None:
        if env.find_policy is None:
            raise UsageError(f"policy '{p.policy}' cannot be looked up here; nothing was "
                             "deleted")
        with env.catalog() as c:
            pol = env.find_policy(c, p.policy)
        rules = pol.retention_rules()
        if not rules.keeps_anything:
            raise UsageError(f"policy '{p.policy}' has no retention rules: nothing to prune, "
                             "nothing was deleted")
    r = env.repo()
    names: list[str | None] = [p.name]
    if pol is not None:
        names = list(policy_chains(r, pol.name))
        if not names:
            raise PointNotFound(f"policy {pol.name}")
    return Plan(_prune_title(p), [p.vm] if p.vm else [], r,
                state=_PrunePlan(rules, names, env.clock.now()))


def _run_prune(p: PruneParams, plan: Plan, job: JobRun, env: Env) -> PruneReport:
    from stasis.service.prune import prune_points

    pp: _PrunePlan = plan.state
    if job.cancel.is_set():
        raise Cancelled()
    result = prune_points(env.repo(), pp.rules, now=pp.now, names=pp.names, vm=p.vm,
                          dry_run=p.dry_run, on_damaged=env.on_damaged)
    if not p.dry_run:
        for d in result.decisions:
            job.result[d.point.id] = {
                "point": d.point.id, "point_name": d.point.name,
                "time": d.point.time.isoformat(),
                "action": "keep" if d.keep else "removed", "reasons": list(d.reasons)}
    zone = pp.rules.zone
    return PruneReport(
        dry_run=p.dry_run, now=pp.now.isoformat(), rules=pp.rules.to_dict(),
        rules_text=pp.rules.describe(),
        points=[PointDecision.model_validate(d.to_dict(zone)) for d in result.decisions],
        kept=[d.point.id for d in result.decisions if d.keep],
        removed=[d.point.id for d in result.decisions if not d.keep],
    )


def _check_gc(p: GcParams) -> None:
    if p.wait < 0:
        raise UsageError("--wait takes a number of seconds, 0 or more")


def _plan_gc(p: GcParams, env: Env) -> Plan:
    _check_gc(p)
    return Plan("gc", [], env.repo())


def _run_gc(p: GcParams, plan: Plan, job: JobRun, env: Env) -> GcResult:
    from stasis.repository.gc import collect_garbage

    report = collect_garbage(env.repo(), dry_run=p.dry_run, wait=p.wait,
                             progress=env.sink(job.cancel), on_wait=env.on_wait)
    if not p.dry_run:
        job.result["gc"] = report.to_dict()
    return GcResult.model_validate(report.to_dict())


# ------------------------------------------------------------------ copies


def _copy_title(p: CopyParams) -> str:
    what = (",".join(p.points) if p.points else p.name or (f"vm {p.vm}" if p.vm else None)
            or (f"policy {p.policy}" if p.policy else None) or "all points")
    return f"{what} to {p.to}"


def _check_copy(p: CopyParams) -> None:
    given = [x for x in (p.points, p.name, p.vm, p.all or None, p.policy) if x]
    if len(given) != 1:
        raise UsageError("say which points to copy: point ids, --name NAME, --vm VM, "
                         "--all or a policy (one of them); nothing was copied")
    if p.limit_rate is not None and p.limit_rate <= 0:
        raise UsageError("--limit-rate takes a positive number of bytes a second (for "
                         "example 10M); nothing was copied")


def _plan_copy(p: CopyParams, env: Env) -> Plan:
    from stasis.protection.copy import copy_mode

    _check_copy(p)
    if env.open_destination is None:
        raise UsageError(f"the destination '{p.to}' cannot be opened here; nothing was "
                         "copied")
    src = env.repo()
    dst = env.open_destination(p.to)
    copy_mode(src, dst)  # refused before anything is read
    policy = None
    if p.policy is not None:
        if env.find_policy is None:
            raise UsageError(f"policy '{p.policy}' cannot be looked up here; nothing was "
                             "copied")
        with env.catalog() as c:
            policy = env.find_policy(c, p.policy)
        chosen = _policy_points_to_copy(src, dst, p.policy, env)
    elif p.points:
        chosen = [src.resolve(x) for x in p.points]
    else:
        every = src.points(on_damaged=env.on_damaged)
        if p.name is not None:
            chosen = [m for m in every if m.name == p.name]
        elif p.vm is not None:
            chosen = [m for m in every if any(vm.name == p.vm for vm in m.vms)]
        else:
            chosen = every
        if not chosen and not p.all:
            raise PointNotFound(p.name if p.name is not None else f"vm {p.vm}")
    vms = list(dict.fromkeys(vm.name for m in chosen for vm in m.vms))
    return Plan(_copy_title(p), vms, src, policy=p.policy, state=(dst, chosen, policy))


def _policy_points_to_copy(src: Repository, dst: Repository, policy: str,
                           env: Env) -> list[Manifest]:
    """The points of ``policy``'s chains at ``src`` that ``dst`` lacks and that are newer
    than the newest point of their chain there: what the destination's own retention
    pruned is not sent again (deletions never propagate, in either direction)."""
    mine = [m for m in src.points(on_damaged=env.on_damaged)
            if m.tags.get("policy") == policy]
    at_dst = set(dst.point_ids())
    # The newest of each chain at the destination, by the times the source gives (a
    # point there is the same manifest); one pruned at the source is older than the
    # source's newest, which the source keeps.
    newest: dict[str, tuple[str, str]] = {}
    for m in mine:
        if m.id in at_dst:
            newest[m.name] = max(newest.get(m.name, ("", "")), (m.time, m.id))
    return [m for m in mine if m.id not in at_dst
            and (m.time, m.id) > newest.get(m.name, ("", ""))]


def _run_copy(p: CopyParams, plan: Plan, job: JobRun, env: Env) -> CopyResult:
    from stasis.protection.copy import PointCopy, copy_points

    dst, chosen, policy = plan.state
    job.log("info", f"copy of {len(chosen)} point(s) to {dst.url} (repository "
            f"{dst.id[:12]})" + (f", at most {p.limit_rate} bytes/s" if p.limit_rate else ""))

    def heard(c: PointCopy) -> None:
        if p.dry_run:
            return
        job.result[c.id] = {"point": c.id, "point_name": c.name, "action": c.action,
                            "objects_sent": c.objects_sent, "bytes_sent": c.bytes_sent,
                            "objects_present": c.objects_present, "error": None}
        job.log("info", f"point {c.id[:12]} '{c.name}': " + (
            "committed at the destination already, not sent" if c.action == "present" else
            f"copied, {c.objects_sent} object(s) ({c.bytes_sent} bytes) sent, "
            f"{c.objects_present} found present"))
        job.bytes_written += c.bytes_sent

    report = copy_points(env.repo(), dst, chosen, dry_run=p.dry_run,
                         rate=float(p.limit_rate) if p.limit_rate else None,
                         progress=env.sink(job.cancel), clock=env.clock, on_point=heard)
    job.bytes_read = report.bytes_read
    if report.drills_sent or report.drills_present:
        job.log("info", f"drill proofs: {report.drills_sent} sent, {report.drills_present} "
                "there already (the same drill or a newer one)")
    for key in report.drills_damaged:
        job.log("warning", f"the source's drill proof {key} does not open; not sent")
    retention = None
    if policy is not None and not p.dry_run:
        retention = _retention_at_destination(policy, p.to, dst, job, env)
    if not p.dry_run:
        _index_destination(dst, job, env)
    return CopyResult(
        dry_run=report.dry_run, shared_key=report.shared_key, source=report.source,
        destination=report.destination, destination_url=dst.url,
        points=[CopiedPoint.model_validate(x.__dict__) for x in report.points],
        copied=report.copied, skipped=report.skipped, objects_sent=report.objects_sent,
        bytes_sent=report.bytes_sent, objects_present=report.objects_present,
        chunks_read=report.chunks_read, bytes_read=report.bytes_read,
        rate_waited_s=report.rate_waited_s, duration_s=report.duration_s,
        retention=retention, drills_sent=report.drills_sent,
        drills_present=report.drills_present, drills_damaged=report.drills_damaged)


def _retention_at_destination(policy: Policy, to: str, dst: Repository, job: JobRun,
                              env: Env) -> dict[str, list[str]] | None:
    """The policy's retention at the destination ``to`` (the copy section's own, else
    the policy's), by the destination's own prune over the chains the policy made
    there, with the destination's own holds; nothing is removed at the source."""
    from stasis.service.prune import policy_chains, prune_points

    target = policy.copy_target(to)
    retention = policy.copy_retention(target) if target is not None else policy.retention
    if retention.keeps_everything:
        return None
    chains = policy_chains(dst, policy.name)
    if not chains:
        return None
    result = prune_points(dst, retention.rules(policy.timezone), now=env.clock.now(),
                          names=chains)
    job.log("info", f"retention at the destination {dst.url}: {len(result.removed)} of "
            f"{len(result.decisions)} point(s) removed there (chains {', '.join(chains)}); "
            "gc at the destination reclaims their chunks")
    return {"removed": result.removed,
            "kept": [d.point.id for d in result.decisions if d.keep]}


def _index_destination(dst: Repository, job: JobRun, env: Env) -> None:
    """The destination's points in the catalog's index (what ``stasis status`` shows per
    site): only the manifests not indexed yet are read."""
    from stasis.catalog import PointIndex

    try:
        with env.catalog() as c:
            # A damaged manifest there is left out of the index (verify reports it).
            PointIndex(c).sync(dst, on_damaged=lambda _pid, _e: None)
    except StasisError as e:  # the copy itself is done: say so, do not fail it
        job.log("warning", f"the destination's points were not indexed in the catalog: "
                f"{e.message}")


# ------------------------------------------------------------------ policy runs


def _plan_policy(p: PolicyParams, env: Env) -> Plan:
    from stasis.catalog import PolicyStore
    from stasis.service.policy_run import plan_units

    if env.find_policy is None:
        raise UsageError(f"policy '{p.policy}' cannot be looked up here; nothing was run")
    repo = env.repo()
    conn = env.conn()
    with env.catalog() as c:
        policy = env.find_policy(c, p.policy)
        units = plan_units(conn, c, policy)
        stored = PolicyStore(c).get(p.policy)
        owner = owner_scope(c, stored.tenant, conn) if stored is not None else None
    if owner is not None:
        # a tenant's policy acts on the tenant's VMs of now only (see app.tenants)
        kept = [replace(u, vms=[v for v in u.vms if owner.owns_vm(v)]) for u in units.units]
        units = replace(units, units=[u for u in kept if u.vms],
                        missing=[v for v in units.missing if owner.owns_vm(v)])
    return Plan(p.policy, list(units.vms), repo, policy=p.policy, state=(policy, units))


def _run_policy(p: PolicyParams, plan: Plan, job: JobRun, env: Env) -> dict[str, Any]:
    from stasis.service.policy_run import run_policy

    policy, units = plan.state
    run_policy(job, policy, units, conn=env.conn(), repo=env.repo(), run_dir=env.where().run,
               scratch_dir=env.where().scratch, retention=env.retention,
               clock=env.clock, unit_progress=env.unit_progress)
    return dict(job.result)


# ------------------------------------------------------------------ drills


def _check_drill(p: DrillParams) -> None:
    from stasis.app.drill import check_drill

    check_drill(p)


def _plan_drill(p: DrillParams, env: Env) -> Plan:
    from stasis.app.drill import plan_drill

    return plan_drill(p, env)


def _run_drill(p: DrillParams, plan: Plan, job: JobRun, env: Env) -> Any:
    from stasis.app.drill import run_drill_job

    return run_drill_job(p, plan, job, env)


# ------------------------------------------------------------------ the registry

KINDS: dict[str, Kind[Any]] = {k.op: k for k in (
    Kind("backup.images", "backup", BackupImagesParams, _images_title, _plan_images,
         _run_images),
    Kind("backup.vms", "backup", BackupVmsParams, lambda p: ",".join(dict.fromkeys(p.vms)),
         _plan_vms, _run_vms, check=_check_vms),
    Kind("backup.group", "backup", BackupGroupParams, lambda p: p.group, _plan_group,
         _run_group, check=_check_group),
    Kind("restore.disk", "restore", RestoreDiskParams, lambda p: p.point, _plan_disk,
         _run_disk, check=_check_disk),
    Kind("restore.vm", "restore", RestoreVmParams, lambda p: p.point, _plan_restore_vm,
         _run_restore_vm, check=_check_place),
    Kind("restore.group", "restore", RestoreGroupParams, lambda p: p.point,
         _plan_restore_group, _run_restore_group, check=_check_place),
    Kind("instant.finalize", "restore", FinalizeParams, lambda p: p.name, _plan_finalize,
         _run_finalize),
    Kind("clone", "restore", CloneParams, lambda p: p.name, _plan_clone, _run_clone,
         check=_check_place),
    Kind("verify", "verify", VerifyParams,
         lambda p: ",".join(p.points) if p.points else "all points", _plan_verify,
         _run_verify, occupies_vms=False),
    Kind("prune", "prune", PruneParams, _prune_title, _plan_prune, _run_prune,
         occupies_vms=False, recorded=lambda p: not p.dry_run, check=_check_prune),
    Kind("gc", "gc", GcParams, lambda p: "gc", _plan_gc, _run_gc, occupies_vms=False,
         recorded=lambda p: not p.dry_run, check=_check_gc),
    Kind("copy", "copy", CopyParams, _copy_title, _plan_copy, _run_copy,
         occupies_vms=False, recorded=lambda p: not p.dry_run, check=_check_copy),
    Kind("policy", "backup", PolicyParams, lambda p: p.policy, _plan_policy, _run_policy),
    # A drill makes new VMs and never touches the originals: a backup of them may run.
    Kind("drill", "drill", DrillParams, lambda p: p.target, _plan_drill, _run_drill,
         occupies_vms=False, check=_check_drill),
)}


#: The catalog's job kinds whose VMs are busy while they run (never in two jobs).
OCCUPYING = frozenset(k.job_kind for k in KINDS.values() if k.occupies_vms)


@contextlib.contextmanager
def opened(c: Catalog) -> Iterator[Catalog]:
    """A catalog already open, used by a job (and left open)."""
    yield c
