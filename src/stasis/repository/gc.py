"""Garbage collection: delete the chunks, disk indexes and index pages no committed
point references.

How it runs
-----------

1. **List and mark, without the exclusive lock** (backups, restores go on). List
   ``indexes/``, ``pages/`` and ``chunks/`` (the *candidates*, with their sizes),
   then list ``manifests/`` (set M1), read every manifest, every disk index it names
   and every distinct page those name (each once, however many points share it), and
   collect the referenced index, page and chunk names (set R1).
2. **Take the exclusive lock.** It is granted only when no live shared lock exists:
   every backup that was in flight when gc began has committed or given up, and
   none can start until gc lets go.
3. **Re-mark under the lock.** List ``manifests/`` again (M2) and mark every point
   in M2 but not in M1, with its indexes: R2 = R1 ∪ refs(M2 − M1).
4. **Sweep under the lock**: delete the candidate indexes not in R2, then the
   candidate pages not in R2, then the candidate chunks not in R2, then the leftovers
   of killed writers (the backend's temporary objects older than an hour by the
   injected clock). Release the lock.

A damaged manifest, index or page (in step 1 or 3) stops gc before anything is deleted:
gc cannot know what that point references, so nothing it found is provably garbage.

Why it never deletes what a point can reference (DESIGN.md, promise 4)
-----------------------------------------------------------------------

An object is deleted only if (a) it was listed in step 1, (b) no manifest listed in
M1 or M2 references it, and (c) the exclusive lock is held. Interleavings:

- *A point committed before step 1 listed the manifests*: in M1, marked in step 1.
- *A point committed during step 1* (after the listing, before the lock): its
  backup held a shared lock, so the lock in step 2 comes after the commit; it is in
  M2 − M1 and marked in step 3. Without step 3 its new chunks (and the old chunks
  it deduplicated against) would be deleted: this is the race the re-mark closes.
- *A backup in flight that found a chunk already present* (dedup) and so did not
  write it: the chunk may be unreferenced by every committed point at that moment
  (its point was removed), so it looks like garbage. But the backup looked it up
  while holding its shared lock and holds that lock until its manifest is stored.
  gc's sweep needs the exclusive lock, so it starts only after that manifest is
  committed, and step 3 then sees the manifest and marks the chunk. If the backup
  gives up instead, nothing references the chunk and deleting it is right. The
  same holds for an incremental's entries taken from its parent's index (never
  looked up at all, nor are the parent's pages it shares by name), and for an index
  or page found present by ``store_index`` or ``store_page``.
- *A backup that starts during the sweep*: it cannot take its shared lock until
  the sweep ends (it waits, up to its own lock wait), so it looks chunks up only
  after every deletion: what it finds present stays present.
- *A backup that starts after the sweep*: nothing of this gc can touch it.
- *A point removed during gc*: it is still marked if gc saw it (its garbage waits
  for the next gc); a manifest that vanished between listing and reading is a
  removed point, skipped. Removal only ever shrinks what is referenced.
- *An object written after step 1 listed the candidates*: not a candidate, kept.
- *Two gc runs at once*: only one holds the exclusive lock at a time; each deletes
  only what is unreferenced by every manifest it saw, and a point it saw was
  never removed by the other (gc removes no manifests).
- *A chunk quarantined by verify or restore*: ``quarantine/`` is never touched
  (it is reported); a referenced chunk missing from ``chunks/`` is counted as
  missing, not created or deleted.

Lock mutual exclusion rests on the lock protocol (write, then list, back off on a
conflict; :mod:`stasis.repository.locks`): of a gc and a backup taking locks at
once, at least one sees the other. A lock whose holder died is stale and ignored;
so is one not refreshed for 30 minutes, which is the one assumption gc makes about
a live backup on another host (that it refreshes its lock).

Immutable repositories
----------------------

Each deletion removes every version of the object; a version the storage still
locks is refused, and gc counts it (``locked``, with the latest date among them in
``locked_until``) and goes on: that object stays garbage until its lock ends, for a
later gc. Nothing that fails a lock stops the sweep half-way.

Interrupted gc
--------------

gc writes nothing but its lock and deletes only objects no manifest references,
one object at a time, indexes before pages before chunks. Ctrl-C or SIGTERM releases the lock;
``kill -9`` leaves a lock that is stale at once (its process is gone). Either way
every committed point is as intact as before; what was not yet deleted is still
garbage, for the next gc.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from stasis.backends.base import Backend, Leftover, ObjectLocked
from stasis.clock import SYSTEM_CLOCK, Clock
from stasis.errors import IntegrityError, Locked
from stasis.parallel import ordered_map
from stasis.progress import NoProgress, Progress
from stasis.repository.index import NAME_LEN, ZERO_NAME, DiskIndex
from stasis.repository.manifest import Manifest
from stasis.repository.repo import (
    ObjectDamaged,
    Repository,
    chunk_key,
    index_key,
    manifest_key,
    page_key,
)

TEMP_MAX_AGE = 3600.0  # a temporary file older than this belongs to a killed writer
DEFAULT_WAIT = 600.0
_NAME = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size


@dataclass
class GcReport:
    dry_run: bool
    points: int = 0  # committed points marked (both phases)
    points_marked_late: int = 0  # committed while gc was marking: found by the re-mark
    points_vanished: int = 0  # removed while gc read them
    indexes_referenced: int = 0
    pages_referenced: int = 0
    chunks_referenced: int = 0
    chunks_missing: int = 0  # referenced but not in chunks/ (see verify, quarantine)
    indexes: Tally = field(default_factory=Tally)  # unreferenced: deleted (or would be)
    pages: Tally = field(default_factory=Tally)
    chunks: Tally = field(default_factory=Tally)
    temporary_files: Tally = field(default_factory=Tally)
    temporary_files_checked: bool = True  # every backend lists its leftovers now
    kept_indexes: Tally = field(default_factory=Tally)
    kept_pages: Tally = field(default_factory=Tally)
    kept_chunks: Tally = field(default_factory=Tally)
    quarantined: Tally = field(default_factory=Tally)  # left in place
    locked: Tally = field(default_factory=Tally)  # unreferenced but still locked: kept
    locked_until: str | None = None  # the latest end of those locks (ISO 8601)
    lock_waited_s: float = 0.0
    mark_s: float = 0.0
    locked_s: float = 0.0  # how long backups were held off: re-mark and sweep
    duration_s: float = 0.0

    @property
    def reclaimed_bytes(self) -> int:
        return (self.indexes.bytes + self.pages.bytes + self.chunks.bytes
                + self.temporary_files.bytes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reclaimed_bytes"] = self.reclaimed_bytes
        return d


@dataclass
class _Candidates:
    indexes: dict[str, int]  # name -> stored size
    pages: dict[bytes, int]
    chunks: dict[bytes, int]

    def mark_bytes(self) -> int:
        return sum(self.indexes.values()) + sum(self.pages.values())


class _Marker:
    """What the points seen so far reference."""

    def __init__(self, repo: Repository, progress: Progress, workers: int | None) -> None:
        self.repo = repo
        self.progress = progress
        self.workers = workers
        self.points: set[str] = set()
        self.indexes: set[str] = set()
        self.pages: set[bytes] = set()
        self.chunks: set[bytes] = set()
        self.vanished = 0

    def _manifest(self, pid: str) -> Manifest | None:
        try:
            return self.repo.load_manifest(pid)
        except ObjectDamaged as e:
            if not self.repo.backend.exists(manifest_key(pid)):
                return None  # removed since it was listed: no longer a point
            raise IntegrityError(
                f"gc stopped before deleting anything: the manifest of point {pid[:12]} is "
                f"damaged ({e.reason}), so gc cannot know which chunks that point references. "
                "Nothing was deleted. 'stasis verify' shows the damage; restore the object "
                f"{manifest_key(pid)} from a copy of the repository, or remove that point, "
                "then run gc again."
            ) from None

    def mark(self, point_ids: Iterable[str], sizes: _Candidates) -> int:
        """Mark the points not marked yet; return how many were committed points."""
        new: list[tuple[Manifest, str, str, str]] = []  # point, vm, disk, index name
        marked = 0
        for pid in point_ids:
            if pid in self.points:
                continue
            m = self._manifest(pid)
            if m is None:
                self.vanished += 1
                continue
            self.points.add(pid)
            marked += 1
            for vm, disk in m.streams():
                if disk.index not in self.indexes:
                    self.indexes.add(disk.index)
                    new.append((m, vm.name, disk.name, disk.index))

        def load(item: tuple[Manifest, str, str, str]) -> DiskIndex | ObjectDamaged:
            try:
                return self.repo.load_index(item[3])
            except ObjectDamaged as e:
                return e
            finally:
                self.progress.advance(sizes.indexes.get(item[3], 0))

        new_pages: dict[bytes, tuple[Manifest, str, str]] = {}
        results = ordered_map(load, new, workers=self.workers, name="gc-mark")
        with contextlib.closing(results):
            for (m, vm_name, disk_name, name), index in results:
                if isinstance(index, ObjectDamaged):
                    if not self.repo.backend.exists(manifest_key(m.id)):
                        continue  # the point was removed, and its index with it
                    raise IntegrityError(
                        f"gc stopped before deleting anything: the disk index {name[:16]} of "
                        f"point {m.id[:12]}, VM {vm_name}, disk {disk_name} is damaged "
                        f"({index.reason}), so gc cannot know which chunks it references. "
                        "Nothing was deleted. 'stasis verify' shows the damage; restore the "
                        f"object {index_key(name)} from a copy of the repository, or remove "
                        "that point, then run gc again."
                    )
                if index.held_pages():  # format 1: the entries are in the index itself
                    self.chunks.update(n for _i, n in index.stored())
                    continue
                for page in self.repo.index_pages(index):
                    if page not in self.pages:
                        self.pages.add(page)
                        new_pages[page] = (m, vm_name, disk_name)
        self._mark_pages(new_pages, sizes)
        return marked

    def _mark_pages(self, new: dict[bytes, tuple[Manifest, str, str]],
                    sizes: _Candidates) -> None:
        """Read each page once and mark its chunks."""
        def load(page: bytes) -> bytes | ObjectDamaged:
            try:
                return self.repo.load_page(page)
            except ObjectDamaged as e:
                return e
            finally:
                self.progress.advance(sizes.pages.get(page, 0))

        results = ordered_map(load, list(new), workers=self.workers, name="gc-pages")
        with contextlib.closing(results):
            for page, entries in results:
                if isinstance(entries, ObjectDamaged):
                    m, vm_name, disk_name = new[page]
                    if not self.repo.backend.exists(manifest_key(m.id)):
                        continue  # the point was removed, and its pages with it
                    raise IntegrityError(
                        f"gc stopped before deleting anything: an index page of point "
                        f"{m.id[:12]}, VM {vm_name}, disk {disk_name} is damaged "
                        f"({entries.reason}), so gc cannot know which chunks it references. "
                        "Nothing was deleted. 'stasis verify' shows the damage; restore the "
                        f"object {page_key(page)} from a copy of the repository, or remove "
                        "the points that reference it, then run gc again."
                    )
                self.chunks.update(entries[at : at + NAME_LEN]
                                   for at in range(0, len(entries), NAME_LEN))
        self.chunks.discard(ZERO_NAME)


def _list_candidates(repo: Repository) -> _Candidates:
    indexes: dict[str, int] = {}
    for obj in repo.backend.list("indexes/"):
        name = obj.key.rsplit("/", 1)[-1]
        if _NAME.match(name) and obj.key == index_key(name):
            indexes[name] = obj.size  # anything else in there is not ours to delete
    pages: dict[bytes, int] = {}
    for obj in repo.backend.list("pages/"):
        name = obj.key.rsplit("/", 1)[-1]
        if _NAME.match(name) and obj.key == page_key(bytes.fromhex(name)):
            pages[bytes.fromhex(name)] = obj.size
    chunks: dict[bytes, int] = {}
    for obj in repo.backend.list("chunks/"):
        name = obj.key.rsplit("/", 1)[-1]
        if _NAME.match(name) and obj.key == chunk_key(bytes.fromhex(name)):
            chunks[bytes.fromhex(name)] = obj.size
    return _Candidates(indexes, pages, chunks)


def old_leftovers(
    backend: Backend, now: Callable[[], float], max_age: float
) -> Iterator[Leftover]:
    """The backend's leftovers older than ``max_age``: a put in flight is younger."""
    for leftover in backend.leftovers():
        if now() - leftover.mtime > max_age:
            yield leftover


