"""Domains: what a libvirt domain's XML says about its disks, files and identity.

Pure functions over XML (no connection), so they are easy to test and reuse for the
domain XML stored in a point.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from stasis.repository.process import start_time

# Disk formats QEMU can keep persistent dirty bitmaps in.
BITMAP_FORMATS = ("qcow2",)


@dataclass
class DomainDisk:
    target: str  # vda, sdb, ...
    source: str  # file path or block device
    format: str  # raw, qcow2, ...
    kind: str  # file | block
    device: str = "disk"
    readonly: bool = False
    pool: str = ""  # a volume disk's pool and volume (its source is resolved by libvirt)
    volume: str = ""

    @property
    def bitmaps(self) -> bool:
        return self.format in BITMAP_FORMATS


@dataclass
class DomainFile:
    """A file outside the disks that recreating the VM needs (NVRAM, kernel...)."""

    role: str  # nvram | loader | kernel | initrd | dtb
    path: str


@dataclass
class DomainInfo:
    name: str
    uuid: str
    disks: list[DomainDisk] = field(default_factory=list)
    files: list[DomainFile] = field(default_factory=list)
    dac: tuple[int, int] | None = None  # uid, gid QEMU runs as (live XML only)


def parse(xml: str) -> DomainInfo:
    root = ET.fromstring(xml)
    info = DomainInfo(name=root.findtext("name", ""), uuid=root.findtext("uuid", ""))
    for disk in root.iterfind("devices/disk"):
        device = disk.get("device", "disk")
        target = disk.find("target")
        source = disk.find("source")
        driver = disk.find("driver")
        if target is None or source is None or device not in ("disk", "lun"):
            continue  # cdroms, floppies and empty drives are not backed up
        path = source.get("file") or source.get("dev") or ""
        pool, volume = source.get("pool", ""), source.get("volume", "")
        if not path and not (disk.get("type") == "volume" and pool and volume):
            continue  # network disks: not supported by this version
        info.disks.append(
            DomainDisk(
                target=target.get("dev", ""),
                source=path,
                format=driver.get("type", "raw") if driver is not None else "raw",
                kind=disk.get("type", "file"),
                device=device,
                readonly=disk.find("readonly") is not None,
                pool=pool if disk.get("type") == "volume" else "",
                volume=volume if disk.get("type") == "volume" else "",
            )
        )
    os_el = root.find("os")
    if os_el is not None:
        for role in ("loader", "nvram", "kernel", "initrd", "dtb"):
            el = os_el.find(role)
            if el is not None and el.text and el.text.strip():
                info.files.append(DomainFile(role, el.text.strip()))
    for label in root.iterfind("seclabel"):
        if label.get("model") == "dac":
            m = re.fullmatch(r"\+?(\d+):\+?(\d+)", (label.findtext("label") or "").strip())
            if m:
                info.dac = (int(m.group(1)), int(m.group(2)))
    return info


@dataclass
class Rewrite:
    """How to make a domain definition for a restored or cloned VM."""

    name: str
    disk_paths: dict[str, str]  # target -> new source path
    disk_formats: dict[str, str]  # target -> new format
    file_paths: dict[str, str]  # role -> new path
    storage: Path
    network: str | None = None
    keep_identity: bool = False  # in-place restore: same name, UUID and MACs
    socket_dir: Path | None = None  # for unix sockets, when ``storage`` is too deep
    # target -> (pool, volume): the disk becomes a volume disk of that pool
    disk_volumes: dict[str, tuple[str, str]] = field(default_factory=dict)


def rewrite(xml: str, rw: Rewrite) -> str:
    """The domain XML of ``xml`` with a new identity and new paths."""
    root = ET.fromstring(xml)
    root.attrib.pop("id", None)
    name_el = root.find("name")
    if name_el is not None:
        name_el.text = rw.name
    if not rw.keep_identity:
        uuid_el = root.find("uuid")
        if uuid_el is not None:
            root.remove(uuid_el)  # libvirt gives the new domain a new one
        for iface in root.iterfind("devices/interface"):
            mac = iface.find("mac")
            if mac is not None:
                iface.remove(mac)
            target = iface.find("target")
            if target is not None:
                iface.remove(target)  # host-side tap names are per VM
    if rw.network is not None:
        for iface in root.iterfind("devices/interface"):
            iface.set("type", "network")
            for child in list(iface):
                if child.tag in ("source", "virtualport"):
                    iface.remove(child)
            ET.SubElement(iface, "source", {"network": rw.network})
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if dev not in rw.disk_paths and dev not in rw.disk_volumes:
            continue
        source = disk.find("source")
        if source is None:
            source = ET.SubElement(disk, "source")
        source.attrib.clear()
        if dev in rw.disk_volumes:
            disk.set("type", "volume")
            source.set("pool", rw.disk_volumes[dev][0])
            source.set("volume", rw.disk_volumes[dev][1])
        else:
            disk.set("type", "file")
            source.set("file", rw.disk_paths[dev])
        backing = disk.find("backingStore")
        if backing is not None:
            disk.remove(backing)
        driver = disk.find("driver")
        if driver is not None and dev in rw.disk_formats:
            driver.set("type", rw.disk_formats[dev])
    os_el = root.find("os")
    if os_el is not None:
        for role, path in rw.file_paths.items():
            el = os_el.find(role)
            if el is not None:
                el.text = path
    if not rw.keep_identity:
        _move_sockets_and_logs(root, rw)
    return ET.tostring(root, encoding="unicode")


CHAR_DEVICES = ("serial", "console", "channel", "parallel")
# sun_path holds 108 bytes: leave room for "/<name>.chardevN.sock".
SOCKET_BASE_MAX = 40


def _move_sockets_and_logs(root: ET.Element, rw: Rewrite) -> None:
    """Serial, console and channel endpoints (unix sockets, log files) get paths of
    their own, so the restored VM can run beside the original. ``<console>`` repeats
    serial 0, so one old path always becomes one new path."""
    moved: dict[str, str] = {}

    def new_path(old: str, base: Path, default_suffix: str) -> str:
        if old not in moved:
            suffix = Path(old).suffix or default_suffix
            moved[old] = str(base / f"{rw.name}.chardev{len(moved)}{suffix}")
        return moved[old]

    socket_base = rw.storage
    if rw.socket_dir is not None and len(os.fsencode(rw.storage)) > SOCKET_BASE_MAX:
        socket_base = rw.socket_dir
    for dev in root.iter():
        if dev.tag not in CHAR_DEVICES:
            continue
        for source in dev.iterfind("source"):
            path = source.get("path")
            if not path or source.get("mode") not in ("bind", None):
                continue
            base = socket_base if dev.get("type") == "unix" else rw.storage
            source.set("path", new_path(path, base, ".sock"))
        for log in dev.iterfind("log"):
            if log.get("file"):
                log.set("file", new_path(log.get("file", ""), rw.storage, ".log"))


def qemu_run_id(name: str, run_dir: str = "/run/libvirt/qemu") -> str:
    """Identity of the QEMU process running ``name``: host boot, pid and start time.

    Dirty bitmaps only see writes made through QEMU; a new identity means the VM was
    off (or its process replaced) since, so a bitmap may miss writes.
    """
    try:
        pid = int(Path(run_dir, f"{name}.pid").read_text().strip())
        start = start_time(pid)
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except (OSError, ValueError):
        return ""
    return "" if start is None else f"{boot}:{pid}:{start}"


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
