"""Copies of points from one repository to another (a second site).

A copy sends only what the destination lacks and commits each point there the way a
backup commits one (docs/format.md, *Copies*): every chunk, then every index page,
then the index root, then the destination's ``sync``, the manifest, ``sync`` again.
A point keeps its id; holds and deletions stay where they are. After the points, the
newest drill proof of each VM and group among them goes too (:func:`copy_drill_proofs`),
so that the second site knows what was proven of them.

Two cases, told apart by the repositories' configs (``key_id``, the fingerprint of
the master key), never by a flag:

- **shared key** (``repo init --copy-key-from``): names and sealed bytes are the same
  at both sites, so every object is sent as it is, byte for byte, once it has been
  opened and authenticated at the source;
- **own key**: each chunk is opened at the source, named with the destination's
  key and sealed again; pages, roots and the manifest are rewritten with the new
  names.

What makes an incremental copy cheap is the *base*: a point committed at both sites
(the point's parent, else the newest earlier point of its name). Its objects are
durable at the destination (it is committed there), so a page the new point shares
with it is neither read nor checked, and in a changed page every entry that the
base's page at the same place holds is known without reading the chunk: with a
shared key by name, with its own key through the pair of the base's pages at both
sites (entry *j* of the source page is entry *j* of the destination page). Only the
chunks the base lacks are read, looked up and, if absent, sent. No cache outside the
repositories is kept: a name mapping held in the state directory would be a claim
nobody authenticates, where the base's two indexes are verified objects.

Both repositories are held under a shared lock for the whole copy, so gc at either
end waits for it (DESIGN.md, promise 4): objects found present at the destination
stay until the manifest naming them is committed, as for a backup's deduplication.
A copy killed at any instant leaves objects without a manifest (garbage for gc, or
found present by the next copy), never a manifest before its objects.
"""

from __future__ import annotations

import contextlib
import copy as _copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import blake3

from stasis.clock import SYSTEM_CLOCK, Clock
from stasis.errors import CopyRefused, IntegrityError, KeyMismatch, ObjectNotFound
from stasis.parallel import ordered_map
from stasis.progress import NoProgress, Progress
from stasis.repository import DiskIndex, Manifest, ObjectDamaged, Repository
from stasis.repository import objects as sealed
from stasis.repository.index import NAME_LEN, V1, ZERO_NAME, IndexFormatError, encode_page
from stasis.repository.manifest import DiskRecord, ManifestFormatError
from stasis.repository.repo import chunk_key, index_key, manifest_key, page_key, stored_whole

# ------------------------------------------------------------------ the rate limit


