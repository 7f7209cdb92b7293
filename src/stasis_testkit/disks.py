"""Test disks: sparse raw or qcow2 images, optionally an ext4 filesystem of real files.

qcow2 images are version 3 (``compat=1.1``): persistent dirty bitmaps, and so libvirt
checkpoints, need it. The ext4 filesystem is made by ``mkfs.ext4 -d`` straight from a
directory, so no mount (and no root) is needed; with a fixed UUID, hash seed and
clock it is the same image on every run. :func:`sample_tree` builds a small,
deterministic directory of real files for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stasis_testkit.errors import DiskSpecError, GuestKitError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

SAMPLE = "sample"  # ext4_from=SAMPLE: the kit's own deterministic tree
SAMPLE_VERSION = 1
FIXED_TIME = 1_700_000_000  # 2023-11-14: every file time in sample trees and filesystems
_NAMESPACE = uuid.UUID("6f0b5b8e-1f3c-4a51-9d1e-2c7a8e0b9a11")
_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB}

Format = Literal["qcow2", "raw"]


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([KMG]?)(i?B)?", text.strip(), re.IGNORECASE)
    if not m:
        raise ValueError(f"bad size {text!r}: want e.g. 64M, 1G, 65536")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


@dataclass(frozen=True)
class DiskSpec:
    """One virtio disk of a test guest.

    ``ext4_from`` makes the disk an ext4 filesystem holding that directory's files
    (:data:`SAMPLE` for :func:`sample_tree`). ``cache`` is libvirt's driver cache mode;
    ``"none"`` (O_DIRECT on the host) is what production VMs use.
    """

    target: str
    fmt: Format = "qcow2"
    size: int = 64 * MiB
    ext4_from: Path | str | None = None
    cache: str | None = "none"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"vd[a-z]", self.target):
            raise DiskSpecError(self.target, "the target must be a virtio name vda … vdz")
        if self.fmt not in ("qcow2", "raw"):
            raise DiskSpecError(self.target, f"format {self.fmt!r} is neither qcow2 nor raw")
        if self.size < MiB or self.size % (64 * KiB):
            raise DiskSpecError(self.target, "the size must be at least 1M, a multiple of 64K")
        if self.ext4_from is not None and self.ext4_from != SAMPLE \
                and not Path(self.ext4_from).is_dir():
            raise DiskSpecError(self.target, f"{self.ext4_from} is not a directory")

    @classmethod
    def parse(cls, text: str) -> DiskSpec:
        """``TARGET:FORMAT:SIZE[:ext4[=DIR]]``, e.g. ``vdc:qcow2:128M:ext4``."""
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise DiskSpecError(text, "it has not 3 or 4 fields")
        target, fmt, size = parts[:3]
        if fmt not in ("qcow2", "raw"):
            raise DiskSpecError(text, f"format {fmt!r} is neither qcow2 nor raw")
        try:
            nbytes = parse_size(size)
        except ValueError as e:
            raise DiskSpecError(text, str(e)) from e
        ext4: Path | str | None = None
        if len(parts) == 4:
            kind, _, src = parts[3].partition("=")
            if kind != "ext4":
                raise DiskSpecError(text, f"unknown content {kind!r} (only ext4)")
            ext4 = Path(src) if src else SAMPLE
        return cls(target, "raw" if fmt == "raw" else "qcow2", nbytes, ext4)


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise GuestKitError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout}")


def _fixed_time(path: Path) -> None:
    os.utime(path, (FIXED_TIME, FIXED_TIME), follow_symlinks=False)


def _text(n: int, seed: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"%06d seed=%d stasis sample line, %s\n" % (i, seed, b"abcdefghij" * (i % 7))
        i += 1
    return bytes(out[:n])


def sample_tree(dest: Path) -> Path:
    """Create (once) a small deterministic tree of real files under ``dest``.

    Real text (the licenses of base-files), generated text and random data (some of it
    larger than a 4 MiB chunk), nesting, a symlink, an empty file and odd names.
    """
    if dest.is_dir():
        return dest  # made whole in a temporary directory, then renamed into place
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sample.tmp-", dir=dest.parent))
    try:
        licenses = Path("/usr/share/common-licenses")
        if licenses.is_dir():
            shutil.copytree(licenses, tmp / "licenses", symlinks=True)
        rnd = random.Random(SAMPLE_VERSION)
        files = {
            "data/random-5m.bin": rnd.randbytes(5 * MiB + 12345),
            "data/random-64k.bin": rnd.randbytes(64 * KiB),
            "data/log.txt": _text(300 * KiB, 1),
            "deep/a/b/c/d/leaf.txt": b"the bottom of the tree\n",
            "empty": b"",
            "name with spaces.txt": b"spaces\n",
            "\u00fcn\u00efc\u00f6de.txt": "ünïcödé\n".encode(),
            "README": b"Stasis test-kit sample tree, version %d.\n" % SAMPLE_VERSION,
        }
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (tmp / "link-to-log").symlink_to("data/log.txt")
        for path in sorted(tmp.rglob("*"), reverse=True):
            _fixed_time(path)
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.is_dir():  # else another process made the same tree meanwhile
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def tree_manifest(root: Path) -> dict[str, str]:
    """Relative path → sha256 of each regular file (``->target`` for symlinks)."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "->" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def make_ext4(image: Path, size: int, source: Path, *, label: str = "stasis-test") -> None:
    """A raw image of ``size`` holding an ext4 filesystem with ``source``'s files."""
    fs_uuid = uuid.uuid5(_NAMESPACE, f"{label}:{size}")
    with open(image, "wb") as f:
        f.truncate(size)
    _run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", label[:16], "-U", str(fs_uuid),
          "-E", f"hash_seed={fs_uuid},root_owner=0:0", "-d", str(source), str(image)],
         env={"E2FSPROGS_FAKE_TIME": str(FIXED_TIME)})


