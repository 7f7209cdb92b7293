"""What a dashboard shows over time: per VM and group the last days (points made, the
RPO met or breached), a repository's growth and when it fills, and per second site
how far its copies lag.

The history is computed from the points index of one repository and the policies as
the service last loaded them: a day's RPO is *breached* when at some moment of it
the newest point was older than the tightest RPO of the policies covering the VM
(or group) now; days before its first point are ``before`` (nothing to judge by).
A repository's growth is counted back from its stored size today by the bytes each
present point stored first; its forecast needs a size to fill, which only a local
filesystem has (an object store has none: no forecast, and the answer says so).
"""

from __future__ import annotations

import bisect
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from stasis.app.catalogs import using
from stasis.app.models import (
    CopyLagRow,
    DayMark,
    ProtectionHistory,
    RepoUsage,
    SiteStatusRow,
    UsageDay,
    VmStatusRow,
)
from stasis.app.points import known_points
from stasis.app.repos import info, without_secrets
from stasis.backends.local import LocalBackend
from stasis.catalog import Catalog
from stasis.repository import Repository

MAX_DAYS = 366
FAR_DAYS = 100 * 365  # a fill date further off is no forecast


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _days(now: datetime, count: int) -> list[date]:
    today = now.astimezone(UTC).date()
    return [today - timedelta(days=n) for n in range(count - 1, -1, -1)]


def day_marks(times: list[datetime], target: timedelta | None, now: datetime,
              days: int) -> list[DayMark]:
    """Per day of the last ``days`` (UTC, oldest first, today last): the points among
    ``times`` taken that day, and the RPO ``target`` met all day (up to ``now`` for
    today) or breached at some moment of it."""
    times = sorted(_utc(t) for t in times)
    marks = []
    for d in _days(now, days):
        start = datetime.combine(d, time(0), UTC)
        end = min(start + timedelta(days=1), now)
        lo = bisect.bisect_left(times, start)
        inside = times[lo:bisect.bisect_left(times, start + timedelta(days=1))]
        before = times[:lo]
        rpo: Literal["met", "breached", "none", "before"]
        if not before and not inside:
            rpo = "before"
        elif target is None:
            rpo = "none"
        else:
            # the newest point's age over the day is largest just before each new
            # point and at the day's end; the day of the first point is judged from it
            edge = before[-1] if before else inside[0]
            worst = timedelta(0)
            for t in inside:
                worst = max(worst, t - edge)
                edge = t
            worst = max(worst, end - edge)
            rpo = "breached" if worst > target else "met"
        marks.append(DayMark(day=d.isoformat(), points=len(inside), rpo=rpo))
    return marks


def history(catalog: str | Catalog | None, open_repo: Callable[[], Repository], *,
            days: int = 30, owns_vm: Callable[[str], bool] = lambda _vm: True,
            owns_group: Callable[[str | None], bool] = lambda _tenant: True,
            ) -> list[ProtectionHistory]:
    """The last ``days`` of every VM with a point or a policy (those ``owns_vm`` keeps)
    and of every stored group (those whose defining tenant ``owns_group`` keeps)."""
    from stasis.catalog import GroupStore, PointIndex
    from stasis.service.status import stored_policies, vm_status

    days = max(1, min(days, MAX_DAYS))
    with using(catalog) as c:
        repo = open_repo()
        PointIndex(c).sync(repo)
        now = c.clock.now()
        points = PointIndex(c).list(repo.id)
        policies = stored_policies(c)
        rows = vm_status(c, now, repo_id=repo.id, policies=policies)
        groups = GroupStore(c).list()
    rpo = {p.name: p.rpo for p in policies if p.rpo is not None}

    def tightest(names: list[str]) -> timedelta | None:
        found = [rpo[n] for n in names if n in rpo]
        return min(found) if found else None

    of_vm: dict[str, list[datetime]] = {}
    of_group: dict[str, list[datetime]] = {}
    for p in points:
        for vm in p.vms:
            of_vm.setdefault(vm, []).append(p.time)
        if p.kind == "group":
            of_group.setdefault(p.name, []).append(p.time)
    found = []
    for row in rows:
        if not owns_vm(row.vm):
            continue
        target = tightest(row.policies)
        times = of_vm.get(row.vm, [])
        found.append(ProtectionHistory(kind="vm", name=row.vm, days=day_marks(
            times, target, now, days), rpo_s=target.total_seconds() if target else None))
    for g in groups:
        if not owns_group(g.tenant):
            continue
        target = tightest([p.name for p in policies if g.name in p.members.groups])
        times = of_group.get(g.name, [])
        found.append(ProtectionHistory(kind="group", name=g.name, days=day_marks(
            times, target, now, days), rpo_s=target.total_seconds() if target else None))
    return found


