"""The points of a repository: listed (all, or those a filter keeps), one in full, or
one deleted."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from datetime import UTC, datetime

from stasis.app.models import PointDeleted, PointDetail, PointSummary
from stasis.errors import AmbiguousPoint, PointNotFound
from stasis.repository import Manifest, ObjectDamaged, Repository


def list_points(repo: Repository, *, name: str | None = None,
                on_damaged: Callable[[str, ObjectDamaged], None] | None = None,
                ) -> list[PointSummary]:
    """Every point (of ``name``), oldest first; a damaged manifest is told to
    ``on_damaged`` and left out."""
    points = repo.points(on_damaged=on_damaged)
    return [PointSummary.of(p) for p in points if name is None or p.name == name]


def _time(m: Manifest) -> datetime:
    t = datetime.fromisoformat(m.time)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def find_points(repo: Repository, *, vm: str | None = None, name: str | None = None,
                kind: str | None = None, since: datetime | None = None,
                until: datetime | None = None, held: bool | None = None,
                now: datetime | None = None,
                owned: Callable[[list[str]], bool] | None = None,
                on_damaged: Callable[[str, ObjectDamaged], None] | None = None,
                ) -> list[PointSummary]:
    """The points, oldest first, that hold VM ``vm``, are named ``name`` (a glob), are
    of ``kind``, were taken in [``since``, ``until``], are ``held`` (at ``now``) or not,
    and whose VMs ``owned`` says are owned."""
    holds = repo.holds() if held is not None else {}
    at = now or datetime.now(UTC)
    found = []
    for m in repo.points(on_damaged=on_damaged):
        vms = [v.name for v in m.vms]
        if owned is not None and not owned(vms):
            continue
        if vm is not None and vm not in vms:
            continue
        if name is not None and not fnmatch.fnmatchcase(m.name, name):
            continue
        if kind is not None and m.kind != kind:
            continue
        if (since is not None and _time(m) < since) or (until is not None
                                                         and _time(m) > until):
            continue
        if held is not None:
            h = holds.get(m.id)
            if (h is not None and h.active(at)) != held:
                continue
        found.append(PointSummary.of(m))
    return found


Owned = Callable[[list[str]], bool]


def resolve_point(repo: Repository, point: str, *, owned: Owned | None = None) -> Manifest:
    """The point ``point`` names (an id, a unique prefix or NAME@latest) among those
    whose VMs ``owned`` says are owned (all, without it): another's point is not found,
    and a prefix is unique or ambiguous among the owned ones alone."""
    if owned is None:
        return repo.resolve(point)
    mine = [m for m in repo.points() if owned([v.name for v in m.vms])]
    spec = point.strip()
    if "@" in spec:
        name, _, which = spec.rpartition("@")
        found = [m for m in mine if m.name == name] if which == "latest" else []
    else:
        found = [m for m in mine if spec and m.id.startswith(spec.lower())]
    if not found:
        raise PointNotFound(spec)
    if len(found) > 1 and "@" not in spec:
        raise AmbiguousPoint(spec, len(found), ", ".join(sorted(m.id[:12]
                                                                for m in found)[:5]))
    return found[-1]


def show_point(repo: Repository, point: str, *, owned: Owned | None = None) -> PointDetail:
    """One point (an id, a unique prefix or NAME@latest) in full."""
    return PointDetail.of(resolve_point(repo, point, owned=owned))


def delete_point(repo: Repository, point: str, *, now: datetime | None = None,
                 owned: Owned | None = None) -> PointDeleted:
    """Delete one point (an id, a unique prefix or NAME@latest). A held point is
    refused (PointHeld); its chunks stay until gc reclaims them."""
    m = resolve_point(repo, point, owned=owned)
    repo.check_may_delete("the deletion of a point")
    with repo.shared_lock("delete"):
        repo.remove_point(m.id, now=now or datetime.now(UTC))
    return PointDeleted(id=m.id, name=m.name, time=m.time, vms=[v.name for v in m.vms])
