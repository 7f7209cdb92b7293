"""Verification of points: quick (every chunk present) or deep (every chunk read).

Each distinct disk index and index page is read once, however many points share
it. Deep verification reads each referenced chunk once, authenticates, decompresses
and re-hashes it. A damaged chunk is reported with every point, VM, disk and
offset that references it, and moved to quarantine so the next backup that meets
the same data stores it again.

With a second repository to repair from (a copy of this one, or the source this one
is a copy of), each chunk found damaged or missing is then brought from there:
found through a point both hold (with a shared key, by its name), opened and
authenticated there, sealed as a copy seals it
(:func:`stasis.protection.copy.transfer_chunk`), written, and read back and opened
with this repository's key. Its damaged bytes stay in quarantine; a chunk damaged
there too is quarantined there the same way, and reported as not healed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from stasis.errors import IntegrityError
from stasis.parallel import ordered_map
from stasis.progress import NoProgress, Progress
from stasis.repository import DiskIndex, Manifest, ObjectDamaged, Repository
from stasis.repository.index import NAME_LEN, ZERO_NAME, IndexFormatError
from stasis.repository.repo import chunk_key


@dataclass
class Problem:
    point: str
    vm: str = ""
    disk: str = ""
    offset: int | None = None
    object: str = ""
    problem: str = ""
    healed: bool = False  # replaced by an intact copy from the repository repaired from

    def describe(self) -> str:
        if not self.point:  # an object of the repository, not of a point (a key slot)
            return f"{self.object} {self.problem}" + (" (healed)" if self.healed else "")
        where = f"point {self.point[:12]}"
        if self.vm:
            where += f", VM {self.vm}"
        if self.disk:
            where += f", disk {self.disk}"
        if self.offset is not None:
            where += f", offset {self.offset}"
        return f"{where}: {self.object} {self.problem}" + (" (healed)" if self.healed else "")


@dataclass
class Healing:
    """One damaged or missing chunk and what repair did: ``healed`` from the chunk
    ``source_chunk`` of the other repository, or not (``reason``)."""

    chunk: str
    healed: bool
    source_chunk: str = ""
    bytes_written: int = 0
    reason: str = ""
    points: list[str] = field(default_factory=list)


@dataclass
class RepairReport:
    source: str  # the repository repaired from: id and URL
    source_url: str
    shared_key: bool
    chunks: list[Healing] = field(default_factory=list)
    quarantined_there: list[str] = field(default_factory=list)

    @property
    def healed(self) -> list[str]:
        return [h.chunk for h in self.chunks if h.healed]

    @property
    def unhealed(self) -> list[str]:
        return [h.chunk for h in self.chunks if not h.healed]


@dataclass
class VerifyReport:
    deep: bool
    points: int = 0
    chunks: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    # Each damaged or missing chunk: (point, VM, disk, offset) of every reference,
    # and the problems that report it.
    damaged: dict[bytes, list[tuple[str, str, str, int]]] = field(default_factory=dict)
    reported: dict[bytes, list[Problem]] = field(default_factory=dict)
    repair: RepairReport | None = None

    @property
    def ok(self) -> bool:
        """Nothing damaged or missing, or all of it healed."""
        return all(p.healed for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "deep": self.deep,
            "points": self.points,
            "chunks": self.chunks,
            "bytes_checked": self.bytes_checked,
            "problems": [p.__dict__ for p in self.problems],
            "quarantined": self.quarantined,
            "repair": None if self.repair is None else {
                "source": self.repair.source, "source_url": self.repair.source_url,
                "shared_key": self.repair.shared_key,
                "chunks": [h.__dict__ for h in self.repair.chunks],
                "healed": self.repair.healed, "unhealed": self.repair.unhealed,
                "quarantined_there": self.repair.quarantined_there},
        }


def verify(
    repo: Repository,
    points: list[Manifest] | None = None,
    *,
    deep: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
    repair_from: Repository | None = None,
) -> VerifyReport:
    """Verify ``points`` (every point when None) and return what was found; with
    ``repair_from``, heal each damaged or missing chunk from that repository.

    Under a shared lock (of both, when repairing): gc cannot sweep meanwhile, so a
    point removed while this runs cannot make its chunks look lost, and a chunk
    healed is not swept before the points naming it are seen.
    """
    with repo.shared_lock("verify"):
        report = _verify(repo, points, deep=deep, progress=progress, workers=workers)
        if repair_from is not None and report.damaged:
            with repair_from.shared_lock(f"repair of {repo.id[:12]}"):
                report.repair = repair_chunks(repo, repair_from, report)
        return report


def repair_chunks(repo: Repository, other: Repository, report: VerifyReport) -> RepairReport:
    """Heal ``repo``'s chunks that ``report`` found damaged or missing from ``other``."""
    from stasis.protection.copy import copy_mode, transfer_chunk

    shared = copy_mode(other, repo)  # refused (same repository, chunk sizes) as a copy
    result = RepairReport(source=other.id, source_url=other.url, shared_key=shared)
    there = set(other.point_ids())
    manifests: dict[str, Manifest | None] = {}
    indexes: dict[str, DiskIndex | None] = {}

    def their_name(point: str, vm: str, disk: str, offset: int) -> bytes | None:
        """The other repository's name of the chunk at this place of a point it holds."""
        if point not in there:
            return None
        if point not in manifests:
            try:
                manifests[point] = other.load_manifest(point)
            except ObjectDamaged:
                manifests[point] = None
        m = manifests[point]
        record = None if m is None else next(
            (d for v, d in m.streams() if v.name == vm and d.name == disk), None)
        if record is None:
            return None
        if record.index not in indexes:
            try:
                indexes[record.index] = other.load_index(record.index)
            except ObjectDamaged:
                indexes[record.index] = None
        root = indexes[record.index]
        if root is None or offset // root.chunk_size >= root.count:
            return None
        try:
            found = root.name(offset // root.chunk_size)
        except (ObjectDamaged, IndexFormatError):
            return None
        return None if found == ZERO_NAME else found

    for name, refs in report.damaged.items():
        healing = Healing(chunk=name.hex(), healed=False,
                          points=list(dict.fromkeys(r[0] for r in refs)))
        result.chunks.append(healing)
        candidates = [name] if shared else [n for n in dict.fromkeys(
            their_name(*ref) for ref in refs) if n is not None]
        reasons = []
        for candidate in candidates:
            try:
                healing.bytes_written = transfer_chunk(other, repo, candidate, name,
                                                       shared=shared)
            except ObjectDamaged as e:
                if e.reason != "missing":
                    result.quarantined_there.append(other.quarantine_chunk(candidate))
                reasons.append(f"{e.reason} in {other.url} too")
                continue
            except IntegrityError as e:
                reasons.append(e.message)
                continue
            healing.healed, healing.source_chunk = True, candidate.hex()
            for problem in report.reported.get(name, []):
                problem.healed = True
            break
        if not healing.healed:
            healing.reason = "; ".join(dict.fromkeys(reasons)) or (
                f"{other.url} holds none of the points that reference it")
    return result


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
    # Small objects that can be checked without reading any data: a damaged hold
    # still protects its point (it counts as held) but is reported here; a key slot
    # that no longer parses is one way fewer to open the repository.
    wanted = {p.id for p in points}
    for pid, hold in sorted(repo.holds().items()):
        if hold.damaged and (pid in wanted or pid not in repo.point_ids()):
            report.problems.append(Problem(pid, object=f"hold {pid[:12]}", problem=hold.reason))
    for slot in repo.key_slots():
        if slot["kind"] == "damaged":
            report.problems.append(Problem("", object=f"key slot {slot['id']}",
                                           problem=slot["label"]))
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
                        offset = (first + j) * root.chunk_size
                        problem = Problem(point.id, vm.name, disk.name, offset,
                                          f"chunk {chunk.hex()[:16]}", reasons[chunk])
                        report.problems.append(problem)
                        report.damaged.setdefault(chunk, []).append(
                            (point.id, vm.name, disk.name, offset))
                        report.reported.setdefault(chunk, []).append(problem)

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
