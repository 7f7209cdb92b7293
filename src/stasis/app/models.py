"""The results of operations, as Pydantic models.

One model per result and per listing row. ``--json`` prints ``model_dump(mode="json")``
of them, and the REST API answers with the same models, so a field means the same
thing wherever it is read. Each model is built from what the layers below return
(manifests, catalog rows, reports) by a ``of`` class method; nothing here computes a
rule of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    TypeAdapter,
)

from stasis.errors import StasisError, StasisWarning
from stasis.repository import Manifest, VmRecord

if TYPE_CHECKING:
    from stasis.app.auth import Principal

# A model's validator is built when it is first used, not when this module is
# imported: a command uses two or three of these models, and building all of them
# cost 0.1 s of every command's start.
DEFERRED = ConfigDict(defer_build=True)


class Model(BaseModel):
    """Every result model: unknown fields refused, assignments checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)

    def to_json(self) -> Any:
        """What ``--json`` prints and the API answers: JSON types only."""
        return self.model_dump(mode="json", exclude_unset=False)


class Sparse(Model):
    """A model dumped with only the fields that were given (a record another version,
    or another kind of run, wrote with fewer keys keeps exactly its keys)."""

    def to_json(self) -> Any:
        return self.model_dump(mode="json", exclude_unset=True)


# ------------------------------------------------------------------ backups


