"""Instant recovery and disks attached from a point, both served by detached exports.

An instant VM is a new domain whose disks are qcow2 overlays (in the storage
directory) over NBD exports of the point: it boots as soon as QEMU has read what
the boot needs, whatever the size of the disks. Its export is an nbdkit
(:mod:`stasis.recovery.export`) in a session of its own, so it outlives the command
that started it. Finalizing copies every disk to local storage in its original
format while the VM runs (libvirt block copy, then pivot), after which the export
is stopped and the VM is an ordinary one. Discarding stops and removes it all.

A linked clone (:mod:`stasis.recovery.clone`) is made the same way but lives on:
its overlays are its disks, and its export keeps serving them until ``stasis clone
delete`` removes it all.

An attached disk is a read-only network disk (protocol nbd, unix socket) added to
a running VM's live definition, also through a detached export.

Each of these is recorded, *before* anything is created, in a small JSON state
file under ``<state dir>/instant/``: what it is, the point, the export's pid and
start time, its socket directory, the overlays and files it made. A command killed
mid-way, or an export that died, therefore leaves nothing that ``stasis instant
discard`` (or ``stasis detach``) and ``stasis doctor --fix`` (:func:`debris`) cannot
find and remove. Domains made here carry a marker in their metadata, so only they
are ever stopped or undefined.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from stasis.blockio.nbd import socket_base
from stasis.errors import (
    HypervisorError,
    InstantError,
    TargetExists,
    UsageError,
    VmState,
)
from stasis.hypervisor import libvirt_api as lv
from stasis.hypervisor.domain import Rewrite, parse, rewrite
from stasis.hypervisor.labels import without_labels
from stasis.recovery.export import (
    ExportProcess,
    alive,
    create_overlay,
    start_nbdkit,
    stop_exports_in,
    stop_process,
)
from stasis.recovery.restore import restore_disk, select_disk
from stasis.recovery.vm import DEFAULT_STORAGE, SHARED_FILES, select_vm, vm_socket_dir
from stasis.repository import Credentials, Manifest, Repository, VmRecord
from stasis.repository.process import start_token
from stasis.settings import state_dir

NAMESPACE = "https://stasis.dev/xmlns/instant/1"
MARKER_KEY = "stasis-instant"
COPY_TIMEOUT = 24 * 3600.0
VM_KINDS = ("instant", "clone")  # entries that are a VM of their own
DETACH_TIMEOUT = 60.0


# ------------------------------------------------------------------ state files


@dataclass
class Entry:
    """One instant VM (``kind`` instant), linked clone (``kind`` clone) or attached disk
    (``kind`` attach)."""

    kind: str
    name: str  # instant, clone: the new VM; attach: the VM the disk is attached to
    id: str  # random, names the socket directory and marks the domain
    vm: str  # the VM of the point
    point: str
    repo: str
    state: str  # starting | running | finalizing | attached | linked (a clone)
    created: float
    creator_pid: int
    creator_start: str
    storage: str = ""
    run_dir: str = ""
    socket: str = ""
    export_pid: int = 0
    export_start: str = ""
    exports: dict[str, str] = field(default_factory=dict)  # disk -> export name
    overlays: dict[str, str] = field(default_factory=dict)  # disk -> overlay path
    files: list[str] = field(default_factory=list)  # restored kernel, NVRAM, ...
    copies: dict[str, str] = field(default_factory=dict)  # disk -> finalize destination
    target: str = ""  # attach: the guest's device name
    disk: str = ""  # attach: the disk of the point

    @property
    def key(self) -> str:
        return self.name if self.kind in VM_KINDS else f"{self.name}@{self.target}"

    @property
    def export_alive(self) -> bool:
        return alive(self.export_pid, self.export_start)

    @property
    def creator_alive(self) -> bool:
        return alive(self.creator_pid, self.creator_start)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def entries_dir() -> Path:
    path = state_dir() / "instant"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _entry_path(kind: str, key: str) -> Path:
    return entries_dir() / f"{kind}-{key}.json"


def save(entry: Entry) -> None:
    path = _entry_path(entry.kind, entry.key)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    with open(tmp, "w") as f:
        json.dump(entry.to_dict(), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _forget(entry: Entry) -> None:
    _entry_path(entry.kind, entry.key).unlink(missing_ok=True)


def entries(kind: str | None = None) -> list[Entry]:
    found = []
    for path in sorted(entries_dir().glob("*.json")):
        try:
            entry = Entry(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if kind is None or entry.kind == kind:
            found.append(entry)
    return found


def find_instant(name: str) -> Entry:
    for e in entries("instant"):
        if e.name == name:
            return e
    raise InstantError(f"No instant VM named '{name}' was started here. 'stasis instant list' "
                       "shows them.")


def run_root() -> Path:
    """Where export sockets live: QEMU must reach them, and a socket path is short."""
    if os.geteuid() == 0:
        path = Path("/run/stasis/instant")
    else:
        path = socket_base(state_dir() / "instant-run")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o711)
    return path


def _new_entry(kind: str, name: str, vm: str, point: Manifest, repo: Repository,
               **kw: Any) -> Entry:
    pid = os.getpid()
    return Entry(kind=kind, name=name, id=secrets.token_hex(4), vm=vm, point=point.id,
                 repo=repo.url, state="starting", created=time.time(), creator_pid=pid,
                 creator_start=start_token(pid), **kw)


# ------------------------------------------------------------------ the export


def _qemu_owner(domain_xml: str) -> tuple[int, int] | None:
    """The uid and gid QEMU will run as for this domain (to let it reach the socket)."""
    dac = parse(domain_xml).dac
    if dac is not None:
        return dac
    root = ET.fromstring(domain_xml)
    for label in root.iterfind("seclabel"):
        if label.get("model") == "dac" and label.get("type") == "none":
            return None
    try:
        user = pwd.getpwnam("libvirt-qemu")
    except KeyError:
        return None
    return user.pw_uid, user.pw_gid


def _start_export(entry: Entry, repo: Repository, creds: Credentials, point: Manifest,
                  disks: list[tuple[str, str]], owner: tuple[int, int] | None, *,
                  lock: bool = True) -> ExportProcess:
    run_dir = run_root() / entry.id
    run_dir.mkdir(mode=0o700)
    # Which state file owns this directory: without it, the directory is debris.
    (run_dir / "entry").write_text(str(_entry_path(entry.kind, entry.key)))
    entry.run_dir = str(run_dir)
    entry.socket = str(run_dir / "nbd.sock")
    save(entry)
    export = start_nbdkit(repo, creds, point, disks, socket_path=entry.socket,
                          work_dir=run_dir, detached=True, lock=lock)
    entry.export_pid, entry.export_start = export.pid, export.start
    entry.exports = {spec.split("/", 1)[1]: name for spec, name in export.exports.items()}
    save(entry)
    if owner is not None and owner != (0, 0):
        os.chown(run_dir, *owner)
        os.chown(entry.socket, *owner)
    run_dir.chmod(0o750)
    return export


def _uri(entry: Entry, disk: str) -> str:
    return f"nbd+unix:///{entry.exports[disk]}?socket={entry.socket}"


def _stop_export(entry: Entry) -> None:
    stop_process(entry.export_pid, entry.export_start)
    if entry.run_dir:
        stop_exports_in(entry.run_dir)  # one whose starter died before recording it
        shutil.rmtree(entry.run_dir, ignore_errors=True)


# ------------------------------------------------------------- instant VMs


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


def _mark(xml: str, entry: Entry) -> str:
    root = ET.fromstring(xml)
    meta = root.find("metadata")
    if meta is None:
        meta = ET.SubElement(root, "metadata")
    ET.register_namespace(MARKER_KEY, NAMESPACE)
    ET.SubElement(meta, f"{{{NAMESPACE}}}instant", id=entry.id, point=entry.point)
    return ET.tostring(root, encoding="unicode")


def _unmark(xml: str) -> str:
    root = ET.fromstring(xml)
    meta = root.find("metadata")
    if meta is not None:
        for el in list(meta):
            if el.tag == f"{{{NAMESPACE}}}instant":
                meta.remove(el)
    return ET.tostring(root, encoding="unicode")


def _marked(dom: libvirt.virDomain, entry: Entry) -> bool:
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
    except libvirt.libvirtError:
        return False
    return f'id="{entry.id}"' in text


def _domain(conn: libvirt.virConnect, entry: Entry) -> libvirt.virDomain | None:
    """The domain of ``entry``, only when it carries the entry's marker."""
    for dom in conn.listAllDomains(0):
        if dom.name() == entry.name:
            return dom if _marked(dom, entry) else None
    return None


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
    """Refuse, before anything is made, a name in use, a missing storage or network."""
    if not storage.is_dir():
        raise UsageError(f"the storage directory {storage} does not exist; nothing was made")
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
    entry = _new_entry(kind, name, rec.name, point, repo, storage=str(storage))
    save(entry)
    try:
        for role, path in files.items():
            entry.files.append(path)
            save(entry)
            _restore_file(repo, point, rec, role, Path(path))
        _start_export(entry, repo, creds, point, [(rec.name, d.name) for d in rec.disks],
                      _qemu_owner(rec.domain_xml), lock=lock)
        for d in rec.disks:
            entry.overlays[d.name] = overlays[d.name]
            save(entry)
            create_overlay(Path(overlays[d.name]), _uri(entry, d.name), d.virtual_size)
        xml = rewrite(without_labels(rec.domain_xml), Rewrite(
            name=name, disk_paths=overlays, disk_formats={d: "qcow2" for d in overlays},
            file_paths=files, storage=storage, network=network, socket_dir=vm_socket_dir(),
        ))
        entry.files += _chardev_paths(xml)  # logs and sockets QEMU makes for it
        save(entry)
        try:
            dom = conn.defineXML(_mark(xml, entry))
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
        _discard(conn, entry)
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


