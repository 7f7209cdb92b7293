"""The command channel between the host and a test guest.

The guest's second serial port (``/dev/ttyS1``) is a unix socket on the host
(``<serial type='unix'><source mode='bind'/>``). In the guest, :data:`CONTROL_LOOP`
reads one request per line and answers with one framed reply:

    host  → guest   <id> <base64 of a shell script>[ <n>]\\n[<n> raw bytes of input]
    guest → host    \\n__STASIS_BEGIN__ <id>\\n
                    <base64 of the script's stdout+stderr, wrapped>\\n
                    __STASIS_END__ <id> <exit status>\\n

Both directions are base64 so that neither a command nor its output can break the
framing (the markers use ``_``, which base64 never produces) and binary output
arrives intact. Bulk input for a command (``n`` raw bytes after the request line)
is read by ``head -c`` into ``/run/ctl/data``: the shell's ``read`` takes one byte
per system call, far too slow for data. Expect ~130 KB/s into the guest and
~270 KB/s out of it (an emulated UART under TCG).

The guest runs one request at a time; each carries a fresh id, so the reader skips
the replies of requests it gave up on (a timed-out command's reply arrives later
and is discarded). The port is raw (no echo, no CR/LF translation) and the guest
keeps it open from boot, so no byte is lost at open time; QEMU only takes bytes
from the socket as the guest's UART has room, so nothing is dropped while the
guest is busy.
"""

from __future__ import annotations

import base64
import itertools
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from stasis_testkit.errors import GuestCommandTimeout, GuestKitError

BEGIN = b"__STASIS_BEGIN__"
END = b"__STASIS_END__"

CONTROL_LOOP = r"""#!/bin/sh
# stasis-ctl: the command loop of the Stasis test guest (see stasis_testkit/control.py).
# stdin and stdout are /dev/ttyS1 in raw mode; one request per line: "<id> <base64 script>",
# or "<id> <base64 script> <n>" followed by n bytes the script finds in /run/ctl/data.
mkdir -p /run/ctl
while :; do
    read -r id b64 n || { sleep 0.2; continue; }
    case "$id" in ''|*[!0-9A-Za-z-]*) continue ;; esac
    rm -f /run/ctl/data
    case "$n" in ''|*[!0-9]*) ;; *) head -c "$n" >/run/ctl/data ;; esac
    if printf '%s' "$b64" | base64 -d >/run/ctl/cmd 2>/dev/null; then
        (cd / && exec sh /run/ctl/cmd) </dev/null >/run/ctl/out 2>&1
        rc=$?
    else
        echo "stasis-ctl: request $id is not valid base64" >/run/ctl/out
        rc=126
    fi
    printf '\n__STASIS_BEGIN__ %s\n' "$id"
    base64 </run/ctl/out
    printf '__STASIS_END__ %s %s\n' "$id" "$rc"
done
"""


class _Expired(Exception):
    """The deadline of the current request passed."""


class CommandResult(NamedTuple):
    """What a command in the guest returned: its exit status and its stdout+stderr."""

    status: int
    output: str

    @property
    def ok(self) -> bool:
        return self.status == 0


class ControlChannel:
    """The way to one guest's command loop. Thread-safe: requests are serialized.

    Each request has a connection of its own: QEMU serves one client of the socket at
    a time, so holding a connection would lock every other process (and every other
    :class:`ControlChannel`) out of the guest. While no client is connected QEMU
    discards what the guest writes, so an abandoned reply never reaches the next one.
    """

    def __init__(self, socket_path: Path, *, guest: str) -> None:
        self.socket_path = socket_path
        self.guest = guest
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)

    def _connect(self, deadline: float) -> socket.socket:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.socket_path))
                return sock
            except OSError as e:
                sock.close()
                if time.monotonic() >= deadline:
                    raise GuestKitError(
                        f"cannot connect to the command socket {self.socket_path} of guest "
                        f"{self.guest}: {e}"
                    ) from e
                time.sleep(0.05)

    def run_bytes(self, script: str, timeout: float = 30.0, *,
                  data: bytes | None = None) -> tuple[int, bytes]:
        """Run ``script`` with ``sh`` in the guest; return (exit status, stdout+stderr bytes).

        ``data``, if given, is in the guest's ``/run/ctl/data`` while the script runs.
        """
        with self._lock:
            deadline = time.monotonic() + timeout
            request_id = f"{self._prefix}-{next(self._ids)}"
            payload = base64.b64encode(script.encode()).decode()
            header = f"{request_id} {payload}"
            if data is not None:
                header += f" {len(data)}"
            sock = self._connect(deadline)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                # The leading newline ends whatever an earlier client left half-sent.
                sock.sendall(b"\n" + header.encode() + b"\n" + (data or b""))
                return _read_reply(sock, request_id, deadline)
            except (_Expired, TimeoutError):
                raise GuestCommandTimeout(self.guest, timeout, script) from None
            except OSError as e:
                raise GuestKitError(f"command channel of guest {self.guest} failed: {e}") from e
            finally:
                sock.close()


def _read_reply(sock: socket.socket, request_id: str, deadline: float) -> tuple[int, bytes]:
    begin = BEGIN + b" " + request_id.encode()
    end = re.compile(re.escape(END + b" " + request_id.encode()) + rb" (\d+)")
    body: list[bytes] | None = None
    for line in _lines(sock, deadline):
        if body is None:
            if line == begin:
                body = []
            continue  # the blank separator line, or the tail of an abandoned reply
        m = end.fullmatch(line)
        if m:
            return int(m.group(1)), base64.b64decode(b"".join(body))
        body.append(line)
    raise AssertionError("unreachable")


def _lines(sock: socket.socket, deadline: float) -> Iterator[bytes]:
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.rstrip(b"\r")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Expired
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise GuestKitError("the guest's command socket was closed (did the guest stop?)")
        buf += chunk