class WarningModel(Model):
    """What succeeded with a warning: its stable code, class name, message and hint."""

    code: int
    kind: str
    message: str
    hint: str

    @classmethod
    def of(cls, w: StasisWarning) -> WarningModel:
        return cls.model_validate(w.to_dict())

    @property
    def full_text(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message



class DiskBackup(Model):
    """One disk of a point: how it was read and what it stored."""

    target: str
    name: str
    format: str
    mode: str  # full | incremental
    bytes_read: int
    bytes_new: int
    stored_new: int
    virtual_size: int
    reason: str


class VmBackup(Model):
    """One VM (or set of images) of a point."""

    name: str
    kind: str  # vm | images
    state: str
    consistency: str
    consistency_note: str = ""
    frozen_filesystems: int = 0
    disks_removed: list[str] = Field(default_factory=list)
    disks: list[DiskBackup] = Field(default_factory=list)

    @classmethod
    def of(cls, vm: VmRecord) -> VmBackup:
        return cls(
            name=vm.name, kind=vm.kind, state=vm.state, consistency=vm.consistency,
            consistency_note=vm.extra.get("consistency_note", ""),
            frozen_filesystems=vm.extra.get("frozen_filesystems", 0),
            disks_removed=list(vm.extra.get("disks_removed", [])),
            disks=[DiskBackup(target=d.name, name=d.name, format=d.format, mode=d.mode,
                              bytes_read=d.bytes_read, bytes_new=d.bytes_new,
                              stored_new=d.stored_new, virtual_size=d.virtual_size,
                              reason=d.reason)
                   for d in vm.disks],
        )


class BackupResult(Model):
    """A committed point, as the backup that made it reports it.

    ``members``, ``joined`` and ``left`` are there for group points only;
    ``warnings`` say what the run warns of after the point committed (the point
    itself is complete).
    """

    id: str
    name: str
    time: str
    kind: str
    parent: str | None
    tags: dict[str, str]
    duration_s: float | None
    frozen_ms: float | None
    bytes_read: int
    size: int
    consistency: dict[str, Any]
    hooks: list[dict[str, Any]]
    hook_failures: list[dict[str, Any]]
    warnings: list[WarningModel]
    members: list[str] | None = None
    joined: list[str] | None = None
    left: list[str] | None = None
    stored_group: bool | None = None
    vms: list[VmBackup]

    @classmethod
    def of(cls, m: Manifest, *, stored_group: bool | None = None) -> BackupResult:
        hooks = list(m.extra.get("hooks", []))
        group = m.extra.get("group")
        return cls(
            id=m.id, name=m.name, time=m.time, kind=m.kind, parent=m.parent, tags=m.tags,
            duration_s=m.timings.get("duration_s"), frozen_ms=m.timings.get("frozen_ms"),
            bytes_read=m.bytes_read, size=m.virtual_size,
            consistency=m.extra.get("consistency", {}), hooks=hooks,
            hook_failures=[h for h in hooks if h.get("error")],
            warnings=[WarningModel.of(w) for w in m.run_warnings],
            members=list(group.get("members", [])) if group is not None else None,
            joined=list(group.get("joined", [])) if group is not None else None,
            left=list(group.get("left", [])) if group is not None else None,
            stored_group=stored_group,
            vms=[VmBackup.of(vm) for vm in m.vms],
        )

    def to_json(self) -> Any:
        data = self.model_dump(mode="json")
        for key in ("members", "joined", "left", "stored_group"):  # a group point's only
            if data[key] is None:
                del data[key]
        return data


class BackupFailure(Model):
    """A VM whose backup failed while the others of the same command went on."""

    name: str
    error: str
    exit_code: int


class VmBackupOutcome(Model):
    """One VM of ``backup vm``: its point, or why it has none."""

    name: str
    point: BackupResult | None = None
    failure: BackupFailure | None = None
    _error: StasisError | None = PrivateAttr(default=None)

    @property
    def error(self) -> StasisError | None:
        """The error itself, for an interface that re-raises it (not part of the dump)."""
        return self._error

    @error.setter
    def error(self, value: StasisError | None) -> None:
        self._error = value

    def to_json(self) -> Any:
        if self.point is not None:
            return self.point.to_json()
        assert self.failure is not None
        return self.failure.to_json()


# ------------------------------------------------------------------ groups


class Resolved(Model):
    """The VMs a group resolves to now."""

    members: list[str]
    missing: list[str]
    selected: list[str]


class GroupModel(Model):
    """A stored group, and (when libvirt answered) the members it resolves to now."""

    name: str
    members: list[str]
    select: list[str]
    labels: dict[str, str]
    consistency: str
    require: str | None
    hooks: dict[str, Any]
    description: str
    created: str
    updated: str
    resolved: Resolved | None


class GroupDeleted(GroupModel):
    """A group deleted: what it was (it resolves to nothing any more)."""

    def to_json(self) -> Any:
        data = super().to_json()
        del data["resolved"]
        return data


class VmLabels(Model):
    vm: str
    labels: dict[str, str]


# ------------------------------------------------------------------ inventory


class VmDisk(Model):
    target: str
    format: str
    source: str
    virtual_size: int | None
    allocated: int | None
    bitmaps: bool


class PointRef(Model):
    id: str
    time: str


class VmRow(Model):
    """One libvirt VM of ``stasis vms``; ``protected`` is None without a repository."""

    name: str
    uuid: str
    state: str
    disks: list[VmDisk]
    protected: bool | None
    checkpoint: str | None
    newest_point: PointRef | None
    labels: dict[str, str] = {}  # its Stasis labels (KEY: VALUE)


# ------------------------------------------------------------------ verify


class VerifyProblem(Model):
    """Something damaged or missing, and where."""

    point: str
    vm: str = ""
    disk: str = ""
    offset: int | None = None
    object: str = ""
    problem: str = ""
    healed: bool = False  # replaced from the repository repaired from
    description: str = ""  # all of the above in one sentence


class ChunkHealing(Model):
    """One damaged or missing chunk and what ``--repair-from`` did with it."""

    chunk: str  # its name here (hex)
    healed: bool
    source_chunk: str = ""  # its name in the other repository
    bytes_written: int = 0
    reason: str = ""  # why it was not healed
    points: list[str] = []


class RepairResult(Model):
    """What ``verify --repair-from`` healed, from which repository, and what not."""

    source: str
    source_url: str
    shared_key: bool
    chunks: list[ChunkHealing]
    healed: list[str]
    unhealed: list[str]
    quarantined_there: list[str]  # damaged there too: moved aside there


class VerifyResult(Model):
    """What a verification found: ``ok`` only when nothing is damaged or missing.

    ``immutable`` is None for a repository made without ``--immutable``, else what
    the Object Lock probe found (True: the storage still enforces the locks; False:
    it does not, and ``warnings`` carries warning 56 saying what was found).
    """

    kind: Literal["verify"] = "verify"
    ok: bool
    deep: bool
    points: int
    chunks: int
    bytes_checked: int
    problems: list[VerifyProblem]
    quarantined: list[str]
    repair: RepairResult | None = None
    immutable: bool | None = None
    warnings: list[WarningModel] = Field(default_factory=list)

    def to_json(self) -> Any:
        data = self.model_dump(mode="json")
        del data["kind"]
        return data


# ------------------------------------------------------------------ restores


class DiskRestore(Model):
    """One disk written from a point."""

    point: str
    vm: str
    disk: str
    target: str
    format: str
    virtual_size: int
    bytes_written: int
    duration_s: float
    pool: str | None = None  # ``target`` is a volume of this libvirt storage pool
    volume: str | None = None


class VmRestore(Model):
    """A VM restored from a point: as a new VM (``name``) or in place."""

    point: str
    vm: str
    name: str
    storage: str
    in_place: bool
    started: bool
    disks: list[DiskRestore]
    files: dict[str, str]
    duration_s: float
    pool: str | None = None  # the disks and files are volumes of this libvirt pool
    volumes: dict[str, str] = {}  # disk or file -> its volume in ``pool``
    storage_created: bool = False  # the storage directory was made for it
    started_at: str | None = None  # in a group restore: when it was started
    running_after_s: float | None = None

    def to_json(self) -> Any:
        data = self.model_dump(mode="json")
        if "started_at" not in self.model_fields_set:  # a group restore's only
            del data["started_at"], data["running_after_s"]
        return data


class VmStartModel(Model):
    vm: str
    name: str
    started_at: str
    running_after_s: float


class GroupRestore(Model):
    """Every VM of a point restored as new VMs, and the order they were started in."""

    point: str
    suffix: str
    storage: str
    network: str | None
    vms: list[VmRestore]
    start_order: list[str]
    starts: list[VmStartModel]
    duration_s: float
    pool: str | None = None  # the disks are volumes of this libvirt pool
    storage_created: bool = False  # the storage directory was made for it

    def to_json(self) -> Any:
        data = self.model_dump(mode="json")
        data["vms"] = [v.to_json() for v in self.vms]
        return data


# ------------------------------------------------------------------ jobs


class Part(Sparse):
    """One entry of a job's result (a VM's, a point's, a step's).

    Only the keys the job wrote are dumped. Unknown keys are kept (a catalog written
    by another version of Stasis may hold more), never refused.
    """

    model_config = ConfigDict(extra="allow")


class BackupPart(Part):
    """A VM's point in a backup job (``point`` None when it failed)."""

    point: str | None = None
    point_name: str | None = None
    consistency: str | None = None
    bytes_read: int | None = None
    bytes_written: int | None = None
    modes: dict[str, str] | None = None
    error: str | None = None
    exit_code: int | None = None
    warnings: list[WarningModel] | None = None


class RetentionPart(Part):
    """A policy run's retention: the points it removed and kept."""

    removed: list[str]
    kept: list[str]


class RestorePart(Part):
    point: str | None = None
    point_name: str | None = None
    restored_as: str | None = None
    in_place: bool | None = None
    started: bool | None = None
    disks: dict[str, str] | None = None
    format: str | None = None
    bytes_written: int | None = None
    error: str | None = None
    exit_code: int | None = None


class VerifyPart(Part):
    point: str
    point_name: str | None = None
    vms: list[str] | None = None
    ok: bool
    problems: list[str] = Field(default_factory=list)
    error: str | None = None


class RepairPart(Part):
    """A verify's repair (``--repair-from``): the chunks healed and those not."""

    source: str  # the repository repaired from (id)
    healed: list[str]
    unhealed: list[str]
    ok: bool
    error: str | None = None


class LockProbePart(Part):
    """A verify's Object Lock probe (an immutable repository): ``ok`` when the storage
    still enforces the locks, else the warning that says what was found."""

    probe: Literal["object-lock"]
    ok: bool
    warnings: list[WarningModel] = Field(default_factory=list)


class PrunePart(Part):
    point: str
    point_name: str | None = None
    time: str | None = None
    action: str | None = None  # keep | removed
    reasons: list[str] = Field(default_factory=list)
    error: str | None = None


class CopyPart(Part):
    point: str
    point_name: str | None = None
    action: str | None = None  # copied | present
    objects_sent: int | None = None
    bytes_sent: int | None = None
    objects_present: int | None = None
    error: str | None = None


class JobBase(Model):
    """A job of the catalog: what ran, where, when, how it ended."""

    id: int
    kind: str
    name: str
    policy: str | None
    vms: list[str]
    repo: str | None
    state: str  # queued | running | succeeded | failed | interrupted
    queued: str | None
    started: str | None
    ended: str | None
    duration_s: float | None
    bytes_read: int
    bytes_written: int
    error: str | None
    exit_code: int | None
    host: str | None
    pid: int | None
    tenant: str | None = None  # whose job (None: the system's)
    by: str | None = None  # who started it
    log: list[dict[str, Any]] | None = None  # with ``job show``: its log lines

    def to_json(self) -> Any:
        data = self.model_dump(mode="json", exclude={"result", "log"})
        data["result"] = {k: v.to_json() for k, v in self.result.items()}  # type: ignore[attr-defined]
        if self.log is not None:
            data["log"] = self.log
        return data


class BackupJob(JobBase):
    kind: Literal["backup"]
    result: dict[str, BackupPart | RetentionPart]


class RestoreJob(JobBase):
    kind: Literal["restore"]
    result: dict[str, RestorePart]


class VerifyJob(JobBase):
    kind: Literal["verify"]
    result: dict[str, VerifyPart | RepairPart | LockProbePart]


class PruneJob(JobBase):
    kind: Literal["prune"]
    result: dict[str, PrunePart]


class GcJob(JobBase):
    kind: Literal["gc"]
    result: dict[str, Part]


class CopyJob(JobBase):
    kind: Literal["copy"]
    result: dict[str, CopyPart]


class DrillJob(JobBase):
    """A recovery drill: per VM its copy (``drilled_as``, ``addresses``), per check
    (``check 1``, ...) its outcome, and the drill's own (``drill``: passed, ``rto_s``)."""

    kind: Literal["drill"]
    result: dict[str, Part]


class OtherJob(JobBase):
    """A job of a kind this version does not know (written by a newer one)."""

    result: dict[str, Part]


def _job_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in JOB_KINDS else "other"


JOB_KINDS = ("backup", "restore", "verify", "prune", "gc", "copy", "drill")
JobModel = Annotated[
    Annotated[BackupJob, Tag("backup")] | Annotated[RestoreJob, Tag("restore")]
    | Annotated[VerifyJob, Tag("verify")] | Annotated[PruneJob, Tag("prune")]
    | Annotated[GcJob, Tag("gc")] | Annotated[CopyJob, Tag("copy")]
    | Annotated[DrillJob, Tag("drill")]
    | Annotated[OtherJob, Tag("other")],
    Discriminator(_job_kind),
]
JOB_ADAPTER: TypeAdapter[JobModel] = TypeAdapter(JobModel, config=DEFERRED)


def job_model(data: dict[str, Any]) -> JobModel:
    """A job's model, of its kind, from the catalog's ``Job.to_dict()``."""
    return JOB_ADAPTER.validate_python(data)


# ------------------------------------------------------------------ gc, prune, holds


class TallyModel(Model):
    count: int
    bytes: int


class GcResult(Model):
    """What a garbage collection deleted (or, dry, would delete) and kept."""

    dry_run: bool
    points: int
    points_marked_late: int
    points_vanished: int
    indexes_referenced: int
    pages_referenced: int
    chunks_referenced: int
    chunks_missing: int
    indexes: TallyModel
    pages: TallyModel
    chunks: TallyModel
    temporary_files: TallyModel
    temporary_files_checked: bool
    kept_indexes: TallyModel
    kept_pages: TallyModel
    kept_chunks: TallyModel
    quarantined: TallyModel
    locked: TallyModel = TallyModel(count=0, bytes=0)  # immutable: garbage still locked
    locked_until: str | None = None
    lock_waited_s: float
    mark_s: float
    locked_s: float
    duration_s: float
    reclaimed_bytes: int


class CopiedPoint(Model):
    """One point of a copy: ``copied``, ``present`` (at the destination already, not
    sent again) or, in a dry run, ``would copy``."""

    id: str
    name: str
    time: str
    action: str
    objects_sent: int
    bytes_sent: int
    objects_present: int


class CopyResult(Model):
    """What a copy sent (or, dry, would send) and what it found at the destination."""

    dry_run: bool
    shared_key: bool  # objects went as they are; else re-encrypted and renamed
    source: str  # repository ids
    destination: str
    destination_url: str
    points: list[CopiedPoint]
    copied: list[str]
    skipped: list[str]  # committed at the destination already
    objects_sent: int
    bytes_sent: int
    objects_present: int
    chunks_read: int
    bytes_read: int
    rate_waited_s: float
    duration_s: float
    retention: dict[str, list[str]] | None = None  # a policy's copy: removed, kept there
    drills_sent: int = 0  # drill proofs of the points' VMs and groups (dry: would be)
    drills_present: int = 0  # the same drill, or a newer one, at the destination already
    drills_damaged: list[str] = []  # source proofs that did not open, not sent


class PointDecision(Model):
    """What retention decided about one point, and why."""

    id: str
    name: str
    time: str
    vms: list[str]
    series: str
    keep: bool
    reasons: list[str]


class PruneReport(Model):
    """A prune: the rules, every point's fate, and what was (or would be) removed."""

    dry_run: bool
    now: str
    rules: dict[str, Any]
    rules_text: str  # the rules in a few words: "keep-daily 7, keep-weekly 4 (UTC)"
    points: list[PointDecision]
    kept: list[str]
    removed: list[str]


class HoldRow(Model):
    """A hold on a point, and the point it keeps (None fields: the point is gone)."""

    point: str
    until: str | None
    reason: str
    created: str | None
    by: str
    active: bool
    damaged: bool
    point_exists: bool
    name: str | None
    time: str | None
    description: str  # "held until ...: reason", as a sentence


class Released(Model):
    point: str
    released: bool
    hold: dict[str, Any] | None
    description: str | None  # of the hold lifted


# ------------------------------------------------------------------ points


class PointSummary(Model):
    """One point of ``stasis list``."""

    id: str
    name: str
    time: str
    kind: str
    size: int
    bytes_read: int
    parent: str | None
    tags: dict[str, str]
    vms: list[str]
    disks: int
    # what a timeline draws without asking for each point (see PointVmBrief)
    frozen_ms: float | None = None
    stored_new: int = 0  # bytes the point's new chunks took in the repository
    vm_records: list[PointVmBrief] = []

    @classmethod
    def of(cls, m: Manifest) -> PointSummary:
        return cls(id=m.id, name=m.name, time=m.time, kind=m.kind, size=m.virtual_size,
                   bytes_read=m.bytes_read, parent=m.parent, tags=m.tags,
                   vms=[vm.name for vm in m.vms], disks=len(m.disks()),
                   frozen_ms=m.timings.get("frozen_ms"),
                   stored_new=sum(d.stored_new for _, d in m.disks()),
                   vm_records=[PointVmBrief.of(vm) for vm in m.vms])


class StreamDetail(Model):
    """A stored stream of a point: a disk (``target`` its device name) or a VM's file."""

    model_config = ConfigDict(extra="allow")  # a newer manifest may say more

    name: str
    index: str
    virtual_size: int
    format: str
    source: str
    mode: str
    reason: str
    bytes_read: int
    bytes_new: int
    stored_new: int
    chunks_new: int
    format_options: dict[str, Any]
    checkpoint: str
    source_kind: str
    target: str | None = None


class VmDetail(Model):
    model_config = ConfigDict(extra="allow")

    name: str
    kind: str
    uuid: str
    domain_xml: str
    consistency: str
    state: str
    disks: list[StreamDetail]
    files: list[StreamDetail]
    extra: dict[str, Any]


class PointDetail(Sparse):
    """One point in full, as its manifest holds it (``size``: of all its disks)."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    time: str
    kind: str
    parent: str | None
    tags: dict[str, str]
    host: str
    chunk_size: int
    vms: list[VmDetail]
    timings: dict[str, float]
    stasis_version: str
    format_version: int
    extra: dict[str, Any]
    size: int

    @classmethod
    def of(cls, m: Manifest) -> PointDetail:
        d = m.to_dict()
        d["size"] = m.virtual_size
        for vm in d["vms"]:
            for disk in vm["disks"]:
                disk["target"] = disk["name"]
        return cls.model_validate(d)


# ------------------------------------------------------------------ files of a point


class VolumeRow(Sparse):
    """A volume of a disk (the whole disk, a partition, an LVM logical volume)."""

    name: str
    type: Literal["volume"] = "volume"
    size: int
    description: str
    filesystem: str | None
    label: str | None
    error: str | None = None


class FileEntry(Sparse):
    """A file, directory, symlink... of a point's disk (``mode``: permission bits in octal,
    ``mode_text``: as ``ls -l`` shows it)."""

    name: str
    path: str
    type: str
    size: int
    mode: str
    mode_text: str
    mtime: str
    mtime_ns: int
    link: str | None
    vm: str | None = None  # with find: where it was found
    disk: str | None = None


class ExtractReport(Model):
    """What ``files get`` wrote into its target directory, and what it skipped."""

    point: str
    target: str
    files: int
    dirs: int
    symlinks: int
    bytes: int
    skipped: list[dict[str, str]]
    loads: int  # chunks read from the repository, opening included
    duration_s: float


# ------------------------------------------------------------------ policies


class PolicyProblem(Model):
    line: int | None
    policy: str | None
    message: str
    text: str  # as the CLI prints it: FILE:LINE: [policy] message


class PolicyCheck(Model):
    """A policy file checked: valid, or every problem with its line."""

    file: str
    ok: bool
    policies: list[str]
    problems: list[PolicyProblem]


class PolicySummary(Model):
    """A policy as it runs: members, schedule and its next runs, retention, RPO, notify."""

    name: str
    description: str
    origin: str
    members: dict[str, Any]
    schedule: dict[str, Any]
    next_runs: list[str]
    consistency: str
    require: str | None
    hooks: dict[str, Any] | None
    retention: dict[str, Any]
    rpo: str | None
    notify: dict[str, Any]
    repository: str | None = None  # the named repository; None: the service's default
    copies: list[dict[str, Any]] = []  # each: to, schedule, retention at the destination


# ------------------------------------------------------------------ status, policy runs


class SiteStatusRow(Model):
    """A VM's newest point of a policy at one site, and how far a copy lags."""

    policy: str
    role: str  # source | copy
    repository: str | None
    repo_id: str | None
    newest_point: str | None
    newest_time: str | None
    lag_s: float | None
    lag_points: int | None