K = TypeVar("K", str, bytes)  # index names are strings, page and chunk names bytes


def _doomed(candidates: dict[K, int], referenced: set[K], kept: Tally,
            reclaimed: Tally) -> list[K]:
    """The candidates no point references, their sizes counted in ``reclaimed``; the
    sizes of the referenced ones in ``kept``."""
    doomed: list[K] = []
    for name, size in candidates.items():
        if name in referenced:
            kept.add(size)
        else:
            reclaimed.add(size)
            doomed.append(name)
    return doomed


def _take_exclusive(
    repo: Repository, wait: float, on_wait: Callable[[str, float], None] | None,
    stack: contextlib.ExitStack, clock: Clock,
) -> float:
    """Hold the exclusive lock until ``stack`` closes; return the seconds waited for it."""
    began = clock.monotonic()
    try:
        stack.enter_context(repo.exclusive_lock("gc", wait=0.0))
        return 0.0
    except Locked as e:
        if wait <= 0:
            raise
        if on_wait is not None:
            on_wait(str(e.args[1]) if len(e.args) > 1 else "another job", wait)
    stack.enter_context(
        repo.exclusive_lock("gc", wait=max(0.0, wait - (clock.monotonic() - began)))
    )
    return clock.monotonic() - began


def collect_garbage(
    repo: Repository,
    *,
    dry_run: bool = False,
    wait: float = DEFAULT_WAIT,
    progress: Progress | None = None,
    clock: Clock = SYSTEM_CLOCK,
    temp_max_age: float = TEMP_MAX_AGE,
    workers: int | None = None,
    on_wait: Callable[[str, float], None] | None = None,
) -> GcReport:
    """Delete (or, with ``dry_run``, count) what no committed point references.

    ``wait`` bounds the wait for the exclusive lock (:class:`Locked` after it);
    ``on_wait(holder, wait)`` is called once when gc has to wait. ``clock`` ages
    temporary files and times the phases. Raises :class:`IntegrityError` on a damaged
    manifest or index, before deleting anything.
    """
    if not dry_run:
        repo.check_may_delete("gc")
    progress = progress or NoProgress()
    report = GcReport(dry_run=dry_run)
    began = clock.monotonic()
    candidates = _list_candidates(repo)
    marker = _Marker(repo, progress, workers)
    progress.start("gc: mark", candidates.mark_bytes())
    report.points = marker.mark(repo.point_ids(), candidates)
    progress.finish()
    report.mark_s = round(clock.monotonic() - began, 3)

    with contextlib.ExitStack() as stack:
        report.lock_waited_s = round(_take_exclusive(repo, wait, on_wait, stack, clock), 3)
        locked_at = clock.monotonic()
        # Points committed since the listing above: their backups have all let go
        # of their shared locks by now, so this listing holds every one of them.
        late = marker.mark(repo.point_ids(), candidates)
        report.points += late
        report.points_marked_late = late
        report.points_vanished = marker.vanished
        report.indexes_referenced = len(marker.indexes)
        report.pages_referenced = len(marker.pages)
        report.chunks_referenced = len(marker.chunks)
        report.chunks_missing = sum(1 for n in marker.chunks if n not in candidates.chunks)

        doomed_indexes = _doomed(candidates.indexes, marker.indexes, report.kept_indexes,
                                 report.indexes)
        doomed_pages = _doomed(candidates.pages, marker.pages, report.kept_pages, report.pages)
        doomed_chunks = _doomed(candidates.chunks, marker.chunks, report.kept_chunks,
                                report.chunks)
        temps = list(old_leftovers(repo.backend, lambda: clock.now().timestamp(), temp_max_age))
        for leftover in temps:
            report.temporary_files.add(leftover.size)
        for obj in repo.backend.list("quarantine/"):
            report.quarantined.add(obj.size)

        def delete(key: str, size: int, reclaimed: Tally) -> None:
            try:
                repo.backend.delete(key)
            except ObjectLocked as e:  # an immutable repository's object, locked still
                reclaimed.count -= 1
                reclaimed.bytes -= size
                report.locked.add(size)
                if e.until is not None:
                    when = e.until.isoformat(timespec="seconds")
                    report.locked_until = max(report.locked_until or when, when)
            progress.advance(size)

        if not dry_run:
            progress.start("gc: sweep", report.reclaimed_bytes)
            # Indexes first, then pages: gc never leaves an index whose pages or
            # chunks it deleted.
            for name in doomed_indexes:
                delete(index_key(name), candidates.indexes[name], report.indexes)
            for pname in doomed_pages:
                delete(page_key(pname), candidates.pages[pname], report.pages)
            for cname in doomed_chunks:
                delete(chunk_key(cname), candidates.chunks[cname], report.chunks)
            for leftover in temps:
                repo.backend.discard(leftover)
                progress.advance(leftover.size)
            progress.finish()
            repo.backend.keep_reserve()  # set aside again what a full store used
        report.locked_s = round(clock.monotonic() - locked_at, 3)
    report.duration_s = round(clock.monotonic() - began, 3)
    return report
