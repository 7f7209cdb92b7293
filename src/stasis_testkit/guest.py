"""Test guests: create, boot, drive and destroy small libvirt VMs.

A :class:`GuestKit` owns a kit directory (boot files, sample trees, one directory per
guest) and a libvirt connection. Every domain it defines carries the kit's metadata
element; the kit never touches a domain without it, so ``destroy`` and ``list`` cannot
reach a VM that is not a test guest.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import libvirt

from stasis.repository.process import start_time
from stasis.settings import state_dir
from stasis_testkit.boot import AGENT_STARTED, READY_MARKER, BootFiles, build_boot_files
from stasis_testkit.control import CommandResult, ControlChannel
from stasis_testkit.disks import DiskSpec, Format, MiB, create_disk, read_image, sample_tree
from stasis_testkit.domain import (
    DomainConfig,
    DomainDisk,
    disk_targets,
    domain_xml,
    guest_metadata,
)
from stasis_testkit.errors import GuestCommandFailed, GuestKitError, GuestNotReady

DEFAULT_URI = "qemu:///system"
DEFAULT_PREFIX = "stasis-test-"
DEFAULT_DISKS = (DiskSpec("vda", "qcow2", 64 * MiB),)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


# The guest's qemu-ga stopped (its port closed) and started again on the same port.
RESTART_AGENT = (
    "pid=$(cat /run/qemu-ga.pid 2>/dev/null || pidof qemu-ga); kill $pid; "
    "while kill -0 $pid 2>/dev/null; do sleep 0.05; done; "
    "/usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 "
    "-t /run/qemu-ga -f /run/qemu-ga.pid -l /run/qemu-ga.log </dev/null >/dev/null 2>&1 & "
    "i=0; while ! pidof qemu-ga >/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; "
    "pidof qemu-ga"
)


def default_kit_dir() -> Path:
    """``$STASIS_TESTKIT_DIR``, else ``<state dir>/testkit``."""
    explicit = os.environ.get("STASIS_TESTKIT_DIR")
    return Path(explicit) if explicit else state_dir() / "testkit"


def process_identity(pid: int) -> str | None:
    """``"<pid>:<start time>"`` of a live process (the start time tells a reused pid apart)."""
    start = start_time(pid)
    return None if start is None else f"{pid}:{start}"


def default_socket_dir() -> Path:
    """A short directory for the guests' unix sockets (a socket path has at most 107 bytes)."""
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        path = Path("/run/stasis-testkit")
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "stasis-testkit"
    else:
        path = Path(f"/tmp/stasis-testkit-{os.geteuid()}")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@dataclass(frozen=True)
class GuestDisk:
    """A disk of a guest: its target in the guest (``vdb``), image file and format."""

    target: str
    path: Path
    fmt: Format


@dataclass(frozen=True)
class GuestInfo:
    name: str
    state: str
    dir: Path


_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
}


