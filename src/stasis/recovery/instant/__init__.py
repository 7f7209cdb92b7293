"""Instant recovery, linked clones' VMs and disks attached from a point, all served by
detached exports.

An instant VM (:mod:`.start`) is a new domain whose disks are qcow2 overlays (in the
storage directory) over NBD exports of the point: it boots as soon as QEMU has read
what the boot needs, whatever the size of the disks. Its export is an nbdkit
(:mod:`stasis.recovery.export`) in a session of its own (:mod:`.detached_export`),
so it outlives the command that started it. Finalizing (:mod:`.finalize`) copies
every disk to local storage in its original format while the VM runs, after which
the export is stopped and the VM is an ordinary one; discarding (:mod:`.discard`)
stops and removes it all. A linked clone (:mod:`stasis.recovery.clone`) is made the
same way but lives on, until ``stasis clone delete``. An attached disk
(:mod:`.attach`) is a read-only network disk added to a running VM's live
definition, also through a detached export; a served disk (:mod:`.served`) is such
an export alone, for the server's clients. Each is recorded in a state file
(:mod:`.state`) before anything is made, so that :func:`debris` (:mod:`.debris`)
finds what a killed command or a dead export leaves; :func:`listing`
(:mod:`.listing`) shows them all.
"""

from __future__ import annotations

from stasis.recovery.instant.attach import AttachResult, attach, detach
from stasis.recovery.instant.debris import debris
from stasis.recovery.instant.discard import discard, discard_entry
from stasis.recovery.instant.finalize import FinalizeResult, finalize
from stasis.recovery.instant.listing import listing, status
from stasis.recovery.instant.served import find_served, serve_disk, stop_served, uri_of
from stasis.recovery.instant.start import (
    InstantResult,
    check_new_vm,
    start_instant,
    start_on_export,
)
from stasis.recovery.instant.state import (
    VM_KINDS,
    Entry,
    entries,
    find_instant,
    run_root,
    set_owner,
)

__all__ = [
    "VM_KINDS", "AttachResult", "Entry", "FinalizeResult", "InstantResult", "attach",
    "check_new_vm", "debris", "detach", "discard", "discard_entry", "entries", "finalize",
    "find_instant", "find_served", "listing", "run_root", "serve_disk", "set_owner",
    "start_instant", "start_on_export", "status", "stop_served", "uri_of",
]
