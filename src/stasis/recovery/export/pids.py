"""Export processes known by pid and start time: alive, stopped, found by directory.

A pid alone may be another process by now; with its start time
(:mod:`stasis.repository.process`) it is the export that was started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from stasis.repository.process import start_token


def alive(pid: int, start: str) -> bool:
    return pid > 0 and bool(start) and start_token(pid) == start


def stop_process(pid: int, start: str, *, timeout: float = 15.0) -> None:
    """SIGTERM the process ``pid`` if it is still the one that started at ``start``;
    SIGKILL it if it has not gone after ``timeout``."""
    if not alive(pid, start):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid, start):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_exports_in(run_dir: str | Path) -> list[int]:
    """Stop every nbdkit or qemu-nbd whose command line names ``run_dir`` (where its
    socket lives); return their pids. This finds an export whose starter was killed
    before it could record the pid (between the start and the state file's update)."""
    needle = os.fsencode(str(run_dir).rstrip("/") + "/")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith((b"nbdkit", b"qemu-nbd")):
            continue
        if any(arg.startswith(needle) for arg in argv[1:]):
            pid = int(entry)
            stop_process(pid, start_token(pid), timeout=5)
            found.append(pid)
    return found
