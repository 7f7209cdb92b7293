"""Instant VMs and linked clones' VMs started on a detached export of a point.

The VM's disks are qcow2 overlays on the export; its kernel, initrd or NVRAM are
restored beside them. Anything made is removed again when the start fails or is
interrupted.
"""

from __future__ import annotations

import contextlib
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from stasis.errors import HypervisorError, TargetExists, UsageError
from stasis.hypervisor.domain import Rewrite, rewrite
from stasis.hypervisor.labels import without_labels
from stasis.recovery.export import create_overlay
from stasis.recovery.instant.detached_export import export_uri, qemu_owner, start_export
from stasis.recovery.instant.discard import discard_entry
from stasis.recovery.instant.marker import mark
from stasis.recovery.instant.state import VM_KINDS, Entry, entries, new_entry, save
from stasis.recovery.restore import restore_disk
from stasis.recovery.target import check_directory, make_directory, remove_directories
from stasis.recovery.vm import DEFAULT_STORAGE, SHARED_FILES, select_vm, vm_socket_dir
from stasis.repository import Credentials, Manifest, Repository, VmRecord


@dataclass
class InstantResult:
    name: str
    vm: str
    point: str
    export_pid: int
    socket: str
    overlays: dict[str, str]
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _restore_file(repo: Repository, point: Manifest, rec: VmRecord, role: str,
                  target: Path) -> None:
    # A file is stored like a raw disk, so the disk restore writes it (sparse, atomic).
    record = next(f for f in rec.files if f.name == role)
    shadow = Manifest(id=point.id, name=point.name, time=point.time,
                      vms=[VmRecord(name=rec.name, kind=rec.kind, disks=[record])])
    restore_disk(repo, shadow, target=target, vm=rec.name, disk=role, fmt="raw")


def start_instant(
    conn: libvirt.virConnect, repo: Repository, creds: Credentials, point: Manifest, *,
    vm: str | None = None, name: str | None = None, network: str | None = None,
    storage: Path | None = None,
) -> InstantResult:
    """Define and start a VM whose disks are overlays on an export of ``point``."""
    began = time.time()
    rec = select_vm(point, vm)
    entry = start_on_export(conn, repo, creds, point, rec, kind="instant",
                            name=name or f"{rec.name}-instant", network=network,
                            storage=storage, start=True)
    return InstantResult(entry.name, rec.name, point.id, entry.export_pid, entry.socket,
                         dict(entry.overlays), round(time.time() - began, 3))


def check_new_vm(conn: libvirt.virConnect, name: str, storage: Path,
                 network: str | None) -> None:
    """Refuse, before anything is made, a name in use, a missing network, or a storage
    directory that is missing and cannot be made."""
    check_directory(storage)
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(name)
        raise UsageError(f"a VM named '{name}' already exists; choose another --name. "
                         "Nothing was made.")
    for e in entries():
        if e.kind in VM_KINDS and e.name == name:
            raise UsageError(f"an {e.kind} VM '{name}' is recorded already; 'stasis "
                             f"{'instant discard' if e.kind == 'instant' else 'clone delete'} "
                             f"{name}' removes what is left of it")
    if network is not None:
        try:
            conn.networkLookupByName(network)
        except libvirt.libvirtError:
            raise UsageError(f"no libvirt network named '{network}'; nothing was made") \
                from None


def start_on_export(
    conn: libvirt.virConnect, repo: Repository, creds: Credentials, point: Manifest,
    rec: VmRecord, *, kind: str, name: str, network: str | None, storage: Path | None,
    start: bool, lock: bool = True,
) -> Entry:
    """Define (and if ``start``, start) the VM ``name`` of kind ``kind`` (instant or
    clone): its disks are qcow2 overlays on a detached export of ``rec``'s disks in
    ``point``. Anything made is removed again when this fails or is interrupted.
    ``lock`` False: the export takes no shared repository lock (the caller keeps the
    point from removal otherwise, with a hold)."""
    storage = (storage or DEFAULT_STORAGE).absolute()
    check_new_vm(conn, name, storage, network)
    overlays = {d.name: str(storage / f"{name}-{d.name}.{kind}.qcow2") for d in rec.disks}
    files = {f.name: str(storage / f"{name}-{f.name}") for f in rec.files
             if f.name not in SHARED_FILES or not Path(f.source).exists()}
    for path in [*overlays.values(), *files.values()]:
        if os.path.exists(path):
            raise TargetExists(path)
    made = make_directory(storage) if check_directory(storage) else []
    entry = new_entry(kind, name, rec.name, point, repo, storage=str(storage))
    save(entry)
    try:
        for role, path in files.items():
            entry.files.append(path)
            save(entry)
            _restore_file(repo, point, rec, role, Path(path))
        start_export(entry, repo, creds, point, [(rec.name, d.name) for d in rec.disks],
                      qemu_owner(rec.domain_xml), lock=lock)
        for d in rec.disks:
            entry.overlays[d.name] = overlays[d.name]
            save(entry)
            create_overlay(Path(overlays[d.name]), export_uri(entry, d.name), d.virtual_size)
        xml = rewrite(without_labels(rec.domain_xml), Rewrite(
            name=name, disk_paths=overlays, disk_formats={d: "qcow2" for d in overlays},
            file_paths=files, storage=storage, network=network, socket_dir=vm_socket_dir(),
        ))
        entry.files += _chardev_paths(xml)  # logs and sockets QEMU makes for it
        save(entry)
        try:
            dom = conn.defineXML(mark(xml, entry))
            if start:
                dom.create()
        except libvirt.libvirtError as e:
            raise HypervisorError(f"the {kind} VM {name} could not be "
                                  f"{'started' if start else 'defined'} "
                                  f"({e.get_error_message()})",
                                  "Everything made for it was removed again.") from None
        entry.state = "running" if kind == "instant" else "linked"
        save(entry)
    except BaseException:
        discard_entry(conn, entry)
        remove_directories(made)
        raise
    return entry


def _chardev_paths(xml: str) -> list[str]:
    root = ET.fromstring(xml)
    paths = []
    for dev in root.iter():
        if dev.tag in ("serial", "console", "channel", "parallel"):
            for src in dev.iterfind("source"):
                if src.get("path") and src.get("mode") in ("bind", None):
                    paths.append(src.get("path", ""))
            for log in dev.iterfind("log"):
                if log.get("file"):
                    paths.append(log.get("file", ""))
    return list(dict.fromkeys(paths))
