"""What ``/metrics`` reports: jobs by kind and result with their durations and bytes,
per VM the age of its newest point and its RPO state, repository sizes.

Everything is read from the catalog at each scrape, except repository sizes: they
take a pass over every manifest and index, so they are kept for
:data:`SIZE_TTL_S` and computed again only after that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select

from stasis.app.scope import Scope

if TYPE_CHECKING:
    from stasis.catalog import Catalog
    from stasis.repository import Repository

SIZE_TTL_S = 300.0


@dataclass
class JobFigures:
    count: int = 0
    duration_s: float = 0.0  # summed over the jobs that started and ended
    timed: int = 0  # how many did
    bytes_read: int = 0
    bytes_written: int = 0


@dataclass(frozen=True)
class VmFigures:
    vm: str
    age_s: float | None
    rpo: str  # met | breached | none


@dataclass(frozen=True)
class RepoFigures:
    name: str
    points: int
    stored_bytes: int
    logical_bytes: int


@dataclass
class Snapshot:
    jobs: dict[tuple[str, str], JobFigures] = field(default_factory=dict)  # (kind, state)
    vms: list[VmFigures] = field(default_factory=list)
    repositories: list[RepoFigures] = field(default_factory=list)


class RepoSizes:
    """Repository sizes, each computed at most once per :data:`SIZE_TTL_S`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, RepoFigures]] = {}

    def of(self, name: str, repo: Repository) -> RepoFigures:
        from stasis.repository.stats import repo_info

        with self._lock:
            known = self._known.get(name)
            if known is not None and time.monotonic() - known[0] < SIZE_TTL_S:
                return known[1]
            info = repo_info(repo)
            figures = RepoFigures(name, info.points, info.stored_size, info.logical_size)
            self._known[name] = (time.monotonic(), figures)
            return figures


def gather(catalog: Catalog, repositories: Mapping[str, Repository], where: Scope,
           sizes: RepoSizes) -> Snapshot:
    """The figures ``where`` may see: a tenant's principal gets its own VMs and jobs,
    and no repository (repositories are shared by every tenant)."""
    from stasis.catalog.models import JobRow
    from stasis.service.status import vm_status

    snap = Snapshot()
    q = select(JobRow.kind, JobRow.state, JobRow.started, JobRow.ended, JobRow.bytes_read,
               JobRow.bytes_written, JobRow.tenant, JobRow.vms)
    with catalog.session(write=False) as session:
        rows = session.execute(q).all()
    for kind, state, started, ended, read, written, tenant, vms in rows:
        if not where.owns_job(tenant, vms or []):
            continue
        f = snap.jobs.setdefault((kind, state), JobFigures())
        f.count += 1
        f.bytes_read += read or 0
        f.bytes_written += written or 0
        if started is not None and ended is not None:
            f.duration_s += max(0.0, (ended - started).total_seconds())
            f.timed += 1
    for row in vm_status(catalog, catalog.clock.now()):
        if where.owns_vm(row.vm):
            snap.vms.append(VmFigures(row.vm, row.age_s, row.rpo))
    if where.everything:
        snap.repositories = [sizes.of(n, r) for n, r in sorted(repositories.items())]
    return snap