def _suffix(fmt: str) -> str:
    return {"qcow2": ".qcow2", "raw": ".img"}.get(fmt, f".{fmt}")


@dataclass
class FinalizeResult:
    name: str
    disks: dict[str, str]
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def finalize(conn: libvirt.virConnect, repo: Repository, name: str) -> FinalizeResult:
    """Copy every disk of the instant VM ``name`` to local storage while it runs, pivot
    to the copies, and stop its export."""
    began = time.time()
    entry = find_instant(name)
    dom = _domain(conn, entry)
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
    dests = {d: str(storage / f"{name}-{d}{_suffix(fmt)}") for d, fmt in formats.items()}
    for path in dests.values():
        if os.path.exists(path) and path not in entry.copies.values():
            raise TargetExists(path)
    entry.state = "finalizing"
    entry.copies = dests
    save(entry)
    try:
        for disk, dest in dests.items():
            _copy_disk(dom, disk, dest, formats[disk])
    except BaseException:
        for disk in dests:
            with contextlib.suppress(libvirt.libvirtError):
                dom.blockJobAbort(disk, 0)
        for dest in dests.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)
        entry.state, entry.copies = "running", {}
        save(entry)
        raise
    # The persistent definition follows the pivot, and is no instant VM any more.
    root = ET.fromstring(_unmark(lv.domain_xml(dom, inactive=True)))
    for el in root.iterfind("devices/disk"):
        target = el.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if dev in dests:
            src = el.find("source")
            if src is None:
                src = ET.SubElement(el, "source")
            src.attrib.clear()
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
    _stop_export(entry)
    for path in entry.overlays.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    _forget(entry)
    return FinalizeResult(name, dests, round(time.time() - began, 3))


