"""Clones: a new VM, with an identity of its own, from a point or a VM's present state.

The source is a point (id, unique id prefix, ``NAME@latest``) or a VM name. The rule
that tells them apart (:func:`resolve_source`): ``from_vm`` makes it a VM; otherwise it
is a point when it resolves as one and a VM when a domain of that name exists; when it
is both, nothing is made and the error says how to choose. Here a clone is made of a
point (:func:`clone_point`); a clone of a VM's present state takes a point of it first,
which is protection's work: :func:`stasis.app.clone.clone` combines the two.

A full clone is a sparse restore as a new VM (:func:`stasis.recovery.vm.restore_vm`).
A linked clone is made like an instant VM (:mod:`stasis.recovery.instant`): its disks
are qcow2 overlays on a detached export of the point, so making it costs the same for
1 GiB or 1 TiB, and its writes stay in its overlays. Unlike an instant VM it lives on,
started or not, until ``stasis clone delete``.

Each linked clone has an export of its own rather than one shared per point: a clone
is then deleted, or its export fails, without touching any other, and no reference
count has to survive crashes; an nbdkit costs a few tens of MiB. The point a linked
clone stands on is kept by a hold (reason ``linked clones: …``, by ``stasis clone``),
so neither prune nor retention can remove it; the clone's export therefore takes no
shared repository lock, which would keep garbage collection waiting for as long as
the clone lives. The hold is released with the last clone of the point.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt

from stasis.backends import open_backend
from stasis.errors import (
    AmbiguousPoint,
    CloneSourceNotFound,
    InstantNotFound,
    PointNotFound,
    StasisError,
    UsageError,
)
from stasis.hypervisor import libvirt_api as lv
from stasis.hypervisor import pools
from stasis.progress import Progress
from stasis.recovery import instant
from stasis.recovery.vm import DEFAULT_STORAGE, restore_vm, select_vm
from stasis.repository import Credentials, Manifest, Repository
from stasis.repository.repo import manifest_key

HOLD_BY = "stasis clone"
HOLD_REASON = "linked clones: "


@dataclass
class CloneResult:
    name: str
    source: str  # "point" or "vm"
    point: str
    point_taken: bool  # a point of the VM was taken for this clone
    vm: str
    linked: bool
    started: bool
    uuid: str
    macs: list[str]
    storage: str
    disks: dict[str, str] = field(default_factory=dict)  # disk -> path in storage
    files: dict[str, str] = field(default_factory=dict)  # kernel, initrd, NVRAM -> path
    bytes_written: int = 0  # allocated in the storage directory for the disks and files
    export_pid: int | None = None
    duration_s: float = 0.0
    pool: str | None = None  # a full clone's disks are volumes of this libvirt pool
    volumes: dict[str, str] = field(default_factory=dict)  # disk or file -> its volume

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _vm_exists(conn: libvirt.virConnect, name: str) -> bool:
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


def resolve_source(conn: libvirt.virConnect, repo: Repository, spec: str, *,
                   from_vm: bool = False) -> Manifest | str:
    """The point ``spec`` names, or the name of the VM it names (see the module doc)."""
    if from_vm:
        lv.lookup(conn, spec)  # VmNotFound when there is none
        return spec
    point: Manifest | None = None
    failure: StasisError | None = None
    try:
        point = repo.resolve(spec)
    except (PointNotFound, AmbiguousPoint) as e:
        failure = e
    vm = _vm_exists(conn, spec)
    if point is not None and vm:
        raise UsageError(f"'{spec}' names both point {point.id[:12]} and the VM {spec}; "
                         "pass --from-vm to clone the VM's present state, or more of the "
                         "point's id (or NAME@latest) to clone the point. Nothing was made.")
    if point is not None:
        return point
    if vm:
        return spec
    if isinstance(failure, AmbiguousPoint):
        raise failure
    raise CloneSourceNotFound(spec, conn.getURI())


def _identity(conn: libvirt.virConnect, name: str) -> tuple[str, list[str]]:
    root = ET.fromstring(lv.domain_xml(conn.lookupByName(name), inactive=True))
    macs = [m.get("address", "") for m in root.iterfind("devices/interface/mac")]
    return root.findtext("uuid", ""), macs


def _allocated(path: str) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def check_clone(conn: libvirt.virConnect, repo: Repository, source: str, *, name: str,
                vm: str | None, storage: Path, network: str | None,
                from_vm: bool, pool: str | None = None,
                linked: bool = False) -> Manifest | str:
    """Every refusal before anything is made: the new VM's name, storage (or pool) and
    network, then the source (:func:`resolve_source`), a point or the name of a VM;
    ``vm`` goes with a VM source only when it names that VM."""
    check_pool(conn, pool, linked=linked)
    instant.check_new_vm(conn, name, storage, network)
    found = resolve_source(conn, repo, source, from_vm=from_vm)
    if isinstance(found, str) and vm is not None and vm != found:
        raise UsageError(f"--vm {vm} does not go with the VM {found}: a VM's point holds "
                         "that VM alone. Nothing was made.")
    return found


def check_pool(conn: libvirt.virConnect, pool: str | None, *, linked: bool) -> None:
    """A clone's pool: a full clone's only (a linked clone's overlays are files beside
    its export's state), and running."""
    if pool is None:
        return
    if linked:
        raise UsageError("--pool takes a full clone's disks; a linked clone's overlays go "
                         "to --storage. Nothing was made.")
    pools.open_pool(conn, pool)


def clone_point(
    conn: libvirt.virConnect, repo: Repository, creds: Credentials, point: Manifest, *,
    name: str, vm: str | None = None, linked: bool = False, storage: Path | None = None,
    network: str | None = None, start: bool = False, run_dir: Path,
    progress: Progress | None = None, pool: str | None = None,
) -> CloneResult:
    """Make the VM ``name`` from ``vm`` of ``point``, checked with :func:`check_clone`."""
    began = time.time()
    rec = select_vm(point, vm)
    check_pool(conn, pool, linked=linked)
    if pool is not None:
        result = full_clone(conn, repo, point, name=name, vm=rec.name, pool=pool,
                            network=network, start=start, run_dir=run_dir, progress=progress)
        result.duration_s = round(time.time() - began, 3)
        return result
    storage = (storage or DEFAULT_STORAGE).absolute()
    if linked:
        result = _linked(conn, repo, creds, point, rec.name, name=name, storage=storage,
                         network=network, start=start)
    else:
        result = full_clone(conn, repo, point, name=name, vm=rec.name, storage=storage,
                            network=network, start=start, run_dir=run_dir,
                            progress=progress)
    result.duration_s = round(time.time() - began, 3)
    return result


def full_clone(
    conn: libvirt.virConnect, repo: Repository, point: Manifest, *, name: str,
    vm: str | None = None, storage: Path | None = None, network: str | None = None,
    start: bool = False, run_dir: Path, progress: Progress | None = None,
    pool: str | None = None,
) -> CloneResult:
    """Make the VM ``name`` as a full sparse copy of ``vm`` of ``point`` (no export, so
    no credentials), its disks in ``storage`` or volumes of ``pool``; work stopped
    midway (Cancelled by ``progress``) leaves no domain and no image, as a restore as
    new."""
    began = time.time()
    if pool is None:
        storage = (storage or DEFAULT_STORAGE).absolute()
    rec = select_vm(point, vm)
    restored = restore_vm(conn, repo, point, vm=rec.name, name=name, storage=storage,
                          network=network, start=start, progress=progress, run_dir=run_dir,
                          pool=pool)
    uuid, macs = _identity(conn, name)
    result = CloneResult(name, "point", point.id, False, rec.name, False, restored.started,
                         uuid, macs, restored.storage,
                         {d.disk: str(d.target) for d in restored.disks},
                         dict(restored.files),
                         sum(d.bytes_written for d in restored.disks)
                         + sum(_allocated(f) for f in restored.files.values()),
                         pool=pool, volumes=dict(restored.volumes))
    result.duration_s = round(time.time() - began, 3)
    return result


def _linked(conn: libvirt.virConnect, repo: Repository, creds: Credentials, point: Manifest,
            vm: str, *, name: str, storage: Path, network: str | None,
            start: bool) -> CloneResult:
    _hold(repo, point.id, add=name)
    try:
        entry = instant.start_on_export(conn, repo, creds, point, select_vm(point, vm),
                                        kind="clone", name=name, network=network,
                                        storage=storage, start=start, lock=False)
    except BaseException:
        _hold(repo, point.id)
        raise
    uuid, macs = _identity(conn, name)
    files = {f.name: str(storage / f"{name}-{f.name}") for f in select_vm(point, vm).files}
    files = {role: path for role, path in files.items() if path in entry.files}
    written = sum(_allocated(p) for p in [*entry.overlays.values(), *files.values()])
    return CloneResult(name, "point", point.id, False, vm, True, start, uuid, macs,
                       str(storage), dict(entry.overlays), files, written, entry.export_pid)


def _clone_names(repo: Repository, point_id: str) -> list[str]:
    return sorted(e.name for e in instant.entries("clone")
                  if e.point == point_id and e.repo == repo.url)


def _hold(repo: Repository, point_id: str, *, add: str | None = None) -> bool:
    """Make the clones' hold on ``point_id`` name the clones recorded on it (and ``add``),
    releasing it when there are none; True when the point is held for them. A hold of
    someone else's without end is left alone: it keeps the point already."""
    names = sorted({*_clone_names(repo, point_id), *([add] if add else [])})
    current = repo.hold_of(point_id)
    now = datetime.now(UTC)
    ours = current is not None and current.by == HOLD_BY
    if current is not None and not ours and current.active(now) and current.until is None:
        return False
    if not names:
        if ours:
            repo.release(point_id)
        return False
    reason = HOLD_REASON + ", ".join(names)
    if current is not None and not ours and current.active(now):
        reason += f" (replacing a hold {current.describe()})"
    repo.hold(point_id, None, reason, by=HOLD_BY)
    if add is not None and not repo.backend.exists(manifest_key(point_id)):
        # Removed between its lookup and the hold: nothing to stand on.
        repo.release(point_id)
        raise PointNotFound(point_id)
    return True


# ------------------------------------------------------------ listing, delete


def find_clone(name: str) -> instant.Entry:
    for e in instant.entries("clone"):
        if e.name == name:
            return e
    raise InstantNotFound(f"No linked clone named '{name}' was made here. 'stasis clone list' "
                       "shows them.")


def listing(conn: libvirt.virConnect | None) -> list[dict[str, Any]]:
    rows = []
    for e in instant.entries("clone"):
        row = instant.status(conn, e)
        rows.append({k: row[k] for k in ("name", "vm", "point", "repo", "state", "vm_state",
                                         "export_pid", "export_alive", "socket", "overlays",
                                         "storage", "created")})
        rows[-1]["bytes_written"] = sum(_allocated(p) for p in e.overlays.values())
    return rows


@dataclass
class DeleteResult:
    name: str
    point: str
    removed: list[str]
    hold: str | None  # the point's hold afterwards, in words (None: not held)
    warning: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def delete(conn: libvirt.virConnect, name: str, creds: Credentials) -> DeleteResult:
    """Stop and undefine the linked clone ``name``, stop its export, remove its overlays
    and state; release its point's hold when it was the point's last clone."""
    entry = find_clone(name)
    removed = instant.discard_entry(conn, entry)
    hold, warning = None, ""
    try:
        repo = Repository.open(open_backend(entry.repo), creds)
        _hold(repo, entry.point)
        left = repo.hold_of(entry.point)
        hold = left.describe() if left is not None else None
    except StasisError as e:
        hold = "unknown"
        warning = (f"the hold on point {entry.point[:12]} was not updated ({e.message}); "
                   f"'stasis release {entry.point[:12]}' lifts it")
    return DeleteResult(name, entry.point, removed, hold, warning)
