"""libvirt: connections, Stasis's checkpoint chains, and pull-mode backup jobs.

Checkpoints Stasis makes are named ``stasis-<repo id:12>-<point id:12>``: one chain
per VM and repository (each disk is in it when its format keeps bitmaps), and a name
that says which point a checkpoint belongs to, so one whose point never committed
is recognisable as debris. Stasis never touches a checkpoint without its prefix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import libvirt

from stasis import hypervisor
from stasis.errors import HypervisorError, JobNotEnded, VmNotFound
from stasis.hypervisor.domain import DomainDisk
from stasis.rundirs import remove_dead_debris, socket_base

log = logging.getLogger(__name__)

DEFAULT_URI = hypervisor.DEFAULT_URI
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


# How long ending a backup job may take before Stasis says it could not. libvirt 9.0
# handles a domain's QEMU events on one worker thread, one after the other; a guest
# that opens or closes a virtio-serial port during a backup job (its guest agent
# starting or restarting, say) parks that thread for libvirt's 30 s job wait, since the
# backup job does not admit the job the port's handler asks for, and the backup's own
# end is queued behind it. The kick in end_job ends the job at once; past this, even
# the parked thread has moved on, so a job still there will not end by waiting.
END_JOB_TIMEOUT_S = 40.0


@dataclass(frozen=True)
class JobExport:
    """A disk as a backup job exports it over NBD: the unix socket, the export name,
    and the meta context of its dirty bitmap (None for a full read)."""

    socket: str
    name: str
    dirty_context: str | None


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
        end_timeout: float = END_JOB_TIMEOUT_S,
    ) -> None:
        self.dom = dom
        self.end_timeout = end_timeout
        self.disks = disks
        self.checkpoint = checkpoint
        self.checkpoint_disks = checkpoint_disks
        self.run_dir = run_dir
        self.dac = dac
        self.dir: Path | None = None  # scratch files
        self.socket_dir: Path | None = None  # the NBD socket: the same, unless too deep
        self._keep = False
        self._begun = False
        self._xml: tuple[str, str | None] | None = None  # (backup, checkpoint), once prepared
        self._scratch_made = False  # prepared ahead: the scratch images exist
        self._checkpoint_made = False  # prepared ahead: the checkpoint exists already
        self.begin_seconds = 0.0
        # What beginning cost, step by step: monotonic (asked, returned) of "debris",
        # "dirs", "xml" (prepare) and "backupBegin" (the libvirt call).
        self.steps: dict[str, tuple[float, float]] = {}
        self.not_ended: JobNotEnded | None = None  # set when the job outlived __exit__

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

    def prepare(self, *, ahead: bool = False) -> None:
        """Everything of beginning but the libvirt call: the debris of killed runs
        removed, the job's directories made, its XML built. A group does this before
        it suspends anyone, so that only :meth:`begin` is inside its window; once
        prepared, leaving the ``with`` block (or calling ``__exit__``) removes the
        directories even if the job never began.

        With ``ahead``, also what libvirt would otherwise do inside ``backupBegin``:
        the scratch images are made here (begun with REUSE_EXTERNAL, so libvirt does
        not create them through QEMU inside the call), and the checkpoint is created
        now, on its own. A checkpoint made before the backup's instant marks every write
        after it: a superset of what changes after the instant, so the next
        incremental reads a little more and misses nothing. 8 members' backupBegin
        calls take about half as long without these two (bench/README.md)."""
        if self._xml is not None:
            return
        asked = time.monotonic()
        short = socket_base(self.run_dir)
        for base in {self.run_dir, short}:  # what a killed run left behind
            remove_dead_debris(base)
        self.steps["debris"] = (asked, asked := time.monotonic())
        try:
            self.dir = job_dir(self.run_dir, self.dac)
            self.socket_dir = self.dir if short == self.run_dir else job_dir(short, self.dac)
        except BaseException:
            self._remove_dirs()
            raise
        self.steps["dirs"] = (asked, asked := time.monotonic())
        self.socket_path = str(self.socket_dir / "nbd.sock")
        self._xml = (self.backup_xml(self.socket_path), self.checkpoint_xml())
        self.steps["xml"] = (asked, asked := time.monotonic())
        if not ahead:
            return
        self._make_scratch()
        self.steps["scratch"] = (asked, asked := time.monotonic())
        if self._xml[1] is not None:
            try:
                self.dom.checkpointCreateXML(self._xml[1], 0)
            except libvirt.libvirtError as e:
                raise HypervisorError(
                    f"the checkpoint of {self.dom.name()} could not be created "
                    f"({e.get_error_message()})", "Nothing was changed.") from None
            self._checkpoint_made = True
            self._xml = (self._xml[0], None)
            self.steps["checkpoint"] = (asked, time.monotonic())

    def _make_scratch(self) -> None:
        """Each disk's scratch image, of the disk's size, owned by QEMU's user."""
        assert self.dir is not None
        for jd in self.disks:
            path = self.dir / f"scratch-{jd.disk.target}.qcow2"
            size = self.dom.blockInfo(jd.disk.target)[0]
            proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path),
                                   str(size)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise HypervisorError(
                    f"the scratch image for {self.dom.name()}'s {jd.disk.target} could not "
                    f"be made ({proc.stderr.strip()[-200:]})", "Nothing was changed.")
            if self.dac is not None:
                os.chown(path, self.dac[0], self.dac[1])
        self._scratch_made = True

    def begin(self) -> None:
        """Begin the job (preparing it first if :meth:`prepare` was not called)."""
        self.prepare()
        assert self._xml is not None
        started = time.monotonic()
        try:
            self.dom.backupBegin(self._xml[0], self._xml[1],
                                 libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL
                                 if self._scratch_made else 0)
        except libvirt.libvirtError as e:
            self.steps["backupBegin"] = (started, time.monotonic())
            self._remove_dirs()
            raise HypervisorError(
                f"the backup job of {self.dom.name()} did not start ({e.get_error_message()})",
                "Nothing was changed.",
            ) from None
        self._begun = True
        self.steps["backupBegin"] = (started, time.monotonic())
        self.begin_seconds = self.steps["backupBegin"][1] - started

    def __enter__(self) -> PullBackup:
        self.begin()
        return self

    def export(self, target: str, *, incremental: bool) -> JobExport:
        """Where the job serves disk ``target``; with ``incremental``, the context of
        its dirty bitmap too (the block I/O layer reads it)."""
        dirty = f"qemu:dirty-bitmap:stasis-dirty-{target}" if incremental else None
        return JobExport(self.socket_path, target, dirty)

    def keep_checkpoint(self) -> None:
        self._keep = True

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._begun:
                try:
                    end_job(self.dom, timeout=self.end_timeout)
                except JobNotEnded as e:
                    if et is None:
                        self.not_ended = e  # the caller reports it: its work itself is fine
                    else:
                        log.warning("%s", e)  # the error on its way out says what failed
        finally:
            try:
                if (self._begun or self._checkpoint_made) and self.checkpoint \
                        and not self._keep:
                    with contextlib.suppress(libvirt.libvirtError):
                        delete_checkpoint(self.dom, self.checkpoint)
            finally:
                self._remove_dirs()

    def _remove_dirs(self) -> None:
        for path in (self.dir, self.socket_dir):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)


