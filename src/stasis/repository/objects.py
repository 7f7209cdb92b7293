"""Sealing and opening of stored objects (chunks, disk indexes, manifests).

Layout of a sealed object::

    version:u8 = 1 | kind:u8 | compression:u8 | encryption:u8 | body

- kind: 1 chunk, 2 disk index (its root in format 2), 3 manifest, 4 hold, 5 index page;
- compression: 0 none, 1 zstd (the whole plaintext, one frame);
- encryption 1 (aes-256-gcm): body = nonce(12) | ciphertext | tag(16), with
  associated data = the 4 header bytes + the object's name, so an object cannot be
  swapped for another or have its header changed unnoticed;
- encryption 0 (none): body = payload | check(32), check = keyed BLAKE3 of
  header + name + payload, so damage is still detected.

Opening checks, in order: header, tag (or check), decompression, and then the
caller checks that the plaintext hashes to the name where names are hashes.
"""

from __future__ import annotations

import secrets
import struct

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
KIND_CHUNK, KIND_INDEX, KIND_MANIFEST = 1, 2, 3
KIND_PAGE = 5  # 4 is a hold (holds.py)
COMP_NONE, COMP_ZSTD = 0, 1
ENC_NONE, ENC_AESGCM = 0, 1
HEADER = struct.Struct("BBBB")
# No sealed object is shorter (a header and an AES-GCM tag's worth): a stored object
# shorter than this is no object, whatever its key says.
SMALLEST = HEADER.size + 16
# Default for new repositories (the level only matters when writing). On the
# benchmark image level 1 took 1.81 CPU-s and stored 834.8 MiB, level 3 3.28 CPU-s
# and 835.9 MiB: disk data gains little from higher levels.
ZSTD_LEVEL = 1
# Compressing samples first skips zstd on data that will not shrink (random data,
# already-compressed files), which is common in disk images. One sample from the
# middle misjudged 8 of 379 chunks of the benchmark image (10 MiB stored raw that
# zstd would have shrunk): a chunk is skipped only when all three samples fail.
SAMPLE = 64 * 1024
SAMPLE_AT = (1 / 6, 3 / 6, 5 / 6)
INCOMPRESSIBLE = 0.97
MAX_PLAINTEXT = 1 << 30


class SealError(Exception):
    """An object failed authentication, decompression or decoding."""


def parse_compression(setting: str) -> int:
    """The zstd level of a config's ``compression`` ("zstd-N"), 0 for "none"."""
    if setting == "none":
        return 0
    name, _, level = setting.partition("-")
    if name != "zstd" or not level.isdigit() or not 1 <= int(level) <= 19:
        raise ValueError(f"unknown compression {setting!r} (zstd-1 … zstd-19, or none)")
    return int(level)


def compress(data: bytes | memoryview, level: int = ZSTD_LEVEL) -> tuple[int, bytes | memoryview]:
    view = memoryview(data)
    if level == 0:
        return COMP_NONE, view
    compressor = zstandard.ZstdCompressor(level=level)
    if len(view) > 8 * SAMPLE:
        starts = [int(len(view) * at) for at in SAMPLE_AT]
        if all(
            len(compressor.compress(view[s : s + SAMPLE])) > INCOMPRESSIBLE * SAMPLE
            for s in starts
        ):
            return COMP_NONE, view
    packed = compressor.compress(view)
    if len(packed) >= len(view):
        return COMP_NONE, view
    return COMP_ZSTD, packed


class Sealer:
    """Seals and opens objects with one repository's keys."""

    def __init__(
        self, *, encrypted: bool, enc_key: bytes, check_key: bytes, level: int = ZSTD_LEVEL
    ) -> None:
        self.encrypted = encrypted
        self.level = level
        self._aead = AESGCM(enc_key) if encrypted else None
        self._check_key = check_key

    def seal(self, kind: int, name: str, plaintext: bytes | memoryview) -> bytes:
        comp, payload = compress(plaintext, self.level)
        header = HEADER.pack(VERSION, kind, comp, ENC_AESGCM if self.encrypted else ENC_NONE)
        aad = header + name.encode()
        if self._aead is not None:
            nonce = secrets.token_bytes(12)
            return b"".join((header, nonce, self._aead.encrypt(nonce, bytes(payload), aad)))
        check = blake3.blake3(aad, key=self._check_key)
        check.update(payload)
        return b"".join((header, payload, check.digest()))

    def open(self, kind: int, name: str, blob: bytes) -> bytes:
        if len(blob) < SMALLEST:
            raise SealError("object too short")
        version, got_kind, comp, enc = HEADER.unpack_from(blob)
        if version != VERSION:
            raise SealError(f"unknown object version {version}")
        if got_kind != kind:
            raise SealError(f"object is of kind {got_kind}, expected {kind}")
        header = blob[: HEADER.size]
        aad = header + name.encode()
        if enc == ENC_AESGCM:
            if self._aead is None:
                raise SealError("object is encrypted but the repository is not")
            nonce = blob[HEADER.size : HEADER.size + 12]
            try:
                # A view, not a slice: copying every ciphertext cost more CPU than
                # decrypting it (measured: 0.76 against 0.12 CPU-s for 835 MiB).
                payload = self._aead.decrypt(nonce, memoryview(blob)[HEADER.size + 12 :], aad)
            except InvalidTag:
                raise SealError("authentication failed (wrong key or damaged data)") from None
        elif enc == ENC_NONE:
            if self._aead is not None:
                raise SealError("object is not encrypted but the repository is")
            payload, check = blob[HEADER.size : -32], blob[-32:]
            digest = blake3.blake3(aad, key=self._check_key)
            digest.update(payload)
            if digest.digest() != check:
                raise SealError("checksum mismatch (damaged data)")
        else:
            raise SealError(f"unknown encryption {enc}")
        if comp == COMP_NONE:
            return payload
        if comp == COMP_ZSTD:
            try:
                return zstandard.ZstdDecompressor().decompress(
                    payload, max_output_size=MAX_PLAINTEXT
                )
            except zstandard.ZstdError as e:
                raise SealError(f"decompression failed: {e}") from None
        raise SealError(f"unknown compression {comp}")