def _disk_source(dom: libvirt.virDomain, disk: str) -> tuple[str, bool]:
    """(source file, mirror ready) of ``disk`` in the live definition."""
    root = ET.fromstring(lv.domain_xml(dom))
    for el in root.iterfind("devices/disk"):
        target = el.find("target")
        if target is not None and target.get("dev") == disk:
            src = el.find("source")
            mirror = el.find("mirror")
            return ((src.get("file", "") if src is not None else ""),
                    mirror is not None and mirror.get("ready") == "yes")
    raise InstantError(f"the VM {dom.name()} has no disk {disk}")


def _copy_disk(dom: libvirt.virDomain, disk: str, dest: str, fmt: str) -> None:
    dest_xml = f"<disk type='file'><source file='{dest}'/><driver type='{fmt}'/></disk>"
    try:
        dom.blockCopy(disk, dest_xml, None, libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB)
    except libvirt.libvirtError as e:
        raise HypervisorError(f"the copy of {dom.name()}/{disk} to {dest} did not start "
                              f"({e.get_error_message()})", "The VM still runs from the "
                              "export; nothing was changed.") from None
    deadline = time.monotonic() + COPY_TIMEOUT
    while not _disk_source(dom, disk)[1]:
        if not dom.blockJobInfo(disk, 0):
            raise HypervisorError(f"the copy of {dom.name()}/{disk} ended before it was "
                                  "complete", "The VM still runs from the export.")
        if time.monotonic() > deadline:
            raise HypervisorError(f"the copy of {dom.name()}/{disk} did not finish",
                                  "The VM still runs from the export.")
        time.sleep(0.2)
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