def end_job(dom: libvirt.virDomain, *, timeout: float = END_JOB_TIMEOUT_S) -> None:
    """End the domain's backup job, if it still has one, and return once it is gone.

    ``abortJob`` asks QEMU to cancel the job's block jobs; libvirt ends the backup job
    when it has seen them end. Where its event thread is parked (see
    END_JOB_TIMEOUT_S) the end is never seen in time, so while the job remains each
    disk of the job gets a synchronous ``blockJobAbort``: libvirt processes the disk's
    pending end in that call (it answers "still being ended", which is expected) and
    the backup job ends with it. Only the disks of the backup job seen at the start
    are touched, and only while that same job runs.

    Raises JobNotEnded when the job is still there after ``timeout`` seconds.
    """
    started = time.monotonic()
    deadline = started + timeout
    job = _backup_job_known(dom, deadline, started)
    if job is None:
        return
    socket, targets = job
    with contextlib.suppress(libvirt.libvirtError):
        dom.abortJob()
    kicks = 0
    while True:
        now = _backup_job_known(dom, deadline, started, kicks)
        if now is None:
            return
        if now[0] != socket:
            return  # ours ended; another job began meanwhile (not ours to touch)
        if time.monotonic() >= deadline:
            raise JobNotEnded(dom.name(), round(time.monotonic() - started), kicks)
        time.sleep(0.02 if kicks == 0 else 0.1)
        if _backup_job(dom) is not None:
            for target in targets:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.blockJobAbort(target, 0)
            kicks += 1


def _backup_job(dom: libvirt.virDomain) -> tuple[str, list[str]] | None:
    """(NBD socket, disk targets) of the domain's running backup job, or None (also
    when libvirt could not tell: see :func:`_backup_job_known`)."""
    try:
        return _backup_job_strict(dom)
    except libvirt.libvirtError:
        return None  # no backup job (another kind of job, or the domain is gone)


def _backup_job_known(dom: libvirt.virDomain, deadline: float, started: float,
                      kicks: int = 0) -> tuple[str, list[str]] | None:
    """Like :func:`_backup_job`, but an answer libvirt could not give is asked again
    until ``deadline`` (then JobNotEnded), never taken for "no job".

    An error of a query is no answer: taking it for "no job" would return with the
    job still running (and its checkpoint, scratch file and NBD socket with it). Only
    libvirt saying so (no backup job, no domain, domain not running) means gone.
    """
    while True:
        try:
            return _backup_job_strict(dom)
        except libvirt.libvirtError as e:
            if _job_gone(dom, e):
                return None
            if time.monotonic() >= deadline:
                raise JobNotEnded(dom.name(), round(time.monotonic() - started), kicks) from None
            log.debug("backup job of %s: libvirt could not tell (%s); asking again",
                      dom.name(), e.get_error_message())
            time.sleep(0.1)


def _job_gone(dom: libvirt.virDomain, e: libvirt.libvirtError) -> bool:
    if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_BACKUP, libvirt.VIR_ERR_NO_DOMAIN):
        return True
    try:
        return not dom.isActive()
    except libvirt.libvirtError:
        return True  # the domain itself cannot be reached any more: no job of it either


def _backup_job_strict(dom: libvirt.virDomain) -> tuple[str, list[str]] | None:
    """(NBD socket, disk targets) of the running backup job, None for none; libvirt's
    errors are raised."""
    if dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    root = ET.fromstring(dom.backupGetXMLDesc(0))
    server = root.find("server")
    socket = server.get("socket", "") if server is not None else ""
    targets = [d.get("name", "") for d in root.iterfind("disks/disk")
               if d.get("backup", "yes") == "yes" and d.get("name")]
    return socket, targets


def backup_job_socket(dom: libvirt.virDomain) -> str | None:
    """The socket of a running backup job of ``dom``, if any ("" if it has none)."""
    job = _backup_job(dom)
    return job[0] if job is not None else None


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
