"""Backup of libvirt VMs: one VM into a point of its own, or several in parallel.

A running VM is backed up live through a libvirt pull-mode backup job, a shut-off
one from its images; either way incremental where its checkpoint chain allows
(:mod:`stasis.protection.chain`). A single VM is a group of one: the same engine
(:mod:`stasis.protection.capture`) makes group points.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import libvirt

from stasis.errors import StasisError
from stasis.progress import Progress
from stasis.protection.capture import back_up_members
from stasis.repository import Manifest, Repository


def back_up_vm(
    conn: libvirt.virConnect,
    repo: Repository,
    name: str,
    *,
    run_dir: Path,
    scratch_dir: Path,
    tags: dict[str, str] | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    cancel: threading.Event | None = None,
    consistency: str = "crash",
    require: str | None = None,
) -> Manifest:
    """Make one point of VM ``name`` and commit it.

    ``run_dir`` holds Stasis's own sockets; ``scratch_dir`` the libvirt job's socket
    and scratch files (QEMU's user must reach it).
    """
    return back_up_members(conn, repo, [name], point_name=name, kind="vm", run_dir=run_dir,
                           scratch_dir=scratch_dir, tags=tags, progress=progress,
                           workers=workers, cancel=cancel, consistency=consistency,
                           require=require)


@dataclass
class VmOutcome:
    name: str
    point: Manifest | None = None
    error: StasisError | None = None


def back_up_vms(
    conn: libvirt.virConnect,
    repo: Repository,
    names: list[str],
    *,
    run_dir: Path,
    scratch_dir: Path,
    tags: dict[str, str] | None = None,
    progress: Callable[[str], Progress] | None = None,
    parallel: int = 2,
    consistency: str = "crash",
    require: str | None = None,
) -> list[VmOutcome]:
    """Back up several VMs, ``parallel`` at a time, each into its own point.

    One VM failing does not stop the others; its outcome carries the error. An
    interrupt (Ctrl-C, SIGTERM) stops them all before they commit and is re-raised.
    """
    cancel = threading.Event()
    outcomes = {n: VmOutcome(n) for n in names}

    def one(name: str) -> None:
        try:
            outcomes[name].point = back_up_vm(
                conn, repo, name, run_dir=run_dir, scratch_dir=scratch_dir, tags=tags,
                progress=progress(name) if progress else None, cancel=cancel,
                consistency=consistency, require=require)
        except StasisError as e:
            outcomes[name].error = e

    if len(names) == 1 or parallel <= 1:
        for name in names:
            one(name)
        return list(outcomes.values())
    pool = ThreadPoolExecutor(max_workers=min(parallel, len(names)),
                              thread_name_prefix="vm")
    futures = [pool.submit(one, n) for n in names]
    try:
        for fut in futures:
            fut.result()
    except BaseException:
        cancel.set()  # every VM's pipeline stops; each ends its job and drops its checkpoint
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return list(outcomes.values())
