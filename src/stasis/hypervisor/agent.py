"""The QEMU guest agent, through libvirt: is it there, freeze and thaw, run a command.

Freeze and thaw go through libvirt's own API (``fsFreeze``/``fsThaw``), so libvirt
knows the guest is frozen and refuses what must not happen meanwhile. Commands in
the guest have no libvirt API: they are raw ``guest-exec`` agent commands, which
libvirt allows and marks on the domain as a custom agent command.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_qemu

PING_TIMEOUT_S = 5


def _command(dom: libvirt.virDomain, execute: str, arguments: dict[str, Any] | None = None,
             timeout: int = PING_TIMEOUT_S) -> Any:
    request: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        request["arguments"] = arguments
    answer = libvirt_qemu.qemuAgentCommand(dom, json.dumps(request), timeout, 0)
    return json.loads(answer).get("return")


def probe(dom: libvirt.virDomain, timeout: int = PING_TIMEOUT_S) -> str:
    """Why the agent of ``dom`` cannot be used, or "" when it answers."""
    try:
        _command(dom, "guest-ping", timeout=timeout)
    except libvirt.libvirtError as e:
        return f"no guest agent answered ({e.get_error_message()})"
    return ""


def freeze(dom: libvirt.virDomain) -> int:
    """Freeze every filesystem of the guest; return how many were frozen."""
    return int(dom.fsFreeze(None, 0))


def thaw(dom: libvirt.virDomain) -> int:
    return int(dom.fsThaw(None, 0))


@dataclass
class ExecResult:
    exit_code: int | None  # None: still running when the timeout came
    output: str
    timed_out: bool = False


def run(dom: libvirt.virDomain, command: str, *, timeout_s: float) -> ExecResult:
    """Run ``command`` with ``/bin/sh -c`` in the guest, wait at most ``timeout_s``.

    The agent has no way to stop a command it started: one that outlasts the timeout
    is reported as such and keeps running in the guest.
    """
    started = _command(dom, "guest-exec", {"path": "/bin/sh", "arg": ["-c", command],
                                           "capture-output": True})
    pid = int(started["pid"])
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        status = _command(dom, "guest-exec-status", {"pid": pid})
        if status.get("exited"):
            out = b""
            for key in ("out-data", "err-data"):
                if status.get(key):
                    out += base64.b64decode(status[key])
            code = status.get("exitcode")
            if code is None and status.get("signal") is not None:
                code = 128 + int(status["signal"])
            return ExecResult(int(code) if code is not None else None,
                              out.decode(errors="replace"))
        if time.monotonic() >= deadline:
            return ExecResult(None, "", timed_out=True)
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