class DrillStatusRow(Model):
    """A VM's or group's newest drill against its policies' drill targets: ``state``
    met, breached or none; the measured RTO and its target, the age and max_age."""

    subject: str
    state: str
    last_drill: str | None = None
    point: str | None = None
    mode: str | None = None
    passed: bool | None = None
    ended: str | None = None
    rto_s: float | None = None
    rto_target_s: float | None = None
    age_s: float | None = None
    max_age_s: float | None = None
    reasons: list[str] = []
    detail: str = ""


class VmStatusRow(Model):
    """How protected one VM is: newest point, next run, RPO, last verification, per
    site of the policies that copy it, the newest point and the copy's lag, and its
    newest drill and its groups' against the drill targets."""

    vm: str
    newest_point: str | None
    newest_time: str | None
    age_s: float | None
    policies: list[str]
    next_run: str | None
    rpo: str  # met | breached | none
    rpo_detail: str
    last_verify: dict[str, Any] | None
    sites: list[SiteStatusRow] = []
    drill: DrillStatusRow | None = None
    group_drills: list[DrillStatusRow] = []


class GroupStatusRow(Model):
    """How protected one group is as a whole: its newest group point and age, the
    policies naming it, their next run, and its newest drill against their targets."""

    group: str
    vms: list[str]
    newest_point: str | None
    newest_time: str | None
    age_s: float | None
    policies: list[str]
    next_run: str | None
    drill: DrillStatusRow | None = None


