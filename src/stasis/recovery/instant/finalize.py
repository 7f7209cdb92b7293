"""An instant VM made an ordinary one: its disks copied to local storage while it runs
(libvirt block copy, then pivot), its export stopped. The copies are files in the
instant VM's storage directory, or volumes of a libvirt storage pool, made empty
through the pool and mirrored into (deleted through it again when the finalize stops
before its pivots).

Every disk is mirrored first, all at once, and pivoted only once every mirror is
ready: until the first pivot the VM runs from the export as before, so work stopped
there (an error, or :class:`~stasis.parallel.Cancelled` raised by ``progress``, which
hears the bytes copied) aborts the mirrors and removes the copies, and the VM goes on
running from the repository, to be finalized again or discarded. The pivots take
no time worth stopping for and are not interrupted."""

from __future__ import annotations

import contextlib
import os
import stat
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from stasis.errors import HypervisorError, InstantError, TargetExists
from stasis.hypervisor import libvirt_api as lv
from stasis.hypervisor import pools
from stasis.progress import NoProgress, Progress
from stasis.recovery.instant.detached_export import stop_export
from stasis.recovery.instant.marker import NAMESPACE, marked_domain, unmark
from stasis.recovery.instant.state import find_instant, forget, save
from stasis.recovery.target import Volumes
from stasis.recovery.vm import select_vm
from stasis.repository import Repository

COPY_TIMEOUT = 24 * 3600.0


def _suffix(fmt: str) -> str:
    return {"qcow2": ".qcow2", "raw": ".img"}.get(fmt, f".{fmt}")


@dataclass
class FinalizeResult:
    name: str
    disks: dict[str, str]
    duration_s: float
    pool: str | None = None  # the copies are volumes of this libvirt pool
    volumes: dict[str, str] = field(default_factory=dict)  # disk -> its volume

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def finalize(conn: libvirt.virConnect, repo: Repository, name: str,
             progress: Progress | None = None, pool: str | None = None) -> FinalizeResult:
    """Copy every disk of the instant VM ``name`` to local storage while it runs (its
    storage directory, or new volumes of the libvirt ``pool``), pivot to the copies,
    and stop its export. ``progress`` hears the bytes copied."""
    began = time.time()
    progress = progress or NoProgress()
    entry = find_instant(name)
    dom = marked_domain(conn, entry)
    if dom is None or not dom.isActive():
        raise InstantError(f"Instant VM {name} is not running; finalize copies a running VM. "
                           f"'stasis instant discard {name}' removes it.")
    if not entry.export_alive:
        raise InstantError(f"The export of instant VM {name} is not running (pid "
                           f"{entry.export_pid} is gone), so its data cannot be copied. "
                           f"'stasis instant discard {name}' removes it.")
    point = repo.load_manifest(entry.point)
    rec = select_vm(point, entry.vm)
    formats = {d.name: d.format if d.format in ("raw", "qcow2") else "qcow2" for d in rec.disks}
    storage = Path(entry.storage)
    volumes = Volumes(pools.open_pool(conn, pool)) if pool is not None else None
    if volumes is not None:
        formats = {d: volumes.pool.volume_format(f) for d, f in formats.items()}
    names = {d: f"{name}-{d}{_suffix(fmt)}" for d, fmt in formats.items()}
    dests = {d: str(storage / n) for d, n in names.items()}
    if volumes is not None:
        volumes.check_free(list(names.values()))
    else:
        for path in dests.values():
            if os.path.exists(path) and path not in entry.copies.values():
                raise TargetExists(path)
    sizes = {d.name: d.virtual_size for d in rec.disks}
    pivoted: set[str] = set()
    try:
        if volumes is not None:  # made empty through the pool, then mirrored into
            dests = {d: volumes.create(n, formats[d], sizes[d]) for d, n in names.items()}
        entry.state = "finalizing"
        entry.copies = dests
        save(entry)
        progress.start(f"copy of {name}'s disks to "
                       + (f"the storage pool {pool}" if pool is not None else str(storage)),
                       sum(d.virtual_size for d in rec.disks))
        for disk, dest in dests.items():
            _start_copy(dom, disk, dest, formats[disk], reuse=volumes is not None)
        _wait_ready(dom, list(dests), progress)
        for disk, dest in dests.items():
            _pivot(dom, disk, dest)
            pivoted.add(disk)
        progress.finish()
    except BaseException:
        for disk in dests:
            if disk not in pivoted:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.blockJobAbort(disk, 0)
        for disk, dest in dests.items():
            if disk not in pivoted and volumes is not None:
                pools.delete_volume(volumes.pool, names[disk])
            elif disk not in pivoted:  # a pivoted disk runs on its copy
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(dest)
        entry.state, entry.copies = "running", {d: dests[d] for d in pivoted}
        save(entry)
        raise
    # The persistent definition follows the pivot, and is no instant VM any more.
    root = ET.fromstring(unmark(lv.domain_xml(dom, inactive=True)))
    for el in root.iterfind("devices/disk"):
        target = el.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if dev in dests:
            src = el.find("source")
            if src is None:
                src = ET.SubElement(el, "source")
            src.attrib.clear()
            if volumes is not None:
                el.set("type", "volume")
                src.set("pool", volumes.pool.name)
                src.set("volume", names[dev])
            else:
                el.set("type", "file")
                src.set("file", dests[dev])
            drv = el.find("driver")
            if drv is not None:
                drv.set("type", formats[dev])
            backing = el.find("backingStore")
            if backing is not None:
                el.remove(backing)
    try:
        conn.defineXML(ET.tostring(root, encoding="unicode"))
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, NAMESPACE,
                        libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as e:
        raise HypervisorError(f"{name} runs on its local copies but its definition could not "
                              f"be updated ({e.get_error_message()})",
                              "Its export is still running; run finalize again.") from None
    stop_export(entry)
    for path in entry.overlays.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    forget(entry)
    return FinalizeResult(name, dests, round(time.time() - began, 3), pool=pool,
                          volumes=dict(names) if pool is not None else {})


