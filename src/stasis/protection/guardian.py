"""The guardian: a small process that resumes VMs if Stasis dies while they are held.

A group point suspends every member for a few milliseconds. If the Stasis process
is killed (kill -9, OOM) inside that window, nothing in it can resume them. The
guardian runs beside it, connected only by a pipe: Stasis writes ``HOLD name...``
before it suspends anything and ``RELEASE`` once every member runs again. When the
pipe closes while a hold is on (its writer died), the guardian resumes every
member still paused and thaws every filesystem it may have frozen, then exits.

Run as ``python -m stasis.protection.guardian URI``; see :class:`Guardian`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from types import TracebackType

from stasis.hypervisor.libvirt_api import DEFAULT_URI, connect


def release_all(uri: str, names: list[str]) -> None:
    """Resume every named VM that is paused, and thaw its filesystems."""
    import libvirt

    conn = connect(uri)
    for name in names:
        with contextlib.suppress(libvirt.libvirtError):
            dom = conn.lookupByName(name)
            with contextlib.suppress(libvirt.libvirtError):
                dom.fsThaw()
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()


def main(argv: list[str]) -> int:
    uri = argv[1] if len(argv) > 1 else DEFAULT_URI
    held: list[str] = []
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        word, *names = line.split()
        if word == "HOLD":
            held = names
        elif word == "RELEASE":
            held = []
        sys.stdout.write("ok\n")
        sys.stdout.flush()
    if held:  # the writer died holding them
        release_all(uri, held)
    return 0


class Guardian:
    """Parent side: ``with Guardian(uri) as g: g.hold(names) ... g.release()``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Guardian:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stasis.protection.guardian", self.uri],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True,  # a Ctrl-C to Stasis's process group must not kill it
        )
        self._expect("ready")
        return self

    def _send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self._expect("ok")

    def _expect(self, word: str) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        got = self.proc.stdout.readline().strip()
        if got != word:
            raise RuntimeError(f"the guardian process answered {got!r}, not {word!r}")

    def hold(self, names: list[str]) -> None:
        self._send("HOLD " + " ".join(names))

    def release(self) -> None:
        self._send("RELEASE")

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # EOF: it exits (and releases if still holding)
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
