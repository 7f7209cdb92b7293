"""Facts about disk images, from qemu-img."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stasis.errors import SourceUnreadable, TargetError

# qcow2 creation options worth carrying from a source to its restore.
QCOW2_OPTIONS = ("cluster_size", "compat", "lazy_refcounts", "extended_l2", "compression_type")


@dataclass
class ImageInfo:
    path: str
    format: str
    virtual_size: int
    actual_size: int
    options: dict[str, Any] = field(default_factory=dict)
    block_device: bool = False


def inspect(path: str | Path, fmt: str | None = None) -> ImageInfo:
    """Describe an image or block device; raise SourceUnreadable with qemu-img's reason."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise SourceUnreadable(p, "no such file or device") from None
    except OSError as e:
        raise SourceUnreadable(p, e.strerror or str(e)) from None
    is_block = stat.S_ISBLK(st.st_mode)
    if not (stat.S_ISREG(st.st_mode) or is_block):
        raise SourceUnreadable(p, "not a regular file or a block device")
    if not os.access(p, os.R_OK):
        raise SourceUnreadable(p, "permission denied")
    cmd = ["qemu-img", "info", "--output=json", "-U"]
    if fmt:
        cmd += ["-f", fmt]
    proc = subprocess.run([*cmd, str(p)], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "qemu-img failed"
        raise SourceUnreadable(p, reason.removeprefix("qemu-img: "))
    info = json.loads(proc.stdout)
    options: dict[str, Any] = {}
    if info.get("format") == "qcow2":
        data = info.get("format-specific", {}).get("data", {})
        options["cluster_size"] = info.get("cluster-size")
        for key in ("compat", "lazy-refcounts", "extended-l2", "compression-type"):
            if key in data:
                options[key.replace("-", "_")] = data[key]
        if info.get("backing-filename"):
            options["had_backing_file"] = info["backing-filename"]
    return ImageInfo(
        path=str(p),
        format=str(info["format"]),
        virtual_size=int(info["virtual-size"]),
        actual_size=int(info.get("actual-size", 0)),
        options=options,
        block_device=is_block,
    )


def create(path: str | Path, fmt: str, size: int, options: dict[str, Any] | None = None) -> None:
    """Create an empty (sparse) image of ``fmt`` and ``size``."""
    cmd = ["qemu-img", "create", "-q", "-f", fmt]
    opts = []
    if fmt == "qcow2":
        for key in QCOW2_OPTIONS:
            value = (options or {}).get(key)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "on" if value else "off"
            opts.append(f"{key}={value}")
    if opts:
        cmd += ["-o", ",".join(opts)]
    proc = subprocess.run([*cmd, str(path), str(size)], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = proc.stderr.strip() or "qemu-img create failed"
        raise TargetError(path, reason, "Nothing was restored.")
