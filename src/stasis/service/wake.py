"""Waking ``stasis serve`` at once when work was queued for it.

A service listens on an abstract unix datagram socket named by its runner identity
(pid and process start time, as the catalog's services table records it), so that
a command that queued a job, or asked to cancel one, tells it to look now instead
of at its next tick. A wake-up carries nothing and is only a hint: the service
reads the catalog as at any tick, a lost one costs at most a tick, and a process
that is not a service (the pid reused) has no such socket, so nothing is sent.
Abstract names belong to the host's network namespace: no file to clean, no
directory to agree on.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("stasis.serve")


def _address(pid: int, pid_start: int) -> bytes:
    return f"\0stasis-serve-{pid}-{pid_start}".encode()


def wake(pid: int, pid_start: int) -> bool:
    """Tell the service of runner (``pid``, ``pid_start``) on this host to tick now;
    False when none listens there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"!", _address(pid, pid_start))
        except OSError:
            return False
    return True


class WakeListener:
    """The socket a service hears wake-ups on; ``on_wake`` is called for each, from a
    thread of its own. When the name is taken (another service object of this
    process listens), nothing listens and the service polls at its tick alone."""

    def __init__(self, runner: tuple[str, int, int], on_wake: Callable[[], None]) -> None:
        _host, pid, pid_start = runner
        self._on_wake = on_wake
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(_address(pid, pid_start))
        except OSError as e:
            log.debug("not listening for wake-ups: %s", e)
            self._sock.close()
            self._sock = None
            return
        self._thread = threading.Thread(target=self._listen, name="wake", daemon=True)
        self._thread.start()

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def _listen(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                sock.recv(16)
            except OSError:
                return  # closed
            if self._sock is None:
                return  # shut down by close()
            self._on_wake()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
