"""libvirt: connections, Stasis's checkpoint chains, and pull-mode backup jobs.

Checkpoints Stasis makes are named ``stasis-<repo id:12>-<point id:12>``: one chain
per VM and repository (each disk is in it when its format keeps bitmaps), and a name
that says which point a checkpoint belongs to, so one whose point never committed
is recognisable as debris. Stasis never touches a checkpoint without its prefix.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import libvirt

from stasis.blockio.nbd import NBD_STATE_DIRTY, Export, remove_dead_debris, socket_base
from stasis.errors import HypervisorError, VmNotFound
from stasis.hypervisor.domain import DomainDisk

DEFAULT_URI = "qemu:///system"
JOB_DIR_PREFIX = "stasis-job-"


def _quiet_errors(_ctx: object, _err: object) -> None:
    """libvirt prints every error on stderr by default; Stasis reports its own."""


libvirt.registerErrorHandler(_quiet_errors, None)


def connect(uri: str = DEFAULT_URI) -> libvirt.virConnect:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise HypervisorError(
            f"cannot connect to {uri} ({e.get_error_message()})",
            "Is libvirtd running? Nothing was changed.",
        ) from None


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        raise VmNotFound(name, conn.getURI()) from None


def is_running(dom: libvirt.virDomain) -> bool:
    return bool(dom.isActive())


def domain_xml(dom: libvirt.virDomain, *, inactive: bool = False) -> str:
    flags = libvirt.VIR_DOMAIN_XML_SECURE
    if inactive:
        flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
    return str(dom.XMLDesc(flags))


# ------------------------------------------------------------------ checkpoints


def chain_prefix(repo_id: str) -> str:
    return f"stasis-{repo_id[:12]}-"


def checkpoint_name(repo_id: str, point_id: str) -> str:
    return chain_prefix(repo_id) + point_id[:12]


@dataclass
class Checkpoint:
    name: str
    created: int
    bitmap_disks: list[str] = field(default_factory=list)  # targets with a bitmap

    def point_prefix(self) -> str:
        return self.name.rsplit("-", 1)[-1]


def checkpoints(dom: libvirt.virDomain, prefix: str = "stasis-") -> list[Checkpoint]:
    """Stasis's checkpoints of ``dom`` under ``prefix``, oldest first."""
    found = []
    for chk in dom.listAllCheckpoints():
        name = chk.getName()
        if not name.startswith(prefix):
            continue
        root = ET.fromstring(chk.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN))
        disks = [
            d.get("name", "")
            for d in root.iterfind("disks/disk")
            if d.get("checkpoint") == "bitmap"
        ]
        found.append(Checkpoint(name, int(root.findtext("creationTime", "0")), disks))
    return sorted(found, key=lambda c: (c.created, c.name))


def delete_checkpoint(dom: libvirt.virDomain, name: str) -> None:
    """Delete one of Stasis's checkpoints (and its bitmaps); gone already is fine."""
    if not name.startswith("stasis-"):
        raise ValueError(f"refusing to touch foreign checkpoint {name}")
    try:
        chk = dom.checkpointLookupByName(name)
    except libvirt.libvirtError:
        return
    try:
        chk.delete(0)
    except libvirt.libvirtError:
        # A bitmap QEMU already dropped (inconsistent after a crash) cannot be deleted
        # with the checkpoint; the metadata goes so the chain is clean.
        chk.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)


# ------------------------------------------------------------------ backup jobs


@dataclass
class JobDisk:
    disk: DomainDisk
    incremental_from: str | None = None  # checkpoint name, or None for a full read


def job_dir(base: Path, dac: tuple[int, int] | None) -> Path:
    """A private directory for a job's scratch files (or socket), owned by QEMU's user
    (QEMU writes and binds there) and named with our pid (for debris cleanup)."""
    path = base / f"{JOB_DIR_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o770)
    if dac is not None:
        os.chown(path, dac[0], dac[1])
    return path


