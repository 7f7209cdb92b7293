"""Which local process runs under a pid: its start time, read from ``/proc/PID/stat``.

A pid is reused once its process is gone; the pair (pid, start time) is not, so
locks, jobs, exports and QEMU runs record both and compare the start time later to
tell their process from a newcomer. It lives in the repository layer, the lowest
that needs it (the lock of a dead process is stale); every layer above reads
``/proc/PID/stat`` through it.
"""

from __future__ import annotations


def start_time(pid: int) -> int | None:
    """Field 22 (``starttime``, clock ticks after boot) of process ``pid``; None when no
    process runs under ``pid`` or it has ended and waits to be reaped (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The fields after the command name, which is parenthesised and may hold spaces
    # and parentheses itself: the last ')' ends it.
    fields = text.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def start_token(pid: int) -> str:
    """:func:`start_time` as the text records keep (``""`` when nothing runs)."""
    start = start_time(pid)
    return "" if start is None else str(start)