def create_disk(spec: DiskSpec, path: Path, *, sample_dir: Path) -> Path:
    """Create the image ``spec`` describes at ``path`` (sparse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.ext4_from is not None:
        source = sample_tree(sample_dir) if spec.ext4_from == SAMPLE else Path(spec.ext4_from)
        if spec.fmt == "raw":
            make_ext4(path, spec.size, source, label=f"stasis-{spec.target}")
            return path
        raw = path.with_name(path.name + ".ext4-tmp")
        try:
            make_ext4(raw, spec.size, source, label=f"stasis-{spec.target}")
            _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1",
                  str(raw), str(path)])
        finally:
            raw.unlink(missing_ok=True)
        return path
    if spec.fmt == "raw":
        with open(path, "wb") as f:
            f.truncate(spec.size)
    else:
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", str(path),
              str(spec.size)])
    return path


def image_info(path: Path) -> dict[str, object]:
    """``qemu-img info`` of an image, also while a running guest holds it."""
    proc = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise GuestKitError(f"qemu-img info {path} failed: {proc.stderr.strip()}")
    info: dict[str, object] = json.loads(proc.stdout)
    return info


def read_image(path: Path, fmt: Format, offset: int, length: int) -> bytes:
    """Bytes of the disk an image holds, also while a running guest has it open.

    Raw images are read directly; qcow2 through a read-only, share-forced qemu-nbd.
    """
    if fmt == "raw":
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        return data + bytes(length - len(data))
    import nbd

    h = nbd.NBD()
    # qemu-nbd 7.2 has no --force-share; turning the file lock off does the same.
    opts = f"driver={fmt},file.driver=file,file.locking=off,file.filename=" \
        + str(path).replace(",", ",,")
    h.connect_systemd_socket_activation(["qemu-nbd", "--read-only", "--image-opts", opts])
    try:
        parts = [bytes(h.pread(min(16 * MiB, offset + length - start), start))
                 for start in range(offset, offset + length, 16 * MiB)]
    finally:
        h.shutdown()
    return b"".join(parts)
