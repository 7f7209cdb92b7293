"""The isolated network of a drill: no ``<forward>``, so nothing on it reaches another
network; an address on the host's bridge and a DHCP range, so the guests get addresses
and the host reaches them (the TCP checks). Made transient: destroying it removes it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from stasis.errors import DrillNetworkRefused, HypervisorError

SUBNETS = ipaddress.ip_network("10.213.0.0/16")  # one /24 of it per drill network


@dataclass
class DrillNetwork:
    name: str
    uuid: str
    created: bool  # made by this drill, so removed by it


def _used_subnets(conn: libvirt.virConnect) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for net in conn.listAllNetworks(0):
        with _ignored():
            for ip in ET.fromstring(net.XMLDesc(0)).iterfind("ip"):
                addr, prefix = ip.get("address"), ip.get("prefix") or ip.get("netmask")
                if addr and prefix and ":" not in addr:
                    used.append(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
    try:  # the host's own routes (a subnet that is not libvirt's)
        with open("/proc/net/route") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                dest, mask = (int(parts[1], 16), int(parts[7], 16))
                if mask:
                    net = ipaddress.ip_network(
                        (ipaddress.IPv4Address(dest.to_bytes(4, "little")),
                         bin(mask).count("1")), strict=False)
                    used.append(net)
    except OSError:
        pass
    return used


def _ignored() -> contextlib.suppress:
    return contextlib.suppress(libvirt.libvirtError, ET.ParseError, ValueError)


def isolation_problem(xml: str) -> str:
    """Why the network of ``xml`` is not isolated, or ""."""
    forward = ET.fromstring(xml).find("forward")
    if forward is not None:
        return f"it forwards (<forward mode='{forward.get('mode', 'nat')}'>)"
    return ""


def planned_network(name: str) -> DrillNetwork:
    """The network a drill will make if ``name`` is missing, with the UUID it will have:
    recorded before it is made, so a drill killed in between leaves nothing that doctor
    cannot find (by that UUID; an existing network of the name has another)."""
    return DrillNetwork(name, str(uuid.uuid4()), created=True)


def ensure_network(conn: libvirt.virConnect, name: str, drill_id: str,
                   planned: DrillNetwork | None = None) -> DrillNetwork:
    """The isolated network ``name``: an existing one (checked isolated), or a new one
    (with ``planned``'s UUID when given)."""
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        net = None
    if net is not None:
        problem = isolation_problem(net.XMLDesc(0))
        if problem:
            raise DrillNetworkRefused(name, problem)
        if not net.isActive():
            try:
                net.create()
            except libvirt.libvirtError as e:
                raise HypervisorError(f"the isolated network '{name}' could not be started "
                                      f"({e.get_error_message()})", "Nothing was made.") \
                    from None
        return DrillNetwork(name, net.UUIDString(), created=False)
    used = _used_subnets(conn)
    for subnet in SUBNETS.subnets(new_prefix=24):
        if not any(subnet.overlaps(u) for u in used):
            break
    else:
        raise HypervisorError(f"no free /24 in {SUBNETS} for the drill's network",
                              "Nothing was made.")
    hosts = list(subnet.hosts())
    made_uuid = planned.uuid if planned is not None else str(uuid.uuid4())
    xml = (f"<network><name>{name}</name><uuid>{made_uuid}</uuid>"
           f"<bridge name='stdr{drill_id[:8]}' stp='off'/>"
           f"<ip address='{hosts[0]}' prefix='24'><dhcp>"
           f"<range start='{hosts[9]}' end='{hosts[-1]}'/></dhcp></ip></network>")
    try:
        net = conn.networkCreateXML(xml)
    except libvirt.libvirtError as e:
        raise HypervisorError(f"the isolated network '{name}' could not be created "
                              f"({e.get_error_message()})", "Nothing was made.") from None
    return DrillNetwork(name, net.UUIDString(), created=True)


def in_use(conn: libvirt.virConnect, name: str, but: set[str]) -> list[str]:
    """Running domains other than ``but`` with an interface on network ``name``."""
    users = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        if dom.name() in but:
            continue
        with _ignored():
            root = ET.fromstring(dom.XMLDesc(0))
            if any(s.get("network") == name
                   for s in root.iterfind("devices/interface/source")):
                users.append(dom.name())
    return users


def remove_network(conn: libvirt.virConnect, net: DrillNetwork, but: set[str]) -> str:
    """Destroy the network a drill created (by its UUID: never another of that name),
    unless another domain still uses it; what was done, in words."""
    if not net.created:
        return ""
    try:
        found = conn.networkLookupByUUIDString(net.uuid)
    except libvirt.libvirtError:
        return ""  # gone already
    others = in_use(conn, net.name, but)
    if others:
        return f"network {net.name} kept: {', '.join(others)} still use it"
    try:
        persistent = found.isPersistent()
        found.destroy()
        if persistent:
            found.undefine()
    except libvirt.libvirtError as e:
        return f"network {net.name} could not be removed ({e.get_error_message()})"
    return f"network {net.name}"


def lease_addresses(dom: libvirt.virDomain) -> list[str]:
    """The IPv4 addresses the network's DHCP server leased to ``dom``."""
    try:
        ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
    except libvirt.libvirtError:
        return []
    return [a["addr"] for i in (ifaces or {}).values() for a in (i.get("addrs") or [])
            if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4]
