"""The points of a repository: listed (all, or those a filter keeps), one in full, or
one deleted.

Listings read what they need of each point from :func:`known_points`, which decodes
a point's manifest once per repository object and then keeps only a summary of it:
a committed manifest never changes, so a summary is right for as long as its point
exists, and the repository's manifests are listed on every call, so a point committed
or deleted by anyone (the service, the CLI, another host) is seen at once.
"""

from __future__ import annotations

import fnmatch
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
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


def _time(m: Manifest | KnownPoint) -> datetime:
    t = datetime.fromisoformat(m.time)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@dataclass(frozen=True)
class KnownPoint:
    """What listings need of one point: its summary and its VMs with their kinds."""

    summary: PointSummary
    vm_kinds: tuple[tuple[str, str], ...]  # (name, kind) of each VM record

    @property
    def id(self) -> str:
        return self.summary.id

    @property
    def time(self) -> str:
        return self.summary.time

    @property
    def vms(self) -> list[str]:
        return [name for name, _ in self.vm_kinds]


class _Known:
    """The summaries of one repository's points, by id."""

    def __init__(self) -> None:
        self.points: dict[str, KnownPoint] = {}
        self.lock = threading.Lock()


# By repository object: serve opens each repository once and keeps it, so its
# summaries live as long as the service; a CLI command's repository is its own.
_KNOWN: weakref.WeakKeyDictionary[Repository, _Known] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def known_points(repo: Repository, *,
                 on_damaged: Callable[[str, ObjectDamaged], None] | None = None,
                 ) -> list[KnownPoint]:
    """Every committed point of ``repo``, oldest first (as :meth:`Repository.points`),
    each manifest decoded only the first time it is seen; a damaged manifest is told
    to ``on_damaged``, left out, and read again next time."""
    with _lock:
        known = _KNOWN.get(repo)
        if known is None:
            known = _KNOWN[repo] = _Known()
    ids = repo.point_ids()
    found = []
    for pid in ids:
        k = known.points.get(pid)
        if k is None:
            try:
                m = repo.load_manifest(pid)
            except ObjectDamaged as e:
                if on_damaged is not None:
                    on_damaged(pid, e)
                continue
            k = KnownPoint(PointSummary.of(m), tuple((v.name, v.kind) for v in m.vms))
            with known.lock:
                known.points[pid] = k
        found.append(k)
    present = set(ids)
    with known.lock:  # the points deleted (pruned) since: a new point never reuses an id
        for gone in [pid for pid in known.points if pid not in present]:
            del known.points[gone]
    return sorted(found, key=lambda k: (k.time, k.id))


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
    for m in known_points(repo, on_damaged=on_damaged):
        vms = m.vms
        if owned is not None and not owned(vms):
            continue
        if vm is not None and vm not in vms:
            continue
        if name is not None and not fnmatch.fnmatchcase(m.summary.name, name):
            continue
        if kind is not None and m.summary.kind != kind:
            continue
        if (since is not None and _time(m) < since) or (until is not None
                                                         and _time(m) > until):
            continue
        if held is not None:
            h = holds.get(m.id)
            if (h is not None and h.active(at)) != held:
                continue
        found.append(m.summary)
    return found


Owned = Callable[[list[str]], bool]


def resolve_point(repo: Repository, point: str, *, owned: Owned | None = None) -> Manifest:
    """The point ``point`` names (an id, a unique prefix or NAME@latest) among those
    whose VMs ``owned`` says are owned (all, without it): another's point is not found,
    and a prefix is unique or ambiguous among the owned ones alone."""
    if owned is None:
        return repo.resolve(point)
    mine = [m for m in known_points(repo) if owned(m.vms)]
    spec = point.strip()
    if "@" in spec:
        name, _, which = spec.rpartition("@")
        found = [m for m in mine if m.summary.name == name] if which == "latest" else []
    else:
        found = [m for m in mine if spec and m.id.startswith(spec.lower())]
    if not found:
        raise PointNotFound(spec)
    if len(found) > 1 and "@" not in spec:
        raise AmbiguousPoint(spec, len(found), ", ".join(sorted(m.id[:12]
                                                                for m in found)[:5]))
    try:
        return repo.load_manifest(found[-1].id)
    except ObjectDamaged:
        if found[-1].id not in repo.point_ids():
            raise PointNotFound(spec) from None  # deleted since it was listed
        raise


def show_point(repo: Repository, point: str, *, owned: Owned | None = None) -> PointDetail:
    """One point (an id, a unique prefix or NAME@latest) in full."""
    return PointDetail.of(resolve_point(repo, point, owned=owned))


def delete_point(repo: Repository, point: str, *, now: datetime | None = None,
                 owned: Owned | None = None) -> PointDeleted:
    """Delete one point (an id, a unique prefix or NAME@latest). A held point is
    refused (PointHeld); its chunks stay until gc reclaims them."""
    m = resolve_point(repo, point, owned=owned)
    repo.check_may_delete("the deletion of a point")
    with repo.shared_lock("delete", frees_space=True):
        repo.remove_point(m.id, now=now or datetime.now(UTC))
    return PointDeleted(id=m.id, name=m.name, time=m.time, vms=[v.name for v in m.vms])
