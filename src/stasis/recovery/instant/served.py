"""A disk of a point served over NBD for as long as it is asked, by a detached export.

``stasis export`` serves a disk while the command runs; a server serves one between
two requests, so it is recorded like an attached disk (an entry of kind ``export``,
named by its id) and served by a detached nbdkit that outlives the request, until
:func:`stop_served` stops it (or ``stasis doctor --fix`` finds it dead).
"""

from __future__ import annotations

from stasis.errors import InstantNotFound
from stasis.recovery.instant.detached_export import export_uri, start_export, stop_export
from stasis.recovery.instant.state import Entry, entries, forget, new_entry, save
from stasis.recovery.restore import select_disk
from stasis.repository import Credentials, Manifest, Repository


def serve_disk(repo: Repository, creds: Credentials, point: Manifest, *, vm: str | None,
               disk: str | None) -> Entry:
    """Serve ``disk`` of ``vm`` of ``point`` read-only on a unix socket until stopped."""
    vm_rec, disk_rec = select_disk(point, vm, disk)
    entry = new_entry("export", "", vm_rec.name, point, repo, disk=disk_rec.name)
    entry.name = entry.id
    save(entry)
    try:
        start_export(entry, repo, creds, point, [(vm_rec.name, disk_rec.name)], None)
        entry.state = "serving"
        save(entry)
    except BaseException:
        stop_export(entry)
        forget(entry)
        raise
    return entry


def uri_of(entry: Entry) -> str:
    return export_uri(entry, entry.disk)


def find_served(export_id: str) -> Entry:
    for e in entries("export"):
        if e.name == export_id:
            return e
    raise InstantNotFound(f"No export '{export_id}' is served here. GET /api/v1/exports lists "
                       "them.")


def stop_served(export_id: str) -> Entry:
    """Stop the export ``export_id`` and forget it."""
    entry = find_served(export_id)
    stop_export(entry)
    forget(entry)
    return entry
