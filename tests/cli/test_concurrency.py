"""Several backups write into one repository at once; a killed one leaves no harm."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, Cli, MiB, images_equal, mixed_image, nbd_processes, to_qcow2


@pytest.mark.slow
def test_parallel_backups_into_one_repository(cli_repo: Cli, tmp_path: Path) -> None:
    sources = [mixed_image(tmp_path / f"d{n}.raw", 32 * MiB, seed=n) for n in range(4)]
    procs = [
        subprocess.Popen([str(BIN), "backup", "image", str(src), "--name", src.stem],
                         env=cli_repo.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for src in sources
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    points = cli_repo.ok("list", "--json").json()
    assert isinstance(points, list)
    assert sorted(p["name"] for p in points) == ["d0", "d1", "d2", "d3"]
    assert cli_repo.ok("verify", "--deep", "--json").json()["ok"]  # type: ignore[index]
    for src in sources:
        out = tmp_path / f"{src.stem}.out"
        cli_repo.ok("restore", "disk", f"{src.stem}@latest", "--to", str(out))
        assert images_equal(src, out)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_kill_9_mid_backup_leaves_a_usable_repository(
    cli_repo: Cli, tmp_path: Path, fmt: str
) -> None:
    raw = tmp_path / "big.raw"
    with open(raw, "wb") as f:
        for _ in range(32):
            f.write(os.urandom(16 * MiB))
    big = raw if fmt == "raw" else to_qcow2(raw, tmp_path / "big.qcow2")
    proc = subprocess.Popen([str(BIN), "backup", "image", str(big), "--name", "big"],
                            env=cli_repo.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    chunks = cli_repo.repo / "chunks"
    deadline = time.monotonic() + 60
    while sum(1 for p in chunks.rglob("*") if p.is_file()) < 100 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.poll() is None, f"backup ended before it could be killed: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10  # the export server follows its parent
    while [p for p in nbd_processes() if str(big) in p]:
        assert time.monotonic() < deadline, nbd_processes()
        time.sleep(0.05)
    # Its lock is left behind, but its process is gone: the next jobs go ahead.
    assert list((cli_repo.repo / "locks").iterdir())
    assert cli_repo.ok("list", "--json").json() == []
    cli_repo.ok("backup", "image", str(big), "--name", "big")
    assert cli_repo.ok("verify", "--deep", "--json").json()["ok"]  # type: ignore[index]
    out = tmp_path / "big.out"
    cli_repo.ok("restore", "disk", "big@latest", "--to", str(out))
    assert images_equal(big, out)