def discard(conn: libvirt.virConnect, name: str) -> list[str]:
    """Stop and undefine the instant VM ``name``, stop its export, remove what it made."""
    return _discard(conn, find_instant(name))


def discard_entry(conn: libvirt.virConnect, entry: Entry) -> list[str]:
    """Stop and undefine the VM of ``entry`` (instant or clone), stop its export, remove
    what it made and its state file; what was removed, in words."""
    return _discard(conn, entry)


def _discard(conn: libvirt.virConnect, entry: Entry) -> list[str]:
    removed: list[str] = []
    dom = _domain(conn, entry)
    if dom is not None:
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        try:
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                              | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"the {entry.kind} VM {entry.name} could not be undefined "
                                  f"({e.get_error_message()})", "Run discard again.") from None
        removed.append(f"domain {entry.name}")
    if entry.export_alive:
        removed.append(f"export pid {entry.export_pid}")
    _stop_export(entry)
    for path in [*entry.overlays.values(), *entry.files, *entry.copies.values()]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
        # A restore killed mid-way leaves its file under a temporary name beside it.
        for partial in Path(path).parent.glob(f".{Path(path).name}.stasis-partial-*"):
            partial.unlink(missing_ok=True)
    _forget(entry)
    return removed


# ------------------------------------------------------------- attached disks


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
    entry = _new_entry("attach", to, vm_rec.name, point, repo, target=target,
                       disk=disk_rec.name)
    if _entry_path("attach", entry.key).exists():
        raise UsageError(f"a disk is recorded as attached to {to} as {target} already; "
                         f"'stasis detach {to} --target {target}' removes it")
    save(entry)
    try:
        _start_export(entry, repo, creds, point, [(vm_rec.name, disk_rec.name)],
                      _qemu_owner(lv.domain_xml(dom)))
        try:
            dom.attachDeviceFlags(_network_disk_xml(entry), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"the disk could not be attached to {to} "
                                  f"({e.get_error_message()})", "Its export was stopped; "
                                  "nothing else was changed.") from None
        entry.state = "attached"
        save(entry)
    except BaseException:
        _stop_export(entry)
        _forget(entry)
        raise
    return AttachResult(to, target, point.id, vm_rec.name, disk_rec.name, entry.export_pid,
                        entry.socket)


def _find_attached(vm: str, target: str | None) -> Entry:
    found = [e for e in entries("attach") if e.name == vm
             and (target is None or e.target == target)]
    if not found:
        what = f"{vm} as {target}" if target else vm
        raise InstantError(f"No disk from a point is attached to {what}. 'stasis instant list' "
                           "shows what is.")
    if len(found) > 1:
        raise UsageError(f"{len(found)} disks from points are attached to {vm} ("
                         f"{', '.join(e.target for e in found)}); choose one with --target")
    return found[0]


def _attached_here(dom: libvirt.virDomain, entry: Entry) -> bool:
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
    if dom is not None and _attached_here(dom, entry):
        try:
            dom.detachDeviceFlags(_network_disk_xml(entry), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"{entry.target} could not be detached from {vm} "
                                  f"({e.get_error_message()})", "It stays attached and its "
                                  "export keeps running.") from None
        deadline = time.monotonic() + DETACH_TIMEOUT
        while _attached_here(dom, entry):
            if time.monotonic() > deadline:
                raise InstantError(f"The guest of {vm} did not release {entry.target} within "
                                   f"{DETACH_TIMEOUT:.0f} s; it stays attached and its export "
                                   "keeps running. Try again once the guest stops using it.")
            time.sleep(0.1)
    _stop_export(entry)
    _forget(entry)
    return {"vm": vm, "target": entry.target, "point": entry.point, "disk": entry.disk}