class UnrecordedRun(Model):
    """A policy run made here while the catalog could not record it: per VM, its point
    or its error (what a job's result would have held)."""

    state: Literal["unrecorded"] = "unrecorded"
    result: dict[str, Any]


class Queued(Model):
    """A job handed to the running service (``stasis job show`` follows it)."""

    job: int
    state: Literal["queued"] = "queued"
    service_pid: int | None


class CancelResult(Model):
    """What ``stasis job cancel`` did: a queued job ``interrupted`` at once; a running
    one asked to stop (``cancel requested`` of its service, or ``terminated``: SIGTERM
    sent to the command running it). ``state`` is the job's state right after."""

    job: int
    was: Literal["queued", "running"]
    action: Literal["interrupted", "cancel requested", "terminated"]
    state: str


# ------------------------------------------------------------------ repositories


class RepoCreated(Model):
    """A new repository: where (``path`` as given, ``url`` as the backend names it)."""

    path: str
    url: str
    id: str
    encryption: str
    chunk_size: int
    immutability: dict[str, Any] | None = None  # {mode, retain_s, margin_s}


class LocksRenewed(Model):
    """A lock renewal of an immutable repository (``stasis repo lock-extend``)."""

    epoch: int
    until: str  # every committed point's objects are locked at least until then
    points: int
    objects: int
    damaged: int


