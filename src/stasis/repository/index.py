"""Disk indexes: the ordered chunk names of one disk at one instant.

An index is cut into *pages* of ``page_entries`` consecutive entries. In format
version 2 each page is stored on its own, named by the keyed hash of its plaintext,
and the index proper (the *root*) lists the pages' names, so a point shares every
unchanged page with its parent and an incremental writes only the pages it changed.
Version 1 stored every entry in one object; it is still read (docs/format.md).

Plaintext layouts (little endian)::

    root v2:  "STIX" | version:u16 = 2 | reserved:u16 | chunk_size:u32 |
              virtual_size:u64 | count:u64 | page_entries:u32 | reserved:u32 |
              pages × page name(32)
    page:     "STIP" | version:u16 = 2 | reserved:u16 | entries:u32 | entries × name(32)
    v1:       "STIX" | version:u16 = 1 | reserved:u16 | chunk_size:u32 |
              virtual_size:u64 | count:u64 | count × name(32)

Entry i covers bytes [i·chunk_size, min((i+1)·chunk_size, virtual_size)). An
all-zero name means the range reads as zeros and nothing is stored for it; an
all-zero page name means every entry of that page is zero (nothing is stored).

A :class:`DiskIndex` holds the page names and loads a page's content only when an
entry of it is asked for, keeping a few pages cached: a reader's memory does not grow
with the disk's size. Pages built in memory (a backup in progress, a version 1 index)
are held until stored.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

NAME_LEN = 32
ZERO_NAME = bytes(NAME_LEN)
MAGIC = b"STIX"
PAGE_MAGIC = b"STIP"
V1, V2 = 1, 2
# 256 entries: an 8 KiB page, 256 MiB of disk at 1 MiB chunks. A 1 TiB disk has a
# 128 KiB root; a scattered change rewrites 8 KiB per page it touches.
PAGE_ENTRIES = 256
CACHED_PAGES = 64
_HEADER_V1 = struct.Struct("<4sHHIQQ")
_HEADER_V2 = struct.Struct("<4sHHIQQII")
_PAGE_HEADER = struct.Struct("<4sHHI")

PageFetch = Callable[[bytes], bytes]  # page name -> the page's entries (count × 32 bytes)


class IndexFormatError(Exception):
    pass


def chunk_count(virtual_size: int, chunk_size: int) -> int:
    return -(-virtual_size // chunk_size)


def encode_page(entries: bytes) -> bytes:
    return _PAGE_HEADER.pack(PAGE_MAGIC, V2, 0, len(entries) // NAME_LEN) + entries


def decode_page(data: bytes) -> bytes:
    """A page's entries (count × 32 bytes) from its plaintext."""
    if len(data) < _PAGE_HEADER.size:
        raise IndexFormatError("index page too short")
    magic, version, _r, count = _PAGE_HEADER.unpack_from(data)
    if magic != PAGE_MAGIC or version != V2:
        raise IndexFormatError("not a version 2 index page")
    body = data[_PAGE_HEADER.size :]
    if len(body) != count * NAME_LEN:
        raise IndexFormatError("index page length does not match its count")
    return bytes(body)


