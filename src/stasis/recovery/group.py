"""Restore of a whole group point: every VM of the point comes back as a new domain
(its name plus a suffix, its disks in one storage directory or libvirt storage pool,
its interfaces on one network), and optionally started in a given order, each
running before the next.

A group restore is all or nothing. Everything that can be checked is checked before
the first byte is written (names free, targets absent, storage and network present,
the start order naming VMs of the point); a failure later on (a damaged chunk, a
domain that will not define or start) removes every domain and file this restore
created, and the error says what was removed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt

from stasis.errors import HypervisorError, StasisError, TargetExists, UsageError
from stasis.hypervisor import pools
from stasis.progress import Progress
from stasis.recovery.target import (
    Volumes,
    check_directory,
    make_directory,
    remove_directories,
)
from stasis.recovery.vm import (
    DEFAULT_STORAGE,
    SHARED_FILES,
    VmRestoreResult,
    _suffix,
    restore_vm,
    vm_socket_dir,
)
from stasis.repository import Manifest, Repository, VmRecord

DEFAULT_SUFFIX = "-restored"
RUNNING_TIMEOUT_S = 60.0


class GroupRestoreFailed(StasisError):
    """Restoring the group point {point} failed at VM {vm}: {cause} The group restore was undone: {undone}. The originals were not touched; fix the cause and run the restore again."""  # noqa: E501

    def __init__(self, *, point: str, vm: str, cause: BaseException, undone: str) -> None:
        text = cause.message if isinstance(cause, StasisError) else str(cause)
        hint = cause.hint if isinstance(cause, StasisError) else None
        super().__init__(point=point, vm=vm, cause=text.strip().rstrip(".") + ".", undone=undone,
                         hint=hint or None)
        self.cause = cause
        # The cause decides the exit code (17 for a target, 19 for damaged data, 22 for
        # libvirt), so a script sees the same code as for the one VM restored alone.
        self.exit_code = getattr(cause, "exit_code", 1)  # type: ignore[misc]


@dataclass
class VmStart:
    vm: str
    name: str
    started_at: str  # UTC, ISO 8601
    running_after_s: float  # from create() to libvirt reporting it running


@dataclass
class GroupRestoreResult:
    point: str
    suffix: str
    storage: str
    network: str | None
    vms: list[VmRestoreResult] = field(default_factory=list)
    start_order: list[str] = field(default_factory=list)  # the point's VM names
    starts: list[VmStart] = field(default_factory=list)
    duration_s: float = 0.0
    pool: str | None = None  # the disks are volumes of this libvirt pool
    storage_created: bool = False

    def to_dict(self) -> dict[str, Any]:
        starts = {s.vm: s for s in self.starts}
        vms = []
        for r in self.vms:
            d = r.to_dict()
            s = starts.get(r.vm)
            d["started_at"] = s.started_at if s else None
            d["running_after_s"] = s.running_after_s if s else None
            vms.append(d)
        return {
            "point": self.point, "suffix": self.suffix, "storage": self.storage,
            "network": self.network, "vms": vms, "start_order": self.start_order,
            "starts": [s.__dict__ for s in self.starts], "duration_s": self.duration_s,
            "pool": self.pool, "storage_created": self.storage_created,
        }


@dataclass
class _Plan:
    rec: VmRecord
    name: str
    paths: list[str]  # every disk and file the VM restore will write


def group_vms(point: Manifest) -> list[VmRecord]:
    vms = [v for v in point.vms if v.kind == "vm"]
    if not vms:
        raise UsageError(f"point {point.id[:12]} holds disk images, not VMs: use "
                         "'stasis restore disk'")
    return vms


def start_order(vms: Sequence[VmRecord], order: Sequence[str] | None) -> list[str]:
    """The point's VM names in start order: ``order`` first, the rest in point order."""
    names = [v.name for v in vms]
    order = list(order or [])
    unknown = [n for n in order if n not in names]
    if unknown:
        raise UsageError(f"--order names {', '.join(unknown)}, not in the point (it has: "
                         f"{', '.join(names)}); nothing was restored")
    twice = sorted({n for n in order if order.count(n) > 1})
    if twice:
        raise UsageError(f"--order names {', '.join(twice)} more than once; nothing was "
                         "restored")
    return order + [n for n in names if n not in order]


