"""The libvirt domain XML of a test guest.

``type='qemu'`` (TCG: these hosts have no nested KVM), direct kernel boot, 256 MiB,
one vCPU, virtio disks, and two serial ports: ``ttyS0`` logged to a file (the boot
marker is read from it) and ``ttyS1`` bound to a unix socket (the command channel);
optionally the guest agent's virtio-serial channel, which libvirt itself connects to
(it knows the name ``org.qemu.guest_agent.0``) and the guest's qemu-ga answers on.
QEMU runs as root for these domains (a static DAC label, no relabelling) because
the kit's files live in root-only directories (``/root``, pytest's temporary dirs)
where the default ``libvirt-qemu`` user could not reach them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

METADATA_NS = "https://stasis.dev/xmlns/testkit/1"
AGENT_CHANNEL = "org.qemu.guest_agent.0"


@dataclass(frozen=True)
class DomainDisk:
    target: str
    path: Path
    fmt: str
    cache: str | None = "none"


@dataclass(frozen=True)
class DomainConfig:
    name: str
    kernel: Path
    initrd: Path
    disks: tuple[DomainDisk, ...]
    console_log: Path
    control_socket: Path
    guest_dir: Path
    memory_mib: int = 256
    vcpus: int = 1
    machine: str = "pc"  # pc (i440fx) or q35, as libvirt names them
    agent_socket: Path | None = None
    network: str | None = None
    owner: str | None = None  # "<pid>:<start time>" of the process the guest dies with
    extra_cmdline: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cmdline(self) -> str:
        return " ".join(("console=ttyS0", "quiet", "panic=-1", *self.extra_cmdline,
                         f"stasis.name={self.name}"))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def domain_xml(cfg: DomainConfig) -> str:
    dom = ET.Element("domain", type="qemu")
    _sub(dom, "name", cfg.name)
    meta = _sub(dom, "metadata")
    ET.register_namespace("testkit", METADATA_NS)
    kit = _sub(meta, f"{{{METADATA_NS}}}guest", dir=str(cfg.guest_dir),
               control=str(cfg.control_socket))
    if cfg.agent_socket is not None:
        kit.set("agent", str(cfg.agent_socket))
    if cfg.owner is not None:
        kit.set("owner", cfg.owner)
    _sub(dom, "memory", str(cfg.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(cfg.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine=cfg.machine)
    _sub(os_el, "kernel", str(cfg.kernel))
    _sub(os_el, "initrd", str(cfg.initrd))
    _sub(os_el, "cmdline", cfg.cmdline)
    _sub(_sub(dom, "features"), "acpi")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "destroy")  # a panic (panic=-1) ends the domain, not a boot loop
    _sub(dom, "on_crash", "destroy")
    dev = _sub(dom, "devices")
    for d in cfg.disks:
        disk = _sub(dev, "disk", type="file", device="disk")
        driver = {"name": "qemu", "type": d.fmt}
        if d.cache:
            driver["cache"] = d.cache
        _sub(disk, "driver", **driver)
        _sub(disk, "source", file=str(d.path))
        _sub(disk, "target", dev=d.target, bus="virtio")
    console = _sub(dev, "serial", type="file")
    _sub(console, "source", path=str(cfg.console_log), append="on")
    _sub(console, "target", port="0")
    control = _sub(dev, "serial", type="unix")
    _sub(control, "source", mode="bind", path=str(cfg.control_socket))
    _sub(control, "target", port="1")
    if cfg.agent_socket is not None:
        chan = _sub(dev, "channel", type="unix")
        _sub(chan, "source", mode="bind", path=str(cfg.agent_socket))
        _sub(chan, "target", type="virtio", name=AGENT_CHANNEL)
    if cfg.network is not None:
        nic = _sub(dev, "interface", type="network")
        _sub(nic, "source", network=cfg.network)
        _sub(nic, "model", type="virtio")
    _sub(dev, "controller", type="usb", model="none")
    _sub(dev, "memballoon", model="none")
    sec = _sub(dom, "seclabel", type="static", model="dac", relabel="no")
    _sub(sec, "label", "+0:+0")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def guest_metadata(xml: str) -> dict[str, str]:
    """The kit's metadata (``dir``, ``control``, ``agent``, ``owner``) of a domain, or {}."""
    root = ET.fromstring(xml)
    el = root.find(f"metadata/{{{METADATA_NS}}}guest")
    return dict(el.attrib) if el is not None else {}


def disk_targets(xml: str) -> dict[str, tuple[Path, str]]:
    """Target → (source file, driver type) of a domain's file disks."""
    out: dict[str, tuple[Path, str]] = {}
    for disk in ET.fromstring(xml).findall("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        driver = disk.find("driver")
        if target is None or source is None or source.get("file") is None:
            continue
        fmt = driver.get("type", "raw") if driver is not None else "raw"
        out[target.get("dev", "")] = (Path(source.get("file", "")), fmt)
    return out