class DiskIndex:
    """The chunk names of one disk, by entry number, page by page."""

    def __init__(self, virtual_size: int, chunk_size: int, *,
                 page_entries: int = PAGE_ENTRIES,
                 page_names: list[bytes] | list[bytes | None] | None = None,
                 pages: dict[int, bytes] | None = None, fetch: PageFetch | None = None,
                 version: int = V2) -> None:
        if chunk_size <= 0 or virtual_size < 0 or page_entries <= 0:
            raise IndexFormatError("bad geometry")
        self.virtual_size = virtual_size
        self.chunk_size = chunk_size
        self.page_entries = page_entries
        self.count = chunk_count(virtual_size, chunk_size)
        self.version = version
        n = self.page_count
        self._names: list[bytes | None] = list(page_names) if page_names else [None] * n
        if len(self._names) != n:
            raise IndexFormatError(f"{len(self._names)} pages for {self.count} entries")
        self._held: dict[int, bytes] = dict(pages or {})  # built here, not stored yet
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._fetch = fetch
        self._lock = threading.Lock()
        for k, name in enumerate(self._names):
            if name is None and k not in self._held:
                raise IndexFormatError(f"page {k} has neither a name nor content")
        for k, content in self._held.items():
            if len(content) != self.page_length(k) * NAME_LEN:
                raise IndexFormatError(f"page {k} holds {len(content) // NAME_LEN} entries, "
                                       f"not {self.page_length(k)}")

    # ------------------------------------------------------------- building

    @classmethod
    def from_entries(cls, virtual_size: int, chunk_size: int, entries: Iterable[bytes], *,
                     page_entries: int = PAGE_ENTRIES, version: int = V2) -> DiskIndex:
        """An index held in memory from every entry's name, in order."""
        flat = b"".join(entries)
        count = chunk_count(virtual_size, chunk_size)
        if len(flat) != count * NAME_LEN:
            raise IndexFormatError(
                f"{len(flat) // NAME_LEN} entries for a disk of {virtual_size} bytes"
            )
        step = page_entries * NAME_LEN
        pages = {k: flat[at : at + step] for k, at in enumerate(range(0, len(flat), step))}
        return cls(virtual_size, chunk_size, page_entries=page_entries, pages=pages,
                   version=version)

    @classmethod
    def empty(cls, virtual_size: int, chunk_size: int, *,
              page_entries: int = PAGE_ENTRIES) -> DiskIndex:
        count = chunk_count(virtual_size, chunk_size)
        pages = -(-count // page_entries)
        return cls(virtual_size, chunk_size, page_entries=page_entries,
                   page_names=[ZERO_NAME] * pages)

    # ------------------------------------------------------------- geometry

    @property
    def page_count(self) -> int:
        return -(-self.count // self.page_entries)

    def page_length(self, k: int) -> int:
        """How many entries page ``k`` has (the last one may have fewer)."""
        return min(self.page_entries, self.count - k * self.page_entries)

    def chunk_length(self, i: int) -> int:
        return min(self.chunk_size, self.virtual_size - i * self.chunk_size)

    def same_geometry(self, other: DiskIndex) -> bool:
        return (self.virtual_size, self.chunk_size, self.page_entries) == (
            other.virtual_size, other.chunk_size, other.page_entries)

    # --------------------------------------------------------------- reading

    @property
    def fetcher(self) -> PageFetch | None:
        return self._fetch

    def page_name(self, k: int) -> bytes | None:
        """The stored name of page ``k``; None while it is held in memory only."""
        return self._names[k]

    def page_names(self) -> list[bytes | None]:
        return list(self._names)

    def held_pages(self) -> dict[int, bytes]:
        """The pages built in memory and not stored yet: number -> entries."""
        return dict(self._held)

    def page(self, k: int) -> bytes:
        """The entries of page ``k`` (``page_length(k)`` × 32 bytes)."""
        held = self._held.get(k)
        if held is not None:
            return held
        name = self._names[k]
        assert name is not None
        if name == ZERO_NAME:
            return bytes(self.page_length(k) * NAME_LEN)
        with self._lock:
            cached = self._cache.get(k)
            if cached is not None:
                self._cache.move_to_end(k)
                return cached
        if self._fetch is None:
            raise IndexFormatError(f"page {k} is not loaded and cannot be fetched")
        content = self._fetch(name)
        if len(content) != self.page_length(k) * NAME_LEN:
            raise IndexFormatError(f"page {k} holds {len(content) // NAME_LEN} entries, "
                                   f"not {self.page_length(k)}")
        with self._lock:
            self._cache[k] = content
            while len(self._cache) > CACHED_PAGES:
                self._cache.popitem(last=False)
        return content

    def name(self, i: int) -> bytes:
        """The chunk name of entry ``i`` (ZERO_NAME: the range reads as zeros)."""
        if not 0 <= i < self.count:
            raise IndexError(i)
        k, j = divmod(i, self.page_entries)
        at = j * NAME_LEN
        return self.page(k)[at : at + NAME_LEN]

    def names(self) -> Iterator[bytes]:
        """Every entry's name, in order."""
        for k in range(self.page_count):
            content = self.page(k)
            for at in range(0, len(content), NAME_LEN):
                yield content[at : at + NAME_LEN]

    def stored(self) -> Iterator[tuple[int, bytes]]:
        """(entry number, name) of every entry that is not zero, in order; pages that
        are all zero are skipped without being read."""
        for k in range(self.page_count):
            if self._names[k] == ZERO_NAME and k not in self._held:
                continue
            content = self.page(k)
            first = k * self.page_entries
            for j, at in enumerate(range(0, len(content), NAME_LEN)):
                name = content[at : at + NAME_LEN]
                if name != ZERO_NAME:
                    yield first + j, name

    # --------------------------------------------------------------- storing

    def stored_as(self, names: dict[int, bytes]) -> DiskIndex:
        """This index once its held pages are stored under ``names``."""
        merged: list[bytes] = []
        for k, name in enumerate(self._names):
            got = names.get(k, name)
            if got is None:
                raise IndexFormatError(f"page {k} was not stored")
            merged.append(got)
        return DiskIndex(self.virtual_size, self.chunk_size, page_entries=self.page_entries,
                         page_names=merged, fetch=self._fetch, version=V2)

    def encode_root(self) -> bytes:
        """The version 2 root: every page must have its stored name."""
        names = self._names
        if any(n is None for n in names):
            raise IndexFormatError("a page is not stored yet")
        head = _HEADER_V2.pack(MAGIC, V2, 0, self.chunk_size, self.virtual_size, self.count,
                               self.page_entries, 0)
        return head + b"".join(n for n in names if n is not None)

    def encode_v1(self) -> bytes:
        """The whole index as one version 1 object (for version 1 repositories)."""
        head = _HEADER_V1.pack(MAGIC, V1, 0, self.chunk_size, self.virtual_size, self.count)
        return head + b"".join(self.page(k) for k in range(self.page_count))

    @classmethod
    def decode(cls, data: bytes, fetch: PageFetch | None = None) -> DiskIndex:
        """A root (version 2, reading pages through ``fetch``) or a whole version 1
        index."""
        if len(data) < _HEADER_V1.size:
            raise IndexFormatError("index too short")
        magic, version = struct.unpack_from("<4sH", data)
        if magic != MAGIC or version not in (V1, V2):
            raise IndexFormatError("not a version 1 or 2 disk index")
        if version == V1:
            _m, _v, _r, chunk_size, virtual_size, count = _HEADER_V1.unpack_from(data)
            body = data[_HEADER_V1.size :]
            if len(body) != count * NAME_LEN or count != chunk_count(virtual_size, chunk_size):
                raise IndexFormatError("index length does not match its count")
            return cls.from_entries(virtual_size, chunk_size,
                                    [body[i : i + NAME_LEN]
                                     for i in range(0, len(body), NAME_LEN)], version=V1)
        if len(data) < _HEADER_V2.size:
            raise IndexFormatError("index too short")
        (_m, _v, _r, chunk_size, virtual_size, count, page_entries,
         _r2) = _HEADER_V2.unpack_from(data)
        if chunk_size <= 0 or page_entries <= 0 or count != chunk_count(virtual_size,
                                                                          chunk_size):
            raise IndexFormatError("index geometry does not match its count")
        body = data[_HEADER_V2.size :]
        pages = -(-count // page_entries)
        if len(body) != pages * NAME_LEN:
            raise IndexFormatError("index length does not match its page count")
        names = [body[at : at + NAME_LEN] for at in range(0, len(body), NAME_LEN)]
        return cls(virtual_size, chunk_size, page_entries=page_entries, page_names=names,
                   fetch=fetch, version=V2)


class IndexBuilder:
    """Builds a disk's index entry by entry, in increasing entry order, from a base
    (the parent point's index, or nothing).

    ``changed`` names the entries that may differ from the base (all of them without
    a base); those not given to :meth:`set` are zero. A page with no changed entry is
    the base's page, by name, without being read. Each page is handed to ``emit`` as
    soon as it is complete (``emit`` returns its stored name, or None to hold it in
    memory), so memory holds one page at a time when pages are stored as they fill.
    """

    def __init__(self, virtual_size: int, chunk_size: int, *, base: DiskIndex | None,
                 changed: Iterable[int] | None, emit: Callable[[int, bytes], bytes | None],
                 page_entries: int = PAGE_ENTRIES) -> None:
        self.geometry = DiskIndex.empty(virtual_size, chunk_size, page_entries=page_entries)
        if base is not None and (base.virtual_size, base.chunk_size) != (virtual_size,
                                                                         chunk_size):
            raise ValueError("the base index is of another disk size or chunk size")
        self.base = base
        # Pages are shared by name only when they cover the same entries.
        self._share = base is not None and base.page_entries == page_entries
        self._emit = emit
        pe = page_entries
        self._changed: dict[int, list[int]] | None = None
        if base is not None and changed is not None:
            self._changed = {}
            for i in sorted(changed):
                self._changed.setdefault(i // pe, []).append(i)
        self._names: list[bytes | None] = [None] * self.geometry.page_count
        self._held: dict[int, bytes] = {}
        self._next_page = 0
        self._page = -1
        self._buf = bytearray()
        self._last = -1

    def set(self, i: int, name: bytes) -> None:
        if i <= self._last:
            raise ValueError(f"entries must come in order: {i} after {self._last}")
        self._last = i
        k = i // self.geometry.page_entries
        if k != self._page:
            self._flush_until(k)
            self._open(k)
        at = (i - k * self.geometry.page_entries) * NAME_LEN
        self._buf[at : at + NAME_LEN] = name

    def finish(self) -> DiskIndex:
        """The index: pages ``emit`` stored by name, the others held in memory."""
        self._flush_until(self.geometry.page_count)
        g = self.geometry
        return DiskIndex(g.virtual_size, g.chunk_size, page_entries=g.page_entries,
                         page_names=self._names, pages=self._held,
                         fetch=self.base.fetcher if self.base else None)

    def _open(self, k: int) -> None:
        """Start page ``k``: the base's content with its changed entries zeroed."""
        length = self.geometry.page_length(k) * NAME_LEN
        if self.base is None or self._changed is None:
            self._buf = bytearray(length)
        else:
            self._buf = bytearray(self._base_page(k))
            for i in self._changed.get(k, ()):
                at = (i - k * self.geometry.page_entries) * NAME_LEN
                self._buf[at : at + NAME_LEN] = ZERO_NAME
        self._page = k

    def _base_page(self, k: int) -> bytes:
        assert self.base is not None
        if self._share:
            return self.base.page(k)
        first = k * self.geometry.page_entries
        return b"".join(self.base.name(i)
                        for i in range(first, first + self.geometry.page_length(k)))

    def _flush_until(self, k: int) -> None:
        """Complete every page before ``k``."""
        while self._next_page < k:
            p = self._next_page
            if p != self._page:
                unchanged = (self.base is not None and self._changed is not None
                             and p not in self._changed)
                if (unchanged and self._share and self.base is not None
                        and self.base.page_name(p) is not None):
                    self._names[p] = self.base.page_name(p)
                    self._next_page += 1
                    continue
                if self.base is None or self._changed is None:
                    self._names[p] = ZERO_NAME  # nothing given: every entry is zero
                    self._next_page += 1
                    continue
                self._open(p)
            self._store(p, bytes(self._buf))
            self._next_page += 1
            self._page = -1

    def _store(self, k: int, content: bytes) -> None:
        if not content.strip(b"\0"):
            self._names[k] = ZERO_NAME
            return
        name = self._emit(k, content)
        if name is None:
            self._held[k] = content
            self._names[k] = None
        else:
            self._names[k] = name
