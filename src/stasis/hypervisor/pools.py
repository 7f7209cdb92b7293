"""libvirt storage pools: the pools a restore may put its disks in, and their volumes.

A volume is made through its pool (``storageVolCreateXML``), so ``virsh vol-list``
shows it and the pool's accounting knows it, and removed through it
(``virStorageVol.delete``). Pools whose volumes are files (``dir``, ``fs``,
``netfs``) take a disk in its own format; pools whose volumes are block devices
(``logical``, ``disk``, ``iscsi``, ``scsi``, ``mpath``, ``zfs``) hold raw data only.
Pools with no local path for a volume (``rbd``, ``gluster``, ``sheepdog``,
``iscsi-direct``, ``vstorage``) are refused: Stasis writes a volume through a local
path.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from stasis.errors import HypervisorError, UsageError
from stasis.hypervisor.domain import DomainInfo

FILE_POOLS = frozenset({"dir", "fs", "netfs"})
BLOCK_POOLS = frozenset({"logical", "disk", "iscsi", "scsi", "mpath", "zfs"})

_STATES = {
    libvirt.VIR_STORAGE_POOL_INACTIVE: "inactive",
    libvirt.VIR_STORAGE_POOL_BUILDING: "building",
    libvirt.VIR_STORAGE_POOL_RUNNING: "running",
    libvirt.VIR_STORAGE_POOL_DEGRADED: "degraded",
    libvirt.VIR_STORAGE_POOL_INACCESSIBLE: "inaccessible",
}


@dataclass
class Pool:
    """An active pool a restore writes to: ``files`` says whether its volumes are files
    (in any format) or block devices (raw only)."""

    name: str
    type: str
    handle: libvirt.virStoragePool

    @property
    def files(self) -> bool:
        return self.type in FILE_POOLS

    def volume_format(self, fmt: str) -> str:
        """The format a disk of ``fmt`` is written in, in this pool."""
        return fmt if self.files else "raw"


def open_pool(conn: libvirt.virConnect, name: str) -> Pool:
    """The pool ``name``, running and of a type whose volumes have a local path; a
    UsageError naming the pool and its state otherwise."""
    try:
        handle = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        names = sorted(conn.listStoragePools() + conn.listDefinedStoragePools())
        raise UsageError(f"no libvirt storage pool named '{name}' (there are: "
                         f"{', '.join(names) or 'none'}); nothing was restored") from None
    state = _STATES.get(handle.info()[0], "unknown")
    if state != "running":
        raise UsageError(f"the libvirt storage pool '{name}' is {state}, not running "
                         f"(virsh pool-start {name}); nothing was restored")
    kind = ET.fromstring(handle.XMLDesc(0)).get("type", "")
    if kind not in FILE_POOLS | BLOCK_POOLS:
        raise UsageError(f"the libvirt storage pool '{name}' is of type {kind}, whose volumes "
                         "have no local path to write; use a dir, fs, netfs or logical pool. "
                         "Nothing was restored.")
    with contextlib.suppress(libvirt.libvirtError):
        handle.refresh(0)  # volumes made beside libvirt's back are then known too
    return Pool(name, kind, handle)


def volume_taken(pool: Pool, volume: str) -> bool:
    try:
        pool.handle.storageVolLookupByName(volume)
    except libvirt.libvirtError:
        return False
    return True


def _volume_xml(name: str, fmt: str, capacity: int, options: dict[str, Any]) -> str:
    target = ""
    if fmt == "qcow2":
        target = "<format type='qcow2'/>"
        if options.get("compat"):
            target += f"<compat>{escape(str(options['compat']))}</compat>"
        if options.get("cluster_size"):
            target += f"<clusterSize unit='B'>{int(options['cluster_size'])}</clusterSize>"
        features = "".join(f"<{f}/>" for f in ("lazy_refcounts", "extended_l2")
                           if options.get(f) is True)
        if features:
            target += f"<features>{features}</features>"
    elif fmt == "raw":
        target = "<format type='raw'/>"
    return (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{capacity}"
            f"</capacity><allocation unit='bytes'>0</allocation>"
            + (f"<target>{target}</target>" if target else "") + "</volume>")


def create_volume(pool: Pool, name: str, fmt: str, capacity: int,
                  options: dict[str, Any] | None = None) -> str:
    """Make the empty volume ``name`` of ``fmt`` (a file pool's) and ``capacity`` bytes
    through ``pool``; return its local path. A block pool's volume is raw: no format
    element, the pool's own."""
    xml = _volume_xml(name, fmt if pool.files else "", capacity, options or {})
    try:
        vol = pool.handle.createXML(xml, 0)
    except libvirt.libvirtError as e:
        raise HypervisorError(f"the volume {name} could not be created in the storage "
                              f"pool '{pool.name}' ({e.get_error_message()})",
                              "Nothing was written to it.") from None
    path: str = vol.path()
    return path


def delete_volume(pool: Pool, name: str) -> bool:
    """Remove the volume ``name`` through ``pool``; False when it could not be."""
    try:
        pool.handle.storageVolLookupByName(name).delete(0)
    except libvirt.libvirtError:
        return False
    return True


def volume_path(conn: libvirt.virConnect, pool: str, volume: str) -> str:
    """The local path of ``volume`` in ``pool`` ("" when libvirt does not know it)."""
    try:
        path: str = conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).path()
    except libvirt.libvirtError:
        return ""
    return path


def resolve_volumes(conn: libvirt.virConnect, info: DomainInfo, *, strict: bool = True
                    ) -> DomainInfo:
    """``info`` with each volume disk's source set to its volume's local path and its
    kind to the volume's (file or block), as a file or block disk's are. A volume
    libvirt cannot find is a HypervisorError when ``strict``, else left without a
    source (a listing shows it so)."""
    for d in info.disks:
        if not d.pool or d.source:
            continue
        try:
            vol = conn.storagePoolLookupByName(d.pool).storageVolLookupByName(d.volume)
            d.source = vol.path()
            d.kind = "block" if vol.info()[0] == libvirt.VIR_STORAGE_VOL_BLOCK else "file"
        except libvirt.libvirtError as e:
            if strict:
                raise HypervisorError(
                    f"disk {d.target} of {info.name} is the volume {d.volume} of the storage "
                    f"pool {d.pool}, which libvirt cannot find ({e.get_error_message()})",
                    f"Start the pool (virsh pool-start {d.pool}) and try again. Nothing was "
                    "changed.") from None
    return info
