"""What a drill made, recorded as it is made, and removed again from that record.

Each drill has a state file (``<state>/drills/<id>.json``) written before anything is
made: its process, its storage directory or libvirt storage pool and the suffix every
name it makes carries (``-drill-<id>``), the network it created (by UUID: libvirt keeps
no metadata on a network), the domains it defined (each also marked in its metadata)
and its instant VMs. In a pool, the drill's volumes are those named after its domains
(``<domain>-<disk>...``), deleted through the pool. Teardown (:func:`teardown`)
removes what the record names; a drill whose process is gone (SIGKILL, a host crash)
is :func:`debris` for ``stasis doctor``. A lock per point name (a group's or a VM's)
keeps two drills of the same VMs from running at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import libvirt

from stasis.errors import DrillInProgress
from stasis.recovery.drill.network import DrillNetwork, remove_network
from stasis.recovery.export import alive
from stasis.recovery.instant.discard import discard_entry
from stasis.recovery.instant.state import entries as instant_entries
from stasis.recovery.vm import vm_socket_dir
from stasis.repository.process import start_token
from stasis.settings import state_dir

NAMESPACE = "https://stasis.dev/xmlns/drill/1"
MARKER_KEY = "stasis-drill"


@dataclass
class DrillRecord:
    id: str
    target: str  # the point's name (a group's or a VM's)
    point: str
    mode: str
    storage: str  # "" when the disks are volumes of ``pool``
    pid: int
    pid_start: str
    created: float
    state: str = "starting"  # starting | checking | kept | tearing-down
    network: dict[str, Any] | None = None  # DrillNetwork's fields
    domains: list[str] = field(default_factory=list)
    instants: list[str] = field(default_factory=list)
    pool: str | None = None  # the libvirt storage pool the disks are volumes of

    @property
    def suffix(self) -> str:
        return f"-drill-{self.id}"

    @property
    def alive(self) -> bool:
        return alive(self.pid, self.pid_start)

    def net(self) -> DrillNetwork | None:
        return DrillNetwork(**self.network) if self.network else None


def drills_dir() -> Path:
    path = state_dir() / "drills"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def new_record(target: str, point: str, mode: str, storage: Path | None,
               pool: str | None = None) -> DrillRecord:
    pid = os.getpid()
    return DrillRecord(secrets.token_hex(4), target, point, mode,
                       "" if storage is None else str(storage), pid, start_token(pid),
                       time.time(), pool=pool)


def save(rec: DrillRecord) -> None:
    path = drills_dir() / f"{rec.id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec)))
    os.replace(tmp, path)


def forget(rec: DrillRecord) -> None:
    (drills_dir() / f"{rec.id}.json").unlink(missing_ok=True)


def drills() -> list[DrillRecord]:
    found = []
    for path in sorted(drills_dir().glob("*.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            found.append(DrillRecord(**json.loads(path.read_text())))
    return found


@contextlib.contextmanager
def drill_lock(target: str, rec: DrillRecord) -> Iterator[None]:
    """Held while the drill of point name ``target`` runs (DrillInProgress: another
    holds it). A lock of the kernel's: a killed drill holds it no more."""
    locks = drills_dir() / "locks"
    locks.mkdir(exist_ok=True)
    f: IO[str] = open(locks / f"{target.replace('/', '_')}.lock", "a+")  # noqa: SIM115
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise DrillInProgress(target, holder) from None
        f.seek(0)
        f.truncate()
        f.write(f"drill {rec.id}, pid {rec.pid}")
        f.flush()
        yield
    finally:
        f.close()


def mark(dom: libvirt.virDomain, rec: DrillRecord) -> None:
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, f'<drill id="{rec.id}"/>',
                    MARKER_KEY, NAMESPACE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)


def _ours(dom: libvirt.virDomain, rec: DrillRecord) -> bool:
    """The drill's own domain: marked, or (killed before it was marked) named with the
    drill's suffix, which no other domain has."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
        return f'id="{rec.id}"' in text
    except libvirt.libvirtError:
        return bool(dom.name().endswith(rec.suffix))


def teardown(conn: libvirt.virConnect, rec: DrillRecord) -> list[str]:
    """Remove every domain, instant VM (with its export and overlays), file and network
    the drill ``rec`` made, then its record; what was removed, in words."""
    rec.state = "tearing-down"
    save(rec)
    removed: list[str] = []
    for entry in instant_entries("instant"):
        if entry.name in rec.instants or entry.name.endswith(rec.suffix):
            removed += [f"instant VM {entry.name}", *discard_entry(conn, entry)]
    for dom in conn.listAllDomains(0):
        if not dom.name().endswith(rec.suffix) or not _ours(dom, rec):
            continue
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
                          | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        removed.append(f"domain {dom.name()}")
    if rec.pool is not None:
        removed += _remove_volumes(conn, rec)
    # Every file a drill writes carries its suffix: disks, kernel, NVRAM, console logs,
    # sockets, and a restore's partial files.
    for base in {Path(rec.storage), vm_socket_dir()} if rec.storage else {vm_socket_dir()}:
        for path in [*base.glob(f"*{rec.suffix}*"), *base.glob(f".*{rec.suffix}*")]:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                path.unlink()
                removed.append(str(path))
    net = rec.net()
    if net is not None:
        done = remove_network(conn, net, but=set())
        if done:
            removed.append(done)
    forget(rec)
    return removed


def _remove_volumes(conn: libvirt.virConnect, rec: DrillRecord) -> list[str]:
    """Delete, through the pool, the volumes of the drill's domains (their disks and
    files, named ``<domain>-...``): also those a killed restore left half written."""
    assert rec.pool is not None
    try:
        pool = conn.storagePoolLookupByName(rec.pool)
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)
        volumes = pool.listAllVolumes(0)
    except libvirt.libvirtError as e:
        # Said among what was removed, so the drill's output and doctor's show it.
        return [f"no volume: the pool {rec.pool} could not be read ({e.get_error_message()}); "
                f"its volumes named {rec.suffix} are left for 'virsh vol-delete'"]
    prefixes = tuple(f"{d}-" for d in rec.domains)
    removed = []
    for vol in volumes:
        if prefixes and vol.name().startswith(prefixes):
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
                removed.append(f"volume {vol.name()} of pool {rec.pool}")
    return removed


def debris(conn: libvirt.virConnect | None, *, fix: bool) -> Iterator[tuple[str, str, bool]]:
    """(kind, what, fixed) for every drill whose process is gone (killed, or kept with
    ``--keep``): with ``fix``, what it made is removed."""
    for rec in drills():
        if rec.alive:
            continue
        what = (f"{rec.id} of {rec.target} ({rec.state}; {len(rec.domains + rec.instants)} "
                f"VM(s), "
                + (f"pool {rec.pool}" if rec.pool is not None else f"storage {rec.storage}")
                + (f", network {rec.network['name']}" if rec.network else "") + ")")
        fixed = False
        if fix and conn is not None:
            removed = teardown(conn, rec)
            what += ": removed " + (", ".join(removed) or "nothing was left")
            fixed = True
        yield ("drill", what, fixed)
