"""``stasis status``: per VM, how protected it is now.

For every VM the catalog knows (seen in a point, or covered by a policy): its newest
point and that point's age, the next scheduled run of the policies covering it, the
RPO of those policies met or breached (:func:`stasis.service.rpo.rpo_status`), and
its last verification (the newest verify job that covered it), its newest recovery
drill and its groups' (passed, measured RTO against the policies' ``rto``, age against
their ``max_age``; :mod:`stasis.service.drill_status`), and for the policies
that copy it, the newest point at each site (the policy's repository and every copy
destination) and how far each copy lags behind the source (time and points).
Everything comes from the catalog and an instant handed in: the points index holds
every repository's points (a copy job indexes its destination's, as ``catalog
rebuild`` of that repository does), and the service records the name it serves each
repository under. The points index is brought up to date from the repository first
when one is given.

Per group (:func:`group_status`: stored, named by a policy, with points or drilled),
the same for the group as a whole: its newest group point and its age, the policies
naming it, and its newest drill against the strictest targets of those policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stasis.catalog import (
    Catalog,
    DrillStore,
    GroupStore,
    IndexedPoint,
    JobStore,
    PointIndex,
    PolicyStore,
)
from stasis.errors import PolicyError, UsageError
from stasis.service.drill_status import DrillStatus, drill_status
from stasis.service.duration import format_duration
from stasis.service.policy import Policy, parse_policies
from stasis.service.rpo import rpo_status


@dataclass
class SiteStatus:
    """A VM's newest point of one policy at one site. For a copy (``role`` copy), how
    far it lags the source: the source's newest point's time minus this site's
    (``lag_s``; None while it holds none) and the source's points newer than this
    site's newest (``lag_points``)."""

    policy: str
    role: str  # source | copy
    repository: str | None  # the name it is served under (None: the service's default)
    repo_id: str | None  # None: not known to the catalog yet
    newest_point: str | None = None
    newest_time: datetime | None = None
    lag_s: float | None = None
    lag_points: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "role": self.role, "repository": self.repository,
                "repo_id": self.repo_id, "newest_point": self.newest_point,
                "newest_time": self.newest_time.isoformat() if self.newest_time else None,
                "lag_s": self.lag_s, "lag_points": self.lag_points}


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
    sites: list[SiteStatus] = field(default_factory=list)
    drill: DrillStatus | None = None  # the VM's newest drill against its targets
    group_drills: list[DrillStatus] = field(default_factory=list)  # its groups'

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm": self.vm, "newest_point": self.newest_point,
            "newest_time": self.newest_time.isoformat() if self.newest_time else None,
            "age_s": self.age_s, "policies": self.policies,
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "rpo": self.rpo, "rpo_detail": self.rpo_detail, "last_verify": self.last_verify,
            "sites": [x.to_dict() for x in self.sites],
            "drill": self.drill.to_dict() if self.drill else None,
            "group_drills": [g.to_dict() for g in self.group_drills],
        }


@dataclass
class GroupStatus:
    group: str
    vms: list[str] = field(default_factory=list)  # of its newest point (else stored ones)
    newest_point: str | None = None
    newest_time: datetime | None = None
    age_s: float | None = None
    policies: list[str] = field(default_factory=list)  # those naming it in groups
    next_run: datetime | None = None
    drill: DrillStatus | None = None  # its newest drill against its targets

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group, "vms": self.vms, "newest_point": self.newest_point,
            "newest_time": self.newest_time.isoformat() if self.newest_time else None,
            "age_s": self.age_s, "policies": self.policies,
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "drill": self.drill.to_dict() if self.drill else None,
        }


def group_status(catalog: Catalog, now: datetime, *, repo_id: str | None = None,
                 policies: list[Policy] | None = None) -> list[GroupStatus]:
    """Per group: its newest point (of ``repo_id``'s, if given), the policies naming it,
    and its newest drill against their strictest ``rto`` and ``max_age``."""
    policies = stored_policies(catalog) if policies is None else policies
    points = [pt for pt in PointIndex(catalog).list(repo_id) if pt.kind == "group"]
    stored = {g.group.name: g.group for g in GroupStore(catalog).list()}
    drills = {d.subject: d for d in DrillStore(catalog).list() if d.subject_kind == "group"}
    states = {s.name: s for s in PolicyStore(catalog).list()}
    names = sorted({pt.name for pt in points} | set(stored) | set(drills)
                   | {g for p in policies for g in p.members.groups})
    rows = []
    for name in names:
        row = GroupStatus(name, vms=list(stored[name].members) if name in stored else [])
        mine = [pt for pt in points if pt.name == name]
        if mine:
            newest = max(mine, key=lambda pt: (pt.time, pt.id))
            row.vms = list(newest.vms)
            row.newest_point, row.newest_time = newest.id, newest.time
            row.age_s = max((now - newest.time).total_seconds(), 0.0)
        naming = [p for p in policies if name in p.members.groups]
        for p in naming:
            row.policies.append(p.name)
            state = states.get(p.name)
            nxt = state.next_run if state and state.next_run else p.schedule.next_after(now)
            row.next_run = nxt if row.next_run is None else min(row.next_run, nxt)
        drilled = [p.drill for p in naming if p.drill is not None]
        own = drills.get(name)
        if own is not None or drilled:
            row.drill = drill_status(name, own, now,
                                     rto=_strictest([d.rto for d in drilled]),
                                     max_age=_strictest([d.max_age for d in drilled]))
        rows.append(row)
    return rows


