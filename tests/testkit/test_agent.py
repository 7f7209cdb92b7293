"""The guest agent in test guests: a real qemu-ga, reached through libvirt.

One guest with the agent channel and an ext4 disk serves the module; one without the
channel shows that such a guest has no agent. Two boots in all (~4 s each under TCG).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stasis_testkit import SAMPLE, DiskSpec, Guest, GuestKit, MiB

libvirt = pytest.importorskip("libvirt")
libvirt_qemu = pytest.importorskip("libvirt_qemu")

pytestmark = pytest.mark.vm

DISKS = [DiskSpec("vda", "qcow2", 16 * MiB), DiskSpec("vdb", "qcow2", 64 * MiB, ext4_from=SAMPLE)]


def agent(guest: Guest, command: dict[str, Any], timeout: int = 10) -> Any:
    """One agent command the way Stasis will send it: libvirt_qemu, JSON in and out."""
    reply = libvirt_qemu.qemuAgentCommand(guest.domain, json.dumps(command), timeout, 0)
    return json.loads(reply)["return"]


@pytest.fixture(scope="module")
def guest(kit: GuestKit) -> Iterator[Guest]:
    if not kit.build().agent:
        pytest.skip("qemu-guest-agent is not installed on the host (./scripts/setup installs it)")
    g = kit.create(disks=DISKS, guest_agent=True)
    try:
        g.wait_ready(120)
        g.run("mkdir -p /mnt/b && mount -t ext4 /dev/vdb /mnt/b", check=True)
        yield g
    finally:
        g.destroy()


def test_agent_answers_once_the_guest_is_ready(guest: Guest) -> None:
    # wait_ready waited for it: the very first ping answers, with no retry.
    assert agent(guest, {"execute": "guest-ping"}, timeout=5) == {}
    assert guest.has_agent and guest.agent_seconds is not None
    assert guest.agent_command({"execute": "guest-info"})["version"]
    assert guest.run("readlink /dev/virtio-ports/org.qemu.guest_agent.0").output.startswith(
        "/dev/vport")


def test_fsfreeze_holds_writes_until_thaw(guest: Guest) -> None:
    assert guest.run("grep -c ' /mnt/b ext4 ' /proc/mounts").output == "1\n"
    guest.run("rm -f /mnt/b/frozen.txt /run/write.done", check=True)
    frozen = guest.domain.fsFreeze()
    try:
        assert frozen >= 1
        assert agent(guest, {"execute": "guest-fsfreeze-status"}) == "frozen"
        # The write blocks in the kernel; the command channel (on the initramfs root,
        # never frozen) goes on answering meanwhile.
        guest.run("(echo written while frozen >/mnt/b/frozen.txt && touch /run/write.done)"
                  " </dev/null >/dev/null 2>&1 &", check=True)
        time.sleep(1)
        assert guest.run("test -e /run/write.done").status == 1
        assert guest.run("cat /mnt/b/README").output.startswith("Stasis test-kit sample tree")
    finally:
        thawed = guest.domain.fsThaw()
    assert thawed == frozen
    deadline = time.monotonic() + 20
    while guest.run("test -e /run/write.done").status != 0:
        assert time.monotonic() < deadline, "the write did not finish after the thaw"
        time.sleep(0.2)
    assert agent(guest, {"execute": "guest-fsfreeze-status"}) == "thawed"
    assert guest.run("sync && cat /mnt/b/frozen.txt").output == "written while frozen\n"


def test_guest_exec_returns_status_and_output(guest: Guest) -> None:
    started = agent(guest, {"execute": "guest-exec", "arguments": {
        "path": "/bin/sh", "arg": ["-c", "echo hi; exit 3"], "capture-output": True}})
    deadline = time.monotonic() + 30
    while True:
        status = agent(guest, {"execute": "guest-exec-status",
                               "arguments": {"pid": started["pid"]}})
        if status["exited"]:
            break
        assert time.monotonic() < deadline, "guest-exec did not finish"
        time.sleep(0.1)
    assert status["exitcode"] == 3
    assert base64.b64decode(status["out-data"]) == b"hi\n"


def test_guest_without_the_channel_has_no_agent(kit: GuestKit) -> None:
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 16 * MiB)])
    try:
        g.wait_ready(120)
        assert not g.has_agent and g.agent_seconds is None
        assert g.run("pidof qemu-ga").status == 1
        started = time.monotonic()
        with pytest.raises(libvirt.libvirtError):
            g.domain.fsFreeze()
        assert time.monotonic() - started < 5
    finally:
        g.destroy()
