"""``doctor``: the debris of interrupted work, protection's and recovery's, found and
(on request) removed.

Protection's part (:mod:`stasis.protection.doctor`) is libvirt backup jobs and
checkpoints left behind, scratch and socket directories of dead processes, stale
locks and temporary files in the repository; recovery's
(:func:`stasis.recovery.instant.debris`) is instant VMs, linked clones and attached
disks whose setup was killed or whose export died, and the domains, instant VMs, files
and network of a drill whose process is gone (:func:`stasis.recovery.drill.debris`).
:func:`doctor` chooses where to look (the run and scratch directories, and where their
sockets go when those paths are too deep for one) and whether libvirt is there to ask.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import libvirt

from stasis.app.models import DoctorFinding, DoctorResult
from stasis.errors import JobNotEnded
from stasis.hypervisor import libvirt_api as lv
from stasis.protection.doctor import (
    DoctorReport,
    clean_repository,
    clean_run_dirs,
    clean_vms,
)
from stasis.recovery.drill import debris as drill_debris
from stasis.recovery.instant import debris as instant_debris
from stasis.repository import Repository
from stasis.rundirs import socket_base
from stasis.settings import run_dir, scratch_dir


def doctor(connect: str, open_repo: Callable[[], Repository] | None, *,
           fix: bool) -> DoctorResult:
    """Look for debris (with ``open_repo``, in that repository and its VMs' checkpoint
    chains too); remove it when ``fix``. libvirt is asked when it runs here, or when
    ``connect`` names another URI than the default."""
    repo = open_repo() if open_repo is not None else None
    conn = (lv.connect(connect) if os.path.exists("/run/libvirt") or connect != lv.DEFAULT_URI
            else None)
    dirs = [run_dir(), scratch_dir()]
    dirs += [socket_base(d) for d in dirs]  # sockets of deep directories go elsewhere
    report = find_debris(conn, repo, sorted(set(dirs)), fix=fix)
    findings = [DoctorFinding(kind=f.kind, what=f.what, fixed=f.fixed) for f in report.findings]
    stuck = [f for f in findings if fix and not f.fixed]
    return DoctorResult(fix=fix, findings=findings, stuck=stuck,
                        exit_code=JobNotEnded.exit_code if stuck else 0)


def find_debris(conn: libvirt.virConnect | None, repo: Repository | None,
                run_dirs: list[Path], *, fix: bool) -> DoctorReport:
    """Look for debris everywhere Stasis works; remove it when ``fix``."""
    report = DoctorReport()
    if conn is not None and repo is not None:
        clean_vms(conn, repo, report, fix=fix)
    # A killed drill's instant VMs are its own to remove (instant debris would keep a
    # running one), so drills come first.
    for kind, what, fixed in drill_debris(conn, fix=fix):
        report.add(kind, what, fixed)
    for kind, what, fixed in instant_debris(conn, fix=fix):
        report.add(kind, what, fixed)
    clean_run_dirs(run_dirs, report, fix=fix)
    clean_repository(repo, report, fix=fix)
    return report
