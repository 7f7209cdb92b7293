"""What interrupted instant work leaves, found and (with ``fix``) removed."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt

from stasis.errors import InstantError, UsageError
from stasis.recovery.export import stop_exports_in
from stasis.recovery.instant.attach import attached_here, detach
from stasis.recovery.instant.detached_export import stop_export
from stasis.recovery.instant.discard import discard_entry
from stasis.recovery.instant.listing import status
from stasis.recovery.instant.state import entries, forget, run_root


def debris(conn: libvirt.virConnect | None, *, fix: bool) -> Iterator[tuple[str, str, bool]]:
    """(kind, what, fixed) for every instant VM or attached disk that is left over: set up
    by a command that died mid-way, or whose export died under a VM that is not running
    (an export that died under a running VM is reported, not fixed: the VM's writes since
    are in its overlays, and ``stasis instant discard`` is the user's call). Also socket
    directories that no entry names."""
    for entry in entries():
        st = status(conn, entry)
        interrupted = st["state"] == "interrupted"
        dead = not entry.export_alive and st["vm_state"] != "running"
        if entry.kind == "attach":
            gone = st["vm_state"] != "running" or (
                conn is not None and not attached_here(conn.lookupByName(entry.name), entry))
            if interrupted or not entry.export_alive or (gone and not entry.creator_alive):
                if fix:
                    with contextlib.suppress(libvirt.libvirtError, InstantError, UsageError):
                        if conn is not None:
                            detach(conn, entry.name, entry.target)
                    stop_export(entry)
                    forget(entry)
                yield ("attached disk", f"{entry.key}: {st['state']}, {st['vm_state']}", fix)
            continue
        if entry.kind == "export":
            if interrupted or not entry.export_alive:
                if fix:
                    stop_export(entry)
                    forget(entry)
                yield ("served export", f"{entry.name}: {st['state']}", fix)
            continue
        if entry.kind == "clone":
            # A clone lives on, shut off or not: only one whose making was interrupted
            # is debris. One whose export died (a host reboot) is the user's to delete.
            if interrupted:
                if fix and conn is not None:
                    discard_entry(conn, entry)
                yield ("linked clone", f"{entry.name}: interrupted", fix and conn is not None)
            elif not entry.export_alive:
                yield ("linked clone", f"{entry.name}: its export is not running; 'stasis "
                       f"clone delete {entry.name}' removes it", False)
            continue
        if interrupted or dead:
            if fix and conn is not None:
                discard_entry(conn, entry)
            yield ("instant VM", f"{entry.name}: {st['state']} (VM {st['vm_state']})",
                   fix and conn is not None)
        elif not entry.export_alive:
            yield ("instant VM", f"{entry.name}: its export died while the VM runs; 'stasis "
                   f"instant discard {entry.name}' removes it", False)
    for d in run_root().iterdir():
        if d.is_dir() and _orphaned(d):
            if fix:
                stop_exports_in(d)
                shutil.rmtree(d, ignore_errors=True)
            yield ("export socket", str(d), fix)


def _orphaned(run_dir: Path) -> bool:
    """A socket directory whose state file is gone (of any state directory)."""
    try:
        owner = (run_dir / "entry").read_text().strip()
    except FileNotFoundError:
        return _older_than(run_dir, 60)  # a start killed before it wrote its owner
    except OSError:
        return False
    return not Path(owner).exists() and _older_than(run_dir, 5)


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False
