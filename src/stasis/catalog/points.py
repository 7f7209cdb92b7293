"""The points index: the catalog's copy of what a repository's manifests say.

The repository is the source of truth; this index only makes listings and status
fast and possible without the repository's key. :meth:`PointIndex.rebuild` makes it
again from the repository alone (a disaster-recovery site has nothing else),
:meth:`PointIndex.sync` brings it up to date by reading only the manifests it does
not hold yet and dropping the points that are gone (pruned), and
:meth:`PointIndex.add` records a point just committed.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stasis.catalog.db import Catalog
from stasis.catalog.models import PointRow, RepositoryRow, VmRow
from stasis.catalog.records import parse_time
from stasis.repository import Manifest, Repository


@dataclass
class IndexedPoint:
    id: str
    repo: str
    name: str
    kind: str
    time: datetime
    vms: list[str]
    size: int
    bytes_read: int
    parent: str | None
    tags: dict[str, str]
    consistency: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """The fields ``stasis list --json`` prints for a point, and the consistency."""
        return {
            "id": self.id, "name": self.name, "time": _iso(self.time), "kind": self.kind,
            "size": self.size, "bytes_read": self.bytes_read, "parent": self.parent,
            "tags": dict(self.tags), "vms": list(self.vms), "repo": self.repo,
            "consistency": dict(self.consistency),
        }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")  # as manifests write it


def _row(repo_id: str, m: Manifest) -> PointRow:
    return PointRow(
        id=m.id, repo=repo_id, name=m.name, kind=m.kind, time=parse_time(m.time),
        vms=[vm.name for vm in m.vms], size=m.virtual_size, bytes_read=m.bytes_read,
        parent=m.parent, tags=dict(m.tags),
        consistency={vm.name: vm.consistency for vm in m.vms if vm.consistency},
    )


def _point(row: PointRow) -> IndexedPoint:
    return IndexedPoint(row.id, row.repo, row.name, row.kind, row.time, list(row.vms),
                        row.size, row.bytes_read, row.parent, dict(row.tags),
                        dict(row.consistency))


class PointIndex:
    """The points of the repositories one catalog has seen."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def _repository(self, session: Session, repo: Repository) -> RepositoryRow:
        row = session.get(RepositoryRow, repo.id)
        if row is None:
            row = RepositoryRow(id=repo.id, url=repo.url, first_seen=self.catalog.clock.now())
            session.add(row)
            session.flush()
        elif row.url != repo.url:
            row.url = repo.url  # moved or mounted elsewhere: same repository
        return row

    def _seen(self, session: Session, manifests: Iterable[Manifest]) -> None:
        now = self.catalog.clock.now()
        latest: dict[str, str] = {}
        for m in manifests:
            for vm in m.vms:
                if vm.kind == "vm":
                    latest[vm.name] = vm.uuid
        if not latest:
            return
        rows = {r.name: r for r in session.scalars(
            select(VmRow).where(VmRow.name.in_(list(latest))))}
        for name, uuid in latest.items():
            row = rows.get(name)
            if row is None:
                session.add(VmRow(name=name, uuid=uuid, first_seen=now, last_seen=now))
            else:
                row.uuid, row.last_seen = uuid or row.uuid, now

    def add(self, repo: Repository, m: Manifest) -> None:
        """Record a point just committed to ``repo``."""
        with self.catalog.session() as session:
            self._repository(session, repo)
            session.merge(_row(repo.id, m))
            self._seen(session, [m])

    def rebuild(self, repo: Repository,
                on_damaged: Callable[[str, Exception], None] | None = None) -> int:
        """Replace the index of ``repo`` with its manifests; return how many points."""
        manifests = repo.points(on_damaged=on_damaged)
        with self.catalog.session() as session:
            row = self._repository(session, repo)
            session.execute(delete(PointRow).where(PointRow.repo == repo.id))
            session.add_all(_row(repo.id, m) for m in manifests)
            self._seen(session, manifests)
            row.indexed = self.catalog.clock.now()
        return len(manifests)

    def sync(self, repo: Repository,
             on_damaged: Callable[[str, Exception], None] | None = None) -> tuple[int, int]:
        """Add the points of ``repo`` not indexed yet, drop those gone: (added, dropped)."""
        present = set(repo.point_ids())
        with self.catalog.session(write=False) as session:
            known = set(session.scalars(select(PointRow.id).where(PointRow.repo == repo.id)))
        new = []
        for pid in sorted(present - known):
            try:
                new.append(repo.load_manifest(pid))
            except Exception as e:  # a damaged manifest is reported, not indexed
                if on_damaged is None:
                    raise
                on_damaged(pid, e)
        gone = known - present
        with self.catalog.session() as session:
            row = self._repository(session, repo)
            if gone:
                session.execute(delete(PointRow).where(PointRow.repo == repo.id,
                                                       PointRow.id.in_(list(gone))))
            for m in new:
                session.merge(_row(repo.id, m))
            self._seen(session, new)
            row.indexed = self.catalog.clock.now()
        return len(new), len(gone)

    def list(self, repo_id: str | None = None, *, name: str | None = None,
             vm: str | None = None) -> list[IndexedPoint]:
        """Indexed points, oldest first (as ``stasis list``)."""
        query = select(PointRow).order_by(PointRow.time, PointRow.id)
        if repo_id is not None:
            query = query.where(PointRow.repo == repo_id)
        if name is not None:
            query = query.where(PointRow.name == name)
        with self.catalog.session(write=False) as session:
            points = [_point(r) for r in session.scalars(query)]
        return [p for p in points if vm is None or vm in p.vms]

    def name_repositories(self, named: Mapping[str, Repository]) -> None:
        """Record the name each repository is served under (a name moves from the
        repository that had it before)."""
        with self.catalog.session() as session:
            for name, repo in named.items():
                for other in session.scalars(select(RepositoryRow).where(
                        RepositoryRow.name == name, RepositoryRow.id != repo.id)):
                    other.name = None
                self._repository(session, repo).name = name

    def named(self) -> dict[str, str]:
        """The repository id of every name a service served one under."""
        with self.catalog.session(write=False) as session:
            return {r.name: r.id for r in session.scalars(
                select(RepositoryRow).where(RepositoryRow.name.is_not(None))) if r.name}

    def repositories(self) -> builtins.list[tuple[str, str, datetime | None]]:
        """(id, url, last indexed) of every repository seen."""
        with self.catalog.session(write=False) as session:
            return [(r.id, r.url, r.indexed) for r in session.scalars(
                select(RepositoryRow).order_by(RepositoryRow.url))]

    def vms(self) -> builtins.list[str]:
        """Names of every VM seen in a point."""
        with self.catalog.session(write=False) as session:
            return list(session.scalars(select(VmRow.name).order_by(VmRow.name)))