def _domain_exists(conn: libvirt.virConnect, name: str) -> bool:
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


def _plan(conn: libvirt.virConnect, vms: Sequence[VmRecord], *, suffix: str, storage: Path,
          network: str | None, start: bool, pool: str | None = None) -> list[_Plan]:
    """Check everything a restore of ``vms`` needs; raise before anything is written."""
    if not suffix:
        raise UsageError("the suffix is empty: the restored VMs would take the originals' "
                         "names; nothing was restored")
    volumes = Volumes(pools.open_pool(conn, pool)) if pool is not None else None
    if volumes is None:
        check_directory(storage)
    if network is not None:
        try:
            net = conn.networkLookupByName(network)
        except libvirt.libvirtError:
            raise UsageError(f"no libvirt network named '{network}'; nothing was restored") \
                from None
        if start and not net.isActive():
            raise UsageError(f"the libvirt network '{network}' is not active (virsh "
                             f"net-start {network}); nothing was restored")
    plans = []
    for rec in vms:
        name = f"{rec.name}{suffix}"
        # The same names restore_vm writes, checked for every VM before the first.
        fmts = [d.format if d.format in ("raw", "qcow2") else "qcow2" for d in rec.disks]
        if volumes is not None:
            fmts = [volumes.pool.volume_format(f) for f in fmts]
        paths = [f"{name}-{d.name}{_suffix(f)}" for d, f in zip(rec.disks, fmts, strict=True)]
        paths += [f"{name}-{f.name}" for f in rec.files
                  if f.name not in SHARED_FILES or not Path(f.source).exists()]
        if volumes is None:
            paths = [str(storage / p) for p in paths]
        plans.append(_Plan(rec, name, paths))
    taken = [p.name for p in plans if _domain_exists(conn, p.name)]
    if taken:
        raise UsageError(f"a VM named {', '.join(repr(n) for n in taken)} already exists; "
                         "choose another --suffix. Nothing was restored.")
    for p in plans:
        if volumes is not None:
            volumes.check_free(p.paths)
            continue
        for path in p.paths:
            if os.path.lexists(path):
                raise TargetExists(path)
    return plans


def restore_group(
    conn: libvirt.virConnect,
    repo: Repository,
    point: Manifest,
    *,
    suffix: str = DEFAULT_SUFFIX,
    storage: Path | None = None,
    network: str | None = None,
    start: bool = False,
    order: Sequence[str] | None = None,
    progress: Progress | None = None,
    run_dir: Path | None = None,
    running_timeout_s: float = RUNNING_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    pool: str | None = None,
) -> GroupRestoreResult:
    """Restore every VM of ``point`` as ``NAME+suffix``, their disks in ``storage``
    (made when missing) or as volumes of the libvirt ``pool``; with ``start``, start
    them in ``order`` (the point's VM names; the rest follow in point order), each one
    running before the next is started."""
    if pool is not None and storage is not None:
        raise UsageError("--pool and --storage are two places for the disks: give one; "
                         "nothing was restored")
    began = clock()
    vms = group_vms(point)
    if order and not start:
        raise UsageError("--order is the order to start the VMs in: it needs --start")
    sequence = start_order(vms, order) if start else []
    storage = (storage or DEFAULT_STORAGE).absolute()
    plans = _plan(conn, vms, suffix=suffix, storage=storage, network=network, start=start,
                  pool=pool)
    result = GroupRestoreResult(point.id, suffix, "" if pool else str(storage), network,
                                start_order=sequence, pool=pool)
    by_vm = {p.rec.name: p for p in plans}
    chardevs = _chardev_files(storage, [p.name for p in plans])
    made = make_directory(storage) if pool is None and check_directory(storage) else []
    result.storage_created = bool(made)
    current = ""
    try:
        for p in plans:
            current = p.rec.name
            result.vms.append(restore_vm(conn, repo, point, vm=p.rec.name, name=p.name,
                                         storage=None if pool else storage, network=network,
                                         progress=progress, run_dir=run_dir, pool=pool))
        for vm in sequence:
            current = vm
            result.starts.append(_start_and_wait(conn, vm, by_vm[vm].name,
                                                 running_timeout_s, clock))
            next(r for r in result.vms if r.vm == vm).started = True
    except BaseException as e:
        undone = _undo(conn, result.vms, storage, chardevs)
        remove_directories(made)
        if isinstance(e, Exception):
            raise GroupRestoreFailed(point=point.id[:12], vm=current, cause=e,
                                     undone=undone) from e
        raise  # an interrupt: cleaned up all the same
    result.duration_s = round(clock() - began, 3)
    return result


