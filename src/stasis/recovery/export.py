"""Disks of a point served over NBD straight from the repository.

The server is nbdkit with its python plugin (:mod:`stasis.recovery.nbdkit_plugin`),
which runs :class:`PluginServer` inside nbdkit: every read is answered from verified
chunks through a small cache, and block status reports the unstored (all-zero)
chunks as holes, so clients copy a sparse disk as sparse. nbdkit does the protocol
(handshake, export names, many connections, structured replies) and the python
plugin keeps the repository code in Python, where it already is; an NBD server of
our own would only re-implement what nbdkit does well.

The plugin gets the repository's credentials through an inherited pipe (never on a
command line nor in the environment), and imports Stasis from the same
``sys.path`` as the process that started it (passed in ``STASIS_PLUGIN_PATH``). It
holds a shared repository lock while it runs, so garbage collection never takes a
chunk a running export may still read.

A writable export keeps the point untouched: writes go to a qcow2 overlay whose
backing file is the read-only nbdkit export, served by qemu-nbd.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stasis.backends import open_backend
from stasis.blockio.nbd import die_with_parent, socket_base
from stasis.errors import ExportError, TargetExists, UsageError
from stasis.recovery.diskread import load_verified
from stasis.recovery.restore import select_disk
from stasis.repository import (
    ZERO_NAME,
    Credentials,
    DiskIndex,
    DiskRecord,
    Manifest,
    Repository,
    VmRecord,
)

PLUGIN = Path(__file__).with_name("nbdkit_plugin.py")
DEFAULT_CACHE_BYTES = 64 << 20
EXTENT_HOLE, EXTENT_ZERO = 1, 2
START_TIMEOUT = 60.0


# ------------------------------------------------------------------ the reader


class PointDiskReader:
    """Random access to one disk of a point: verified chunks through an LRU cache.

    Thread-safe: concurrent reads of one chunk load it once. A chunk that fails
    verification is an IntegrityError naming point, VM, disk and offset (and is
    quarantined, as a restore does). Written here rather than shared with file-level
    restore because an nbdkit plugin reads from several threads and
    :class:`~stasis.recovery.diskread.DiskReader` (file-like, one reader per thread)
    does not; both load chunks with :func:`~stasis.recovery.diskread.load_verified`.
    """

    def __init__(self, repo: Repository, point: Manifest, vm: VmRecord, disk: DiskRecord, *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.repo = repo
        self.point = point
        self.vm = vm
        self.disk = disk
        self.index: DiskIndex = repo.load_disk_index(point, vm, disk)
        self.size = self.index.virtual_size
        self.chunk_size = self.index.chunk_size
        self._max = max(2, cache_bytes // self.chunk_size)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._loading: dict[int, Future[bytes]] = {}
        self._lock = threading.Lock()
        self.chunks_loaded = 0

    def _chunk(self, i: int) -> bytes:
        with self._lock:
            data = self._cache.get(i)
            if data is not None:
                self._cache.move_to_end(i)
                return data
            fut = self._loading.get(i)
            mine = fut is None
            if fut is None:
                fut = self._loading[i] = Future()
        if not mine:
            return fut.result()
        try:
            data = self._load(i)
        except BaseException as e:
            fut.set_exception(e)
            with self._lock:
                self._loading.pop(i, None)
            raise
        fut.set_result(data)
        with self._lock:
            self._loading.pop(i, None)
            self._cache[i] = data
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
            self.chunks_loaded += 1
        return data

    def _load(self, i: int) -> bytes:
        return load_verified(self.repo, self.index, i, f"point {self.point.id[:12]}, VM "
                             f"{self.vm.name}, disk {self.disk.name}")

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"read of {length} bytes at {offset} is outside the disk "
                             f"({self.size} bytes)")
        parts: list[bytes] = []
        pos, end = offset, offset + length
        while pos < end:
            i = pos // self.chunk_size
            start = i * self.chunk_size
            stop = min(start + self.chunk_size, end)
            if self.index.entries[i] == ZERO_NAME:
                parts.append(bytes(stop - pos))
            else:
                parts.append(self._chunk(i)[pos - start:stop - start])
            pos = stop
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def extents(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        """(offset, length, is_zero) runs covering [offset, offset+length), by chunk."""
        runs: list[tuple[int, int, bool]] = []
        pos, end = offset, min(offset + length, self.size)
        while pos < end:
            i = pos // self.chunk_size
            stop = min((i + 1) * self.chunk_size, end)
            zero = self.index.entries[i] == ZERO_NAME
            if runs and runs[-1][2] == zero:
                o, n, _ = runs[-1]
                runs[-1] = (o, n + stop - pos, zero)
            else:
                runs.append((pos, stop - pos, zero))
            pos = stop
        return runs


# ----------------------------------------------------- what runs inside nbdkit


@dataclass
class PluginServer:
    """The plugin's state in nbdkit: configured by ``key=value`` parameters.

    ``repo=PATH point=ID disk=VM/DISK...`` (``disk`` repeats; the export name of
    each is the disk's name, or ``VM/DISK`` when two VMs share a disk name),
    ``credfd=N`` (a pipe holding the credentials as JSON), ``cache_mib=N``, ``lock=0``
    (take no shared repository lock: for an export that lives as long as a linked
    clone, whose point a hold keeps instead, so that gc is not kept waiting).
    """

    repo_path: str = ""
    point_id: str = ""
    disks: list[str] = field(default_factory=list)
    cred_fd: int = -1
    cache_bytes: int = DEFAULT_CACHE_BYTES
    lock: bool = True
    readers: dict[str, PointDiskReader] = field(default_factory=dict)
    default: str = ""
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def config(self, key: str, value: str) -> None:
        if key == "repo":
            self.repo_path = value
        elif key == "point":
            self.point_id = value
        elif key == "disk":
            self.disks.append(value)
        elif key == "credfd":
            self.cred_fd = int(value)
        elif key == "cache_mib":
            self.cache_bytes = int(value) << 20
        elif key == "lock":
            self.lock = value not in ("0", "no", "false")
        else:
            raise ValueError(f"unknown parameter {key}")

    def config_complete(self) -> None:
        creds = read_credentials(self.cred_fd)
        repo = Repository.open(open_backend(self.repo_path), creds)
        point = repo.resolve(self.point_id)
        if self.lock:
            self._stack.enter_context(repo.shared_lock(f"export {point.id[:12]}"))
        names = export_names(point, self.disks)
        for spec, name in names.items():
            vm, disk = spec.split("/", 1)
            vm_rec, disk_rec = select_disk(point, vm, disk)
            self.readers[name] = PointDiskReader(repo, point, vm_rec, disk_rec,
                                                 cache_bytes=self.cache_bytes)
        self.default = next(iter(self.readers))

    def reader(self, export_name: str) -> PointDiskReader:
        reader = self.readers.get(export_name or self.default)
        if reader is None:
            raise KeyError(f"no export named {export_name!r}")
        return reader

    def cleanup(self) -> None:
        self._stack.close()


def export_names(point: Manifest, specs: list[str]) -> dict[str, str]:
    """``VM/DISK`` → export name: the disk's name unless two VMs share it."""
    disk_names = [s.split("/", 1)[1] for s in specs]
    return {s: (s.split("/", 1)[1] if disk_names.count(s.split("/", 1)[1]) == 1 else s)
            for s in specs}


def read_credentials(fd: int) -> Credentials:
    if fd < 0:
        return Credentials()
    with os.fdopen(fd, "rb") as f:
        raw = json.loads(f.read() or b"{}")
    return Credentials(
        passphrase=base64.b64decode(raw["passphrase"]) if "passphrase" in raw else None,
        keyfile=base64.b64decode(raw["keyfile"]) if "keyfile" in raw else None,
    )


def _credentials_json(creds: Credentials) -> bytes:
    raw: dict[str, str] = {}
    if creds.passphrase is not None:
        raw["passphrase"] = base64.b64encode(creds.passphrase).decode()
    if creds.keyfile is not None:
        raw["keyfile"] = base64.b64encode(creds.keyfile).decode()
    return json.dumps(raw).encode()


# ------------------------------------------------------- the nbdkit process


def process_start(pid: int) -> str:
    """Start time of a running (not zombie) process, or "" when it does not run."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    if fields[0] in ("Z", "X"):
        return ""
    return fields[19]


def alive(pid: int, start: str) -> bool:
    return pid > 0 and bool(start) and process_start(pid) == start


def stop_process(pid: int, start: str, *, timeout: float = 15.0) -> None:
    """SIGTERM the process ``pid`` if it is still the one that started at ``start``;
    SIGKILL it if it has not gone after ``timeout``."""
    if not alive(pid, start):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid, start):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_exports_in(run_dir: str | Path) -> list[int]:
    """Stop every nbdkit or qemu-nbd whose command line names ``run_dir`` (where its
    socket lives); return their pids. This finds an export whose starter was killed
    before it could record the pid (between the start and the state file's update)."""
    needle = os.fsencode(str(run_dir).rstrip("/") + "/")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith((b"nbdkit", b"qemu-nbd")):
            continue
        if any(arg.startswith(needle) for arg in argv[1:]):
            pid = int(entry)
            stop_process(pid, process_start(pid), timeout=5)
            found.append(pid)
    return found


@dataclass
class ExportProcess:
    """An nbdkit serving disks of a point; ``detached`` ones outlive their starter."""

    pid: int
    start: str
    socket: str | None
    port: int | None
    exports: dict[str, str]  # VM/DISK -> export name
    log: str
    proc: subprocess.Popen[bytes] | None = None

    def uri(self, export: str) -> str:
        if self.socket is not None:
            return f"nbd+unix:///{export}?socket={self.socket}"
        return f"nbd://127.0.0.1:{self.port}/{export}"

    @property
    def alive(self) -> bool:
        return alive(self.pid, self.start)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            stop_process(self.pid, self.start)
        if self.socket is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket)


def start_nbdkit(
    repo: Repository, creds: Credentials, point: Manifest, disks: list[tuple[str, str]], *,
    socket_path: str | None = None, port: int | None = None, work_dir: Path,
    detached: bool = False, cache_bytes: int = DEFAULT_CACHE_BYTES, lock: bool = True,
) -> ExportProcess:
    """Start nbdkit serving ``disks`` ((vm, disk) pairs) of ``point`` read-only.

    Attached (the default) it dies with this process (``--exit-with-parent``);
    ``detached`` it runs in a session of its own until stopped. ``lock`` False: it
    takes no shared repository lock (see :class:`PluginServer`). Returns once it
    listens; raises ExportError with nbdkit's own words when it cannot start.
    """
    if (socket_path is None) == (port is None):
        raise UsageError("an export listens on a unix socket or a TCP port: give one")
    specs = [f"{vm}/{disk}" for vm, disk in disks]
    names = export_names(point, specs)
    pidfile = work_dir / f"nbdkit-{os.getpid()}-{time.monotonic_ns()}.pid"
    log_path = work_dir / "nbdkit.log"
    listen = ["-U", socket_path] if socket_path is not None else ["-i", "127.0.0.1", "-p",
                                                                    str(port)]
    r, w = os.pipe()
    cmd = ["nbdkit", "-f", "-r", "-P", str(pidfile), *listen]
    if not detached:
        cmd.append("--exit-with-parent")
    cmd += ["python", str(PLUGIN), f"repo={repo.url}", f"point={point.id}", f"credfd={r}",
            f"cache_mib={max(1, cache_bytes >> 20)}", *[f"disk={s}" for s in specs]]
    if not lock:
        cmd.append("lock=0")
    env = {**os.environ, "STASIS_PLUGIN_PATH": os.pathsep.join(p for p in sys.path if p)}
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        if detached:
            # nbdkit asks for SIGTERM when its parent dies (PR_SET_PDEATHSIG, even without
            # --exit-with-parent): a detached one must start after its parent is gone.
            shim = subprocess.run([sys.executable, "-c", _DETACH, *cmd], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=log, env=env, pass_fds=(r,),
                                  start_new_session=True, timeout=30)
            proc = None
            pid = int(shim.stdout.decode().strip() or 0)
            start = process_start(pid)
        else:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=env, pass_fds=(r,))
            pid = proc.pid
            start = process_start(pid)
    finally:
        os.close(r)
        log.close()
    with os.fdopen(w, "wb") as f, contextlib.suppress(BrokenPipeError):
        f.write(_credentials_json(creds))
    deadline = time.monotonic() + START_TIMEOUT
    try:
        # nbdkit writes its pid file once it listens.
        while not (pidfile.exists() and pidfile.stat().st_size > 0):
            if (proc.poll() is not None) if proc is not None else not alive(pid, start):
                raise ExportError(f"point {point.id[:12]}", _last_words(log_path))
            if time.monotonic() > deadline:
                raise ExportError(f"point {point.id[:12]}",
                                  f"nbdkit did not listen within {START_TIMEOUT:.0f} s")
            time.sleep(0.02)
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        elif proc is None:
            stop_process(pid, start, timeout=2)
        pidfile.unlink(missing_ok=True)
        if socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path)
        raise
    pidfile.unlink(missing_ok=True)
    return ExportProcess(pid, start, socket_path, port, names, str(log_path), proc)


