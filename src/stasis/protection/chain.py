"""The checkpoint chain's rules: for each disk, full or incremental, and why.

A disk goes incremental only when everything about its chain is certain; any doubt
sends that disk alone to a full read, and the reason says which.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stasis.blockio import images
from stasis.blockio.raw import RawFile
from stasis.errors import StasisError
from stasis.hypervisor import libvirt_api as lv
from stasis.hypervisor.domain import DomainDisk, DomainInfo, same_file
from stasis.protection.backup import DiskSource
from stasis.repository import DiskIndex, DiskRecord, Manifest, ObjectDamaged, Repository, VmRecord

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


def _parent_disk(parent_vm: VmRecord, target: str) -> DiskRecord | None:
    # The VM's own record: in a group point several VMs may each have a vda.
    return next((d for d in parent_vm.disks if d.name == target), None)


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
    old = _parent_disk(parent_vm, disk.target)
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
        parent_index = repo.load_index(
            old.index, where=f"point {parent.id[:12]} (the parent), disk {disk.target}")
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


def file_sources(repo: Repository, info: DomainInfo, vm_index: int,
                 parent_vm: VmRecord | None) -> Iterator[DiskSource]:
    """The VM's files (nvram, kernel...). One whose path, size and mtime are those of
    the last point is not read again: its index is the last point's."""
    for f in info.files:
        path = Path(f.path)
        try:
            st = path.stat()
        except OSError:
            continue
        if not path.is_file():
            continue
        raw = RawFile(str(path))
        stamp = {"mtime_ns": st.st_mtime_ns}
        old = next((r for r in parent_vm.files if r.name == f.role), None) if parent_vm else None
        parent_index = None
        if (old is not None and old.source == str(path) and old.virtual_size == raw.size
                and old.format_options.get("mtime_ns") == st.st_mtime_ns):
            try:
                parent_index = repo.load_index(old.index)
            except ObjectDamaged:
                parent_index = None
        yield DiskSource(
            name=f.role, reader=raw, virtual_size=raw.size, format="file", source=str(path),
            reason=f"{f.role} file" + (", unchanged since the last point" if parent_index
                                       else ""),
            vm=vm_index, role=f.role, format_options=stamp, parent_index=parent_index,
            changed=(lambda: ()) if parent_index is not None else None,
        )


def removed_disks(parent_vm: VmRecord | None, info: DomainInfo) -> list[str]:
    """Disks the last point had that the VM no longer has."""
    now = {d.target for d in info.disks}
    return sorted(d.name for d in parent_vm.disks if d.name not in now) if parent_vm else []


def format_options(disk: DomainDisk) -> dict[str, object]:
    if disk.kind != "file":
        return {}
    try:
        return images.inspect(disk.source, disk.format).options
    except StasisError:  # options are a nicety for restore, never a failure
        return {}

