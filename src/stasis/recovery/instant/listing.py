"""Entries as ``stasis instant list`` shows them, with what is true right now."""

from __future__ import annotations

import contextlib
from typing import Any

import libvirt

from stasis.hypervisor import libvirt_api as lv
from stasis.recovery.instant.state import Entry, entries


def status(conn: libvirt.virConnect | None, entry: Entry) -> dict[str, Any]:
    """An entry as ``stasis instant list`` shows it, with what is true right now."""
    dom_state = "unknown"
    if conn is not None and entry.kind != "export":  # an export serves no VM
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
