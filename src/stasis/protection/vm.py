"""Backup of libvirt VMs: live through pull-mode backup jobs, or from the images
of a shut-off VM, incremental where a checkpoint chain proves what changed.

For each disk the chain is checked before an incremental; any doubt sends that
disk alone to a full read (deduplication keeps it cheap in storage) and the point
says why. A checkpoint made for a point that does not commit is deleted, so the
next incremental is still correct.
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import libvirt

from stasis.blockio import BlockReader, images
from stasis.blockio.nbd import NBD_STATE_DIRTY, QemuNbd
from stasis.blockio.raw import RawFile
from stasis.errors import StasisError
from stasis.hypervisor import libvirt_api as lv
from stasis.hypervisor.domain import DomainDisk, DomainInfo, parse, qemu_run_id, same_file
from stasis.progress import Progress
from stasis.protection.backup import DiskSource, back_up_disks, open_reader
from stasis.protection.doctor import clean_vm
from stasis.repository import (
    DiskIndex,
    DiskRecord,
    Manifest,
    ObjectDamaged,
    Repository,
    VmRecord,
)
from stasis.repository.repo import new_point_id, utc_now_iso

# Why a disk is read in full: the rules of the chain, as data.
REASONS = {
    "first": "first point of this VM in this repository: full read",
    "no-bitmaps": "{format} disk keeps no dirty bitmap: every allocated range read, "
                  "known chunks not stored again",
    "added": "disk added since the last point: full read",
    "resized": "disk resized from {old} to {new} bytes since the last point: full read",
    "replaced": "disk source changed from {old} to {new} since the last point: full read",
    "redefined": "VM redefined (UUID {old} is now {new}) since the last point: full read",
    "no-checkpoint": "the last point left no checkpoint for this disk: full read",
    "checkpoint-missing": "checkpoint {checkpoint} of the last point is gone (deleted, or the "
                          "VM was redefined): full read",
    "checkpoint-no-disk": "checkpoint {checkpoint} has no bitmap for this disk: full read",
    "restarted": "VM restarted since the last point: a dirty bitmap cannot show writes "
                 "made while QEMU was not running, so full read",
    "bitmap-unusable": "bitmap {checkpoint} in the image is {problem}: full read",
    "parent-unreadable": "the last point's index of this disk is damaged: full read",
    "incremental": "changes since checkpoint {checkpoint} (point {parent})",
    "offline-incremental": "VM shut off: changes since checkpoint {checkpoint} (point {parent}) "
                           "from the image's persistent bitmap",
}


@dataclass
class DiskPlan:
    disk: DomainDisk
    virtual_size: int
    base: str | None  # checkpoint to read changes since, or None for a full read
    reason: str
    parent_index: DiskIndex | None = None


def _parent_disk(parent: Manifest | None, target: str) -> DiskRecord | None:
    if parent is None:
        return None
    for vm in parent.vms:
        for d in vm.disks:
            if d.name == target:
                return d
    return None


def plan_disk(
    repo: Repository,
    disk: DomainDisk,
    size: int,
    *,
    parent: Manifest | None,
    parent_vm: VmRecord | None,
    info: DomainInfo,
    running: bool,
    run_id: str,
    live_checkpoints: dict[str, lv.Checkpoint],
    image_bitmaps: dict[str, str] | None = None,
) -> DiskPlan:
    """Decide full or incremental for one disk, and say why."""

    def full(key: str, **kw: object) -> DiskPlan:
        return DiskPlan(disk, size, None, REASONS[key].format(**kw))

    if not disk.bitmaps:
        return full("no-bitmaps", format=disk.format)
    if parent is None or parent_vm is None:
        return full("first")
    old = _parent_disk(parent, disk.target)
    if old is None:
        return full("added")
    if parent_vm.uuid and parent_vm.uuid != info.uuid:
        return full("redefined", old=parent_vm.uuid, new=info.uuid)
    if old.virtual_size != size:
        return full("resized", old=old.virtual_size, new=size)
    if old.source and not same_file(old.source, disk.source):
        return full("replaced", old=old.source, new=disk.source)
    if not old.checkpoint:
        return full("no-checkpoint")
    checkpoint = old.checkpoint
    if running:
        chk = live_checkpoints.get(checkpoint)
        if chk is None:
            return full("checkpoint-missing", checkpoint=checkpoint)
        if disk.target not in chk.bitmap_disks:
            return full("checkpoint-no-disk", checkpoint=checkpoint)
        if parent_vm.extra.get("checkpoint_run_id") != run_id or not run_id:
            return full("restarted")
        key = "incremental"
    else:
        problem = (image_bitmaps or {}).get(checkpoint, "missing")
        if problem != "ok":
            return full("bitmap-unusable", checkpoint=checkpoint, problem=problem)
        key = "offline-incremental"
    try:
        parent_index = repo.load_index(old.index)
    except ObjectDamaged:
        return full("parent-unreadable")
    return DiskPlan(disk, size, checkpoint, REASONS[key].format(checkpoint=checkpoint,
                                                               parent=parent.id[:12]),
                    parent_index)


def image_bitmaps(path: str) -> dict[str, str]:
    """Persistent bitmaps of a qcow2 image: name -> "ok" or what is wrong with it."""
    proc = subprocess.run(["qemu-img", "info", "-U", "--output=json", path],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {}
    data = json.loads(proc.stdout).get("format-specific", {}).get("data", {})
    found = {}
    for bm in data.get("bitmaps", []) or []:
        flags = bm.get("flags", [])
        if "in-use" in flags:
            found[bm["name"]] = "marked in use (QEMU did not close it cleanly)"
        elif "auto" not in flags:
            found[bm["name"]] = "disabled"
        else:
            found[bm["name"]] = "ok"
    return found


def _file_sources(info: DomainInfo, vm_index: int) -> Iterator[DiskSource]:
    for f in info.files:
        path = Path(f.path)
        if not path.is_file():
            continue
        raw = RawFile(str(path))
        yield DiskSource(
            name=f.role, reader=raw, virtual_size=raw.size, format="file", source=str(path),
            reason=f"{f.role} file", vm=vm_index, role=f.role,
        )


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
) -> Manifest:
    """Make one point of VM ``name`` and commit it.

    ``run_dir`` holds Stasis's own sockets; ``scratch_dir`` the libvirt job's socket
    and scratch files (QEMU's user must reach it).
    """
    dom = lv.lookup(conn, name)
    with repo.shared_lock(f"backup vm {name}"):
        clean_vm(dom, repo)
        parent = repo.latest(name)
        parent_vm = next((v for v in parent.vms if v.name == name), None) if parent else None
        running = lv.is_running(dom)
        if running:
            return _back_up_running(conn, repo, dom, parent, parent_vm, run_dir=scratch_dir,
                                    tags=tags, progress=progress, workers=workers,
                                    cancel=cancel)
        return _back_up_shut_off(repo, dom, parent, parent_vm, run_dir=run_dir, tags=tags,
                                 progress=progress, workers=workers, cancel=cancel)


def _vm_record(dom: libvirt.virDomain, info: DomainInfo, state: str) -> VmRecord:
    return VmRecord(
        name=dom.name(), kind="vm", uuid=info.uuid,
        domain_xml=lv.domain_xml(dom, inactive=True), consistency="crash" if state == "running"
        else "shut off", state=state,
    )


def _back_up_running(
    conn: libvirt.virConnect, repo: Repository, dom: libvirt.virDomain,
    parent: Manifest | None, parent_vm: VmRecord | None, *, run_dir: Path,
    tags: dict[str, str] | None, progress: Progress | None, workers: int | None,
    cancel: threading.Event | None,
) -> Manifest:
    live = parse(lv.domain_xml(dom))
    run_id = qemu_run_id(dom.name())
    chain = {c.name: c for c in lv.checkpoints(dom, lv.chain_prefix(repo.id))}
    plans = [
        plan_disk(repo, d, lv.block_info(dom, d.target)[0], parent=parent, parent_vm=parent_vm,
                  info=live, running=True, run_id=run_id, live_checkpoints=chain)
        for d in live.disks
    ]
    point_id = new_point_id()
    new_checkpoint = lv.checkpoint_name(repo.id, point_id)
    bitmap_disks = [p.disk.target for p in plans if p.disk.bitmaps]
    job = lv.PullBackup(
        dom, [lv.JobDisk(p.disk, p.base) for p in plans],
        checkpoint=new_checkpoint if bitmap_disks else None, checkpoint_disks=bitmap_disks,
        run_dir=run_dir, dac=live.dac,
    )
    point_time = utc_now_iso()
    with job, contextlib.ExitStack() as stack:
        vm = _vm_record(dom, live, "running")
        vm.extra = {"checkpoint_run_id": run_id, "checkpoint": job.checkpoint or "",
                    "begin_s": round(job.begin_seconds, 4),
                    "disks_removed": _removed(parent_vm, live)}
        sources: list[DiskSource] = []
        for p in plans:
            export = job.export(p.disk.target, incremental=p.base is not None)
            stack.callback(export.close)
            changed = None
            if p.base is not None:
                changed = functools.partial(lv.dirty_extents, export, p.disk.target,
                                            p.virtual_size)
            sources.append(DiskSource(
                name=p.disk.target, reader=export, virtual_size=p.virtual_size,
                format=p.disk.format, source=p.disk.source, reason=p.reason,
                parent_index=p.parent_index, changed=changed,
                format_options=_format_options(p.disk),
                checkpoint=new_checkpoint if p.disk.bitmaps else "",
                source_kind=p.disk.kind,
            ))
        for f in _file_sources(live, 0):
            stack.callback(f.reader.close)  # type: ignore[attr-defined]
            sources.append(f)
        manifest = back_up_disks(
            repo, sources, name=dom.name(), kind="vm", vms=[vm], tags=tags, parent=parent,
            point_id=point_id, point_time=point_time, progress=progress, workers=workers,
            cancel=cancel,
        )
        job.keep_checkpoint()
    # Older checkpoints of this chain are no longer a base for anything.
    for old in lv.checkpoints(dom, lv.chain_prefix(repo.id)):
        if old.name != new_checkpoint:
            with contextlib.suppress(libvirt.libvirtError):
                lv.delete_checkpoint(dom, old.name)
    return manifest


def _back_up_shut_off(
    repo: Repository, dom: libvirt.virDomain, parent: Manifest | None,
    parent_vm: VmRecord | None, *, run_dir: Path, tags: dict[str, str] | None,
    progress: Progress | None, workers: int | None, cancel: threading.Event | None,
) -> Manifest:
    info = parse(lv.domain_xml(dom, inactive=True))
    point_time = utc_now_iso()
    with contextlib.ExitStack() as stack:
        sources: list[DiskSource] = []
        for d in info.disks:
            img = images.inspect(d.source, d.format)
            bitmaps = image_bitmaps(d.source) if d.bitmaps else {}
            p = plan_disk(repo, d, img.virtual_size, parent=parent, parent_vm=parent_vm,
                          info=info, running=False, run_id="", live_checkpoints={},
                          image_bitmaps=bitmaps)
            reader: BlockReader
            changed: Callable[[], Iterable[tuple[int, int]]] | None
            if p.base is not None:
                export = stack.enter_context(
                    QemuNbd(d.source, d.format, run_dir=run_dir, bitmap=p.base))
                reader = export
                changed = functools.partial(export.flagged_extents,
                                            f"qemu:dirty-bitmap:{p.base}", NBD_STATE_DIRTY,
                                            img.virtual_size)
            else:
                reader = stack.enter_context(open_reader(img, run_dir))
                changed = None
            # The base checkpoint stays the base: libvirt cannot make one while shut off.
            keep = p.base or ""
            sources.append(DiskSource(
                name=d.target, reader=reader, virtual_size=img.virtual_size, format=d.format,
                source=d.source, reason=p.reason, parent_index=p.parent_index,
                changed=changed, format_options=img.options, checkpoint=keep,
                source_kind=d.kind,
            ))
        for f in _file_sources(info, 0):
            stack.callback(f.reader.close)  # type: ignore[attr-defined]
            sources.append(f)
        vm = _vm_record(dom, info, "shut off")
        vm.extra = {"checkpoint_run_id": (parent_vm.extra.get("checkpoint_run_id", "")
                                          if parent_vm else ""),
                    "disks_removed": _removed(parent_vm, info)}
        return back_up_disks(
            repo, sources, name=dom.name(), kind="vm", vms=[vm], tags=tags, parent=parent,
            point_time=point_time, progress=progress, workers=workers, cancel=cancel,
        )


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
                progress=progress(name) if progress else None, cancel=cancel)
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


def _removed(parent_vm: VmRecord | None, info: DomainInfo) -> list[str]:
    """Disks the last point had that the VM no longer has."""
    now = {d.target for d in info.disks}
    return sorted(d.name for d in parent_vm.disks if d.name not in now) if parent_vm else []


def _format_options(disk: DomainDisk) -> dict[str, object]:
    if disk.kind != "file":
        return {}
    try:
        return images.inspect(disk.source, disk.format).options
    except StasisError:  # options are a nicety for restore, never a failure
        return {}

