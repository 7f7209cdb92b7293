"""Verification of points, quick (every chunk is there) or deep (every chunk intact),
recorded as a job of kind verify: ``stasis status`` shows it as the last verification
of the points' VMs."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from stasis.app.jobs import Warn
from stasis.app.kinds import VerifyParams, env_here, run_here
from stasis.app.models import VerifyResult
from stasis.progress import Progress
from stasis.repository import Repository


def verify_points(repo: Repository, points: list[str] | None = None, *, deep: bool = False,
                  catalog: str | None, warn: Warn, progress: Progress | None = None,
                  on_report: Callable[[VerifyResult], None] | None = None,
                  repair_from: str | None = None,
                  open_other: Callable[[str], Repository] | None = None) -> VerifyResult:
    """Verify ``points`` (ids, prefixes or NAME@latest; None: every point); with
    ``repair_from`` (opened by ``open_other``), heal what is damaged or missing from
    that repository.

    Raises IntegrityError when anything is damaged or missing (and not healed), after
    ``on_report`` heard the whole report (an interface shows it before the error).
    """
    env = env_here(catalog=catalog, warn=warn, open_repo=lambda: repo, progress=progress,
                   on_report=on_report, open_destination=open_other)
    return cast(VerifyResult, run_here(VerifyParams(points=points or None, deep=deep,
                                                    repair_from=repair_from), env))
