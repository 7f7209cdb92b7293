"""Verification of points: quick (every chunk present) or deep (every chunk read).

Each distinct disk index and index page is read once, however many points share
it. Deep verification reads each referenced chunk once, authenticates, decompresses
and re-hashes it. A damaged chunk is reported with every point, VM, disk and
offset that references it, and moved to quarantine so the next backup that meets
the same data stores it again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from stasis.parallel import ordered_map
from stasis.progress import NoProgress, Progress
from stasis.repository import DiskIndex, Manifest, ObjectDamaged, Repository
from stasis.repository.index import NAME_LEN, ZERO_NAME
from stasis.repository.repo import chunk_key


@dataclass
class Problem:
    point: str
    vm: str = ""
    disk: str = ""
    offset: int | None = None
    object: str = ""
    problem: str = ""

    def describe(self) -> str:
        where = f"point {self.point[:12]}"
        if self.vm:
            where += f", VM {self.vm}"
        if self.disk:
            where += f", disk {self.disk}"
        if self.offset is not None:
            where += f", offset {self.offset}"
        return f"{where}: {self.object} {self.problem}"


@dataclass
class VerifyReport:
    deep: bool
    points: int = 0
    chunks: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "deep": self.deep,
            "points": self.points,
            "chunks": self.chunks,
            "bytes_checked": self.bytes_checked,
            "problems": [p.__dict__ for p in self.problems],
            "quarantined": self.quarantined,
        }


def verify(
    repo: Repository,
    points: list[Manifest] | None = None,
    *,
    deep: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Verify ``points`` (every point when None) and return what was found.

    Under a shared lock: gc cannot sweep meanwhile, so a point removed while this
    runs cannot make its chunks look lost.
    """
    with repo.shared_lock("verify"):
        return _verify(repo, points, deep=deep, progress=progress, workers=workers)


def _verify(
    repo: Repository,
    points: list[Manifest] | None,
    *,
    deep: bool,
    progress: Progress | None,
    workers: int | None,
) -> VerifyReport:
    progress = progress or NoProgress()
    report = VerifyReport(deep=deep)
    if points is None:
        points = repo.points(
            on_damaged=lambda pid, e: report.problems.append(
                Problem(point=pid, object=f"manifest {pid[:12]}", problem=e.reason)
            )
        )
    report.points = len(points)
    streams = [(point, vm, disk) for point in points for vm, disk in point.streams()]
    # Each distinct index and page is read once, however many points share it.
    roots: dict[str, DiskIndex | ObjectDamaged] = {}
    for _point, _vm, disk in streams:
        if disk.index not in roots:
            try:
                roots[disk.index] = repo.load_index(disk.index)
            except ObjectDamaged as e:
                roots[disk.index] = e
    pages = sorted({p for root in roots.values() if isinstance(root, DiskIndex)
                    for p in repo.index_pages(root)})
    bad_pages: dict[bytes, str] = {}
    lengths: dict[bytes, int] = {}  # every distinct chunk referenced -> its length

    def load_page(page: bytes) -> bytes | ObjectDamaged:
        try:
            return repo.load_page(page)
        except ObjectDamaged as e:
            return e

    loaded = ordered_map(load_page, pages, workers=workers, name="verify-pages")
    with contextlib.closing(loaded):
        for page, entries in loaded:
            if isinstance(entries, ObjectDamaged):
                bad_pages[page] = entries.reason
                continue
            for at in range(0, len(entries), NAME_LEN):
                lengths[entries[at : at + NAME_LEN]] = repo.chunk_size
    lengths.pop(ZERO_NAME, None)
    for root in roots.values():
        if isinstance(root, ObjectDamaged) or not root.count:
            continue
        if root.held_pages():  # format 1: the entries are in the index itself
            for i, chunk in root.stored():
                lengths[chunk] = root.chunk_length(i)
            continue
        last = root.count - 1
        last_page = root.page_name(last // root.page_entries)
        if root.chunk_length(last) != root.chunk_size and last_page not in bad_pages:
            chunk = root.name(last)  # the short last chunk of this disk
            if chunk != ZERO_NAME:
                lengths[chunk] = root.chunk_length(last)
    for point, vm, disk in streams:
        root = roots[disk.index]
        if isinstance(root, ObjectDamaged):
            report.problems.append(Problem(point.id, vm.name, disk.name, None,
                                           f"disk index {disk.index[:16]}", root.reason))
            continue
        for k, maybe in enumerate(root.page_names()):
            if maybe is not None and maybe in bad_pages:
                report.problems.append(Problem(
                    point.id, vm.name, disk.name, k * root.page_entries * root.chunk_size,
                    f"index page {maybe.hex()[:16]}", bad_pages[maybe]))
    report.chunks = len(lengths)

    def flag(names: set[bytes], reasons: dict[bytes, str]) -> None:
        """Report every point, VM, disk and offset that references a damaged chunk
        (a second pass over the indexes, only when something is damaged)."""
        for point, vm, disk in streams:
            root = roots[disk.index]
            if isinstance(root, ObjectDamaged):
                continue
            for k, stored in enumerate(root.page_names()):
                if stored is not None and (stored == ZERO_NAME or stored in bad_pages):
                    continue
                entries = root.page(k)
                first = k * root.page_entries
                for j, at in enumerate(range(0, len(entries), NAME_LEN)):
                    chunk = entries[at : at + NAME_LEN]
                    if chunk in names:
                        report.problems.append(Problem(
                            point.id, vm.name, disk.name, (first + j) * root.chunk_size,
                            f"chunk {chunk.hex()[:16]}", reasons[chunk]))

    if not deep:
        present = {name for name, _size in repo.chunk_objects()}
        progress.start("verify (quick)", len(lengths))
        missing: set[bytes] = set()
        for name in lengths:
            if name not in present:
                missing.add(name)
            progress.advance(1)
        flag(missing, dict.fromkeys(missing, "missing"))
        progress.finish()
        return report

    progress.start("verify (deep)", sum(lengths.values()))

    def check(name: bytes) -> str | None:
        try:
            data = repo.load_chunk(name)
        except ObjectDamaged as e:
            return e.reason
        finally:
            progress.advance(lengths[name])
        if len(data) != lengths[name]:
            return f"has {len(data)} bytes, expected {lengths[name]}"
        return None

    damaged: dict[bytes, str] = {}
    results = ordered_map(check, list(lengths), workers=workers, name="verify")
    with contextlib.closing(results):
        for name, reason in results:
            if reason is None:
                report.bytes_checked += lengths[name]
                continue
            damaged[name] = reason
            if reason != "missing":
                report.quarantined.append(repo.quarantine_chunk(name))
            else:
                report.quarantined.append(f"(missing) {chunk_key(name)}")
    flag(set(damaged), damaged)
    progress.finish()
    return report
