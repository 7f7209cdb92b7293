"""qemu-nbd exports: sockets that fit however deep the run directory."""

from __future__ import annotations

import os
from pathlib import Path

from stasis.blockio.nbd import QemuNbd
from tests.conftest import mixed_image, to_qcow2


def test_export_works_from_a_run_dir_too_long_for_a_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    img = to_qcow2(mixed_image(tmp_path / "a.raw"), tmp_path / "a.qcow2")
    with QemuNbd(img, "qcow2", run_dir=deep) as export:
        assert len(export.socket_path.encode()) < 108
        assert export.read(0, 4096) == (tmp_path / "a.raw").read_bytes()[:4096]
    assert not os.path.exists(export.socket_path)