class Guest:
    """One test guest. Commands run through its second serial port; see :mod:`.control`."""

    def __init__(self, kit: GuestKit, name: str, domain: Any, *, guest_dir: Path,
                 disks: dict[str, GuestDisk], control_socket: Path,
                 agent_socket: Path | None) -> None:
        self.kit = kit
        self.name = name
        self.domain = domain
        self.dir = guest_dir
        self.disks = disks
        self.console_log = guest_dir / "console.log"
        self.control_socket = control_socket
        self.agent_socket = agent_socket
        self.boot_seconds: float | None = None
        self.agent_seconds: float | None = None
        self._channel = ControlChannel(control_socket, guest=name)
        self._console_offset = 0
        self._started_at: float | None = None

    def __repr__(self) -> str:
        return f"Guest({self.name!r}, disks={sorted(self.disks)})"

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.destroy()

    # --- life cycle ---------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return bool(self.domain.isActive())

    def start(self) -> None:
        """Boot the guest; :meth:`wait_ready` then waits for its marker."""
        self._console_offset = self.console_log.stat().st_size if self.console_log.exists() else 0
        self._started_at = time.monotonic()
        self.boot_seconds = None
        self.agent_seconds = None
        self.domain.create()

    def poweroff(self) -> None:
        """Pull the plug (the guest has nothing to shut down cleanly)."""
        if self.domain.isActive():
            _destroy_domain(self.domain)

    def console_text(self) -> str:
        """What the guest printed on its console since the last :meth:`start`."""
        try:
            with open(self.console_log, "rb") as f:
                if os.fstat(f.fileno()).st_size < self._console_offset:
                    self._console_offset = 0  # virtlogd rotated the log (at 2 MiB)
                f.seek(self._console_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def has_agent(self) -> bool:
        """Whether qemu-ga was started in the guest (this boot): the guest has the agent
        channel and its initramfs holds qemu-ga. Known once the boot marker is out.
        """
        return self.agent_socket is not None and AGENT_STARTED in self.console_text()

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait for the boot marker, a working command channel and, when the guest runs
        one, an answering guest agent; return seconds since start.

        The agent counts as up once libvirt gets an answer to ``guest-ping``: qemu-ga
        under TCG takes a while to start after the marker, and a test that froze the
        filesystems before would race it. :attr:`agent_seconds` records when it answered.
        Fails early, with the console's last lines, when the domain stops (a panic ends it).
        """
        started = self._started_at if self._started_at is not None else time.monotonic()
        deadline = time.monotonic() + timeout
        marker = f"{READY_MARKER} {self.name}"
        while marker not in self.console_text():
            if not self.domain.isActive():
                raise GuestNotReady(self.name, timeout, "the domain stopped; console ends:\n"
                                    + self._console_tail(), self.console_log)
            if time.monotonic() >= deadline:
                raise GuestNotReady(self.name, timeout, "no boot marker; console ends:\n"
                                    + self._console_tail(), self.console_log)
            time.sleep(0.05)
        remaining = max(deadline - time.monotonic(), 1.0)
        status, out = self.run("echo ready", timeout=remaining)
        if status != 0 or out.strip() != "ready":
            raise GuestNotReady(self.name, timeout, f"the command channel answered {out!r}",
                                self.console_log)
        if self.has_agent:
            self._wait_agent(deadline, timeout)
            self.agent_seconds = time.monotonic() - started
        self.boot_seconds = time.monotonic() - started
        return self.boot_seconds

    def _wait_agent(self, deadline: float, timeout: float) -> None:
        last = "its port was never opened"
        while True:
            # libvirt marks the channel connected once qemu-ga opens its port; before
            # that a command fails at once and libvirt prints the error on stderr.
            if "state='connected'" in self.domain.XMLDesc(0):
                try:
                    self.agent_command({"execute": "guest-ping"}, timeout=2)
                    return
                except libvirt.libvirtError as e:
                    last = str(e)  # "not responding" while it starts: ask again
            if time.monotonic() >= deadline:
                log = self.run("cat /run/qemu-ga.log; pidof qemu-ga", timeout=10).output
                raise GuestNotReady(self.name, timeout, f"the guest agent did not answer "
                                    f"({last}); in the guest: {log.strip()!r}",
                                    self.console_log)
            time.sleep(0.2)

    def agent_command(self, command: dict[str, Any] | str, *, timeout: int = 10) -> Any:
        """Send one QMP command to the guest's qemu-ga through libvirt; return its ``return``.

        libvirt holds the agent's socket (QEMU serves one client), so this is the one way
        in. ``timeout`` is in seconds; raises ``libvirt.libvirtError`` when the agent
        does not answer or answers with an error.
        """
        # importlib: libvirt_qemu ships without type information; this keeps it Any.
        libvirt_qemu = importlib.import_module("libvirt_qemu")
        text = command if isinstance(command, str) else json.dumps(command)
        reply = json.loads(libvirt_qemu.qemuAgentCommand(self.domain, text, timeout, 0))
        return reply.get("return")

    def restart_agent(self) -> None:
        """Stop qemu-ga and start it again, as a guest does when its agent restarts or
        starts late: the guest closes the agent's virtio-serial port and opens it again,
        and QEMU tells libvirt of each (VSERPORT_CHANGE). Returns once the new qemu-ga
        runs (it may take a moment more to answer).
        """
        if not self.has_agent:
            raise GuestKitError(f"{self.name} runs no guest agent")
        self.run(RESTART_AGENT, check=True, timeout=30)

    def _console_tail(self, lines: int = 15) -> str:
        return "\n".join(self.console_text().splitlines()[-lines:])

    def destroy(self) -> None:
        """Remove the guest entirely: domain (and its checkpoint metadata), disks, sockets."""
        self.kit.destroy(self.name)

    # --- commands -----------------------------------------------------------------------

    def run_bytes(self, command: str, *, timeout: float = 30.0,
                  data: bytes | None = None) -> tuple[int, bytes]:
        """Run ``command`` with ``sh`` in the guest: (exit status, stdout+stderr bytes).

        ``data`` is sent along and waits in the guest's ``/run/ctl/data``.
        """
        return self._channel.run_bytes(command, timeout, data=data)

    def run(self, command: str, *, timeout: float = 30.0, check: bool = False,
            data: bytes | None = None) -> CommandResult:
        """Run ``command`` with ``sh`` in the guest: (exit status, stdout+stderr text)."""
        status, out = self.run_bytes(command, timeout=timeout, data=data)
        text = out.decode(errors="replace")
        if check and status != 0:
            raise GuestCommandFailed(self.name, status, command, text.strip()[-2000:])
        return CommandResult(status, text)

    def sync(self) -> None:
        self.run("sync", check=True)

    def write_bytes(self, disk: str, offset: int, data: bytes, *, timeout: float = 60.0) -> None:
        """Write ``data`` at ``offset`` of ``/dev/<disk>`` in the guest, flushed to the disk.

        The data travels over the serial port: fine up to a few MiB.
        """
        self._check_disk(disk)
        self.run(f"dd if=/run/ctl/data of=/dev/{disk} bs=65536 seek={offset} oflag=seek_bytes "
                 f"conv=notrunc,fsync 2>&1 >/dev/null", timeout=timeout, check=True, data=data)

    def write_pattern(self, disk: str, offset: int, length: int, *, byte: int | None = None,
                      seed: int | None = None, timeout: float = 60.0) -> bytes:
        """Fill ``length`` bytes at ``offset`` of ``/dev/<disk>`` (flushed); return them.

        ``byte``: every byte that value, made in the guest (any length, fast).
        ``seed``: ``random.Random(seed).randbytes(length)``, sent from the host.
        """
        if (byte is None) == (seed is None):
            raise ValueError("give exactly one of byte= and seed=")
        if seed is not None:
            data = random.Random(seed).randbytes(length)
            self.write_bytes(disk, offset, data, timeout=timeout)
            return data
        assert byte is not None
        if not 0 <= byte <= 255:
            raise ValueError(f"byte {byte} is not in 0..255")
        self._check_disk(disk)
        fill = "" if byte == 0 else f" | tr '\\000' '\\{byte:03o}'"
        self.run(f"head -c {length} /dev/zero{fill} | dd of=/dev/{disk} bs=65536 "
                 f"seek={offset} oflag=seek_bytes iflag=fullblock conv=notrunc,fsync 2>&1 "
                 f">/dev/null", timeout=timeout, check=True)
        return bytes([byte]) * length

    def read_bytes(self, disk: str, offset: int, length: int, *, timeout: float = 60.0) -> bytes:
        """Read ``length`` bytes at ``offset`` of ``/dev/<disk>`` as the guest sees them."""
        self._check_disk(disk)
        status, out = self.run_bytes(
            f"dd if=/dev/{disk} bs=65536 skip={offset} count={length} "
            f"iflag=skip_bytes,count_bytes 2>/dev/null", timeout=timeout)
        if status != 0 or len(out) != length:
            raise GuestKitError(f"reading {length} bytes at {offset} of {disk} in guest "
                                f"{self.name} failed (status {status}, got {len(out)} bytes)")
        return out

    def read_image(self, disk: str, offset: int, length: int) -> bytes:
        """Read the disk's bytes on the host from its image file (also while running)."""
        d = self.disks[disk]
        return read_image(d.path, d.fmt, offset, length)

    def _check_disk(self, disk: str) -> None:
        if disk not in self.disks:
            raise GuestKitError(f"guest {self.name} has no disk {disk!r} "
                                f"(it has {', '.join(sorted(self.disks))})")


def _destroy_domain(domain: Any) -> None:
    for attempt in range(5):
        try:
            domain.destroy()
            return
        except libvirt.libvirtError as e:
            if not domain.isActive():
                return
            # "Failed to terminate process … Device or resource busy": QEMU still exiting.
            if attempt == 4:
                raise GuestKitError(f"cannot stop domain {domain.name()}: {e}") from e
            time.sleep(1)


def _undefine_domain(domain: Any) -> None:
    flags = (libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
             | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
             | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
             | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    domain.undefineFlags(flags)


class GuestKit:
    """Makes test guests. ``with GuestKit() as kit:`` destroys the guests it created."""

    def __init__(self, conn: Any | None = None, kit_dir: Path | None = None, *,
                 prefix: str = DEFAULT_PREFIX, uri: str = DEFAULT_URI,
                 kernel: Path | None = None, socket_dir: Path | None = None) -> None:
        self._own_conn = conn is None
        self._conn: Any = conn
        self.uri = uri
        self.kit_dir = (kit_dir or default_kit_dir()).absolute()
        self.kit_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.kernel = kernel
        self.socket_dir = socket_dir or default_socket_dir()
        self._boot: BootFiles | None = None
        self._created: dict[str, Guest] = {}

    @property
    def conn(self) -> Any:
        """The libvirt connection, opened on first use (building boot files needs none)."""
        if self._conn is None:
            self._conn = libvirt.open(self.uri)
        return self._conn

    def __enter__(self) -> GuestKit:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Destroy the guests this kit created, then close a connection the kit opened."""
        errors: list[str] = []
        for name in list(self._created):
            try:
                self.destroy(name)
            except Exception as e:  # clean up the others; report all at the end
                errors.append(f"{name}: {e}")
        if self._own_conn and self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None
        if errors:
            raise GuestKitError("could not destroy every guest: " + "; ".join(errors))

    def release(self, name: str) -> None:
        """Stop tracking guest ``name``: it outlives :meth:`close`."""
        self._created.pop(self.domain_name(name), None)

    @property
    def guests_dir(self) -> Path:
        return self.kit_dir / "guests"

    def build(self, *, force: bool = False) -> BootFiles:
        """The kernel and initramfs (built on first use, from the cache afterwards)."""
        if self._boot is None or force:
            self._boot = build_boot_files(self.kit_dir, kernel=self.kernel, force=force)
        return self._boot

    def sample_tree(self) -> Path:
        """The deterministic tree ``ext4_from=SAMPLE`` disks hold (see :func:`sample_tree`)."""
        return sample_tree(self.kit_dir / "trees" / "sample")

    def domain_name(self, name: str | None = None) -> str:
        """The domain name for ``name`` (prefixed), or a fresh unique one."""
        if name is None:
            return f"{self.prefix}{secrets.token_hex(4)}"
        full = name if name.startswith(self.prefix) else self.prefix + name
        if not _NAME.fullmatch(full):
            raise GuestKitError(f"bad guest name {full!r}: letters, digits, '.', '_', '-'; "
                                "at most 63 characters")
        return full

    def _lookup(self, name: str) -> Any | None:
        # Not lookupByName: libvirt's default error handler prints every miss on stderr.
        for domain in self.conn.listAllDomains(0):
            if domain.name() == name:
                return domain
        return None

    def create(self, name: str | None = None, disks: Sequence[DiskSpec] = DEFAULT_DISKS, *,
               start: bool = True, memory_mib: int = 256, vcpus: int = 1,
               network: str | None = None, guest_agent: bool = False,
               machine: str = "pc", owned: bool = True,
               cmdline: Sequence[str] = ()) -> Guest:
        """Define (and by default start) a guest with ``disks``; call ``wait_ready`` next.

        ``network`` adds a virtio NIC on that libvirt network (which must be active);
        ``guest_agent`` adds the ``org.qemu.guest_agent.0`` channel, and the guest's
        ``/init`` starts a real qemu-ga on it (fsfreeze of the mounted disks, guest-exec,
        …; the initramfs root is never frozen, so commands keep working meanwhile).
        ``wait_ready`` then also waits for the agent to answer; :meth:`Guest.agent_command`
        talks to it. Without qemu-guest-agent on the host the channel is there but no
        agent answers. ``machine`` is the QEMU machine type, ``pc`` or ``q35``. An
        ``owned`` guest records this process as its owner: once the process is gone,
        :meth:`destroy_stale` (from any process) removes it. ``cmdline`` adds kernel
        arguments: ``stasis.listen=PORT`` serves a page on that TCP port (a guest with a
        NIC takes its address by DHCP).
        """
        name = self.domain_name(name)
        if not 1 <= len(disks) <= 8 or len({d.target for d in disks}) != len(disks):
            raise GuestKitError("a guest needs 1 to 8 disks with distinct targets")
        if self._lookup(name) is not None:
            raise GuestKitError(f"a domain named {name} already exists")
        if network is not None:
            self._check_network(network)
        boot = self.build()
        gdir = self.guests_dir / name
        if gdir.exists():
            shutil.rmtree(gdir)  # debris of a guest whose domain is gone
        gdir.mkdir(parents=True)
        control = self.socket_dir / f"{name}.ctl"
        agent = self.socket_dir / f"{name}.qga" if guest_agent else None
        for sock in (control, agent):
            if sock is not None:
                sock.unlink(missing_ok=True)
        guest_disks: dict[str, GuestDisk] = {}
        domain = None
        try:
            for spec in disks:
                path = gdir / f"{spec.target}.{spec.fmt}"
                create_disk(spec, path, sample_dir=self.kit_dir / "trees" / "sample")
                guest_disks[spec.target] = GuestDisk(spec.target, path, spec.fmt)
            cfg = DomainConfig(
                name=name, kernel=boot.kernel, initrd=boot.initrd,
                disks=tuple(DomainDisk(s.target, guest_disks[s.target].path, s.fmt, s.cache)
                            for s in disks),
                console_log=gdir / "console.log", control_socket=control, guest_dir=gdir,
                memory_mib=memory_mib, vcpus=vcpus, machine=machine, agent_socket=agent,
                network=network, extra_cmdline=tuple(cmdline),
                owner=process_identity(os.getpid()) if owned else None,
            )
            xml = domain_xml(cfg)
            (gdir / "domain.xml").write_text(xml)
            domain = self.conn.defineXML(xml)
            guest = Guest(self, name, domain, guest_dir=gdir, disks=guest_disks,
                          control_socket=control, agent_socket=agent)
            self._created[name] = guest
            if start:
                guest.start()
        except BaseException:
            if domain is not None:
                with contextlib.suppress(Exception):
                    self.destroy(name)
            shutil.rmtree(gdir, ignore_errors=True)
            raise
        return guest

    def _check_network(self, network: str) -> None:
        try:
            net = self.conn.networkLookupByName(network)
        except libvirt.libvirtError as e:
            raise GuestKitError(f"libvirt has no network {network!r}") from e
        if not net.isActive():
            raise GuestKitError(f"network {network!r} is not active "
                                f"(start it with 'virsh net-start {network}')")

    def get(self, name: str) -> Guest:
        """A guest object for an existing test guest (e.g. one made by another process)."""
        if name in self._created:
            return self._created[name]
        full = self.domain_name(name)
        domain = self._lookup(full)
        if domain is None:
            raise GuestKitError(f"no domain named {full}")
        xml = domain.XMLDesc(0)
        meta = guest_metadata(xml)
        if not meta:
            raise GuestKitError(f"domain {full} is not a test guest (no testkit metadata)")
        disks = {t: GuestDisk(t, p, "raw" if f == "raw" else "qcow2")
                 for t, (p, f) in disk_targets(xml).items()}
        agent = meta.get("agent")
        return Guest(self, full, domain, guest_dir=Path(meta["dir"]), disks=disks,
                     control_socket=Path(meta["control"]),
                     agent_socket=Path(agent) if agent else None)

    def _domains(self) -> Iterator[tuple[Any, dict[str, str]]]:
        for domain in self.conn.listAllDomains(0):
            try:
                meta = guest_metadata(domain.XMLDesc(0))
            except libvirt.libvirtError:
                continue  # undefined meanwhile
            if meta and domain.name().startswith(self.prefix):
                yield domain, meta

    def guests(self, *, everywhere: bool = False) -> list[GuestInfo]:
        """Test guests of this kit directory (of any, with ``everywhere``)."""
        out = []
        for domain, meta in self._domains():
            gdir = Path(meta["dir"])
            if everywhere or gdir.parent == self.guests_dir:
                state = _STATES.get(domain.state()[0], "unknown")
                out.append(GuestInfo(domain.name(), state, gdir))
        return sorted(out, key=lambda g: g.name)

    def destroy(self, name: str) -> bool:
        """Stop and undefine the test guest ``name``, delete its disks, logs and sockets.

        Refuses a domain without the kit's metadata. Returns whether anything was left.
        """
        full = name if name in self._created else self.domain_name(name)
        self._created.pop(full, None)
        domain = self._lookup(full)
        paths: list[Path] = [self.guests_dir / full, self.socket_dir / f"{full}.ctl",
                             self.socket_dir / f"{full}.qga"]
        if domain is not None:
            meta = guest_metadata(domain.XMLDesc(0))
            if not meta:
                raise GuestKitError(f"domain {full} is not a test guest; not touching it")
            # Only paths named after the guest: metadata is no licence to delete anything else.
            paths += [p for p in (Path(meta.get("dir", "")), Path(meta.get("control", "")),
                                  Path(meta.get("agent", "")))
                      if p.name in (full, f"{full}.ctl", f"{full}.qga")]
            if domain.isActive():
                _destroy_domain(domain)
            _undefine_domain(domain)
        found = domain is not None
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                found = True
            elif path.exists() or path.is_symlink():
                path.unlink(missing_ok=True)
                found = True
        return found

    def destroy_stale(self) -> list[str]:
        """Destroy the owned test guests, of any kit directory, whose owner process is gone
        (a test run killed before its cleanup); return their names.
        """
        stale = []
        for domain, meta in self._domains():
            owner = meta.get("owner")
            if owner and process_identity(int(owner.split(":")[0])) != owner:
                stale.append(domain.name())
        for name in stale:
            self.destroy(name)
        return stale

    def destroy_all(self, *, everywhere: bool = False) -> list[str]:
        """Destroy every test guest of this kit directory (of any, with ``everywhere``)."""
        names = [g.name for g in self.guests(everywhere=everywhere)]
        for name in names:
            self.destroy(name)
        return names
