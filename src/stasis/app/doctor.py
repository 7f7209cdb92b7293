"""``doctor``: the debris of interrupted work, protection's and recovery's, found and
(on request) removed.

Protection's part (:mod:`stasis.protection.doctor`) is libvirt backup jobs and
checkpoints left behind, scratch and socket directories of dead processes, stale
locks and temporary files in the repository; recovery's
(:func:`stasis.recovery.instant.debris`) is instant VMs, linked clones and attached
disks whose setup was killed or whose export died.
"""

from __future__ import annotations

from pathlib import Path

import libvirt

from stasis.protection.doctor import (
    DoctorReport,
    clean_repository,
    clean_run_dirs,
    clean_vms,
)
from stasis.recovery.instant import debris as instant_debris
from stasis.repository import Repository


def doctor(conn: libvirt.virConnect | None, repo: Repository | None, run_dirs: list[Path], *,
           fix: bool) -> DoctorReport:
    """Look for debris everywhere Stasis works; remove it when ``fix``."""
    report = DoctorReport()
    if conn is not None and repo is not None:
        clean_vms(conn, repo, report, fix=fix)
    for kind, what, fixed in instant_debris(conn, fix=fix):
        report.add(kind, what, fixed)
    clean_run_dirs(run_dirs, report, fix=fix)
    clean_repository(repo, report, fix=fix)
    return report
