"""Signals as exceptions, shared by every layer that stops work on one.

The CLI's handler raises :class:`Terminated` for SIGTERM and ``KeyboardInterrupt``
for Ctrl-C, so that every ``finally`` on the way out cleans up; the service layer
tells the two apart (exit code 143 or 130) by class, without knowing the CLI.

A step that must not be cut in the middle runs under :func:`held`: a signal that
arrives meanwhile is raised when the step has finished. Python runs signal handlers
in the main thread between any two bytecodes, even inside the standard library: a
handler that raised while a ``ThreadPoolExecutor`` started a worker would leave that
worker running what was submitted to it (a libvirt backup job beginning, say) with no
one waiting for it, and the caller's cleanup would not know of it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so every ``finally`` cleans up."""


_depth = 0  # held() blocks the main thread is inside (handlers run only there)
_pending: list[BaseException] = []


def deliver(exc: BaseException) -> None:
    """Raise ``exc`` from a signal handler now, or at the end of the held step."""
    if _depth:
        if not _pending:
            _pending.append(exc)
        return
    raise exc


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Run the block whole: a signal delivered meanwhile is raised when it ends.

    Only the main thread's blocks hold signals (a worker thread is never
    interrupted by one); nested blocks raise at the end of the outermost."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            raise _pending.pop()
