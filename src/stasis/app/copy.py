"""Copies of points to a second repository, each run a job of kind copy (a dry run
changes nothing and is not recorded)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from stasis.app.jobs import Warn
from stasis.app.kinds import CopyParams, env_here, run_here
from stasis.app.models import CopyResult
from stasis.progress import Progress
from stasis.repository import Repository


def copy_points(open_repo: Callable[[], Repository],
                open_destination: Callable[[str], Repository], *, to: str,
                points: list[str] | None = None, name: str | None = None,
                vm: str | None = None, all_points: bool = False, dry_run: bool = False,
                limit_rate: int | None = None, catalog: str | None, warn: Warn,
                progress: Progress | None = None) -> CopyResult:
    """Copy the points chosen (ids, prefixes or NAME@latest; a name's chain; a VM's
    points; or all) from the repository to ``to``, opened by ``open_destination``;
    ``limit_rate`` bounds the bytes sent a second."""
    env = env_here(catalog=catalog, warn=warn, open_repo=open_repo, progress=progress,
                   open_destination=open_destination)
    params = CopyParams(to=to, points=points or None, name=name, vm=vm, all=all_points,
                        dry_run=dry_run, limit_rate=limit_rate)
    return cast(CopyResult, run_here(params, env))
