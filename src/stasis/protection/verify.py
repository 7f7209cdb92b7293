"""Verification of points: quick (every chunk present) or deep (every chunk read).

Deep verification reads each referenced chunk once, authenticates, decompresses
and re-hashes it. A damaged chunk is reported with every point, VM, disk and
offset that references it, and moved to quarantine so the next backup that meets
the same data stores it again.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from stasis.parallel import ordered_map
from stasis.progress import NoProgress, Progress
from stasis.repository import Manifest, ObjectDamaged, Repository
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


Ref = tuple[str, str, str, int]  # point id, vm, disk, offset


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
    refs: dict[bytes, list[Ref]] = defaultdict(list)
    lengths: dict[bytes, int] = {}
    for point in points:
        for vm, disk in point.streams():
            try:
                index = repo.load_index(disk.index)
            except ObjectDamaged as e:
                report.problems.append(
                    Problem(point.id, vm.name, disk.name, None, f"disk index {disk.index[:16]}",
                            e.reason)
                )
                continue
            for i, name in index.stored():
                refs[name].append((point.id, vm.name, disk.name, i * index.chunk_size))
                lengths[name] = index.chunk_length(i)
    report.chunks = len(refs)

    def flag(name: bytes, reason: str) -> None:
        for pid, vm_name, disk_name, offset in refs[name]:
            report.problems.append(
                Problem(pid, vm_name, disk_name, offset, f"chunk {name.hex()[:16]}", reason)
            )

    if not deep:
        present = {name for name, _size in repo.chunk_objects()}
        progress.start("verify (quick)", len(refs))
        for name in refs:
            if name not in present:
                flag(name, "missing")
            progress.advance(1)
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

    results = ordered_map(check, list(refs), workers=workers, name="verify")
    with contextlib.closing(results):
        for name, reason in results:
            if reason is None:
                report.bytes_checked += lengths[name]
                continue
            flag(name, reason)
            if reason != "missing":
                report.quarantined.append(repo.quarantine_chunk(name))
            else:
                report.quarantined.append(f"(missing) {chunk_key(name)}")
    progress.finish()
    return report
