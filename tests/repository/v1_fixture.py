"""A repository of format version 1, made by the last release that wrote it.

``tests/data/v1-repository.tar`` was made by ``PYTHONPATH=OLD/src:. python -m
tests.repository.v1_fixture OUT.tar``, OLD being a checkout of Stasis at commit
87ec158 (format version 1: whole disk indexes, 4 MiB default chunks). It is kept as
a file, not rebuilt, so that the tests read what that release wrote, not what
today's code would write. The images it holds are regenerated here, byte for byte,
from their seed.
"""

from __future__ import annotations

import random
import sys
import tarfile
import tempfile
from pathlib import Path

PASSPHRASE = "v1 fixture passphrase"
CHUNK_SIZE = 64 << 10  # the smallest: many index entries from a small image
SIZE = 24 * 1024 * 1024 + 25 * 512  # not a multiple of the chunk size (of sectors: raw)
POINTS = ("first", "second")
FIXTURE = Path(__file__).parent.parent / "data" / "v1-repository.tar"


def image(which: str) -> bytes:
    """The image of the point ``which``: holes, random and repetitive data, a short
    last chunk; the second changes some of the first in place."""
    rnd = random.Random(13)
    data = bytearray(SIZE)
    data[0:300_000] = rnd.randbytes(300_000)
    line = b"2026-12-02 INFO request=%06d served in %d ms\n"
    text = b"".join(line % (i, i % 97) for i in range(20_000))
    data[5 << 20 : (5 << 20) + len(text)] = text
    data[SIZE - 70_000 :] = rnd.randbytes(70_000)
    if which == "second":
        change = random.Random(14)
        for _ in range(12):
            at = change.randrange(0, SIZE - 8192) & ~4095
            data[at : at + 8192] = change.randbytes(8192)
    return bytes(data)


def write_image(path: Path, which: str) -> Path:
    data = image(which)
    with open(path, "wb") as f:  # sparse where the image is zero
        f.truncate(len(data))
        step = 64 << 10
        for off in range(0, len(data), step):
            piece = data[off : off + step]
            if piece.strip(b"\0"):
                f.seek(off)
                f.write(piece)
    return path


def make(out: Path) -> None:  # pragma: no cover - run by hand, with the old release
    from stasis.backends import open_backend
    from stasis.protection.backup import back_up_images
    from stasis.repository import Repository
    from stasis.repository.crypto import KdfParams

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        repo = Repository.init(open_backend(str(root)), passphrase=PASSPHRASE.encode(),
                               chunk_size=CHUNK_SIZE,
                               kdf=KdfParams(memory_kib=1024, iterations=1))
        for which in POINTS:
            img = write_image(Path(tmp) / "disk.raw", which)
            back_up_images(repo, [img], name="disk", tags={"fixture": which})
        with tarfile.open(out, "w") as tar:
            tar.add(root, arcname="repo")


if __name__ == "__main__":  # pragma: no cover
    make(Path(sys.argv[1]))
