"""Property tests of the stored encodings: chunks, disk indexes, manifests."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stasis.repository import DiskIndex, DiskRecord, Manifest, VmRecord
from stasis.repository.index import (
    CACHED_PAGES,
    PAGE_ENTRIES,
    V1,
    V2,
    ZERO_NAME,
    IndexBuilder,
    IndexFormatError,
    chunk_count,
    decode_page,
    encode_page,
)
from stasis.repository.manifest import ManifestFormatError
from stasis.repository.objects import KIND_CHUNK, KIND_INDEX, KIND_MANIFEST, Sealer, SealError

KEY_A, KEY_B = secrets.token_bytes(32), secrets.token_bytes(32)
SEALERS = {
    "aes": Sealer(encrypted=True, enc_key=KEY_A, check_key=KEY_B),
    "none": Sealer(encrypted=False, enc_key=KEY_A, check_key=KEY_B),
}
data_st = st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 300_000), st.integers(0, 255)),
    st.builds(lambda n: secrets.token_bytes(n), st.integers(0, 300_000)),
)


@pytest.mark.parametrize("mode", sorted(SEALERS))
@given(data=data_st, name=st.text(alphabet="0123456789abcdef", min_size=1, max_size=64))
@settings(max_examples=60, deadline=None)
def test_seal_open_roundtrip(mode: str, data: bytes, name: str) -> None:
    sealer = SEALERS[mode]
    blob = sealer.seal(KIND_CHUNK, name, data)
    assert sealer.open(KIND_CHUNK, name, blob) == data
    if mode == "aes" and len(data) > 64:
        assert data[:64] not in blob  # really encrypted


@pytest.mark.parametrize("mode", sorted(SEALERS))
@given(data=data_st, where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
@settings(max_examples=80, deadline=None)
def test_any_flipped_bit_is_detected(mode: str, data: bytes, where: float, bit: int) -> None:
    sealer = SEALERS[mode]
    blob = bytearray(sealer.seal(KIND_CHUNK, "ab", data))
    blob[int(where * len(blob))] ^= 1 << bit
    with pytest.raises(SealError):
        sealer.open(KIND_CHUNK, "ab", bytes(blob))


@pytest.mark.parametrize("mode", sorted(SEALERS))
def test_object_cannot_pass_for_another(mode: str) -> None:
    sealer = SEALERS[mode]
    blob = sealer.seal(KIND_CHUNK, "aa", b"payload")
    with pytest.raises(SealError):
        sealer.open(KIND_CHUNK, "bb", blob)  # swapped name
    with pytest.raises(SealError):
        sealer.open(KIND_MANIFEST, "aa", blob)  # swapped kind
    other = SEALERS["none" if mode == "aes" else "aes"]
    with pytest.raises(SealError):
        other.open(KIND_CHUNK, "aa", blob)


names_st = st.one_of(st.just(ZERO_NAME), st.binary(min_size=32, max_size=32))


def _draw_geometry(data: st.DataObject, chunk_size: int, virtual_size: int,
                   limit: int = 3000) -> tuple[int, int]:
    if chunk_count(virtual_size, chunk_size) > limit:
        virtual_size = chunk_size * limit - data.draw(st.integers(0, chunk_size - 1))
    return virtual_size, chunk_count(virtual_size, chunk_size)


geometry = {"chunk_size": st.sampled_from([64 << 10, 256 << 10, 1 << 20, 4 << 20]),
            "virtual_size": st.integers(0, 1 << 34),
            "page_entries": st.sampled_from([1, 3, 16, PAGE_ENTRIES])}


@given(**geometry, data=st.data())
@settings(max_examples=60, deadline=None)
def test_v1_index_roundtrip(chunk_size: int, virtual_size: int, page_entries: int,
                            data: st.DataObject) -> None:
    virtual_size, count = _draw_geometry(data, chunk_size, virtual_size)
    entries = data.draw(st.lists(names_st, min_size=count, max_size=count))
    index = DiskIndex.from_entries(virtual_size, chunk_size, entries, page_entries=page_entries,
                                   version=V1)
    decoded = DiskIndex.decode(index.encode_v1())
    assert decoded.version == V1
    assert list(decoded.names()) == entries
    assert list(decoded.stored()) == [(i, n) for i, n in enumerate(entries) if n != ZERO_NAME]
    assert sum(decoded.chunk_length(i) for i in range(count)) == virtual_size


class PageStore:
    """Pages by name, as a repository stores them (plaintext named by its hash)."""

    def __init__(self) -> None:
        self.pages: dict[bytes, bytes] = {}
        self.writes = 0
        self.fetches = 0

    def emit(self, _k: int, entries: bytes) -> bytes:
        plain = encode_page(entries)
        name = hashlib.sha256(plain).digest()
        self.writes += 1
        self.pages[name] = plain
        return name

    def fetch(self, name: bytes) -> bytes:
        self.fetches += 1
        return decode_page(self.pages[name])


def _build(store: PageStore, virtual_size: int, chunk_size: int, page_entries: int,
           given: dict[int, bytes], base: DiskIndex | None = None,
           changed: set[int] | None = None) -> DiskIndex:
    builder = IndexBuilder(virtual_size, chunk_size, base=base, changed=changed,
                           emit=store.emit, page_entries=page_entries)
    for i in sorted(given):
        builder.set(i, given[i])
    root = builder.finish().encode_root()
    return DiskIndex.decode(root, store.fetch)


@given(**geometry, data=st.data())
@settings(max_examples=80, deadline=None)
def test_paged_index_roundtrip_and_incremental(chunk_size: int, virtual_size: int,
                                               page_entries: int, data: st.DataObject) -> None:
    """A full index, then an incremental over it: every entry reads back as built, and
    the incremental stores only pages that hold a changed entry."""
    virtual_size, count = _draw_geometry(data, chunk_size, virtual_size)
    full = data.draw(st.dictionaries(st.integers(0, max(count - 1, 0)), names_st,
                                     max_size=count)) if count else {}
    store = PageStore()
    first = _build(store, virtual_size, chunk_size, page_entries, full)
    expected = [full.get(i, ZERO_NAME) for i in range(count)]
    assert first.version == V2
    assert list(first.names()) == expected
    assert [first.name(i) for i in range(count)] == expected
    assert list(first.stored()) == [(i, n) for i, n in enumerate(expected) if n != ZERO_NAME]
    # an all-zero page is never stored, and is named by zeros
    for k in range(first.page_count):
        page = expected[k * page_entries:(k + 1) * page_entries]
        assert (first.page_name(k) == ZERO_NAME) == all(n == ZERO_NAME for n in page)

    changed = data.draw(st.sets(st.integers(0, max(count - 1, 0)), max_size=40)) if count else set()
    new = {i: data.draw(names_st) for i in changed if data.draw(st.booleans())}
    store.writes = 0
    second = _build(store, virtual_size, chunk_size, page_entries, new, base=first,
                    changed=changed)
    after = [new.get(i, ZERO_NAME) if i in changed else expected[i] for i in range(count)]
    assert list(second.names()) == after
    touched = {i // page_entries for i in changed}
    assert store.writes <= len(touched)
    for k in range(second.page_count):
        if k not in touched:
            assert second.page_name(k) == first.page_name(k)  # shared, not rewritten


def test_a_v1_parent_gives_a_whole_paged_index() -> None:
    """The first point after a format 1 point stores every page: the v1 index has no
    pages of its own to share."""
    count, cs = 3 * PAGE_ENTRIES - 7, 64 << 10
    entries = [bytes([i % 250 + 1]) * 32 for i in range(count)]
    parent = DiskIndex.decode(DiskIndex.from_entries(count * cs, cs, entries,
                                                     version=V1).encode_v1())
    store = PageStore()
    child = _build(store, count * cs, cs, PAGE_ENTRIES, {3: b"\x07" * 32}, base=parent,
                   changed={3})
    assert store.writes == 3
    assert list(child.names()) == [*entries[:3], b"\x07" * 32, *entries[4:]]


def test_a_parent_paged_otherwise_is_read_entry_by_entry() -> None:
    store = PageStore()
    entries = {i: bytes([i + 1]) * 32 for i in range(12)}
    parent = _build(store, 12 << 20, 1 << 20, 5, entries)
    child = _build(store, 12 << 20, 1 << 20, 4, {6: b"\xee" * 32}, base=parent, changed={6, 7})
    assert list(child.names()) == [entries[i] for i in range(6)] + [
        b"\xee" * 32, ZERO_NAME] + [entries[i] for i in range(8, 12)]


def test_a_base_of_another_size_is_refused() -> None:
    """A resized disk is read in full (chain.py); a builder given the old index as its
    base would zero what it was not given, so it refuses."""
    store = PageStore()
    parent = _build(store, 8 << 20, 1 << 20, 2, {i: b"\x01" * 32 for i in range(8)})
    with pytest.raises(ValueError, match="another disk size"):
        IndexBuilder(9 << 20, 1 << 20, base=parent, changed={8}, emit=store.emit)


def test_a_reader_caches_a_bounded_number_of_pages() -> None:
    store = PageStore()
    count = 4 * CACHED_PAGES
    index = _build(store, count << 16, 1 << 16, 1,
                   {i: (i + 1).to_bytes(32, "big") for i in range(count)})
    store.fetches = 0
    for _ in range(2):
        assert [index.name(i) for i in range(count)] == [(i + 1).to_bytes(32, "big")
                                                         for i in range(count)]
    assert store.fetches == 2 * count  # evicted and read again: memory stays bounded
    assert [index.name(0) for _ in range(5)] and store.fetches == 2 * count + 1


def test_builder_refuses_entries_out_of_order() -> None:
    builder = IndexBuilder(4 << 20, 1 << 20, base=None, changed=None, emit=PageStore().emit)
    builder.set(2, b"\x01" * 32)
    with pytest.raises(ValueError, match="in order"):
        builder.set(1, b"\x01" * 32)


def test_index_rejects_truncation_and_bad_magic() -> None:
    store = PageStore()
    for raw in (DiskIndex.empty(10 << 20, 1 << 20).encode_v1(),
                _build(store, 10 << 20, 1 << 20, 4, {1: b"\x01" * 32}).encode_root()):
        with pytest.raises(IndexFormatError):
            DiskIndex.decode(raw[:-1])
        with pytest.raises(IndexFormatError):
            DiskIndex.decode(b"XXXX" + raw[4:])
    page = encode_page(b"\x01" * 64)
    with pytest.raises(IndexFormatError):
        decode_page(page[:-1])
    with pytest.raises(IndexFormatError):
        decode_page(b"XXXX" + page[4:])


text_st = st.text(max_size=40)
disk_st = st.builds(
    DiskRecord, name=text_st, index=st.text("0123456789abcdef", min_size=64, max_size=64),
    virtual_size=st.integers(0, 1 << 50), format=st.sampled_from(["raw", "qcow2"]),
    source=text_st, mode=st.sampled_from(["full", "incremental"]), reason=text_st,
    bytes_read=st.integers(0, 1 << 50),
    format_options=st.dictionaries(text_st, st.one_of(st.integers(), text_st, st.booleans())),
)
vm_st = st.builds(VmRecord, name=text_st, kind=st.sampled_from(["images", "vm"]),
                  uuid=text_st, domain_xml=text_st, disks=st.lists(disk_st, max_size=3))
manifest_st = st.builds(
    Manifest, id=st.text("0123456789abcdef", min_size=32, max_size=32), name=text_st,
    time=text_st, parent=st.one_of(st.none(), text_st),
    tags=st.dictionaries(text_st, text_st, max_size=3), vms=st.lists(vm_st, max_size=3),
    timings=st.dictionaries(text_st, st.floats(allow_nan=False, allow_infinity=False)),
)


@given(manifest=manifest_st)
@settings(max_examples=80, deadline=None)
def test_manifest_roundtrip(manifest: Manifest) -> None:
    assert Manifest.decode(manifest.encode()) == manifest


def test_manifest_rejects_unknown_version_and_garbage() -> None:
    m = Manifest(id="ab" * 16, name="x", time="t")
    raw = m.to_dict()
    raw["format_version"] = 99
    with pytest.raises(ManifestFormatError):
        Manifest.from_dict(raw)
    with pytest.raises(ManifestFormatError):
        Manifest.decode(b"\xff not json")
    with pytest.raises(ManifestFormatError):
        Manifest.decode(b"[]")


def test_index_and_manifest_kinds_are_distinct() -> None:
    s = SEALERS["aes"]
    blob = s.seal(KIND_INDEX, "aa", b"x")
    with pytest.raises(SealError):
        s.open(KIND_MANIFEST, "aa", blob)


def test_partly_compressible_chunks_are_compressed() -> None:
    """A chunk random in the middle but compressible elsewhere is still compressed."""
    size = 4 << 20
    mixed = bytearray(size)  # zeros around...
    mixed[size // 2 - 300_000 : size // 2 + 300_000] = secrets.token_bytes(600_000)
    blob = SEALERS["aes"].seal(KIND_CHUNK, "ab", bytes(mixed))
    assert len(blob) < 700_000
    text = (b"log line with words and 12345 numbers\n" * 120_000)[:size]
    half = secrets.token_bytes(size // 2) + text[: size // 2]
    assert len(SEALERS["aes"].seal(KIND_CHUNK, "ab", half)) < size * 0.6
    random_chunk = secrets.token_bytes(size)
    assert len(SEALERS["aes"].seal(KIND_CHUNK, "ab", random_chunk)) <= size + 64
