"""Backups: of VMs (each a point), of a group (one point at one instant), of images.

Each runs as a job recorded in the catalog (``catalog``: a URL, a file, or None for
the default; ``warn`` hears once that it cannot be used, and the backup goes on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stasis.app.groups import group_store
from stasis.app.jobs import Warn, foreground_job
from stasis.app.models import BackupFailure, BackupResult, VmBackupOutcome
from stasis.errors import GroupError, StasisError, UsageError
from stasis.hypervisor import libvirt_api as lv
from stasis.progress import Progress
from stasis.protection.backup import back_up_images
from stasis.protection.capture import back_up_members
from stasis.protection.consistency import level_rank
from stasis.protection.groups import check_level, check_levels, plan_backup
from stasis.protection.vm import back_up_vms
from stasis.repository import Repository
from stasis.settings import run_dir, scratch_dir

# Opens the repository when the operation needs it: after its input was checked, so
# bad input is refused before a passphrase is asked or a key derived.
RepoOpener = Callable[[], Repository]


@dataclass(frozen=True)
class Where:
    """Where a run keeps its own sockets (``run``) and libvirt jobs' scratch files
    (``scratch``, which QEMU's user must reach)."""

    run: Path
    scratch: Path

    @classmethod
    def default(cls) -> Where:
        return cls(run_dir(), scratch_dir())


def parse_tags(tags: list[str]) -> dict[str, str]:
    """KEY=VALUE tags of a point."""
    parsed = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag takes KEY=VALUE, not '{tag}'")
        parsed[key] = value
    return parsed


def backup_images(open_repo: RepoOpener, paths: list[Path], *, catalog: str | None, warn: Warn,
                  name: str | None = None, tags: dict[str, str] | None = None,
                  fmt: str | None = None, progress: Progress | None = None,
                  where: Where | None = None) -> BackupResult:
    """Back up disk images or block devices into one point."""
    repo = open_repo()
    where = where or Where.default()
    with foreground_job(catalog, "backup", name or (paths[0].name if paths else "images"),
                        warn=warn, repo=repo.id,
                        params={"paths": [str(p) for p in paths]}) as job:
        m = back_up_images(repo, paths, name=name, tags=tags, fmt=fmt, progress=progress,
                           run_dir=where.run)
        job.set_vms([vm.name for vm in m.vms])
        job.point(m, repo)
    return BackupResult.of(m)


def backup_vms(connect: str, open_repo: RepoOpener, names: list[str], *,
               catalog: str | None, warn: Warn, tags: dict[str, str] | None = None,
               parallel: int = 2, consistency: str = "crash", require: str | None = None,
               progress: Callable[[str], Progress] | None = None,
               where: Where | None = None) -> list[VmBackupOutcome]:
    """Back up VMs, ``parallel`` at a time, each into its own point, as one job.

    One VM failing does not stop the others: its outcome says why (and keeps the
    error, :attr:`VmBackupOutcome.error`); the job then fails.
    """
    level_rank(consistency)
    if require is not None:
        level_rank(require)
    conn = lv.connect(connect)
    repo = open_repo()
    where = where or Where.default()
    targets = list(dict.fromkeys(names))
    with foreground_job(catalog, "backup", ",".join(targets), warn=warn, vms=targets,
                        repo=repo.id) as job:
        done = back_up_vms(conn, repo, targets, run_dir=where.run, scratch_dir=where.scratch,
                           tags=tags, progress=progress, parallel=parallel,
                           consistency=consistency, require=require)
        for o in done:
            if o.point is not None:
                job.point(o.point, repo)
            elif o.error is not None:
                job.failed_part(o.name, o.error)
    outcomes = []
    for o in done:
        if o.point is not None:
            outcomes.append(VmBackupOutcome(name=o.name, point=BackupResult.of(o.point)))
        else:
            error = o.error or StasisError(f"{o.name}: no point was made")
            outcome = VmBackupOutcome(name=o.name, failure=BackupFailure(
                name=o.name, error=error.message, exit_code=error.exit_code))
            outcome.error = error
            outcomes.append(outcome)
    return outcomes


def backup_group(connect: str, open_repo: RepoOpener, name: str, *,
                 catalog: str | None, warn: Warn, vms: list[str] | None = None,
                 consistency: str | None = None, require: str | None = None,
                 tags: dict[str, str] | None = None, progress: Progress | None = None,
                 where: Where | None = None) -> BackupResult:
    """Back up a group of VMs into one point at one instant.

    With a stored group ``name``, its members are resolved now and its level,
    required level and hooks are the defaults that ``consistency`` and ``require``
    override; ``vms`` are added to its members. Without one, ``vms`` are the members.
    """
    if consistency is not None:
        check_level(consistency)
    if require is not None:
        check_level(require, "--require")
    extra = list(dict.fromkeys(vms or []))
    with group_store(catalog) as store:
        stored = store.get(name)
    conn = lv.connect(connect)
    if stored is not None:
        g = stored.group
        plan = plan_backup(conn, g, consistency=consistency or g.consistency,
                           require=require if require is not None else g.require,
                           hooks=g.hooks, extra=extra)
        if plan.missing:
            raise GroupError(
                f"group '{name}' names VMs that do not exist: {', '.join(plan.missing)}. "
                "Nothing was backed up. Define them, or remove them from the group with "
                f"'stasis group edit {name} --remove-vm NAME'.")
        if not plan.vms:
            raise GroupError(f"group '{name}' has no members now: no VM is named in it or "
                             "matches its selectors. Nothing was backed up.")
        names, level, required, hooks = plan.vms, plan.consistency, plan.require, plan.hooks
    elif not extra:
        raise UsageError(f"there is no stored group named '{name}': give the members with "
                         f"--vm, or store the group with 'stasis group create {name}'. "
                         "Nothing was backed up.")
    else:
        names, level, required, hooks = extra, consistency or "crash", require, None
    check_levels(level, required, hooks)
    repo = open_repo()
    where = where or Where.default()
    with foreground_job(catalog, "backup", name, warn=warn, vms=names, repo=repo.id) as job:
        m = back_up_members(conn, repo, names, point_name=name, kind="group",
                            run_dir=where.run, scratch_dir=where.scratch, tags=tags,
                            progress=progress, consistency=level, require=required,
                            hooks=hooks)
        job.point(m, repo)
    return BackupResult.of(m, stored_group=stored is not None)