class RepoInfoModel(Model):
    """Sizes, deduplication and compression of a repository (see
    :class:`stasis.repository.stats.RepoInfo`)."""

    path: str
    id: str
    encryption: str
    chunk_size: int
    format_version: int
    points: int
    logical_size: int
    referenced_size: int
    unique_size: int
    stored_size: int
    chunk_count: int
    dedup_ratio: float
    compression_ratio: float


class RepoUpgraded(Model):
    """A repository moved to a newer format (or already there)."""

    id: str
    format_before: int
    format_after: int


class KeySlot(Model):
    """A key slot: a passphrase or a key file that opens the repository."""

    id: str
    kind: str  # passphrase | keyfile | plain | damaged (the slot does not parse)
    label: str


class KeySlotAdded(Model):
    id: str


class KeySlotRemoved(Model):
    id: str


# ------------------------------------------------------------------ catalog


class CatalogRebuilt(Model):
    """The points index of a repository made again from its manifests alone."""

    repository: str
    url: str
    points: int
    damaged: list[str]  # point ids whose manifest could not be read (not indexed)
    drills: int = 0  # the repository's drill proofs newer than the catalog knew, recorded
    damaged_drills: list[str] = []  # drill proofs (drills/<name>) that did not open
    _catalog: str = PrivateAttr(default="")

    @property
    def catalog(self) -> str:
        """The catalog, as it is shown (a file, or a URL without its password)."""
        return self._catalog