# Run as ``python -c _DETACH CMD...``: fork, print the child's pid and exit; the child
# waits until it is orphaned, sends its stdout to the log (stderr), and becomes CMD.
_DETACH = """
import os, sys, time
parent = os.getpid()
pid = os.fork()
if pid:
    sys.stdout.write(str(pid))
    sys.stdout.flush()
    os._exit(0)
while os.getppid() == parent:
    time.sleep(0.001)
os.dup2(2, 1)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def _last_words(log_path: Path) -> str:
    try:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    # Python tracebacks end with the exception's message: that is the reason.
    for ln in reversed(lines):
        if "error:" in ln.lower() or "Error" in ln:
            return ln.split("error:", 1)[-1].strip() if "error:" in ln else ln.strip()
    return lines[-1] if lines else "nbdkit exited"


# --------------------------------------------------- stasis export, foreground


@dataclass
class ExportInfo:
    point: str
    vm: str
    disk: str
    virtual_size: int
    uri: str
    socket: str | None
    port: int | None
    writable: bool
    overlay: str | None
    keep_overlay: bool
    pid: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def create_overlay(path: Path, backing_uri: str, size: int) -> None:
    proc = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing_uri,
         "-o", "compat=1.1", str(path), str(size)], capture_output=True, text=True)
    if proc.returncode != 0:
        path.unlink(missing_ok=True)
        raise ExportError(str(path), f"qemu-img could not create the overlay: "
                          f"{proc.stderr.strip()}")


@contextlib.contextmanager
def serve(
    repo: Repository, creds: Credentials, point: Manifest, *, vm: str | None, disk: str | None,
    socket_path: Path | None, port: int | None, writable: bool, overlay: Path | None,
    keep_overlay: bool, run_dir: Path,
) -> Iterator[ExportInfo]:
    """Serve one disk of ``point`` for the ``with`` block, then remove every socket and
    (unless kept) the overlay."""
    vm_rec, disk_rec = select_disk(point, vm, disk)
    if socket_path is None and port is None:
        raise UsageError("give --socket PATH or --port N")
    if socket_path is not None and port is not None:
        raise UsageError("--socket and --port exclude each other")
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port")
    if not writable and (overlay is not None or keep_overlay):
        raise UsageError("--overlay and --keep-overlay go with --writable")
    if socket_path is not None:
        socket_path = socket_path.absolute()
        if socket_path.exists():
            raise TargetExists(socket_path)
        if not socket_path.parent.is_dir():
            raise UsageError(f"the directory {socket_path.parent} does not exist")
    if overlay is not None:
        overlay = overlay.absolute()
        if overlay.exists():
            raise TargetExists(overlay)
    work = Path(tempfile.mkdtemp(prefix=f"stasis-export-{os.getpid()}-",
                                 dir=socket_base(run_dir)))
    nbdkit: ExportProcess | None = None
    qemu_nbd: subprocess.Popen[bytes] | None = None
    overlay_made: Path | None = None
    try:
        pairs = [(vm_rec.name, disk_rec.name)]
        if not writable:
            nbdkit = start_nbdkit(repo, creds, point, pairs, work_dir=work,
                                  socket_path=str(socket_path) if socket_path else None,
                                  port=port)
            name = nbdkit.exports[f"{vm_rec.name}/{disk_rec.name}"]
            uri = nbdkit.uri(name)
            pid = nbdkit.pid
        else:
            inner = str(work / "point.sock")
            nbdkit = start_nbdkit(repo, creds, point, pairs, work_dir=work, socket_path=inner)
            name = nbdkit.exports[f"{vm_rec.name}/{disk_rec.name}"]
            overlay_made = overlay or work / f"{disk_rec.name}.overlay.qcow2"
            create_overlay(overlay_made, nbdkit.uri(name), disk_rec.virtual_size)
            qemu_nbd = _start_qemu_nbd(overlay_made, name, socket_path, port, work)
            uri = (f"nbd+unix:///{name}?socket={socket_path}" if socket_path
                   else f"nbd://127.0.0.1:{port}/{name}")
            pid = qemu_nbd.pid
        yield ExportInfo(point.id, vm_rec.name, disk_rec.name, disk_rec.virtual_size, uri,
                         str(socket_path) if socket_path else None, port, writable,
                         str(overlay_made) if overlay_made and keep_overlay else None,
                         keep_overlay, pid)
    finally:
        if qemu_nbd is not None:
            _stop_popen(qemu_nbd)
        if nbdkit is not None:
            nbdkit.stop()
        if socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
        if overlay_made is not None and not keep_overlay:
            overlay_made.unlink(missing_ok=True)
        for p in work.iterdir() if work.exists() else ():
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            work.rmdir()


def _start_qemu_nbd(overlay: Path, name: str, socket_path: Path | None, port: int | None,
                    work: Path) -> subprocess.Popen[bytes]:
    listen = (["--socket", str(socket_path)] if socket_path is not None
              else ["--bind", "127.0.0.1", "--port", str(port)])
    pidfile = work / "qemu-nbd.pid"
    cmd = ["qemu-nbd", "--format", "qcow2", "--export-name", name, "--shared", "16",
           "--persistent", "--cache=writeback", "--discard=unmap", "--pid-file", str(pidfile),
           *listen, str(overlay)]
    log = open(work / "qemu-nbd.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen([*die_with_parent(), *cmd], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
    finally:
        log.close()
    deadline = time.monotonic() + 30
    # qemu-nbd writes its pid file once it listens.
    while not (pidfile.exists() and pidfile.stat().st_size > 0):
        if proc.poll() is not None:
            text = (work / "qemu-nbd.log").read_text(errors="replace").strip()
            raise ExportError(str(overlay), text.splitlines()[-1] if text else
                              f"qemu-nbd exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            _stop_popen(proc)
            raise ExportError(str(overlay), "qemu-nbd did not listen within 30 s")
        time.sleep(0.02)
    return proc


def _stop_popen(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
