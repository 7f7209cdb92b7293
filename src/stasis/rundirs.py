"""Working directories of running processes: where their unix sockets fit, and the
debris that dead ones leave.

Every process of Stasis that serves or reaches something over a unix socket (an
NBD export, a libvirt backup job, a detached nbdkit) makes a directory named
``stasis-<kind>-<pid>-<random>`` in a run directory; one whose process is gone is
debris. A shared bottom module: block I/O, the hypervisor layer and recovery all
make such directories, and doctor and the service remove the dead ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# sun_path holds 108 bytes; leave room for "/stasis-nbd-<pid>-<random>/nbd.sock".
MAX_SOCKET_BASE = 108 - 48


def socket_base(run_dir: str | Path | None) -> Path:
    """Where sockets go: the run directory, or the system's temporary directory when
    the run directory's path is too long for a unix socket."""
    if run_dir is not None and len(os.fsencode(run_dir)) <= MAX_SOCKET_BASE:
        return Path(run_dir)
    return Path(tempfile.gettempdir())


def remove_dead_debris(run_dir: Path, *, dry_run: bool = False) -> list[Path]:
    """Remove the socket and scratch directories of Stasis processes that no longer run."""
    removed = []
    for entry in run_dir.glob("stasis-*-*-*"):
        parts = entry.name.split("-")  # stasis-<kind>-<pid>-<random>
        if len(parts) != 4 or not parts[2].isdigit() or not entry.is_dir():
            continue
        if not os.path.exists(f"/proc/{parts[2]}"):
            if not dry_run:
                shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