class IndexedPointModel(Model):
    """One point of the catalog's index (``stasis catalog points``)."""

    id: str
    name: str
    time: str
    kind: str
    size: int
    bytes_read: int
    parent: str | None
    tags: dict[str, str]
    vms: list[str]
    repo: str
    consistency: dict[str, str]


# ------------------------------------------------------------------ doctor


class DoctorFinding(Model):
    """Debris of interrupted work, and whether it was removed."""

    kind: str
    what: str
    fixed: bool


class DoctorResult(Model):
    """What doctor found; ``stuck``: what ``fix`` could not remove (a libvirt job
    libvirt will not end), and ``exit_code`` says so (0 when nothing is stuck)."""

    fix: bool
    findings: list[DoctorFinding]
    stuck: list[DoctorFinding]
    exit_code: int


# ------------------------------------------------------------------ exports, instant VMs


class ExportInfoModel(Model):
    """A disk of a point served over NBD (``stasis export``)."""

    point: str
    vm: str
    disk: str
    virtual_size: int
    uri: str
    socket: str | None
    port: int | None
    writable: bool
    overlay: str | None
    keep_overlay: bool
    pid: int


class InstantStarted(Model):
    """An instant VM defined and started on an export of a point."""

    name: str
    vm: str
    point: str
    export_pid: int
    socket: str
    overlays: dict[str, str]
    duration_s: float


class RunningFromRepo(Model):
    """An instant VM, linked clone or attached disk running from a repository, with
    what is true of it now (``state``: starting, running, interrupted, export dead...)."""

    kind: str
    name: str
    target: str | None
    vm: str
    disk: str | None
    point: str
    repo: str
    state: str
    vm_state: str
    export_pid: int | None
    export_alive: bool
    socket: str | None
    overlays: dict[str, str]
    storage: str | None
    created: float


class Finalized(Model):
    """An instant VM moved to local disks (disk -> its path)."""

    name: str
    disks: dict[str, str]
    duration_s: float
    pool: str | None = None  # the copies are volumes of this libvirt pool
    volumes: dict[str, str] = {}  # disk -> its volume in ``pool``


class Discarded(Model):
    """An instant VM removed; ``removed``: what was, in words."""

    name: str
    removed: list[str]


class Attached(Model):
    """A disk of a point attached read-only to a running VM."""

    vm: str
    target: str
    point: str
    source_vm: str
    disk: str
    export_pid: int
    socket: str


class Detached(Model):
    vm: str
    target: str
    point: str
    disk: str


# ------------------------------------------------------------------ clones


class CloneModel(Model):
    """A clone made (``source``: point or vm; ``point_taken``: a point of the VM was
    taken for it)."""

    name: str
    source: str
    point: str
    point_taken: bool
    vm: str
    linked: bool
    started: bool
    uuid: str
    macs: list[str]
    storage: str
    disks: dict[str, str]
    files: dict[str, str]
    bytes_written: int
    export_pid: int | None
    duration_s: float
    pool: str | None = None  # a full clone's disks are volumes of this libvirt pool
    volumes: dict[str, str] = {}  # disk or file -> its volume in ``pool``


class CloneRow(Model):
    """A linked clone, with its point and export."""

    name: str
    vm: str
    point: str
    repo: str
    state: str
    vm_state: str
    export_pid: int | None
    export_alive: bool
    socket: str | None
    overlays: dict[str, str]
    storage: str | None
    created: float
    bytes_written: int


class CloneDeleted(Model):
    """A linked clone removed; ``hold``: its point's hold afterwards, in words (None:
    not held); ``warning``: what could not be done (the hold not updated)."""

    name: str
    point: str
    removed: list[str]
    hold: str | None
    warning: str


# ------------------------------------------------------------------ the config


ConfigSource = Literal["flag", "env", "file", "default"]


class ConfigValue(Model):
    """One setting in force and where it came from: ``flag``, ``env``, ``file`` or
    ``default``."""

    value: str | None
    source: ConfigSource


class ConfiguredRepository(Model):
    """A named repository of the config: its URL and the file that unlocks it (the
    secret itself is never shown)."""

    name: str
    url: str
    unlock: Literal["passphrase_file", "key_file"]
    secret_file: str
    default: bool


class EffectiveConfig(Model):
    """``stasis config show``: the file in force and every setting with its source."""

    file: str | None
    file_source: ConfigSource | None
    settings: dict[str, ConfigValue]
    repositories: list[ConfiguredRepository]
    default_repository: str | None


# ------------------------------------------------------------------ the server's access
# (AUTH's models: users, tokens, tenants, roles, audit — below this line)


class PermissionModel(Model):
    name: str
    description: str


class TenantRef(Model):
    name: str
    restore_pools: list[str]
    restore_networks: list[str]
    restore_dirs: list[str]


class Me(Model):
    """``GET /api/v1/me``: who a request acts for and its effective rights."""

    user: str
    role: str
    tenant: TenantRef | None  # None: the whole system
    token: int | None  # the token's id when authenticated by a token
    session: bool  # authenticated by a browser session (unsafe methods need X-CSRF-Token)
    permissions: list[PermissionModel]

    @classmethod
    def of(cls, p: Principal, described: Mapping[str, str]) -> Me:
        t = p.tenant
        return cls(user=p.user, role=p.role, token=p.token, session=p.session is not None,
                   tenant=None if t is None else TenantRef(
                       name=t.name, restore_pools=list(t.restore_pools),
                       restore_networks=list(t.restore_networks),
                       restore_dirs=list(t.restore_dirs)),
                   permissions=[PermissionModel(name=n, description=described[n])
                                for n in sorted(p.permissions) if n in described])


