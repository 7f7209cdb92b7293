"""How the CLI shows results that several commands print (a committed point, say)."""

from __future__ import annotations

from stasis.app.models import BackupResult
from stasis.cli.common import err, human, out


def print_backup(m: BackupResult) -> None:
    """A committed point: what was read and stored per disk, consistency, warnings."""
    stored = sum(d.stored_new for vm in m.vms for d in vm.disks)
    out.print(f"Point [bold]{m.id[:12]}[/] '{m.name}' committed in "
              f"{m.duration_s or 0:.1f} s: read {human(m.bytes_read)} of "
              f"{human(m.size)}, stored {human(stored)} new.")
    for vm in m.vms:
        for d in vm.disks:
            out.print(f"  {vm.name}/{d.name}: {d.mode}, read {human(d.bytes_read)}, "
                      f"new {human(d.stored_new)}" + (f" ({d.reason})" if d.mode == "full"
                                                      else ""))
    for vm in m.vms:
        for gone in vm.disks_removed:
            out.print(f"  {vm.name}/{gone}: removed from the VM since the last point")
        if vm.kind == "vm":
            note = vm.consistency_note
            out.print(f"  {vm.name}: {vm.consistency} consistent" + (f" ({note})" if note else ""))
    for warning in m.warnings:  # a failed post hook among them
        err.print(f"[bold yellow]warning:[/] {warning.full_text}", highlight=False)


def print_group_backup(m: BackupResult) -> None:
    """A group's point: as any point, then the window and who joined or left."""
    print_backup(m)
    out.print(f"  members held for {m.frozen_ms or 0:.1f} ms")
    if m.parent is not None:
        for verb, names in (("joined", m.joined), ("left", m.left)):
            if names:
                out.print(f"  {verb} the group since the last point: {', '.join(names)}",
                          highlight=False)
