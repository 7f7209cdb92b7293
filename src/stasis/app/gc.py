"""Garbage collection: delete the chunks and indexes no point references.

A real run is a job of kind gc; a dry run changes nothing and is not recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from stasis.app.jobs import Warn
from stasis.app.kinds import GcParams, env_here, run_here
from stasis.app.models import GcResult
from stasis.progress import Progress
from stasis.repository import Repository
from stasis.repository.gc import DEFAULT_WAIT


def gc(open_repo: Callable[[], Repository], *, catalog: str | None, warn: Warn,
       dry_run: bool = False, wait: float = DEFAULT_WAIT, progress: Progress | None = None,
       on_wait: Callable[[str, float], None] | None = None) -> GcResult:
    """Collect garbage; ``on_wait`` hears whom the sweep waits for, and how long at most."""
    env = env_here(catalog=catalog, warn=warn, open_repo=open_repo, progress=progress,
                   on_wait=on_wait)
    return cast(GcResult, run_here(GcParams(dry_run=dry_run, wait=wait), env))