# ------------------------------------------------------------------ accounts
# (the auth part: users, tokens, sessions, tenants, roles, the audit log)


class RoleModel(Model):
    """A role: the permissions it grants; built-in ones are code, custom ones data."""

    name: str
    description: str
    builtin: bool
    permissions: list[str]


class TenantModel(Model):
    """A tenant: the VMs it owns (names, and a label selector) and where its users may
    restore to."""

    name: str
    description: str
    vms: list[str]
    labels: dict[str, str]
    restore_pools: list[str]
    restore_networks: list[str]
    restore_dirs: list[str]
    created: str
    users: list[str]


class UserModel(Model):
    """A local account (never its password hash)."""

    name: str
    role: str
    tenant: str | None  # None: the whole system
    disabled: bool
    created: str
    last_login: str | None


class TokenModel(Model):
    """An API token as listings show it: never its secret."""

    id: int
    user: str
    name: str
    prefix: str  # the token starts with stasis_<prefix>_
    role: str | None  # a narrower role than the user's (None: the user's)
    permissions: list[str] | None  # a subset of permissions (None: all of the role's)
    created: str
    expires: str | None  # None: never
    revoked: str | None
    last_used: str | None
    last_address: str | None
    state: Literal["active", "expired", "revoked"]


class TokenCreated(Model):
    """A new token, with its secret: shown this once, stored only as its hash."""

    token: TokenModel
    secret: str


class SessionStarted(Model):
    """A browser signed in: the cookie is set; unsafe requests must send ``csrf`` in
    ``X-CSRF-Token``."""

    csrf: str
    expires: str
    me: Me


class AccountRemoved(Model):
    """A user, token, tenant or role removed (a token: revoked)."""

    kind: Literal["user", "token", "tenant", "role"]
    name: str


class AuditLine(Model):
    """One line of the audit log."""

    id: int
    time: str
    user: str | None
    token: int | None
    address: str | None
    tenant: str | None
    action: str
    object: str
    result: str
    detail: dict[str, Any]


# ------------------------------------------------------------------ part "read": resources
# (VMs, groups, policies, points, repositories, status, problems of the REST API)


class PointDeleted(Model):
    """A point deleted (its chunks stay until gc reclaims them)."""

    id: str
    name: str
    time: str
    vms: list[str]


class StoredPolicy(Model):
    """A policy stored in the catalog: who defined it, whether it is a template offered
    to tenants, its schedule's state, and the policy as it runs (with its next runs in
    its own time zone)."""

    name: str
    tenant: str | None  # the tenant that defined it; None: the system's
    template: bool
    updated: str
    last_run: str | None
    next_run: str | None  # as the service scheduled it (None: not scheduled yet)
    policy: PolicySummary


class RetentionPreview(Model):
    """Which existing points a policy's retention keeps and which it would remove now."""

    policy: str
    repository: str
    now: str
    chains: list[str]
    points: list[PointDecision]
    kept: list[str]
    removed: list[str]


class ServedRepository(Model):
    """A repository the server serves: its name, URL (no secrets) and ``stasis repo
    info``."""

    name: str
    url: str
    id: str
    default: bool
    info: RepoInfoModel


class ProblemKind(Model):
    """What an error class means: the page a problem's ``type`` names."""

    kind: str
    type: str
    title: str
    status: int
    code: int  # the CLI's exit code
    meaning: str  # of the exit code, as ``stasis --help`` lists it
    description: str


# ------------------------------------------------------------------ jobs part (issue 15):
# work started through the API, and a job's log read by offset


class JobStarted(Model):
    """Work started: the job queued for the service (202), or the job of the same
    work already queued or running (``existing``, 200), so nothing was queued twice."""

    job: JobModel
    existing: bool = False


class JobLogLine(Model):
    offset: int  # its place in the job's log (0 first): the SSE event's id
    time: str | None
    level: str
    text: str


class JobLogPage(Model):
    """A job's log lines from ``offset``; ``next`` is the offset to ask for next, and
    ``ended`` says whether the job ended (no line will follow)."""

    job: int
    offset: int
    lines: list[JobLogLine]
    next: int
    state: str
    ended: bool


# ------------------------------------------------------------------ files, instant, exports,
# clones through the API (part "files")


class ServedExport(Model):
    """A disk of a point served over NBD by the server until deleted (``POST
    /exports``); ``tenant``/``by``: who started it."""

    id: str
    point: str
    vm: str
    disk: str
    repo: str
    uri: str
    socket: str
    export_pid: int
    export_alive: bool
    created: float
    tenant: str | None = None
    by: str | None = None


class RunningOwned(RunningFromRepo):
    """What runs from a repository, with who started it through the API."""

    tenant: str | None = None
    by: str | None = None


class CloneOwned(CloneRow):
    """A linked clone, with who made it through the API."""

    tenant: str | None = None
    by: str | None = None


# ------------------------------------------------------------------ the web console
# (issue 16: what the console needs from the API beyond the models above)


class MeNow(Me):
    """``GET /api/v1/me``: :class:`Me`, and for a browser session its CSRF token, so
    that a page reloaded (which cannot read the HttpOnly cookie) can go on sending
    unsafe requests. Only a same-origin page can read it: the API sends no CORS
    headers."""

    csrf: str | None = None  # None: not authenticated by a session


