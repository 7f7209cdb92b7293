"""qemu-nbd exports: sockets that fit, and no debris from dead runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from stasis.blockio.nbd import QemuNbd
from stasis.rundirs import remove_dead_debris
from tests.conftest import mixed_image, to_qcow2


def test_export_works_from_a_run_dir_too_long_for_a_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    img = to_qcow2(mixed_image(tmp_path / "a.raw"), tmp_path / "a.qcow2")
    with QemuNbd(img, "qcow2", run_dir=deep) as export:
        assert len(export.socket_path.encode()) < 108
        assert export.read(0, 4096) == (tmp_path / "a.raw").read_bytes()[:4096]
    assert not os.path.exists(export.socket_path)


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
