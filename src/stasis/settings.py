"""Where Stasis keeps its local state (catalog, caches, scratch sockets).

Each directory comes from its environment variable, else from the config file's
value (given once, at start, by :func:`configure`), else from a built-in default.
:func:`find_config` says which config file is in force (read by
:mod:`stasis.app.config`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/stasis/stasis.toml")
CONFIG_ENV = "STASIS_CONFIG"


def find_config(flag: str | Path | None, env: Mapping[str, str] | None = None, *,
                default: Path = DEFAULT_CONFIG) -> tuple[Path | None, str | None]:
    """The config file in force and what named it: ``flag`` (``"flag"``), else
    ``$STASIS_CONFIG`` (``"env"``), else ``default`` when it exists (``"default"``);
    ``(None, None)`` when there is none."""
    env = os.environ if env is None else env
    if flag:
        return Path(flag), "flag"
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), "env"
    if default.exists():
        return default, "default"
    return None, None


# The config file's paths, set by the interface that loaded it (the environment
# still beats them: flags > environment > file).
_configured: dict[str, Path] = {}


def configure(*, state_dir: Path | None = None, scratch_dir: Path | None = None) -> None:
    """Use the config file's ``state_dir`` and ``scratch_dir`` where no variable is set."""
    _configured.clear()
    _configured.update({k: v for k, v in (("state", state_dir), ("scratch", scratch_dir))
                        if v is not None})


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/stasis``, else ``~/.local/state/stasis`` (nothing is made)."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stasis"


def state_dir() -> Path:
    """``$STASIS_STATE_DIR``, else the config's ``state_dir``, else
    :func:`default_state_dir`."""
    explicit = os.environ.get("STASIS_STATE_DIR")
    if explicit:
        path = Path(explicit).absolute()
    else:
        path = _configured.get("state") or default_state_dir()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def run_dir() -> Path:
    """Scratch space for sockets of running jobs; emptied of dead jobs' debris by doctor."""
    path = state_dir() / "run"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def default_scratch_dir(state: Callable[[], Path]) -> Path:
    """``/var/lib/stasis/scratch`` as root, else ``scratch`` in the state directory."""
    return Path("/var/lib/stasis/scratch") if os.geteuid() == 0 else state() / "scratch"


def scratch_dir() -> Path:
    """Where libvirt backup jobs keep their socket and copy-before-write scratch files.

    QEMU runs as its own user and must reach this directory, so it cannot live in the
    private state directory (nor under /root). ``$STASIS_SCRATCH_DIR`` overrides it;
    scratch files grow with the guest's writes during a backup, so it belongs on a
    disk with room, not in /run. The config's ``scratch_dir`` comes after the variable.
    """
    explicit = os.environ.get("STASIS_SCRATCH_DIR")
    if explicit:
        path = Path(explicit).absolute()  # libvirt needs absolute paths in its XML
    elif "scratch" in _configured:
        path = _configured["scratch"]
    else:
        path = default_scratch_dir(state_dir)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o711)  # others may traverse to their job's own directory, not list
    return path
