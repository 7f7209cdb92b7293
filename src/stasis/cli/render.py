"""How the CLI shows results that several commands print (a committed point, say)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stasis.app.models import BackupResult, JobModel
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


# ------------------------------------------------------------------ jobs


def when_text(t: str | None) -> str:
    return datetime.fromisoformat(t).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def took_text(job: JobModel) -> str:
    d = job.duration_s
    return "-" if d is None else f"{d:.1f} s"


def outcome_text(kind: str, res: Any) -> str:
    """One entry of a job's result (a VM's, a point's, a step's) in a few words."""
    res = res.to_json() if hasattr(res, "to_json") else res
    if not isinstance(res, dict):
        return str(res)
    if res.get("error"):
        return f"failed: {res['error']}"
    if res.get("probe") == "object-lock":  # a verify's probe of an immutable repository
        return "the storage enforces the Object Lock" if res.get("ok") else "; ".join(
            f"warning {w['code']}: {w['message']}" for w in res.get("warnings", []))
    point = str(res.get("point") or "")[:12]
    if kind == "backup" and point:
        return f"point {point}, {res.get('consistency', '')}"
    if kind == "restore" and point:
        where = res.get("restored_as") or ", ".join(res.get("disks", {}).values())
        return f"from point {point} as {where}"
    if kind == "verify" and point:
        return f"point {point} '{res.get('point_name', '')}' intact"
    if kind == "copy" and point:
        return (f"point {point} '{res.get('point_name', '')}' {res.get('action')}: "
                f"{res.get('objects_sent', 0)} object(s) sent "
                f"({human(int(res.get('bytes_sent') or 0))}), "
                f"{res.get('objects_present', 0)} present")
    if kind == "prune" and point:
        return f"{res.get('action')} point {point}: {'; '.join(res.get('reasons', []))}"
    return ", ".join(f"{k} {v}" for k, v in res.items()
                     if isinstance(v, str | int | float) and not isinstance(v, bool)) or "-"


def print_job(job: JobModel, show_log: bool = False) -> None:
    """One job: state, times, bytes, per-VM result, error, and with ``show_log`` its log."""
    out.print(f"Job {job.id}: {job.kind} {job.name}", highlight=False)
    for key, value in (("state", job.state), ("policy", job.policy or "-"),
                       ("VMs", ", ".join(job.vms) or "-"), ("repository", job.repo or "-"),
                       ("queued", when_text(job.queued)), ("started", when_text(job.started)),
                       ("ended", when_text(job.ended)), ("took", took_text(job)),
                       ("read", human(job.bytes_read)), ("written", human(job.bytes_written)),
                       ("runner", f"pid {job.pid} on {job.host}" if job.pid else "-")):
        out.print(f"  {key:<11}{value}", highlight=False)
    if job.error:
        out.print(f"  {'error':<11}{job.error}", highlight=False)
    for what, res in job.result.items():
        out.print(f"  {what}: {outcome_text(job.kind, res)}", highlight=False)
    if show_log:
        out.print("Log:")
        for line in job.log or []:
            out.print(f"  {when_text(line['time'])} {line['level']:<7} {line['text']}",
                      highlight=False)