# ------------------------------------------------------------ listing, debris


def status(conn: libvirt.virConnect | None, entry: Entry) -> dict[str, Any]:
    """An entry as ``stasis instant list`` shows it, with what is true right now."""
    dom_state = "unknown"
    if conn is not None:
        dom_state = "missing"
        with contextlib.suppress(libvirt.libvirtError):
            dom = conn.lookupByName(entry.name)
            dom_state = lv.domain_state(dom)
    state = entry.state
    if entry.state == "starting" and not entry.creator_alive:
        state = "interrupted"
    elif not entry.export_alive:
        state = "export dead"
    elif dom_state not in ("running", "unknown") and entry.kind != "clone":
        state = f"VM {dom_state}"  # a clone may be shut off: that is its own business
    return {"kind": entry.kind, "name": entry.name, "target": entry.target or None,
            "vm": entry.vm, "disk": entry.disk or None, "point": entry.point,
            "repo": entry.repo, "state": state, "vm_state": dom_state,
            "export_pid": entry.export_pid or None, "export_alive": entry.export_alive,
            "socket": entry.socket or None, "overlays": entry.overlays,
            "storage": entry.storage or None, "created": entry.created}


def listing(conn: libvirt.virConnect | None) -> list[dict[str, Any]]:
    return [status(conn, e) for e in entries()]


def debris(conn: libvirt.virConnect | None, *, fix: bool) -> Iterator[tuple[str, str, bool]]:
    """(kind, what, fixed) for every instant VM or attached disk that is left over: set up
    by a command that died mid-way, or whose export died under a VM that is not running
    (an export that died under a running VM is reported, not fixed: the VM's writes since
    are in its overlays, and ``stasis instant discard`` is the user's call). Also socket
    directories that no entry names."""
    for entry in entries():
        st = status(conn, entry)
        interrupted = st["state"] == "interrupted"
        dead = not entry.export_alive and st["vm_state"] != "running"
        if entry.kind == "attach":
            gone = st["vm_state"] != "running" or (
                conn is not None and not _attached_here(conn.lookupByName(entry.name), entry))
            if interrupted or not entry.export_alive or (gone and not entry.creator_alive):
                if fix:
                    with contextlib.suppress(libvirt.libvirtError, InstantError, UsageError):
                        if conn is not None:
                            detach(conn, entry.name, entry.target)
                    _stop_export(entry)
                    _forget(entry)
                yield ("attached disk", f"{entry.key}: {st['state']}, {st['vm_state']}", fix)
            continue
        if entry.kind == "clone":
            # A clone lives on, shut off or not: only one whose making was interrupted
            # is debris. One whose export died (a host reboot) is the user's to delete.
            if interrupted:
                if fix and conn is not None:
                    _discard(conn, entry)
                yield ("linked clone", f"{entry.name}: interrupted", fix and conn is not None)
            elif not entry.export_alive:
                yield ("linked clone", f"{entry.name}: its export is not running; 'stasis "
                       f"clone delete {entry.name}' removes it", False)
            continue
        if interrupted or dead:
            if fix and conn is not None:
                _discard(conn, entry)
            yield ("instant VM", f"{entry.name}: {st['state']} (VM {st['vm_state']})",
                   fix and conn is not None)
        elif not entry.export_alive:
            yield ("instant VM", f"{entry.name}: its export died while the VM runs; 'stasis "
                   f"instant discard {entry.name}' removes it", False)
    for d in run_root().iterdir():
        if d.is_dir() and _orphaned(d):
            if fix:
                stop_exports_in(d)
                shutil.rmtree(d, ignore_errors=True)
            yield ("export socket", str(d), fix)


def _orphaned(run_dir: Path) -> bool:
    """A socket directory whose state file is gone (of any state directory)."""
    try:
        owner = (run_dir / "entry").read_text().strip()
    except FileNotFoundError:
        return _older_than(run_dir, 60)  # a start killed before it wrote its owner
    except OSError:
        return False
    return not Path(owner).exists() and _older_than(run_dir, 5)


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False