def _disk_source(dom: libvirt.virDomain, disk: str) -> tuple[str, bool]:
    """(source file, mirror ready) of ``disk`` in the live definition."""
    root = ET.fromstring(lv.domain_xml(dom))
    for el in root.iterfind("devices/disk"):
        target = el.find("target")
        if target is not None and target.get("dev") == disk:
            src = el.find("source")
            mirror = el.find("mirror")
            return ((src.get("file") or src.get("dev") or "") if src is not None else "",
                    mirror is not None and mirror.get("ready") == "yes")
    raise InstantError(f"the VM {dom.name()} has no disk {disk}")


def _start_copy(dom: libvirt.virDomain, disk: str, dest: str, fmt: str, *,
                reuse: bool = False) -> None:
    """Mirror ``disk`` to ``dest``: a new file, or (``reuse``) a pool's new volume, an
    empty image of the disk's size (a file or a block device)."""
    kind, attr = ("block", "dev") if reuse and _is_block(dest) else ("file", "file")
    dest_xml = (f"<disk type='{kind}'><source {attr}='{escape(dest)}'/>"
                f"<driver type='{fmt}'/></disk>")
    flags = libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
    if reuse:
        flags |= libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT
    try:
        dom.blockCopy(disk, dest_xml, None, flags)
    except libvirt.libvirtError as e:
        raise HypervisorError(f"the copy of {dom.name()}/{disk} to {dest} did not start "
                              f"({e.get_error_message()})", "The VM still runs from the "
                              "export; nothing was changed.") from None


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _wait_ready(dom: libvirt.virDomain, disks: list[str], progress: Progress) -> None:
    """Until every disk's mirror is ready, telling ``progress`` the bytes copied (it
    may stop the wait: Cancelled)."""
    deadline = time.monotonic() + COPY_TIMEOUT
    done = dict.fromkeys(disks, 0)
    while True:
        ready = 0
        for disk in disks:
            info = dom.blockJobInfo(disk, 0)
            if _disk_source(dom, disk)[1]:
                ready += 1
            elif not info:
                raise HypervisorError(f"the copy of {dom.name()}/{disk} ended before it "
                                      "was complete", "The VM still runs from the export.")
            cur = int(info.get("cur", 0)) if info else done[disk]
            progress.advance(max(0, cur - done[disk]))
            done[disk] = max(done[disk], cur)
        if ready == len(disks):
            return
        if time.monotonic() > deadline:
            raise HypervisorError(f"the copy of {dom.name()}'s disks did not finish",
                                  "The VM still runs from the export.")
        time.sleep(0.2)


def _pivot(dom: libvirt.virDomain, disk: str, dest: str) -> None:
    deadline = time.monotonic() + COPY_TIMEOUT
    try:
        dom.blockJobAbort(disk, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
    except libvirt.libvirtError as e:
        raise HypervisorError(f"the pivot of {dom.name()}/{disk} to {dest} failed "
                              f"({e.get_error_message()})", "The VM still runs from the "
                              "export.") from None
    while _disk_source(dom, disk)[0] != dest or dom.blockJobInfo(disk, 0):
        if time.monotonic() > deadline:
            raise HypervisorError(f"the pivot of {dom.name()}/{disk} did not complete", "")
        time.sleep(0.05)
