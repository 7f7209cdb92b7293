"""``stasis export``: one disk of a point served for as long as a ``with`` block runs.

Read-only, nbdkit serves it itself; writable, qemu-nbd serves a qcow2 overlay
whose backing file is the read-only nbdkit export, and the point stays untouched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stasis.blockio.nbd import die_with_parent
from stasis.errors import ExportError, TargetExists, UsageError
from stasis.recovery.export.nbdkit_process import ExportProcess, start_nbdkit
from stasis.recovery.export.overlay import create_overlay
from stasis.recovery.restore import select_disk
from stasis.repository import Credentials, Manifest, Repository
from stasis.rundirs import socket_base


@dataclass
class ExportInfo:
    point: str
    vm: str
    disk: str
    virtual_size: int
    uri: str
    socket: str | None
    port: int | None
    writable: bool
    overlay: str | None
    keep_overlay: bool
    pid: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@contextlib.contextmanager
def serve(
    repo: Repository, creds: Credentials, point: Manifest, *, vm: str | None, disk: str | None,
    socket_path: Path | None, port: int | None, writable: bool, overlay: Path | None,
    keep_overlay: bool, run_dir: Path,
) -> Iterator[ExportInfo]:
    """Serve one disk of ``point`` for the ``with`` block, then remove every socket and
    (unless kept) the overlay."""
    vm_rec, disk_rec = select_disk(point, vm, disk)
    if socket_path is None and port is None:
        raise UsageError("give --socket PATH or --port N")
    if socket_path is not None and port is not None:
        raise UsageError("--socket and --port exclude each other")
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port")
    if not writable and (overlay is not None or keep_overlay):
        raise UsageError("--overlay and --keep-overlay go with --writable")
    if socket_path is not None:
        socket_path = socket_path.absolute()
        if socket_path.exists():
            raise TargetExists(socket_path)
        if not socket_path.parent.is_dir():
            raise UsageError(f"the directory {socket_path.parent} does not exist")
    if overlay is not None:
        overlay = overlay.absolute()
        if overlay.exists():
            raise TargetExists(overlay)
    work = Path(tempfile.mkdtemp(prefix=f"stasis-export-{os.getpid()}-",
                                 dir=socket_base(run_dir)))
    nbdkit: ExportProcess | None = None
    qemu_nbd: subprocess.Popen[bytes] | None = None
    overlay_made: Path | None = None
    try:
        pairs = [(vm_rec.name, disk_rec.name)]
        if not writable:
            nbdkit = start_nbdkit(repo, creds, point, pairs, work_dir=work,
                                  socket_path=str(socket_path) if socket_path else None,
                                  port=port)
            name = nbdkit.exports[f"{vm_rec.name}/{disk_rec.name}"]
            uri = nbdkit.uri(name)
            pid = nbdkit.pid
        else:
            inner = str(work / "point.sock")
            nbdkit = start_nbdkit(repo, creds, point, pairs, work_dir=work, socket_path=inner)
            name = nbdkit.exports[f"{vm_rec.name}/{disk_rec.name}"]
            overlay_made = overlay or work / f"{disk_rec.name}.overlay.qcow2"
            create_overlay(overlay_made, nbdkit.uri(name), disk_rec.virtual_size)
            qemu_nbd = _start_qemu_nbd(overlay_made, name, socket_path, port, work)
            uri = (f"nbd+unix:///{name}?socket={socket_path}" if socket_path
                   else f"nbd://127.0.0.1:{port}/{name}")
            pid = qemu_nbd.pid
        yield ExportInfo(point.id, vm_rec.name, disk_rec.name, disk_rec.virtual_size, uri,
                         str(socket_path) if socket_path else None, port, writable,
                         str(overlay_made) if overlay_made and keep_overlay else None,
                         keep_overlay, pid)
    finally:
        if qemu_nbd is not None:
            _stop_popen(qemu_nbd)
        if nbdkit is not None:
            nbdkit.stop()
        if socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
        if overlay_made is not None and not keep_overlay:
            overlay_made.unlink(missing_ok=True)
        for p in work.iterdir() if work.exists() else ():
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            work.rmdir()


def _start_qemu_nbd(overlay: Path, name: str, socket_path: Path | None, port: int | None,
                    work: Path) -> subprocess.Popen[bytes]:
    listen = (["--socket", str(socket_path)] if socket_path is not None
              else ["--bind", "127.0.0.1", "--port", str(port)])
    pidfile = work / "qemu-nbd.pid"
    cmd = ["qemu-nbd", "--format", "qcow2", "--export-name", name, "--shared", "16",
           "--persistent", "--cache=writeback", "--discard=unmap", "--pid-file", str(pidfile),
           *listen, str(overlay)]
    log = open(work / "qemu-nbd.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen([*die_with_parent(), *cmd], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
    finally:
        log.close()
    deadline = time.monotonic() + 30
    # qemu-nbd writes its pid file once it listens.
    while not (pidfile.exists() and pidfile.stat().st_size > 0):
        if proc.poll() is not None:
            text = (work / "qemu-nbd.log").read_text(errors="replace").strip()
            raise ExportError(str(overlay), text.splitlines()[-1] if text else
                              f"qemu-nbd exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            _stop_popen(proc)
            raise ExportError(str(overlay), "qemu-nbd did not listen within 30 s")
        time.sleep(0.02)
    return proc


def _stop_popen(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
