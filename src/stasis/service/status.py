"""``stasis status``: per VM, how protected it is now.

For every VM the catalog knows (seen in a point, or covered by a policy): its newest
point and that point's age, the next scheduled run of the policies covering it, the
RPO of those policies met or breached (:func:`stasis.service.rpo.rpo_status`), and
its last verification (the newest verify job that covered it). Everything comes
from the catalog and an instant handed in; the points index is brought up to date
from the repository first when one is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stasis.catalog import Catalog, JobStore, PointIndex, PolicyStore
from stasis.errors import PolicyError, UsageError
from stasis.service.duration import format_duration
from stasis.service.policy import Policy, parse_policies
from stasis.service.rpo import rpo_status


@dataclass
class VmStatus:
    vm: str
    newest_point: str | None = None
    newest_time: datetime | None = None
    age_s: float | None = None
    policies: list[str] = field(default_factory=list)
    next_run: datetime | None = None
    rpo: str = "none"  # met | breached | none (no policy with an RPO covers it)
    rpo_detail: str = ""
    last_verify: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm": self.vm, "newest_point": self.newest_point,
            "newest_time": self.newest_time.isoformat() if self.newest_time else None,
            "age_s": self.age_s, "policies": self.policies,
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "rpo": self.rpo, "rpo_detail": self.rpo_detail, "last_verify": self.last_verify,
        }


def stored_policies(catalog: Catalog) -> list[Policy]:
    """The policies as the service last loaded them (from their stored sources)."""
    found = []
    for state in PolicyStore(catalog).list():
        try:
            found += parse_policies(state.source, file=f"catalog:{state.name}")
        except (PolicyError, UsageError):
            continue  # a source this Stasis no longer reads is not shown, not fatal
    return found


def vm_status(catalog: Catalog, now: datetime, *, repo_id: str | None = None,
              policies: list[Policy] | None = None) -> list[VmStatus]:
    policies = stored_policies(catalog) if policies is None else policies
    points = PointIndex(catalog).list(repo_id)
    jobs = JobStore(catalog)
    states = {s.name: s for s in PolicyStore(catalog).list()}
    covers: dict[str, set[str]] = {}
    for p in policies:
        vms = set(p.members.vms)
        for j in jobs.list(policy=p.name, kind="backup", limit=5):
            vms.update(j.vms)
        covers[p.name] = vms
    names = sorted({vm for pt in points for vm in pt.vms} | {v for s in covers.values()
                                                              for v in s})
    verifies = jobs.list(kind="verify", limit=500)
    rows = []
    for vm in names:
        row = VmStatus(vm)
        mine = [pt for pt in points if vm in pt.vms]
        if mine:
            newest = max(mine, key=lambda pt: pt.time)
            row.newest_point, row.newest_time = newest.id, newest.time
            row.age_s = max((now - newest.time).total_seconds(), 0.0)
        for p in policies:
            if vm not in covers.get(p.name, set()):
                continue
            row.policies.append(p.name)
            state = states.get(p.name)
            nxt = state.next_run if state and state.next_run else p.schedule.next_after(now)
            row.next_run = nxt if row.next_run is None else min(row.next_run, nxt)
            if p.rpo is not None:
                status = rpo_status(row.newest_time, now, p.rpo)
                if status.breached or row.rpo != "breached":
                    row.rpo = "breached" if status.breached else "met"
                    row.rpo_detail = f"{p.name}: {status.describe()}"
        for j in verifies:  # newest first
            if vm in j.vms:
                row.last_verify = {"job": j.id, "state": j.state,
                                   "ended": j.ended.isoformat() if j.ended else None,
                                   "deep": bool(j.params.get("deep")), "error": j.error}
                break
        rows.append(row)
    return rows


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    from datetime import timedelta

    return format_duration(timedelta(seconds=int(seconds))) if seconds >= 1 else "0s"
