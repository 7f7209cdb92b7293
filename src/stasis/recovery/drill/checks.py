"""The checks of a drill, each with a timeout, polled until it passes or the time is up.

Per VM: ``console:REGEX`` (the serial console's log file shows the pattern), ``agent``
(the guest agent answers guest-ping), ``exec:COMMAND`` (``/bin/sh -c COMMAND`` in the
guest, through the agent, exits 0), ``tcp:PORT`` (the port answers from the host, at
the address the isolated network's DHCP server leased to the VM). Once for the drill:
``script:PATH`` (a host program; it reads the drill's VMs and addresses as JSON on
stdin, and ``$STASIS_DRILL_ID``, ``$STASIS_DRILL_NETWORK``; exit 0 passes).

On the command line a check is ``KIND[@VM][~SECONDS][:ARG]``: ``@VM`` limits it to one
VM of the point (else it runs on every VM), ``~SECONDS`` is its timeout.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from stasis.errors import UsageError
from stasis.hypervisor import agent
from stasis.parallel import Cancelled
from stasis.recovery.drill.network import lease_addresses

CHECK_KINDS = ("console", "agent", "exec", "tcp", "script")
NEEDS_ARG = ("console", "exec", "tcp", "script")
DEFAULT_TIMEOUT_S = 120.0
POLL_S = 0.25
AGENT_CHANNEL = "org.qemu.guest_agent.0"


@dataclass(frozen=True)
class CheckSpec:
    kind: str
    arg: str = ""
    vm: str | None = None  # the point's VM it runs on (None: every VM)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


def check_spec(kind: str, arg: str = "", vm: str | None = None,
               timeout_s: float | None = None) -> CheckSpec:
    """A check, validated: a UsageError says what is wrong."""
    if kind not in CHECK_KINDS:
        raise UsageError(f"'{kind}' is not a drill check ({', '.join(CHECK_KINDS)}); "
                         "nothing was made")
    if kind in NEEDS_ARG and not arg:
        raise UsageError(f"the {kind} check needs an argument ({kind}:...); nothing was made")
    if kind == "agent" and arg:
        raise UsageError("the agent check takes no argument; nothing was made")
    if kind == "tcp" and not (arg.isdigit() and 0 < int(arg) < 65536):
        raise UsageError(f"tcp:{arg}: the port must be a number from 1 to 65535; nothing "
                         "was made")
    if kind == "console":
        try:
            re.compile(arg)
        except re.error as e:
            raise UsageError(f"console:{arg}: not a regular expression ({e}); nothing was "
                             "made") from None
    if kind == "script" and vm is not None:
        raise UsageError("a script check runs once for the drill: it takes no @VM; nothing "
                         "was made")
    timeout = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    if not timeout > 0:
        raise UsageError(f"the timeout of the {kind} check must be more than 0 s; nothing "
                         "was made")
    return CheckSpec(kind, arg, vm, float(timeout))


def parse_check(text: str, default_timeout_s: float | None = None) -> CheckSpec:
    """``KIND[@VM][~SECONDS][:ARG]``, as ``--check`` takes it."""
    head, _, arg = text.partition(":")
    timeout: float | None = default_timeout_s
    if "~" in head:
        head, _, seconds = head.partition("~")
        try:
            timeout = float(seconds.rstrip("s"))
        except ValueError:
            raise UsageError(f"--check {text}: '~{seconds}' is not a timeout in seconds; "
                             "nothing was made") from None
    kind, _, vm = head.partition("@")
    return check_spec(kind.strip(), arg, vm or None, timeout)


@dataclass
class CheckOutcome:
    kind: str
    arg: str
    vm: str | None  # the point's VM (None: a script check)
    name: str | None  # the drill's VM
    passed: bool
    seconds: float
    output: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VmUnderCheck:
    """A drill's VM as the checks see it."""

    vm: str  # the point's
    name: str  # the drill's
    dom: libvirt.virDomain
    addresses: list[str] = field(default_factory=list)

    def xml(self) -> ET.Element:
        return ET.fromstring(self.dom.XMLDesc(0))


class _Clock:
    def __init__(self, timeout_s: float, cancel: threading.Event | None) -> None:
        self.began = time.monotonic()
        self.deadline = self.began + timeout_s
        self.cancel = cancel

    def left(self) -> float:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return round(time.monotonic() - self.began, 3)

    def wait(self) -> None:
        if self.cancel is not None:
            if self.cancel.wait(POLL_S):
                raise Cancelled()
        else:
            time.sleep(POLL_S)


def console_logs(root: ET.Element) -> list[Path]:
    paths = []
    for dev in root.iter():
        if dev.tag in ("serial", "console"):
            if dev.get("type") == "file":
                for src in dev.iterfind("source"):
                    if src.get("path"):
                        paths.append(Path(src.get("path", "")))
            for log in dev.iterfind("log"):
                if log.get("file"):
                    paths.append(Path(log.get("file", "")))
    return list(dict.fromkeys(paths))