# ------------------------------------------------------------------ recovery drills (issue 17)


class DrillCheckResult(Model):
    """One check of a drill: on which VM (none: a host script), passed or why not."""

    kind: str
    arg: str
    vm: str | None  # the point's VM
    name: str | None  # the drill's copy of it
    passed: bool
    seconds: float
    output: str
    error: str


class DrillVmModel(Model):
    """One VM of a drill: the copy's name, when it started, its leased addresses."""

    vm: str
    name: str
    started_at: str
    running_after_s: float
    addresses: list[str]


class DrillResult(Model):
    """A drill: the point's VMs brought up in an isolated network, the checks, the
    measured RTO (start of the drill to the last check passed) and what was removed."""

    id: str
    target: str
    point: str
    point_name: str
    mode: str
    network: str
    network_created: bool
    storage: str  # "" when the disks were volumes of ``pool``
    pool: str | None = None
    started_at: str
    passed: bool
    rto_s: float | None
    duration_s: float
    vms: list[DrillVmModel]
    start_order: list[str]
    checks: list[DrillCheckResult]
    kept: bool
    removed: list[str]
    failure: str


class DrillRecordModel(Model):
    """The newest drill of one VM or group (the catalog's record): what it proved."""

    subject_kind: str  # vm | group
    subject: str
    drill_id: str
    job: int | None
    repo: str | None
    point: str
    point_name: str
    mode: str
    passed: bool
    rto_s: float | None
    started: str
    ended: str
    policy: str | None
    failure: str | None
    checks: list[dict[str, Any]]


# ------------------------------------------------------------------ console, second wave B
# (issue 16: editors, wizards, admin pages)


class DraftPreview(Model):
    """A policy not saved (yet): checked as a save would check it, with its next runs in
    its own time zone and what its retention would keep and remove of the points its
    name's runs made (nothing is stored or removed)."""

    policy: PolicySummary
    retention: RetentionPreview


# ------------------------------------------------------------------ console, second wave
# (issue 16, console2a: a point's timeline facts, its hold, the dashboard's history,
# repositories' growth and forecast, copy lag per site)


class DiskBrief(Model):
    """How one disk of a point was read, and what it cost."""

    name: str
    mode: str  # full | incremental
    virtual_size: int
    bytes_read: int
    stored_new: int


class PointVmBrief(Model):
    """One VM of a point as a timeline shows it: its consistency and how each disk was
    read (``mode``: full when every disk was read whole, else incremental)."""

    name: str
    kind: str
    consistency: str
    mode: str
    disks: list[DiskBrief]

    @classmethod
    def of(cls, vm: VmRecord) -> PointVmBrief:
        disks = [DiskBrief(name=d.name, mode=d.mode, virtual_size=d.virtual_size,
                           bytes_read=d.bytes_read, stored_new=d.stored_new)
                 for d in vm.disks]
        mode = "full" if all(d.mode == "full" for d in disks) else "incremental"
        return cls(name=vm.name, kind=vm.kind, consistency=vm.consistency, mode=mode,
                   disks=disks)


PointSummary.model_rebuild()


class PointHold(Model):
    """Whether a point is held now, and its hold (expired ones too) as ``stasis hold
    list`` shows it."""

    point: str
    held: bool
    hold: HoldRow | None


class DayMark(Model):
    """One day (UTC) of a VM's or group's history: the points made that day and whether
    the RPO was met all day long (``met``), breached at some moment (``breached``),
    not set (``none``), or not known (``before``: before its first point)."""

    day: str  # YYYY-MM-DD
    points: int
    rpo: Literal["met", "breached", "none", "before"]


class ProtectionHistory(Model):
    """The last days of one VM or group: per day, points made and the RPO."""

    kind: Literal["vm", "group"]
    name: str
    rpo_s: float | None  # the tightest RPO of the policies covering it (None: none)
    days: list[DayMark]


class UsageDay(Model):
    """A repository's stored size at the end of one day (UTC)."""

    day: str
    stored: int


class RepoUsage(Model):
    """A repository's used space, deduplication, growth and when it fills.

    ``days`` are the stored size at the end of each day, counted back from today's
    size by the bytes each present point stored first (a point pruned since, and
    space gc freed since, are not seen). ``capacity``/``free`` are the filesystem's
    (a local repository) or None (S3 and other object stores: no size to fill, no
    forecast). ``growth_per_day`` is the slope of a least-squares line through
    ``days``; ``full_on`` the day it reaches ``free`` at that pace (None: not
    growing, no size, or over 100 years away)."""

    name: str
    id: str
    url: str
    stored_size: int
    logical_size: int
    dedup_ratio: float
    compression_ratio: float
    days: list[UsageDay]
    growth_per_day: float | None
    capacity: int | None
    free: int | None
    full_on: str | None
    full_in_days: float | None
    forecast: str  # the forecast, or why there is none, as a sentence


class CopyLagRow(Model):
    """One second site of a policy: the copy's lag behind its source, worst over the
    VMs the policy copies there (``lag_s`` None: a VM with no copy there yet)."""

    policy: str
    repository: str | None
    repo_id: str | None
    vms: int
    behind: int  # VMs whose newest point is not at this site yet
    lag_s: float | None
    lag_points: int
    newest_time: str | None  # the site's newest copied point (over its VMs)
    worst_vm: str | None
