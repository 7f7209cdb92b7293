"""Labels on libvirt domains, kept in the domain's own metadata.

A label is KEY=VALUE. The labels of a domain live in one element of its
``<metadata>`` under Stasis's namespace, so they travel with the domain (``virsh
dumpxml``, migration) and need no database::

    <metadata>
      <stasis:labels xmlns:stasis="https://stasis.dev/xmlns/labels/1">
        <stasis:label key="app" value="shop"/>
      </stasis:labels>
    </metadata>

Writes go to the persistent configuration and, while the domain runs, to the live
one too, so a label set now is seen at once and survives a restart. Reads take the
current definition (live when running, else the persistent one).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping

import libvirt

from stasis.errors import HypervisorError, UsageError

NAMESPACE = "https://stasis.dev/xmlns/labels/1"
PREFIX = "stasis"

# Keys are short identifiers (``app``, ``tier``, ``example.com/role``): they are typed
# on command lines and compared exactly. Values are free text of one line.
_KEY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,62})")
MAX_VALUE = 256


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise UsageError(
            f"'{key}' is not a label key: keys are 1 to 63 letters, digits, '.', '_', '/' "
            "or '-', starting with a letter or digit. Nothing was changed.")
    return key


def check_value(key: str, value: str) -> str:
    if len(value) > MAX_VALUE or any(c in value for c in "\r\n\0"):
        raise UsageError(f"the value of label '{key}' must be one line of at most {MAX_VALUE} "
                         "characters. Nothing was changed.")
    return value


def parse_label(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as typed on a command line (the value may be empty)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"a label is KEY=VALUE, not '{text}'. Nothing was changed.")
    return check_key(key), check_value(key, value)


def parse_labels(texts: Iterable[str]) -> dict[str, str]:
    """Several ``KEY=VALUE``; a key given twice is an error, not a silent overwrite."""
    labels: dict[str, str] = {}
    for text in texts:
        key, value = parse_label(text)
        if key in labels and labels[key] != value:
            raise UsageError(f"label '{key}' is given twice ({labels[key]!r} and {value!r}). "
                             "Nothing was changed.")
        labels[key] = value
    return labels


def decode(xml: str) -> dict[str, str]:
    """The labels held in the metadata element ``xml`` (as libvirt returns it)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise HypervisorError(f"the Stasis labels in a domain's metadata are not XML ({e})",
                              "Fix or remove them with 'virsh metadata'.") from None
    labels: dict[str, str] = {}
    for el in root:
        if el.tag.rsplit("}", 1)[-1] == "label" and el.get("key"):
            labels[el.get("key", "")] = el.get("value", "")
    return labels


def encode(labels: Mapping[str, str]) -> str:
    root = ET.Element("labels")
    for key in sorted(labels):
        ET.SubElement(root, "label", key=key, value=labels[key])
    return ET.tostring(root, encoding="unicode")


def without_labels(domain_xml: str) -> str:
    """``domain_xml`` with its Stasis labels removed.

    A VM restored beside its original from a point carries the original's labels in
    its XML, and would be selected into the same groups; a restore that makes a new
    VM (not one in place) strips them with this.
    """
    root = ET.fromstring(domain_xml)
    meta = root.find("metadata")
    if meta is None:
        return domain_xml
    ours = [el for el in meta if el.tag == f"{{{NAMESPACE}}}labels"]
    if not ours:
        return domain_xml
    for el in ours:
        meta.remove(el)
    if len(meta) == 0:
        root.remove(meta)
    return ET.tostring(root, encoding="unicode")


def get_labels(dom: libvirt.virDomain) -> dict[str, str]:
    """The domain's labels; none is an empty dict."""
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE,
                           libvirt.VIR_DOMAIN_AFFECT_CURRENT)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return {}
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise  # undefined meanwhile: the caller decides what a vanished VM means
        raise HypervisorError(f"cannot read the labels of {dom.name()} "
                              f"({e.get_error_message()})", "Nothing was changed.") from None
    return decode(str(xml))


def _write(dom: libvirt.virDomain, labels: Mapping[str, str]) -> None:
    flags = 0
    if dom.isPersistent():
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    try:
        if labels:
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, encode(labels), PREFIX,
                            NAMESPACE, flags)
        else:
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, NAMESPACE, flags)
    except libvirt.libvirtError as e:
        raise HypervisorError(f"cannot write the labels of {dom.name()} "
                              f"({e.get_error_message()})",
                              "The labels it had are unchanged.") from None


def update_labels(dom: libvirt.virDomain, set_: Mapping[str, str] | None = None,
                  remove: Iterable[str] = ()) -> dict[str, str]:
    """Set ``set_`` and remove the keys ``remove`` in one write; return the new labels.

    Removing a key the domain does not carry is not an error (the outcome is the one
    asked for). A key both set and removed is a usage error.
    """
    set_ = dict(set_ or {})
    remove = [check_key(k) for k in remove]
    both = sorted(set(set_) & set(remove))
    if both:
        raise UsageError(f"label {', '.join(both)} is both set and removed. Nothing was changed.")
    for key, value in set_.items():
        check_key(key)
        check_value(key, value)
    old = get_labels(dom)
    new = {k: v for k, v in old.items() if k not in remove}
    new.update(set_)
    if new != old:
        _write(dom, new)
    return new


def set_labels(dom: libvirt.virDomain, labels: Mapping[str, str]) -> dict[str, str]:
    return update_labels(dom, labels)


def remove_labels(dom: libvirt.virDomain, keys: Iterable[str]) -> dict[str, str]:
    return update_labels(dom, remove=keys)
