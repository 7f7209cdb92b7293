"""Running the hooks of an application-consistent point.

Host hooks are shell commands run on the host with a timeout (the whole process
group is killed when it passes); guest hooks are shell commands run in a member
through its guest agent. Each run gives a :class:`HookResult`, which the point and
the job's result record as they were.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

import libvirt

from stasis.hypervisor import agent

OUTPUT_KEPT = 2000  # characters of a hook's output kept in the point


@dataclass
class HookResult:
    phase: str  # pre | post
    where: str  # "host", or the VM's name
    command: str
    exit_code: int | None
    output: str
    duration_s: float
    error: str = ""  # why it failed, in words; "" when it succeeded

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.phase} hook on {self.where} ({self.command!r}) {self.error}"


def run_host(phase: str, command: str, *, env: dict[str, str], timeout_s: float) -> HookResult:
    started = time.monotonic()
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **env, "STASIS_HOOK_PHASE": phase},
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return HookResult(phase, "host", command, None, _tail(out), time.monotonic() - started,
                          f"did not finish within {timeout_s:g} s and was killed")
    except BaseException:  # Ctrl-C or SIGTERM: the hook does not outlive Stasis
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    error = "" if proc.returncode == 0 else f"exited with status {proc.returncode}"
    return HookResult(phase, "host", command, proc.returncode, _tail(out),
                      time.monotonic() - started, error)


def run_guest(phase: str, dom: libvirt.virDomain, command: str, *,
              timeout_s: float) -> HookResult:
    started = time.monotonic()
    name = dom.name()
    try:
        res = agent.run(dom, command, timeout_s=timeout_s)
    except libvirt.libvirtError as e:
        return HookResult(phase, name, command, None, "", time.monotonic() - started,
                          f"could not run through the guest agent ({e.get_error_message()})")
    if res.timed_out:
        error = f"did not finish within {timeout_s:g} s (it goes on in the guest)"
    elif res.exit_code != 0:
        error = f"exited with status {res.exit_code}"
    else:
        error = ""
    return HookResult(phase, name, command, res.exit_code, res.output[-OUTPUT_KEPT:],
                      time.monotonic() - started, error)


def _tail(data: bytes | None) -> str:
    return (data or b"").decode(errors="replace")[-OUTPUT_KEPT:]
