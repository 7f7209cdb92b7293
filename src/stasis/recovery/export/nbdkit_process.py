"""The nbdkit process serving disks of a point: started, awaited, stopped.

The plugin (:mod:`.nbdkit_plugin`) imports Stasis from the same ``sys.path`` as the
process that started it (passed in ``STASIS_PLUGIN_PATH``) and reads the
credentials from an inherited pipe. An attached nbdkit dies with its starter; a
detached one runs in a session of its own until stopped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stasis.errors import ExportError, UsageError
from stasis.recovery.diskread import DEFAULT_CACHE_BYTES
from stasis.recovery.export.credentials import credentials_json
from stasis.recovery.export.pids import alive, stop_process
from stasis.recovery.export.plugin_server import export_names
from stasis.repository import Credentials, Manifest, Repository
from stasis.repository.process import start_token

PLUGIN = Path(__file__).with_name("nbdkit_plugin.py")
START_TIMEOUT = 60.0


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
            start = start_token(pid)
        else:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=env, pass_fds=(r,))
            pid = proc.pid
            start = start_token(pid)
    finally:
        os.close(r)
        log.close()
    with os.fdopen(w, "wb") as f, contextlib.suppress(BrokenPipeError):
        f.write(credentials_json(creds))
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
