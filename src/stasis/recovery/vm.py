"""Restore of whole VMs: every disk written sparse in its format, the domain
rewritten (new name, UUID, MACs, paths, network) and defined; or in place over the
original, shut-off VM, whose checkpoint chain then starts again.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from stasis.errors import HypervisorError, TargetExists, UsageError, VmState
from stasis.hypervisor import libvirt_api as lv
from stasis.hypervisor import pools
from stasis.hypervisor.domain import Rewrite, parse, rewrite
from stasis.hypervisor.labels import without_labels
from stasis.progress import Progress
from stasis.recovery.restore import RestoreResult, fill_image, restore_disk
from stasis.recovery.target import (
    Volumes,
    check_directory,
    fill_volume,
    make_directory,
    remove_directories,
)
from stasis.repository import Manifest, Repository, VmRecord

DEFAULT_STORAGE = Path("/var/lib/libvirt/images")
SHARED_FILES = ("loader",)  # firmware code: used from the host when it is there


@dataclass
class VmRestoreResult:
    point: str
    vm: str
    name: str
    storage: str
    in_place: bool
    started: bool
    disks: list[RestoreResult] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0
    pool: str | None = None  # the disks and files are volumes of this libvirt pool
    volumes: dict[str, str] = field(default_factory=dict)  # disk or file -> its volume
    storage_created: bool = False  # the storage directory was made for this restore

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["disks"] = [r.to_dict() for r in self.disks]
        return d


def select_vm(point: Manifest, vm: str | None) -> VmRecord:
    vms = [v for v in point.vms if v.kind == "vm"]
    if not vms:
        raise UsageError(f"point {point.id[:12]} holds disk images, not VMs: use "
                         "'stasis restore disk'")
    if vm is not None:
        for v in vms:
            if v.name == vm:
                return v
        raise UsageError(f"point {point.id[:12]} has no VM '{vm}' (it has: "
                         f"{', '.join(v.name for v in vms)})")
    if len(vms) > 1:
        raise UsageError(f"point {point.id[:12]} has {len(vms)} VMs; choose one with --vm")
    return vms[0]


def vm_socket_dir() -> Path:
    """Unix sockets of restored VMs whose storage path is too long for one."""
    path = Path("/run/stasis/vm-sockets") if os.geteuid() == 0 else Path("/tmp/stasis-sockets")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _suffix(fmt: str) -> str:
    return {"qcow2": ".qcow2", "raw": ".img"}.get(fmt, f".{fmt}")


def restore_vm(
    conn: libvirt.virConnect,
    repo: Repository,
    point: Manifest,
    *,
    vm: str | None = None,
    name: str | None = None,
    storage: Path | None = None,
    network: str | None = None,
    start: bool = False,
    in_place: bool = False,
    progress: Progress | None = None,
    run_dir: Path | None = None,
    pool: str | None = None,
) -> VmRestoreResult:
    """Restore the VM ``vm`` of ``point`` as the new VM ``name``, its disks in the
    directory ``storage`` (made when missing) or as volumes of the libvirt ``pool``;
    or ``in_place`` over the original. A failure leaves no disk, volume or domain."""
    began = time.time()
    rec = select_vm(point, vm)
    if in_place:
        return _restore_in_place(conn, repo, point, rec, start=start, progress=progress,
                                 run_dir=run_dir, began=began)
    new_name = name or f"{rec.name}-restored"
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(new_name)
        raise UsageError(f"a VM named '{new_name}' already exists; choose another --name. "
                         "Nothing was restored.")
    if pool is not None and storage is not None:
        raise UsageError("--pool and --storage are two places for the disks: give one; "
                         "nothing was restored")
    volumes = Volumes(pools.open_pool(conn, pool)) if pool is not None else None
    storage = (storage or DEFAULT_STORAGE).absolute()
    make_storage = volumes is None and check_directory(storage)
    if network is not None:
        try:
            conn.networkLookupByName(network)
        except libvirt.libvirtError:
            raise UsageError(f"no libvirt network named '{network}'; nothing was restored") \
                from None
    formats = {d.name: d.format if d.format in ("raw", "qcow2") else "qcow2" for d in rec.disks}
    if volumes is not None:
        formats = {disk: volumes.pool.volume_format(fmt) for disk, fmt in formats.items()}
    disk_names = {d.name: f"{new_name}-{d.name}{_suffix(formats[d.name])}" for d in rec.disks}
    file_names = {f.name: f"{new_name}-{f.name}" for f in rec.files
                  if f.name not in SHARED_FILES or not Path(f.source).exists()}
    if volumes is not None:
        volumes.check_free([*disk_names.values(), *file_names.values()])
        disk_paths: dict[str, str] = {}
        file_paths: dict[str, str] = {}
    else:
        disk_paths = {d: str(storage / n) for d, n in disk_names.items()}
        file_paths = {f: str(storage / n) for f, n in file_names.items()}
        for path in [*disk_paths.values(), *file_paths.values()]:
            if os.path.exists(path):
                raise TargetExists(path)
    result = VmRestoreResult(point.id, rec.name, new_name,
                             "" if volumes is not None else str(storage), False, False,
                             pool=pool, storage_created=make_storage)
    written: list[str] = []
    made = make_directory(storage) if make_storage else []
    try:
        for d in rec.disks:
            if volumes is not None:
                r = fill_volume(volumes, repo, point, name=disk_names[d.name], vm=rec.name,
                                disk=d.name, fmt=formats[d.name], progress=progress,
                                run_dir=run_dir)
                disk_paths[d.name] = r.target
                result.volumes[d.name] = disk_names[d.name]
            else:
                r = restore_disk(repo, point, target=disk_paths[d.name], vm=rec.name,
                                 disk=d.name, fmt=formats[d.name], progress=progress,
                                 run_dir=run_dir)
                written.append(disk_paths[d.name])
            result.disks.append(r)
        for f in rec.files:
            if f.name not in file_names:
                continue
            if volumes is not None:
                file_paths[f.name] = volumes.create(file_names[f.name], "raw", f.virtual_size)
                result.volumes[f.name] = file_names[f.name]
                _restore_file(repo, point, rec, f.name, Path(file_paths[f.name]), run_dir,
                              in_place=True)
            else:
                _restore_file(repo, point, rec, f.name, Path(file_paths[f.name]), run_dir)
                written.append(file_paths[f.name])
            result.files[f.name] = file_paths[f.name]
        # A copy beside its original must not be selected into the original's groups.
        # In a pool, its console logs and sockets go where the sockets of restored
        # VMs go: not among the pool's volumes.
        xml = rewrite(without_labels(rec.domain_xml), Rewrite(
            name=new_name, disk_paths=disk_paths, disk_formats=formats,
            file_paths=file_paths, storage=storage if volumes is None else vm_socket_dir(),
            network=network, socket_dir=vm_socket_dir(),
            disk_volumes={d: (volumes.pool.name, n) for d, n in disk_names.items()}
            if volumes is not None else {},
        ))
        dom = _define(conn, xml)
    except BaseException:
        for path in written:  # nothing half-restored stays behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if volumes is not None:
            volumes.undo()
        remove_directories(made)
        raise
    if start:
        _start(dom)
        result.started = True
    result.duration_s = round(time.time() - began, 3)
    return result


def _restore_file(repo: Repository, point: Manifest, rec: VmRecord, role: str, target: Path,
                  run_dir: Path | None, *, in_place: bool = False) -> None:
    # A file is stored like a raw disk, so the disk restore writes it (sparse, atomic;
    # ``in_place``: into the volume made for it).
    record = next(f for f in rec.files if f.name == role)
    shadow = VmRecord(name=rec.name, kind=rec.kind, disks=[record])
    shadow_point = Manifest(id=point.id, name=point.name, time=point.time, vms=[shadow])
    if in_place:
        fill_image(repo, shadow_point, target=target, vm=rec.name, disk=role, fmt="raw",
                   run_dir=run_dir)
        return
    restore_disk(repo, shadow_point, target=target, vm=rec.name, disk=role, fmt="raw",
                 run_dir=run_dir)


def _define(conn: libvirt.virConnect, xml: str) -> libvirt.virDomain:
    try:
        return conn.defineXML(xml)
    except libvirt.libvirtError as e:
        raise HypervisorError(f"the restored domain could not be defined "
                              f"({e.get_error_message()})",
                              "Its restored disks were removed again.") from None


def _start(dom: libvirt.virDomain) -> None:
    try:
        dom.create()
    except libvirt.libvirtError as e:
        raise HypervisorError(f"{dom.name()} was restored and defined but did not start "
                              f"({e.get_error_message()})", "Its disks and definition are "
                              "in place; fix the cause and start it with virsh start.") from None


def _restore_in_place(
    conn: libvirt.virConnect, repo: Repository, point: Manifest, rec: VmRecord, *,
    start: bool, progress: Progress | None, run_dir: Path | None, began: float,
) -> VmRestoreResult:
    dom = lv.lookup(conn, rec.name)
    if dom.isActive():
        raise VmState(f"VM {rec.name} is {lv.domain_state(dom)}; an in-place restore needs it "
                      "shut off. Nothing was changed. Shut it down first, or restore as a new "
                      "VM with --name.")
    current = pools.resolve_volumes(conn, parse(lv.domain_xml(dom, inactive=True)))
    result = VmRestoreResult(point.id, rec.name, rec.name, "", True, False)
    paths = {d.target: d.source for d in current.disks}
    for d in rec.disks:
        target = paths.get(d.name, d.source)
        if not target:
            raise UsageError(f"disk {d.name} of {rec.name} has no path to restore to")
        fmt = d.format if d.format in ("raw", "qcow2") else "qcow2"
        result.disks.append(restore_disk(repo, point, target=target, vm=rec.name, disk=d.name,
                                         fmt=fmt, force=True, progress=progress,
                                         run_dir=run_dir))
    # The old images, and with them every bitmap, are gone: so is the chain.
    for chk in dom.listAllCheckpoints():
        if chk.getName().startswith("stasis-"):
            with contextlib.suppress(libvirt.libvirtError):
                chk.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    xml = rewrite(rec.domain_xml, Rewrite(
        name=rec.name, disk_paths={d.name: paths.get(d.name, d.source) for d in rec.disks},
        disk_formats={d.name: d.format for d in rec.disks}, file_paths={},
        storage=Path("."), keep_identity=True,
        disk_volumes={d.target: (d.pool, d.volume) for d in current.disks if d.pool},
    ))
    dom = _define(conn, xml)
    if start:
        _start(dom)
        result.started = True
    result.duration_s = round(time.time() - began, 3)
    return result
