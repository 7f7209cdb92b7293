"""Debris left by interrupted work, found and (on request) removed.

What a crash or kill -9 can leave, and how each is recognised:

- a libvirt backup job still running, whose socket lies in a ``stasis-job-<pid>-…``
  directory of a process that no longer runs;
- a checkpoint of this repository's chain whose point never committed (its name
  ends with a point-id prefix that no manifest has);
- socket and scratch directories of dead Stasis processes in the run directory;
- locks of dead processes, and temporary files in the repository.

Every VM backup runs the VM's part of this first, so the next incremental is right
even if nobody ran ``stasis doctor``. ``stasis doctor`` (:mod:`stasis.app.doctor`)
adds recovery's debris (instant VMs, attached disks) to what is found here.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from stasis.errors import JobNotEnded, VmState
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Repository
from stasis.repository.gc import TEMP_MAX_AGE, old_leftovers
from stasis.rundirs import remove_dead_debris

_JOB_DIR = re.compile(r"/" + re.escape(lv.JOB_DIR_PREFIX) + r"(\d+)-[0-9a-f]+/")


@dataclass
class Finding:
    kind: str
    what: str
    fixed: bool = False


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)

    def add(self, kind: str, what: str, fixed: bool) -> None:
        self.findings.append(Finding(kind, what, fixed))


def orphaned_job(dom: libvirt.virDomain) -> tuple[bool, str] | None:
    """(is Stasis's and left behind, socket) of the domain's backup job.

    A job is left behind when the process that began it is gone, or when its socket
    directory is: a run removes that directory only after it tried to end the job
    (a long-lived ``stasis serve`` whose end of a job failed is still running).
    """
    sock = lv.backup_job_socket(dom)
    if sock is None:
        return None
    m = _JOB_DIR.search(sock)
    if not m:
        return False, sock
    gone = not os.path.exists(f"/proc/{m.group(1)}") or not os.path.isdir(os.path.dirname(sock))
    return gone, sock


def clean_vm(dom: libvirt.virDomain, repo: Repository, report: DoctorReport | None = None,
             *, fix: bool = True) -> DoctorReport:
    """End a dead Stasis job of ``dom`` and delete checkpoints whose point never committed.

    Raises VmState when the VM is in a backup job that is not debris, and JobNotEnded
    when debris of a job cannot be ended.
    """
    report = report or DoctorReport()
    job = orphaned_job(dom)
    if job is not None:
        dead, sock = job
        if not dead:
            raise VmState(
                f"VM {dom.name()} is already in a backup job ({sock or 'not made by Stasis'}); "
                "nothing was changed. Wait for it to end."
            )
        if fix:
            lv.end_job(dom)  # JobNotEnded when libvirt will not let it end
        report.add("libvirt job", f"{dom.name()}: backup job that Stasis left running", fix)
    if dom.isActive():  # libvirt cannot delete checkpoints of a shut-off VM
        committed = {pid[:12] for pid in repo.point_ids()}
        for chk in lv.checkpoints(dom, lv.chain_prefix(repo.id)):
            if chk.point_prefix() not in committed:
                if fix:
                    with contextlib.suppress(libvirt.libvirtError):
                        lv.delete_checkpoint(dom, chk.name)
                report.add("checkpoint", f"{dom.name()}: {chk.name} (its point never committed)",
                           fix)
    return report


def clean_vms(conn: libvirt.virConnect, repo: Repository, report: DoctorReport, *,
              fix: bool) -> None:
    """:func:`clean_vm` on every domain; a job that is not debris is left alone, and a
    domain that another client undefines while doctor looks at it is no longer a VM."""
    for dom in conn.listAllDomains():
        try:
            clean_vm(dom, repo, report, fix=fix)
        except VmState:
            pass  # a job of a running Stasis, or not Stasis's: not debris
        except JobNotEnded as e:
            report.add("libvirt job", str(e), False)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise


def clean_run_dirs(run_dirs: list[Path], report: DoctorReport, *, fix: bool) -> None:
    """Socket and scratch directories of dead Stasis processes."""
    for run_dir in run_dirs:
        for path in remove_dead_debris(run_dir, dry_run=not fix):
            report.add("scratch", str(path), fix)


def clean_repository(repo: Repository | None, report: DoctorReport, *, fix: bool) -> None:
    """Locks of dead processes and old temporary files in the repository."""
    if repo is not None:
        stale = [lk for lk in repo.locks.locks() if repo.locks.is_stale(lk)]
        for lk in stale:
            if fix:
                repo.backend.delete("locks/" + lk.id)
            report.add("lock", lk.describe(), fix)
        # A write in flight also has a temporary object: only old ones are debris.
        for leftover in old_leftovers(repo.backend, time.time, TEMP_MAX_AGE):
            if fix:
                repo.backend.discard(leftover)
            report.add("temporary file", f"{repo.url.rstrip('/')}/{leftover.name}", fix)
