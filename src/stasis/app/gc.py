"""Garbage collection: delete the chunks and indexes no point references.

A real run is a job of kind gc; a dry run changes nothing and is not recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from stasis.app.jobs import Warn, foreground_job
from stasis.app.models import GcResult
from stasis.errors import UsageError
from stasis.progress import Progress
from stasis.repository import Repository
from stasis.repository.gc import DEFAULT_WAIT, collect_garbage


def gc(open_repo: Callable[[], Repository], *, catalog: str | None, warn: Warn,
       dry_run: bool = False, wait: float = DEFAULT_WAIT, progress: Progress | None = None,
       on_wait: Callable[[str, float], None] | None = None) -> GcResult:
    """Collect garbage; ``on_wait`` hears whom the sweep waits for, and how long at most."""
    if wait < 0:
        raise UsageError("--wait takes a number of seconds, 0 or more")
    r = open_repo()
    with (contextlib.nullcontext(None) if dry_run else
          foreground_job(catalog, "gc", "gc", warn=warn, repo=r.id,
                         params={"wait": wait})) as job:
        report = collect_garbage(r, dry_run=dry_run, wait=wait, progress=progress,
                                 on_wait=on_wait)
        if job is not None:
            job.result["gc"] = report.to_dict()
    return GcResult.model_validate(report.to_dict())