class TokenBucket:
    """A bandwidth limit over the bytes sent: ``rate`` bytes a second, in bursts of at
    most ``burst`` bytes. :meth:`take` waits (on ``clock``) until the bytes fit;
    senders in several threads take turns, so together they keep to the rate."""

    def __init__(self, rate: float, *, burst: float | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if rate <= 0:
            raise ValueError("a rate limit is a positive number of bytes per second")
        self.rate = float(rate)
        # A quarter of a second of traffic: a limit holds over short windows, and
        # one object larger than that simply waits for its own bytes.
        self.burst = float(burst if burst is not None else max(64 << 10, rate / 4))
        self.clock = clock
        self.tokens = self.burst
        self.at = clock.monotonic()
        self.taken = 0  # bytes let through
        self.waited = 0.0  # seconds spent waiting
        self._lock = threading.Lock()

    def take(self, n: int) -> float:
        """Let ``n`` bytes through once the bucket holds them; return the wait."""
        with self._lock:
            now = self.clock.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            self.tokens -= n
            self.taken += n
            wait = 0.0
            if self.tokens < 0:
                wait = -self.tokens / self.rate
                self.clock.sleep(wait)
                self.waited += wait
                self.tokens = 0.0
                self.at = now + wait
            return wait


# ------------------------------------------------------------------ the report


@dataclass
class PointCopy:
    """One point's outcome: ``copied``, ``present`` (committed at the destination
    already) or, in a dry run, ``would copy``."""

    id: str
    name: str
    time: str
    action: str
    objects_sent: int = 0
    bytes_sent: int = 0
    objects_present: int = 0


@dataclass
class CopyReport:
    dry_run: bool
    shared_key: bool
    source: str  # repository ids
    destination: str
    points: list[PointCopy] = field(default_factory=list)
    objects_sent: int = 0  # in a dry run: that would be sent
    bytes_sent: int = 0
    objects_present: int = 0  # found at the destination, not sent
    chunks_read: int = 0  # chunks read (and authenticated) at the source
    bytes_read: int = 0
    rate_waited_s: float = 0.0
    duration_s: float = 0.0
    drills_sent: int = 0  # drill proofs written at the destination (dry: that would be)
    drills_present: int = 0  # the same drill, or a newer one, there already
    drills_damaged: list[str] = field(default_factory=list)  # source proofs not sent

    @property
    def copied(self) -> list[str]:
        return [p.id for p in self.points if p.action in ("copied", "would copy")]

    @property
    def skipped(self) -> list[str]:
        return [p.id for p in self.points if p.action == "present"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["copied"], d["skipped"] = self.copied, self.skipped
        return d


# ------------------------------------------------------------------ checks


def copy_mode(src: Repository, dst: Repository) -> bool:
    """Whether the two repositories share their master key (objects go as they are);
    refused (:class:`CopyRefused`, :class:`KeyMismatch`) where no copy can be right."""
    if src.id == dst.id:
        raise CopyRefused(f"the source and the destination are the same repository "
                          f"({src.id[:12]}); nothing was copied")
    shared = src.key_id == dst.key_id
    for a, b in ((dst, src), (src, dst)):
        if a.key_from == b.id and not shared:
            raise KeyMismatch(
                f"the repository {a.id[:12]} at {a.url} was created with the key of "
                f"{b.id[:12]} ('repo init --copy-key-from'), but its key is not that "
                "repository's key now; nothing was copied. One of them is not the "
                "repository it claims to be.")
    if src.chunk_size != dst.chunk_size:
        raise CopyRefused(
            f"the source cuts disks into chunks of {src.chunk_size} bytes and the "
            f"destination into chunks of {dst.chunk_size}: a point cannot be copied "
            "without cutting it again, which copy does not do; nothing was copied. "
            "Create the destination with --chunk-size "
            f"{src.chunk_size} (or --copy-key-from the source).")
    if shared and src.config["encryption"] != dst.config["encryption"]:
        raise CopyRefused("the two repositories share a key but not their encryption "
                          "setting; nothing was copied")
    if shared and src.format_version > dst.format_version:
        raise CopyRefused(
            f"the source is of format {src.format_version} and the destination of format "
            f"{dst.format_version}: with a shared key objects are copied as they are, and "
            "a paged index cannot go into a format 1 repository; nothing was copied. "
            "Run 'stasis repo upgrade' on the destination first.")
    return shared


# ------------------------------------------------------------------ one chunk


def seal_chunk_for(dst: Repository, name: bytes, plain: bytes, blob: bytes, *,
                   shared: bool) -> bytes:
    """A chunk opened at its source (``blob`` as stored there, ``plain`` its data) as
    ``dst`` stores it under its name there, ``name``: with a shared key the source's
    bytes as they are, else sealed again with ``dst``'s key."""
    return blob if shared else dst.seal_chunk(name, plain)


def transfer_chunk(src: Repository, dst: Repository, src_name: bytes, want: bytes, *,
                   shared: bool) -> int:
    """Bring the chunk ``src_name`` of ``src`` into ``dst`` as ``dst``'s chunk ``want``
    (what ``stasis verify --repair-from`` heals a chunk with); return the bytes
    written.

    The chunk is opened and authenticated at the source (:class:`ObjectDamaged`
    there when it is missing or damaged), its data must be named ``want`` under
    ``dst``'s key, or nothing is written (:class:`IntegrityError`), it is sealed as a
    copy seals it, written, and read back and opened with ``dst``'s key."""
    try:
        blob = src.backend.get(chunk_key(src_name))
    except ObjectNotFound:
        raise ObjectDamaged(chunk_key(src_name), "missing") from None
    plain = src.open_chunk(src_name, blob)
    if dst.chunk_name(plain) != want:
        raise IntegrityError(
            f"the chunk {src_name.hex()[:16]} of {src.url} holds other data than the "
            f"chunk {want.hex()[:16]} of {dst.url}: it was not written there")
    out = seal_chunk_for(dst, want, plain, blob, shared=shared)
    dst.put_chunk(want, out)
    dst.backend.sync()
    if dst.open_chunk(want, dst.backend.get(chunk_key(want))) != plain:
        raise IntegrityError(f"the chunk {want.hex()[:16]} written to {dst.url} does not "
                             "read back as it was sent")
    return len(out)


# ------------------------------------------------------------------ the copier


def _entries(content: bytes) -> list[bytes]:
    return [content[at : at + NAME_LEN] for at in range(0, len(content), NAME_LEN)]


@dataclass
class _Base:
    """A point committed at both sites: the same manifest, as each site stores it."""

    src: Manifest
    dst: Manifest

    def stream(self, key: tuple[str, str, str]) -> tuple[DiskRecord, DiskRecord] | None:
        s = _streams(self.src).get(key)
        d = _streams(self.dst).get(key)
        return None if s is None or d is None else (s, d)


def _streams(m: Manifest) -> dict[tuple[str, str, str], DiskRecord]:
    found: dict[tuple[str, str, str], DiskRecord] = {}
    for vm in m.vms:
        for d in vm.disks:
            found[(vm.name, "disk", d.name)] = d
        for f in vm.files:
            found[(vm.name, "file", f.name)] = f
    return found


class _Copier:
    def __init__(self, src: Repository, dst: Repository, *, shared: bool, dry_run: bool,
                 progress: Progress, bucket: TokenBucket | None, workers: int | None,
                 report: CopyReport) -> None:
        self.src, self.dst = src, dst
        self.shared, self.dry_run = shared, dry_run
        self.progress, self.bucket, self.workers = progress, bucket, workers
        self.report = report
        self.present: set[str] = set()  # destination keys found or sent in this run
        self.names: dict[bytes, bytes] = {}  # own key: source chunk name -> destination's
        self.point: PointCopy | None = None

    # ------------------------------------------------------------ counting

    def _sent(self, size: int) -> None:
        self.report.objects_sent += 1
        self.report.bytes_sent += size
        if self.point is not None:
            self.point.objects_sent += 1
            self.point.bytes_sent += size

    def _found(self) -> None:
        self.report.objects_present += 1
        if self.point is not None:
            self.point.objects_present += 1

    def _put(self, key: str, blob: bytes) -> None:
        if not self.dry_run:
            if self.bucket is not None:
                self.bucket.take(len(blob))
            self.dst.backend.put(key, blob)

    def _lacks(self, key: str) -> bool:
        """Whether the destination lacks ``key`` (an object found is counted)."""
        if key in self.present:
            return False
        if stored_whole(self.dst.backend, key):
            self.present.add(key)
            self._found()
            return False
        return True

    # ------------------------------------------------------------ reading the source

    def _open(self, kind: int, key: str, name: str) -> tuple[bytes, bytes]:
        """A source object's sealed bytes and plaintext, authenticated, and for
        named objects checked against the name."""
        try:
            blob = self.src.backend.get(key)
            plain = self.src.sealer.open(kind, name, blob)
        except ObjectNotFound:
            raise self._damaged(key, "missing") from None
        except sealed.SealError as e:
            raise self._damaged(key, str(e)) from None
        if kind != sealed.KIND_MANIFEST and \
                blake3.blake3(plain, key=self.src.keys.id).hexdigest() != name:
            raise self._damaged(key, "content does not match its name")
        return blob, plain

    def _damaged(self, key: str, reason: str) -> IntegrityError:
        where = f" (point {self.point.id[:12]})" if self.point is not None else ""
        return IntegrityError(
            f"The source object {key}{where} is damaged ({reason}): it was not copied, "
            "and the point that needs it was not committed at the destination. The "
            "points copied before are intact there. 'stasis verify --deep' on the "
            "source shows the damage.")

    # ------------------------------------------------------------ chunks

    def _chunk_shared(self, name: bytes) -> tuple[int, int]:
        """Send one chunk as it is; return (bytes sent, bytes read)."""
        key = chunk_key(name)
        if not self._lacks_quiet(key):
            return -1, 0
        blob, _plain = self._open(sealed.KIND_CHUNK, key, name.hex())
        self._put(key, blob)
        return len(blob), len(blob)

    def _chunk_own(self, name: bytes) -> tuple[bytes, int, int]:
        """Open one chunk, name and seal it with the destination's key; return its
        destination name, bytes sent (-1: found present) and bytes read."""
        key = chunk_key(name)
        blob, plain = self._open(sealed.KIND_CHUNK, key, name.hex())
        dname = self.dst.chunk_name(plain)
        dkey = chunk_key(dname)
        if not self._lacks_quiet(dkey):
            return dname, -1, len(blob)
        out = seal_chunk_for(self.dst, dname, plain, blob, shared=False)
        self._put(dkey, out)
        return dname, len(out), len(blob)

    def _lacks_quiet(self, key: str) -> bool:
        """:meth:`_lacks` for worker threads: the caller counts."""
        return key not in self.present and not stored_whole(self.dst.backend, key)

    def _chunks(self, wanted: list[bytes]) -> None:
        """Bring the chunks ``wanted`` (source names, none known present) to the
        destination; with its own key, learn their destination names."""
        todo = list(dict.fromkeys(n for n in wanted if n != ZERO_NAME and (
            n not in self.names if not self.shared else chunk_key(n) not in self.present)))
        if not todo:
            return
        if self.shared:
            for name, (sent, read) in ordered_map(self._chunk_shared, todo,
                                                  workers=self.workers, name="copy"):
                self._settle(chunk_key(name), sent, read)
            return
        for name, (dname, sent, read) in ordered_map(self._chunk_own, todo,
                                                     workers=self.workers, name="copy"):
            self.names[name] = dname
            self._settle(chunk_key(dname), sent, read)

    def _settle(self, key: str, sent: int, read: int) -> None:
        if read:
            self.report.chunks_read += 1
            self.report.bytes_read += read
        if key in self.present:
            return
        self.present.add(key)
        if sent < 0:
            self._found()
        else:
            self._sent(sent)

    # ------------------------------------------------------------ indexes

    def _load_root(self, repo: Repository, name: str) -> DiskIndex:
        try:
            return repo.load_index(name, where=f"point {self.point.id[:12]}"
                                   if self.point is not None else "")
        except ObjectDamaged as e:
            if repo is self.src:
                raise self._damaged(e.key, e.reason) from None
            raise

    def index(self, name: str, base: tuple[DiskRecord, DiskRecord] | None) -> str:
        """Bring the disk index ``name`` (and all it names) to the destination; return
        its name there."""
        root = self._load_root(self.src, name)
        base_src = base_dst = None
        if base is not None:
            b_src = self._load_root(self.src, base[0].index)
            b_dst = self._load_root(self.dst, base[1].index)
            if b_src.same_geometry(root) and b_dst.same_geometry(root):
                base_src, base_dst = b_src, b_dst
        if self.shared:
            self._index_shared(name, root, base_src)
            return name
        return self._index_own(root, base_src, base_dst)

    def _advance(self, root: DiskIndex, k: int) -> None:
        first = k * root.page_entries
        last = min(root.count, first + root.page_entries)
        self.progress.advance(sum(root.chunk_length(i) for i in range(first, last))
                              if last > first else 0)

    def _index_shared(self, name: str, root: DiskIndex, base: DiskIndex | None) -> None:
        paged = not root.held_pages()
        for k in range(root.page_count):
            pname = root.page_name(k)
            if paged and (pname == ZERO_NAME or (
                    base is not None and base.page_name(k) == pname)):
                self._advance(root, k)  # zero, or the base's page: durable there
                continue
            if paged and pname is not None and page_key(pname) in self.present:
                self._advance(root, k)
                continue
            known = set(_entries(base.page(k))) if base is not None else set()
            self._chunks([n for n in _entries(root.page(k)) if n not in known])
            if paged and pname is not None:
                self._copy_as_is(sealed.KIND_PAGE, page_key(pname), pname.hex())
            self._advance(root, k)
        self._copy_as_is(sealed.KIND_INDEX, index_key(name), name)

    def _copy_as_is(self, kind: int, key: str, name: str) -> None:
        if self._lacks(key):
            blob, _plain = self._open(kind, key, name)
            self._put(key, blob)
            self.present.add(key)
            self._sent(len(blob))

    def _index_own(self, root: DiskIndex, base_src: DiskIndex | None,
                   base_dst: DiskIndex | None) -> str:
        paged_dst = self.dst.format_version != V1
        names: list[bytes | None] = []
        held: dict[int, bytes] = {}
        for k in range(root.page_count):
            pname = root.page_name(k)
            if pname == ZERO_NAME:
                if paged_dst:
                    names.append(ZERO_NAME)
                else:
                    names.append(None)
                    held[k] = bytes(root.page_length(k) * NAME_LEN)
                self._advance(root, k)
                continue
            if base_src is not None and base_dst is not None and pname is not None \
                    and base_src.page_name(k) == pname:
                same = base_dst.page_name(k)
                if paged_dst and same is not None:
                    names.append(same)  # the base's page at the destination, durable
                else:
                    names.append(None)
                    held[k] = base_dst.page(k)
                self._advance(root, k)
                continue
            entries = _entries(root.page(k))
            if base_src is not None and base_dst is not None:
                for s, d in zip(_entries(base_src.page(k)), _entries(base_dst.page(k)),
                                strict=True):
                    self.names.setdefault(s, d)
            self._chunks(entries)
            content = b"".join(ZERO_NAME if n == ZERO_NAME else self.names[n]
                               for n in entries)
            names.append(None)
            held[k] = content
            self._advance(root, k)
        if not paged_dst:
            index = DiskIndex(root.virtual_size, root.chunk_size,
                              page_entries=root.page_entries, page_names=names,
                              pages=held, version=V1)
            return self._put_root(index.encode_v1())
        stored: dict[int, bytes] = {}
        for k, content in held.items():
            if not content.strip(b"\0"):
                stored[k] = ZERO_NAME
                continue
            plain = encode_page(content)
            pname = self.dst.page_name(plain)
            key = page_key(pname)
            if self._lacks(key):
                blob = self.dst.sealer.seal(sealed.KIND_PAGE, pname.hex(), plain)
                self._put(key, blob)
                self.present.add(key)
                self._sent(len(blob))
            stored[k] = pname
        try:
            index = DiskIndex(root.virtual_size, root.chunk_size,
                              page_entries=root.page_entries,
                              page_names=[stored.get(k, n) for k, n in enumerate(names)])
            return self._put_root(index.encode_root())
        except IndexFormatError as e:  # a bug, not damage: say so plainly
            raise RuntimeError(f"copy built an invalid index: {e}") from e

    def _put_root(self, plain: bytes) -> str:
        name = blake3.blake3(plain, key=self.dst.keys.id).hexdigest()
        key = index_key(name)
        if self._lacks(key):
            blob = self.dst.sealer.seal(sealed.KIND_INDEX, name, plain)
            self._put(key, blob)
            self.present.add(key)
            self._sent(len(blob))
        return str(name)

    # ------------------------------------------------------------ points

    def copy_point(self, m: Manifest, base: _Base | None) -> None:
        key = manifest_key(m.id)
        blob, plain = self._open(sealed.KIND_MANIFEST, key, m.id)
        try:
            if Manifest.decode(plain).id != m.id:
                raise self._damaged(key, "manifest id does not match its name")
        except ManifestFormatError as e:
            raise self._damaged(key, str(e)) from None
        out = _copy.deepcopy(m)
        total = sum(d.virtual_size for _vm, d in m.streams())
        r = self.report
        self.progress.start(f"copy {m.name} {m.id[:12]} ({r.objects_sent} objects sent, "
                            f"{r.objects_present} present so far)", total)
        for vm, new_vm in zip(m.vms, out.vms, strict=True):
            for kind, olds, news in (("disk", vm.disks, new_vm.disks),
                                     ("file", vm.files, new_vm.files)):
                for disk, new in zip(olds, news, strict=True):
                    pair = base.stream((vm.name, kind, disk.name)) if base else None
                    new.index = self.index(disk.index, pair)
        if self.shared:
            sealed_manifest = blob
        else:
            sealed_manifest = self.dst.sealer.seal(sealed.KIND_MANIFEST, m.id, out.encode())
        if not self.dry_run:
            # The commit, as a backup's: every object it names is durable first.
            self.dst.backend.sync()
            self._put(key, sealed_manifest)
            self.dst.backend.sync()
        self._sent(len(sealed_manifest))
        self.progress.finish()


def _base_of(m: Manifest, at_both: dict[str, Manifest], dst: Repository) -> _Base | None:
    """The point committed at both sites that ``m`` is copied against: its parent,
    else the newest earlier point of its name."""
    candidates = [at_both[m.parent]] if m.parent in at_both else []
    candidates += sorted((p for p in at_both.values() if p.name == m.name
                          and (p.time, p.id) < (m.time, m.id)),
                         key=lambda p: (p.time, p.id), reverse=True)[:1]
    for c in candidates:
        try:
            return _Base(c, dst.load_manifest(c.id))
        except ObjectDamaged:
            continue  # a base is an optimisation: without it every chunk is looked up
    return None


def copy_points(
    src: Repository,
    dst: Repository,
    points: list[Manifest],
    *,
    dry_run: bool = False,
    rate: float | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    clock: Clock = SYSTEM_CLOCK,
    on_point: Callable[[PointCopy], None] | None = None,
) -> CopyReport:
    """Copy ``points`` of ``src`` to ``dst``, oldest first (so that each one's parent
    is its base); ``rate`` limits the bytes sent a second. ``on_point`` hears each
    point's outcome as it is decided. Both repositories are held under a shared lock."""
    progress = progress or NoProgress()
    shared = copy_mode(src, dst)
    report = CopyReport(dry_run=dry_run, shared_key=shared, source=src.id,
                        destination=dst.id)
    began = clock.monotonic()
    bucket = TokenBucket(rate, clock=clock) if rate else None
    with contextlib.ExitStack() as stack:
        stack.enter_context(src.shared_lock(f"copy to {dst.id[:12]}"))
        stack.enter_context(dst.shared_lock(f"copy from {src.id[:12]}"))
        copier = _Copier(src, dst, shared=shared, dry_run=dry_run, progress=progress,
                         bucket=bucket, workers=workers, report=report)
        at_dst = set(dst.point_ids())
        by_id = {p.id: p for p in src.points()} | {p.id: p for p in points}
        at_both = {pid: p for pid, p in by_id.items() if pid in at_dst}
        for m in _oldest_first(points):
            outcome = PointCopy(id=m.id, name=m.name, time=m.time, action="present")
            report.points.append(outcome)
            if m.id in at_dst:
                if on_point is not None:
                    on_point(outcome)
                continue
            outcome.action = "would copy" if dry_run else "copied"
            copier.point = outcome
            copier.copy_point(m, _base_of(m, at_both, dst))
            copier.point = None
            if not dry_run:
                at_dst.add(m.id)
                at_both[m.id] = m
            if on_point is not None:
                on_point(outcome)
        copy_drill_proofs(src, dst, points, report, dry_run=dry_run)
    report.rate_waited_s = round(bucket.waited, 3) if bucket is not None else 0.0
    report.duration_s = round(clock.monotonic() - began, 3)
    return report


def copy_drill_proofs(src: Repository, dst: Repository, points: list[Manifest],
                      report: CopyReport, *, dry_run: bool = False) -> None:
    """Send the newest drill proof of each VM and group whose points are ``points``
    (copied or present already), named and sealed with the destination's key as a
    manifest is; one the destination holds already, or older than the destination's
    own (a drill made there), is not sent. Sent after the points, under the same locks:
    a proof names a point by id only, and gc leaves proofs alone."""
    subjects = {("vm", v.name) for m in points for v in m.vms if v.kind == "vm"}
    subjects |= {("group", m.name) for m in points if m.kind == "group"}
    for kind, subject in sorted(subjects):  # their proofs alone: one GET each
        proof = src.drill_proof(kind, subject, on_damaged=lambda name, _e:
                                report.drills_damaged.append(f"drills/{name}"))
        if proof is None:
            continue
        theirs = dst.drill_proof(proof.subject_kind, proof.subject)
        if theirs is not None and (theirs.drill == proof.drill
                                   or theirs.started > proof.started):
            report.drills_present += 1
            continue
        if not dry_run:
            dst.record_drill(proof)
        report.drills_sent += 1


def _oldest_first(points: list[Manifest]) -> Iterator[Manifest]:
    yield from sorted({p.id: p for p in points}.values(), key=lambda p: (p.time, p.id))