def _start_and_wait(conn: libvirt.virConnect, vm: str, name: str, timeout_s: float,
                    clock: Callable[[], float]) -> VmStart:
    dom = conn.lookupByName(name)
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    t0 = clock()
    try:
        dom.create()
    except libvirt.libvirtError as e:
        raise HypervisorError(f"{name} (restored from {vm}) did not start "
                              f"({e.get_error_message()})", "") from None
    while True:
        state = dom.state()[0]
        if state == libvirt.VIR_DOMAIN_RUNNING:
            return VmStart(vm, name, started_at, round(clock() - t0, 3))
        if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED) \
                or clock() - t0 > timeout_s:
            raise HypervisorError(f"{name} (restored from {vm}) was started but is not "
                                  f"running after {clock() - t0:.1f} s", "")
        time.sleep(0.05)


def _chardev_files(storage: Path, names: Sequence[str]) -> set[Path]:
    """Console logs and sockets of the new VMs that exist already (they are not ours)."""
    found: set[Path] = set()
    for base in (storage, vm_socket_dir()):
        for name in names:
            found.update(base.glob(f"{name}.chardev*"))
    return found


def _undo(conn: libvirt.virConnect, done: Sequence[VmRestoreResult], storage: Path,
          before: set[Path]) -> str:
    """Remove the domains and files of ``done``; say what was removed and what was not."""
    removed: list[str] = []
    failed: list[str] = []
    for r in done:
        try:
            dom = conn.lookupByName(r.name)
            if dom.isActive():
                dom.destroy()
            # Keep NVRAM to libvirt: the restored copy is one of the files removed below.
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
            removed.append(f"domain {r.name}")
        except libvirt.libvirtError as e:
            failed.append(f"domain {r.name} ({e.get_error_message()})")
        if r.pool is not None:
            try:
                vols = Volumes(pools.open_pool(conn, r.pool), list(r.volumes.values()))
            except StasisError as e:
                failed.append(f"the volumes {', '.join(r.volumes.values())} of pool "
                              f"{r.pool} ({e.message})")
                continue
            left = vols.undo()
            removed += [f"volume {v} of pool {r.pool}" for v in r.volumes.values()
                        if v not in left]
            failed += [f"volume {v} of pool {r.pool}" for v in left]
            continue
        for path in [d.target for d in r.disks] + list(r.files.values()):
            try:
                os.unlink(path)
                removed.append(str(path))
            except FileNotFoundError:
                pass
            except OSError as e:
                failed.append(f"{path} ({e.strerror})")
    for chardev in _chardev_files(storage, [r.name for r in done]) - before:
        with contextlib.suppress(OSError):
            chardev.unlink()  # the console logs the started copies wrote
    text = ", ".join(removed) if removed else "nothing had been created yet"
    if failed:
        text += f"; could not remove {', '.join(failed)}: remove them by hand"
    return text