def _strictest(values: list[Any]) -> Any:
    return min((v for v in values if v is not None), default=None)


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
    sources: dict[str, str | None] = {}  # policy -> the repository id its runs went to
    named = PointIndex(catalog).named() if any(p.copies for p in policies) else {}
    for p in policies:
        vms = set(p.members.vms)
        recent = jobs.list(policy=p.name, kind="backup", limit=5)
        for j in recent:
            vms.update(j.vms)
        covers[p.name] = vms
        sources[p.name] = (named.get(p.repository) if p.repository else None) or next(
            (j.repo for j in recent if j.repo), None) or repo_id
    every = PointIndex(catalog).list() if named else []
    names = sorted({vm for pt in points for vm in pt.vms} | {v for s in covers.values()
                                                              for v in s})
    verifies = jobs.list(kind="verify", limit=500)
    drills = {(d.subject_kind, d.subject): d for d in DrillStore(catalog).list()}
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
            if p.copies:
                row.sites += policy_sites(p, vm, every, sources[p.name], named)
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
        _drills(row, [p for p in policies if p.name in row.policies], drills, now)
        rows.append(row)
    return rows


def _drills(row: VmStatus, covering: list[Policy], drills: dict[tuple[str, str], Any],
            now: datetime) -> None:
    """The VM's newest drill, and its groups', each against the strictest targets of
    the policies covering it that have a drill section."""
    drilled = [p.drill for p in covering if p.drill is not None]
    rto = _strictest([d.rto for d in drilled])
    max_age = _strictest([d.max_age for d in drilled])
    own = drills.get(("vm", row.vm))
    if own is not None or drilled:
        row.drill = drill_status(row.vm, own, now, rto=rto, max_age=max_age)
    groups = {g for p in covering if p.drill is not None for g in p.members.groups}
    if own is not None:  # a group drill records the group and each of its VMs
        groups |= {s for (k, s), d in drills.items() if k == "group"
                   and d.drill_id == own.drill_id}
    row.group_drills = [drill_status(g, drills.get(("group", g)), now, rto=rto,
                                     max_age=max_age) for g in sorted(groups)]


def policy_sites(policy: Policy, vm: str, points: list[IndexedPoint],
                 source: str | None, named: dict[str, str]) -> list[SiteStatus]:
    """``vm``'s newest point of ``policy`` at its repository (id ``source``) and at each
    copy destination (ids by the names in ``named``), with each copy's lag."""
    def mine(repo: str | None) -> list[IndexedPoint]:
        return [] if repo is None else [
            pt for pt in points if pt.repo == repo and vm in pt.vms
            and pt.tags.get("policy") == policy.name]

    def newest(site: SiteStatus, found: list[IndexedPoint]) -> IndexedPoint | None:
        top = max(found, key=lambda pt: (pt.time, pt.id), default=None)
        if top is not None:
            site.newest_point, site.newest_time = top.id, top.time
        return top

    at_source = mine(source)
    src = SiteStatus(policy.name, "source", policy.repository, source)
    top = newest(src, at_source)
    sites = [src]
    for target in policy.copies:
        dst_id = named.get(target.to)
        site = SiteStatus(policy.name, "copy", target.to, dst_id)
        there = newest(site, mine(dst_id))
        if there is None:
            site.lag_points = len(at_source)
        else:
            site.lag_points = sum(1 for pt in at_source
                                  if (pt.time, pt.id) > (there.time, there.id))
            site.lag_s = max((top.time - there.time).total_seconds(), 0.0) \
                if top is not None else 0.0
        sites.append(site)
    return sites


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    from datetime import timedelta

    return format_duration(timedelta(seconds=int(seconds))) if seconds >= 1 else "0s"
