"""Where Stasis keeps its local state (catalog, caches, scratch sockets)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """``$STASIS_STATE_DIR``, else ``$XDG_STATE_HOME/stasis``, else ``~/.local/state/stasis``."""
    explicit = os.environ.get("STASIS_STATE_DIR")
    if explicit:
        path = Path(explicit)
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