class PullBackup:
    """A libvirt pull-mode backup job: every disk exported over NBD, frozen at the
    instant the job began (QEMU copies old data to scratch before it is overwritten).

    Leaving the ``with`` block always ends the job and removes the scratch files. The
    checkpoint created with the job is deleted too unless :meth:`keep_checkpoint` was
    called (once the point committed), so the next incremental stays correct.
    """

    def __init__(
        self,
        dom: libvirt.virDomain,
        disks: list[JobDisk],
        *,
        checkpoint: str | None,
        checkpoint_disks: list[str],
        run_dir: Path,
        dac: tuple[int, int] | None,
    ) -> None:
        self.dom = dom
        self.disks = disks
        self.checkpoint = checkpoint
        self.checkpoint_disks = checkpoint_disks
        self.run_dir = run_dir
        self.dac = dac
        self.dir: Path | None = None  # scratch files
        self.socket_dir: Path | None = None  # the NBD socket: the same, unless too deep
        self._keep = False
        self._begun = False
        self.begin_seconds = 0.0

    def backup_xml(self, socket_path: str) -> str:
        root = ET.Element("domainbackup", {"mode": "pull"})
        ET.SubElement(root, "server", {"transport": "unix", "socket": socket_path})
        disks_el = ET.SubElement(root, "disks")
        assert self.dir is not None
        for jd in self.disks:
            attrs = {
                "name": jd.disk.target, "backup": "yes", "type": "file",
                "exportname": jd.disk.target, "exportbitmap": f"stasis-dirty-{jd.disk.target}",
            }
            if jd.incremental_from:
                attrs.update(backupmode="incremental", incremental=jd.incremental_from)
            else:
                attrs["backupmode"] = "full"
            disk_el = ET.SubElement(disks_el, "disk", attrs)
            ET.SubElement(disk_el, "scratch",
                          {"file": str(self.dir / f"scratch-{jd.disk.target}.qcow2")})
        return ET.tostring(root, encoding="unicode")

    def checkpoint_xml(self) -> str | None:
        if not self.checkpoint:
            return None
        root = ET.Element("domaincheckpoint")
        ET.SubElement(root, "name").text = self.checkpoint
        ET.SubElement(root, "description").text = "made by Stasis; do not delete by hand"
        disks_el = ET.SubElement(root, "disks")
        for jd in self.disks:
            mode = "bitmap" if jd.disk.target in self.checkpoint_disks else "no"
            ET.SubElement(disks_el, "disk", {"name": jd.disk.target, "checkpoint": mode})
        return ET.tostring(root, encoding="unicode")

    def __enter__(self) -> PullBackup:
        short = socket_base(self.run_dir)
        for base in {self.run_dir, short}:  # what a killed run left behind
            remove_dead_debris(base)
        self.dir = job_dir(self.run_dir, self.dac)
        self.socket_dir = self.dir if short == self.run_dir else job_dir(short, self.dac)
        socket_path = str(self.socket_dir / "nbd.sock")
        started = time.monotonic()
        try:
            self.dom.backupBegin(self.backup_xml(socket_path), self.checkpoint_xml(), 0)
        except libvirt.libvirtError as e:
            self._remove_dirs()
            raise HypervisorError(
                f"the backup job of {self.dom.name()} did not start ({e.get_error_message()})",
                "Nothing was changed.",
            ) from None
        self.begin_seconds = time.monotonic() - started
        self._begun = True
        self.socket_path = socket_path
        return self

    def export(self, target: str, *, incremental: bool) -> Export:
        contexts = (f"qemu:dirty-bitmap:stasis-dirty-{target}",) if incremental else ()
        return Export(self.socket_path, name=target, meta_contexts=contexts)

    def keep_checkpoint(self) -> None:
        self._keep = True

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._begun:
                end_job(self.dom)
        finally:
            try:
                if self._begun and self.checkpoint and not self._keep:
                    with contextlib.suppress(libvirt.libvirtError):
                        delete_checkpoint(self.dom, self.checkpoint)
            finally:
                self._remove_dirs()

    def _remove_dirs(self) -> None:
        for path in (self.dir, self.socket_dir):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)


def end_job(dom: libvirt.virDomain) -> None:
    """End the domain's backup job, if it still has one."""
    with contextlib.suppress(libvirt.libvirtError):
        if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            dom.abortJob()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                return
        except libvirt.libvirtError:
            return  # domain gone
        time.sleep(0.02)


def backup_job_socket(dom: libvirt.virDomain) -> str | None:
    """The socket of a running backup job of ``dom``, if any."""
    try:
        xml = dom.backupGetXMLDesc(0)
    except libvirt.libvirtError:
        return None
    m = re.search(r"<server[^>]*socket='([^']*)'", xml)
    return m.group(1) if m else ""


def dirty_extents(export: Export, target: str, size: int) -> Iterator[tuple[int, int]]:
    return export.flagged_extents(f"qemu:dirty-bitmap:stasis-dirty-{target}", NBD_STATE_DIRTY,
                                  size)


def block_info(dom: libvirt.virDomain, target: str) -> tuple[int, int]:
    """(virtual size, allocated bytes) of a disk of ``dom``."""
    capacity, allocation, _physical = dom.blockInfo(target)
    return int(capacity), int(allocation)


def domain_state(dom: libvirt.virDomain) -> str:
    names: dict[int, str] = {
        libvirt.VIR_DOMAIN_NOSTATE: "no state",
        libvirt.VIR_DOMAIN_RUNNING: "running",
        libvirt.VIR_DOMAIN_BLOCKED: "blocked",
        libvirt.VIR_DOMAIN_PAUSED: "paused",
        libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
        libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
        libvirt.VIR_DOMAIN_CRASHED: "crashed",
        libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
    }
    state: Any = dom.state()[0]
    return names.get(int(state), "unknown")
