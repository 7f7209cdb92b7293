"""Run directories: sockets that fit, and no debris from dead runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from stasis.rundirs import MAX_SOCKET_BASE, remove_dead_debris, socket_base


def test_debris_of_dead_processes_is_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"stasis-nbd-{dead.pid}-abcd"
    live = tmp_path / f"stasis-nbd-{os.getpid()}-efgh"
    other = tmp_path / "unrelated"
    for d in (stale, live, other):
        d.mkdir()
    assert remove_dead_debris(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_sockets_of_a_deep_run_directory_go_to_the_temporary_directory() -> None:
    short = Path("/run/stasis")
    deep = short / ("d" * MAX_SOCKET_BASE)
    assert socket_base(short) == short
    assert socket_base(deep) != deep and len(os.fsencode(socket_base(deep))) <= MAX_SOCKET_BASE