def _tail(text: str, lines: int = 10) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_vm_check(spec: CheckSpec, v: VmUnderCheck, *,
                 cancel: threading.Event | None = None) -> CheckOutcome:
    """Poll ``spec`` on ``v`` until it passes or its timeout is over."""
    c = _Clock(spec.timeout_s, cancel)
    out = CheckOutcome(spec.kind, spec.arg, v.vm, v.name, False, 0.0)
    check: Callable[[CheckOutcome, _Clock, CheckSpec, VmUnderCheck], bool | None] = {
        "console": _console, "agent": _agent, "exec": _exec, "tcp": _tcp}[spec.kind]
    while True:
        verdict = check(out, c, spec, v)
        if verdict is not None:  # passed, or can never pass
            out.passed = verdict
            break
        if c.left() <= 0:
            out.error = out.error or "no answer"
            out.error = f"timed out after {spec.timeout_s:g} s: {out.error}"
            break
        if v.dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            out.error = f"the VM stopped ({out.error})" if out.error else "the VM stopped"
            break
        c.wait()
    out.seconds = c.elapsed()
    return out


def _console(out: CheckOutcome, c: _Clock, spec: CheckSpec, v: VmUnderCheck) -> bool | None:
    logs = console_logs(v.xml())
    if not logs:
        out.error = "the VM has no serial console logged to a file"
        return False
    text = ""
    for log in logs:
        try:
            text += log.read_text(errors="replace")
        except OSError:
            continue
    if re.search(spec.arg, text):
        out.output, out.error = _tail(text), ""
        return True
    out.output = _tail(text)
    out.error = f"the console shows no match for /{spec.arg}/"
    return None


def _agent_channel(v: VmUnderCheck) -> ET.Element | None:
    for target in v.xml().iterfind("devices/channel/target"):
        if target.get("name") == AGENT_CHANNEL:
            return target
    return None


def _agent_ready(out: CheckOutcome, v: VmUnderCheck) -> bool | None:
    """True once the agent answers; False: it never can (no channel); None: not yet."""
    chan = _agent_channel(v)
    if chan is None:
        out.error = (f"the VM has no guest agent: its definition has no {AGENT_CHANNEL} "
                     "channel, so no agent check can pass")
        return False
    problem = agent.probe(v.dom, timeout=2)
    if not problem:
        return True
    state = chan.get("state")
    out.error = problem + (f" (the agent channel is {state}: no agent runs in the guest "
                           "yet)" if state == "disconnected" else "")
    return None


def _agent(out: CheckOutcome, c: _Clock, spec: CheckSpec, v: VmUnderCheck) -> bool | None:
    ready = _agent_ready(out, v)
    if ready:
        out.output, out.error = "guest-ping answered", ""
    return ready


def _exec(out: CheckOutcome, c: _Clock, spec: CheckSpec, v: VmUnderCheck) -> bool | None:
    ready = _agent_ready(out, v)
    if not ready:
        return ready
    try:
        r = agent.run(v.dom, spec.arg, timeout_s=max(c.left(), 1.0))
    except libvirt.libvirtError as e:
        out.error = f"guest-exec failed ({e.get_error_message()})"
        return None
    out.output = _tail(r.output, 20)
    if r.timed_out:
        out.error = "the command was still running"
        return None
    if r.exit_code == 0:
        out.error = ""
        return True
    out.error = f"the command exited {r.exit_code}"
    return None


def _tcp(out: CheckOutcome, c: _Clock, spec: CheckSpec, v: VmUnderCheck) -> bool | None:
    if not v.xml().findall("devices/interface"):
        out.error = "the VM has no network interface, so no TCP port can answer"
        return False
    v.addresses = lease_addresses(v.dom)
    if not v.addresses:
        out.error = "the VM has no address leased on the drill's network yet"
        return None
    port = int(spec.arg)
    for addr in v.addresses:
        try:
            with socket.create_connection((addr, port), timeout=min(2.0, max(c.left(), 0.1))):
                out.output, out.error = f"{addr}:{port} answered", ""
                return True
        except OSError as e:
            out.error = f"{addr}:{port}: {e.strerror or e}"
    return None


def run_script(spec: CheckSpec, *, drill_id: str, network: str, vms: list[VmUnderCheck],
               cancel: threading.Event | None = None) -> CheckOutcome:
    """Run the host script once, the drill's VMs and addresses as JSON on its stdin."""
    for v in vms:
        v.addresses = v.addresses or lease_addresses(v.dom)
    doc = {"drill": drill_id, "network": network,
           "vms": [{"vm": v.vm, "name": v.name, "addresses": v.addresses} for v in vms]}
    out = CheckOutcome(spec.kind, spec.arg, None, None, False, 0.0)
    c = _Clock(spec.timeout_s, cancel)
    env = {**os.environ, "STASIS_DRILL_ID": drill_id, "STASIS_DRILL_NETWORK": network}
    try:
        proc = subprocess.Popen([spec.arg], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, text=True)
    except OSError as e:
        out.error = f"the script could not be run ({e.strerror or e})"
        out.seconds = c.elapsed()
        return out
    try:
        text, _ = proc.communicate(json.dumps(doc), timeout=spec.timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        text, _ = proc.communicate()
        out.error = f"timed out after {spec.timeout_s:g} s (the script was killed)"
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    out.output = _tail(text or "", 20)
    if not out.error:
        out.passed = proc.returncode == 0
        out.error = "" if out.passed else f"the script exited {proc.returncode}"
    out.seconds = c.elapsed()
    return out
