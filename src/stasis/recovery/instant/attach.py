"""A disk of a point attached read-only to a running VM, and detached again.

The disk is a network disk (protocol nbd, unix socket) added to the VM's live
definition, served by a detached export.
"""

from __future__ import annotations

import contextlib
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt

from stasis.errors import HypervisorError, InstantError, InstantNotFound, UsageError, VmState
from stasis.hypervisor import libvirt_api as lv
from stasis.recovery.instant.detached_export import qemu_owner, start_export, stop_export
from stasis.recovery.instant.state import Entry, entries, entry_path, forget, new_entry, save
from stasis.recovery.restore import select_disk
from stasis.repository import Credentials, Manifest, Repository

DETACH_TIMEOUT = 60.0


@dataclass
class AttachResult:
    vm: str
    target: str
    point: str
    source_vm: str
    disk: str
    export_pid: int
    socket: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _targets(dom: libvirt.virDomain) -> set[str]:
    root = ET.fromstring(lv.domain_xml(dom))
    return {t.get("dev", "") for t in root.iterfind("devices/disk/target")}


def _network_disk_xml(entry: Entry) -> str:
    export = entry.exports[entry.disk]
    return (f"<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
            f"<source protocol='nbd' name='{export}'>"
            f"<host transport='unix' socket='{entry.socket}'/></source>"
            f"<target dev='{entry.target}' bus='virtio'/><readonly/></disk>")


def attach(conn: libvirt.virConnect, repo: Repository, creds: Credentials, point: Manifest, *,
           vm: str, disk: str, to: str, target: str | None = None) -> AttachResult:
    """Attach ``disk`` of ``vm`` in ``point`` read-only to the running VM ``to``."""
    vm_rec, disk_rec = select_disk(point, vm, disk)
    dom = lv.lookup(conn, to)
    if not dom.isActive():
        raise VmState(f"VM {to} is {lv.domain_state(dom)}; a disk is attached to a running VM. "
                      "Nothing was changed.")
    used = _targets(dom)
    if target is None:
        target = next((f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"vd{c}" not in used),
                      None)
        if target is None:
            raise UsageError(f"VM {to} has no free virtio disk name; give --target")
    elif not re.fullmatch(r"vd[a-z]{1,2}", target):
        raise UsageError(f"--target {target} is not a virtio disk name (vdb, vdc, ...)")
    elif target in used:
        raise UsageError(f"VM {to} already has a disk {target}; choose another --target")
    entry = new_entry("attach", to, vm_rec.name, point, repo, target=target,
                       disk=disk_rec.name)
    if entry_path("attach", entry.key).exists():
        raise UsageError(f"a disk is recorded as attached to {to} as {target} already; "
                         f"'stasis detach {to} --target {target}' removes it")
    save(entry)
    try:
        start_export(entry, repo, creds, point, [(vm_rec.name, disk_rec.name)],
                      qemu_owner(lv.domain_xml(dom)))
        try:
            dom.attachDeviceFlags(_network_disk_xml(entry), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"the disk could not be attached to {to} "
                                  f"({e.get_error_message()})", "Its export was stopped; "
                                  "nothing else was changed.") from None
        entry.state = "attached"
        save(entry)
    except BaseException:
        stop_export(entry)
        forget(entry)
        raise
    return AttachResult(to, target, point.id, vm_rec.name, disk_rec.name, entry.export_pid,
                        entry.socket)


def _find_attached(vm: str, target: str | None) -> Entry:
    found = [e for e in entries("attach") if e.name == vm
             and (target is None or e.target == target)]
    if not found:
        what = f"{vm} as {target}" if target else vm
        raise InstantNotFound(f"No disk from a point is attached to {what}. 'stasis instant list' "
                           "shows what is.")
    if len(found) > 1:
        raise UsageError(f"{len(found)} disks from points are attached to {vm} ("
                         f"{', '.join(e.target for e in found)}); choose one with --target")
    return found[0]


def attached_here(dom: libvirt.virDomain, entry: Entry) -> bool:
    if not dom.isActive():
        return False
    root = ET.fromstring(lv.domain_xml(dom))
    for host in root.iterfind("devices/disk/source/host"):
        if host.get("socket") == entry.socket:
            return True
    return False


def detach(conn: libvirt.virConnect, vm: str, target: str | None = None) -> dict[str, Any]:
    """Detach a disk attached from a point and stop its export."""
    entry = _find_attached(vm, target)
    dom = None
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByName(vm)
    if dom is not None and attached_here(dom, entry):
        try:
            dom.detachDeviceFlags(_network_disk_xml(entry), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"{entry.target} could not be detached from {vm} "
                                  f"({e.get_error_message()})", "It stays attached and its "
                                  "export keeps running.") from None
        deadline = time.monotonic() + DETACH_TIMEOUT
        while attached_here(dom, entry):
            if time.monotonic() > deadline:
                raise InstantError(f"The guest of {vm} did not release {entry.target} within "
                                   f"{DETACH_TIMEOUT:.0f} s; it stays attached and its export "
                                   "keeps running. Try again once the guest stops using it.")
            time.sleep(0.1)
    stop_export(entry)
    forget(entry)
    return {"vm": vm, "target": entry.target, "point": entry.point, "disk": entry.disk}
