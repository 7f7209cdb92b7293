"""Property tests of the stored encodings: chunks, disk indexes, manifests."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stasis.repository import DiskIndex, DiskRecord, Manifest, VmRecord
from stasis.repository.index import ZERO_NAME, IndexFormatError, chunk_count
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


@given(
    chunk_size=st.sampled_from([64 << 10, 256 << 10, 4 << 20]),
    virtual_size=st.integers(0, 1 << 34),
    data=st.data(),
)
@settings(max_examples=60, deadline=None)
def test_index_roundtrip(chunk_size: int, virtual_size: int, data: st.DataObject) -> None:
    count = chunk_count(virtual_size, chunk_size)
    if count > 5000:
        virtual_size = chunk_size * 5000 - data.draw(st.integers(0, chunk_size - 1))
        count = chunk_count(virtual_size, chunk_size)
    entries = data.draw(st.lists(names_st, min_size=count, max_size=count))
    index = DiskIndex(virtual_size, chunk_size, entries)
    decoded = DiskIndex.decode(index.encode())
    assert decoded == index
    assert sum(decoded.chunk_length(i) for i in range(count)) == virtual_size


def test_index_rejects_truncation_and_bad_magic() -> None:
    raw = DiskIndex.empty(10 << 20, 1 << 20).encode()
    with pytest.raises(IndexFormatError):
        DiskIndex.decode(raw[:-1])
    with pytest.raises(IndexFormatError):
        DiskIndex.decode(b"XXXX" + raw[4:])


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