def _space(repo: Repository) -> tuple[int, int] | None:
    """(capacity, free) of the filesystem a local repository is on; None elsewhere."""
    inner = getattr(repo.backend, "inner", repo.backend)
    if not isinstance(inner, LocalBackend):
        return None
    usage = shutil.disk_usage(inner.root)
    return usage.total, usage.free


def _slope(ys: list[int]) -> float:
    """Least-squares slope of ``ys`` over 0, 1, 2, ... (per step)."""
    n = len(ys)
    mx = (n - 1) / 2
    my = sum(ys) / n
    den = sum((x - mx) ** 2 for x in range(n))
    return sum((x - mx) * (y - my) for x, y in enumerate(ys)) / den if den else 0.0


def usage(name: str, repo: Repository, *, now: datetime, days: int = 30) -> RepoUsage:
    """``repo``'s used space and deduplication now, its stored size at the end of each
    of the last ``days`` and, on a local filesystem, when it fills at that pace."""
    days = max(2, min(days, MAX_DAYS))
    facts = info(lambda: repo)
    stored = facts.stored_size
    added: dict[date, int] = {}
    for p in known_points(repo):
        d = _utc(datetime.fromisoformat(p.time)).astimezone(UTC).date()
        added[d] = added.get(d, 0) + p.summary.stored_new
    series = []
    later = 0  # stored by the points of the days after the one at hand
    for d in reversed(_days(now, days)):
        series.append(UsageDay(day=d.isoformat(), stored=max(stored - later, 0)))
        later += added.get(d, 0)
    series.reverse()
    slope = _slope([u.stored for u in series])
    space = _space(repo)
    capacity = free = None
    full_on = None
    full_in = None
    if space is None:
        forecast = ("no forecast: the repository is on object storage, which has no size "
                    "to fill")
    else:
        capacity, free = space
        if slope <= 0:
            forecast = (f"not growing over the last {days} days: no fill date at this "
                        "pace")
        else:
            full_in = free / slope
            if full_in > FAR_DAYS:
                forecast = (f"not full within {FAR_DAYS // 365} years at the last {days} "
                            "days' pace")
            else:
                full_on = (now + timedelta(days=full_in)).astimezone(UTC).date().isoformat()
                forecast = (f"full in about {full_in:.0f} days ({full_on}) at the last "
                            f"{days} days' pace")
    return RepoUsage(name=name, id=repo.id, url=without_secrets(repo.url),
                     stored_size=stored, logical_size=facts.logical_size,
                     dedup_ratio=facts.dedup_ratio, compression_ratio=facts.compression_ratio,
                     days=series, growth_per_day=slope, capacity=capacity, free=free,
                     full_on=full_on, full_in_days=full_in, forecast=forecast)


def copy_lag(rows: list[VmStatusRow]) -> list[CopyLagRow]:
    """Per copy site of a policy (from the VMs' status rows): how many VMs it copies,
    how many have no copy there yet, and the worst lag behind the source."""
    sites: dict[tuple[str, str | None, str | None], list[tuple[str, SiteStatusRow]]] = {}
    for row in rows:
        for s in row.sites:
            if s.role == "copy":
                sites.setdefault((s.policy, s.repository, s.repo_id), []).append((row.vm, s))
    found = []
    for (policy, repository, repo_id), vms in sorted(
            sites.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2] or "")):
        missing = [vm for vm, s in vms if s.lag_s is None]
        known = [(s.lag_s, vm) for vm, s in vms if s.lag_s is not None]
        worst = max(known, default=None)
        newest = max((s.newest_time for _, s in vms if s.newest_time), default=None)
        found.append(CopyLagRow(
            policy=policy, repository=repository, repo_id=repo_id, vms=len(vms),
            behind=len(missing), lag_s=None if missing or worst is None else worst[0],
            lag_points=sum(s.lag_points or 0 for _, s in vms), newest_time=newest,
            worst_vm=missing[0] if missing else (worst[1] if worst else None)))
    return found
