"""Backups: of VMs (each a point), of a group (one point at one instant), of images.

Each runs as a job of :mod:`stasis.app.kinds`, recorded in the catalog (``catalog``: a
URL, a file, or None for the default; ``warn`` hears once that it cannot be used, and
the backup goes on).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

from stasis.app.jobs import Warn
from stasis.app.kinds import (
    BackupGroupParams,
    BackupImagesParams,
    BackupVmsParams,
    Where,
    env_here,
    run_here,
)
from stasis.app.models import BackupResult, VmBackupOutcome
from stasis.errors import UsageError
from stasis.progress import Progress
from stasis.repository import Repository

__all__ = ["RepoOpener", "Where", "backup_group", "backup_images", "backup_vms",
           "parse_tags"]

# Opens the repository when the operation needs it: after its input was checked, so
# bad input is refused before a passphrase is asked or a key derived.
RepoOpener = Callable[[], Repository]


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
    params = BackupImagesParams(paths=paths, name=name, tags=tags or {}, format=fmt)
    env = env_here(catalog=catalog, warn=warn, open_repo=open_repo, where=where,
                   progress=progress)
    return cast(BackupResult, run_here(params, env))


def backup_vms(connect: str, open_repo: RepoOpener, names: list[str], *,
               catalog: str | None, warn: Warn, tags: dict[str, str] | None = None,
               parallel: int = 2, consistency: str = "crash", require: str | None = None,
               progress: Callable[[str], Progress] | None = None,
               where: Where | None = None) -> list[VmBackupOutcome]:
    """Back up VMs, ``parallel`` at a time, each into its own point, as one job.

    One VM failing does not stop the others: its outcome says why (and keeps the
    error, :attr:`VmBackupOutcome.error`); the job then fails.
    """
    params = BackupVmsParams(vms=names, tags=tags or {}, parallel=parallel,
                             consistency=consistency, require=require)
    env = env_here(catalog=catalog, warn=warn, open_repo=open_repo, connect=connect,
                   where=where, lanes=progress)
    return cast(list[VmBackupOutcome], run_here(params, env))


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
    params = BackupGroupParams(group=name, vms=vms or [], consistency=consistency,
                               require=require, tags=tags or {})
    env = env_here(catalog=catalog, warn=warn, open_repo=open_repo, connect=connect,
                   where=where, progress=progress)
    return cast(BackupResult, run_here(params, env))
