"""A qcow2 overlay over an NBD export: where writes to a point's disk go."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stasis.errors import ExportError


def create_overlay(path: Path, backing_uri: str, size: int) -> None:
    proc = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing_uri,
         "-o", "compat=1.1", str(path), str(size)], capture_output=True, text=True)
    if proc.returncode != 0:
        path.unlink(missing_ok=True)
        raise ExportError(str(path), f"qemu-img could not create the overlay: "
                          f"{proc.stderr.strip()}")
