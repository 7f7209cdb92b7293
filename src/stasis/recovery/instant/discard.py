"""An instant VM or linked clone removed: its domain, export, overlays, files and state."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import libvirt

from stasis.errors import HypervisorError
from stasis.recovery.instant.detached_export import stop_export
from stasis.recovery.instant.marker import marked_domain
from stasis.recovery.instant.state import Entry, find_instant, forget


def discard(conn: libvirt.virConnect, name: str) -> list[str]:
    """Stop and undefine the instant VM ``name``, stop its export, remove what it made."""
    return discard_entry(conn, find_instant(name))


def discard_entry(conn: libvirt.virConnect, entry: Entry) -> list[str]:
    """Stop and undefine the VM of ``entry`` (instant or clone), stop its export, remove
    what it made and its state file; what was removed, in words."""
    removed: list[str] = []
    dom = marked_domain(conn, entry)
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
    stop_export(entry)
    for path in [*entry.overlays.values(), *entry.files, *entry.copies.values()]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
        # A restore killed mid-way leaves its file under a temporary name beside it.
        for partial in Path(path).parent.glob(f".{Path(path).name}.stasis-partial-*"):
            partial.unlink(missing_ok=True)
    forget(entry)
    return removed
