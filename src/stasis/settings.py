"""Where Stasis keeps its local state (catalog, caches, scratch sockets)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """``$STASIS_STATE_DIR``, else ``$XDG_STATE_HOME/stasis``, else ``~/.local/state/stasis``."""
    explicit = os.environ.get("STASIS_STATE_DIR")
    if explicit:
        path = Path(explicit).absolute()
    else:
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        path = Path(base) / "stasis"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def run_dir() -> Path:
    """Scratch space for sockets of running jobs; emptied of dead jobs' debris by doctor."""
    path = state_dir() / "run"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def scratch_dir() -> Path:
    """Where libvirt backup jobs keep their socket and copy-before-write scratch files.

    QEMU runs as its own user and must reach this directory, so it cannot live in the
    private state directory (nor under /root). ``$STASIS_SCRATCH_DIR`` overrides it;
    scratch files grow with the guest's writes during a backup, so it belongs on a
    disk with room, not in /run.
    """
    explicit = os.environ.get("STASIS_SCRATCH_DIR")
    if explicit:
        path = Path(explicit).absolute()  # libvirt needs absolute paths in its XML
    elif os.geteuid() == 0:
        path = Path("/var/lib/stasis/scratch")
    else:
        path = state_dir() / "scratch"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o711)  # others may traverse to their job's own directory, not list
    return path
