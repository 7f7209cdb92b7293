"""The marker in the metadata of every domain made here: only those are ever stopped
or undefined."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from stasis.recovery.instant.state import Entry

NAMESPACE = "https://stasis.dev/xmlns/instant/1"
MARKER_KEY = "stasis-instant"


def mark(xml: str, entry: Entry) -> str:
    root = ET.fromstring(xml)
    meta = root.find("metadata")
    if meta is None:
        meta = ET.SubElement(root, "metadata")
    ET.register_namespace(MARKER_KEY, NAMESPACE)
    ET.SubElement(meta, f"{{{NAMESPACE}}}instant", id=entry.id, point=entry.point)
    return ET.tostring(root, encoding="unicode")


def unmark(xml: str) -> str:
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


def marked_domain(conn: libvirt.virConnect, entry: Entry) -> libvirt.virDomain | None:
    """The domain of ``entry``, only when it carries the entry's marker."""
    for dom in conn.listAllDomains(0):
        if dom.name() == entry.name:
            return dom if _marked(dom, entry) else None
    return None
