#!/usr/bin/env python3
"""Requests per second and p50/p99 latency of the REST API's listings under load.

For each catalog (``--catalogs``: a SQLite file and a throwaway PostgreSQL server, as
tests/postgres.py starts one) a population is made: ``--vms`` libvirt domains (the
test driver, from a node XML file of this run: each with two qcow2 disks, a network
interface and Stasis labels, so the listing asks libvirt what it asks of a real host),
``--points`` VM points of those VMs in a real repository (manifests sealed and
committed by the repository's own code, with their domain XML) and in the catalog's
points index, ``--jobs`` finished jobs with log lines, a real admin user and token.
The server is then started as a subprocess (:func:`server_command`) and listens on
127.0.0.1 only; ``wrk`` (Debian's) loads each route with ``--connections`` for
``--duration`` seconds after a ``--warmup`` it discards:

- ``GET /api/v1/points?limit=100``, ``GET /api/v1/points?vm=VM&limit=100`` and
  ``GET /api/v1/vms?limit=100`` (bearer token);
- the floors: ``GET /api/v1/problems/usage-error`` of the same server (public: no
  token, no catalog, no libvirt — what the framework and the process cost), and a
  bare uvicorn "hello" app on the same machine (what Python and uvicorn cost at all).

With ``--under-backups SECONDS``, the points listing is also loaded with the largest
``--connections`` for that long while backups run into the served repository (image
backups, one ``stasis backup image`` process after another, as a host's jobs write
while people look): errors, p50/p99, the backups done, and the server's resident
memory sampled every half second (at the start, its peak, at the end: flat means the
load leaves nothing behind).

The token reaches wrk through a Lua script that reads it from a file (never a command
line). Prints a Markdown table (``--json``: a JSON report), with requests/s, p50, p99,
errors (socket errors and non-2xx answers) and each route's ratio to the floors.

    flock /tmp/stasis-measure.lock python bench/bench_api.py        # about 5 min

The server is one process (one uvicorn worker): ``stasis serve`` runs the scheduler
and its job runner in that process, so the API cannot be forked into workers without
forking the scheduler too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

PASSPHRASE = b"bench-api"
GiB = 1 << 30


# ------------------------------------------------------------------ the population


def domain_xml(n: int) -> str:
    """A realistic domain of the test driver: two disks, a NIC, Stasis labels."""
    name = f"vm-{n:03d}"
    uuid = uuidlib.UUID(int=0x6695EB01F6A4830479AA97F2502E0000 + n)
    tier = ("web", "db", "cache")[n % 3]
    return f"""  <domain type='test'>
    <name>{name}</name>
    <uuid>{uuid}</uuid>
    <metadata>
      <stasis:labels xmlns:stasis="https://stasis.dev/xmlns/labels/1">
        <stasis:label key="tier" value="{tier}"/>
        <stasis:label key="team" value="team-{n % 5}"/>
      </stasis:labels>
    </metadata>
    <memory unit='MiB'>2048</memory>
    <vcpu>2</vcpu>
    <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/var/lib/libvirt/images/{name}-root.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/var/lib/libvirt/images/{name}-data.qcow2'/>
        <target dev='vdb' bus='virtio'/>
      </disk>
      <interface type='network'>
        <mac address='52:54:00:00:{n >> 8:02x}:{n & 0xff:02x}'/>
        <source network='default'/>
        <model type='virtio'/>
      </interface>
      <console type='pty'/>
    </devices>
  </domain>
"""


def node_file(path: Path, vms: int) -> str:
    """Write the test driver's node of ``vms`` domains; return its libvirt URI."""
    path.write_text("<node>\n" + "".join(domain_xml(n) for n in range(vms)) + "</node>\n")
    return f"test://{path}"


def make_repository(path: Path, vms: int, points: int) -> Any:
    """A repository of ``points`` VM points, round-robin over ``vms`` VMs, hourly."""
    from stasis.backends import open_backend
    from stasis.repository import DiskRecord, Manifest, Repository, VmRecord
    from stasis.repository.crypto import KdfParams
    from stasis.repository.index import IndexBuilder
    from stasis.repository.repo import new_point_id

    repo = Repository.init(open_backend(path), passphrase=PASSPHRASE, chunk_size=1 << 20,
                           kdf=KdfParams(memory_kib=1024, iterations=1))
    rnd = random.Random(15)
    size = 20 * GiB
    builder = IndexBuilder(64 << 20, 1 << 20, base=None, changed=None,
                           emit=repo.page_emitter())
    for i in range(64):
        builder.set(i, rnd.randbytes(32))
    index = repo.store_index(builder.finish())
    start = datetime(2026, 11, 1, tzinfo=UTC)
    parents: dict[str, str] = {}
    for i in range(points):
        n = i % max(vms, 1)
        name = f"vm-{n:03d}"
        first = name not in parents
        disks = [DiskRecord(name=d, index=index, virtual_size=size, format="qcow2",
                            source=f"/var/lib/libvirt/images/{name}-{r}.qcow2",
                            mode="full" if first else "incremental",
                            bytes_read=rnd.randrange(1, 4 * GiB), checkpoint=f"stasis-{i}")
                 for d, r in (("vda", "root"), ("vdb", "data"))]
        m = Manifest(id=new_point_id(), name=name, kind="vm", parent=parents.get(name),
                     time=(start + timedelta(hours=i // max(vms, 1), seconds=n)).isoformat(),
                     host="bench", chunk_size=1 << 20,
                     tags={"policy": "hourly"} if i % 2 else {},
                     vms=[VmRecord(name=name, kind="vm",
                                   uuid=str(uuidlib.UUID(int=0x6695EB01F6A4830479AA97F2502E0000
                                                         + n)),
                                   domain_xml=domain_xml(n), consistency="crash",
                                   state="running", disks=disks)])
        repo.commit(m)
        parents[name] = m.id
    return repo


def populate(catalog_url: str, repo: Any, *, vms: int, jobs: int) -> str:
    """The catalog's points index, ``jobs`` finished jobs with their logs, and an admin
    user; return the user's new token."""
    from stasis.app import accounts as acc
    from stasis.app import passwords
    from stasis.catalog import Catalog, JobStore, PointIndex

    os.environ[passwords.COST_ENV] = "m=1024,t=1,p=1"  # the user's password: not benched
    with Catalog.open(catalog_url) as c:
        acc.sync_roles(c)
        PointIndex(c).rebuild(repo)
        store = JobStore(c)
        now = c.clock.now()
        for j in range(jobs):
            name = f"vm-{j % max(vms, 1):03d}"
            job = store.create("backup", name, vms=[name], repo=repo.id, policy="hourly",
                               state="running", runner=("bench", 1, 1))
            store.log_many(job.id, [(now, "info", f"{name}: backing up vda, vdb"),
                                    (now, "info", f"{name}: 2 disks, 812 MiB read")])
            store.finish(job.id, "succeeded" if j % 10 else "failed",
                         result={name: {"point": f"{j:064x}"}}, bytes_read=812 << 20)
        acc.add_user(c, "bench", role="admin", password=b"bench password")
        return acc.create_token(c, "bench", "bench").secret


# ------------------------------------------------------------------ the server


def server_command(*, catalog: str, repo: Path, passphrase_file: Path, connect: str,
                   port: int) -> list[str]:
    """The command that runs the API and the scheduler as ``stasis serve`` does.

    Until ``stasis serve --listen`` exists this is this script's own ``serve`` (built
    as app/serve.py builds the service); then it becomes::

        [sys.executable, "-m", "stasis", "serve", "--repo", str(repo),
         "--passphrase-file", str(passphrase_file), "--catalog", catalog,
         "--connect", connect, "--listen", f"127.0.0.1:{port}"]
    """
    return [sys.executable, str(Path(__file__).resolve()), "serve", "--catalog", catalog,
            "--repo", str(repo), "--passphrase-file", str(passphrase_file),
            "--connect", connect, "--port", str(port)]


def serve(args: argparse.Namespace) -> None:
    """``serve``: the service of app/serve.py with the API beside it, until SIGTERM."""
    from stasis.api.app import create_app
    from stasis.api.context import ApiContext
    from stasis.api.server import ApiServer
    from stasis.app.accounts import CatalogAuthenticator
    from stasis.app.listen import Listen
    from stasis.app.serve import service
    from stasis.backends import open_backend
    from stasis.repository import Credentials, Repository

    def opened() -> tuple[dict[str, Repository], str]:
        secret = Path(args.passphrase_file).read_bytes().rstrip(b"\n")
        return {"main": Repository.open(open_backend(args.repo),
                                        Credentials(passphrase=secret))}, "main"

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with service(opened, policies=None, catalog=args.catalog, connect=args.connect) as run:
        svc = run.service
        ctx = ApiContext(catalog=svc.catalog, repositories={n: o() for n, o in
                                                            svc.repositories.items()},
                         default_repository=svc.default_repository, connect=args.connect,
                         authenticator=CatalogAuthenticator(svc.catalog), wake=svc.wake)
        api = ApiServer(create_app(ctx), Listen("127.0.0.1", args.port))
        api.start()
        svc.start()
        try:
            svc.serve(stop, tick_s=1.0)
        finally:
            api.stop()


HELLO = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"hello":"world"}'})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, lifespan="off", server_header=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(command: list[str], url: str, env: dict[str, str], log: Path,
            timeout: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running until the block ends, once ``url`` answers 200."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}):\n"
                                   + log.read_text(errors="replace")[-3000:])
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer {url} in {timeout:.0f} s")
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ PostgreSQL


@contextlib.contextmanager
def postgres_catalog() -> Iterator[str]:
    """A new database of a throwaway PostgreSQL server (as tests/postgres.py starts it)."""
    from tests.postgres import PostgresServer, _as_postgres, _bindir

    bindir = _bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (./scripts/setup installs it)")
    root = Path(tempfile.mkdtemp(prefix="stasis-pg-"))
    data, log = root / "data", root / "server.log"
    shutil.chown(root, "postgres", "postgres")
    server = PostgresServer(bindir, root, root)
    started = False
    try:
        _as_postgres(str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                     "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C.UTF-8")
        # fsync on, unlike the tests: a catalog's commits cost what they cost in service.
        options = f"-k {root} -c listen_addresses='' -c max_connections=200"
        _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                     "-w", "-t", "60", "start", log=log)
        started = True
        yield server.url(server.new_database())
    finally:
        if started:
            _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ wrk


@dataclass
class Run:
    catalog: str
    route: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors and non-2xx/3xx answers
    load: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(text: str) -> dict[str, float]:
    """requests/s, p50 and p99 (ms), requests and errors from ``wrk --latency``."""
    def grab(pattern: str, default: str | None = None) -> str:
        m = re.search(pattern, text)
        if m is None:
            if default is None:
                raise ValueError(f"wrk's output has no {pattern!r}:\n{text}")
            return default
        return m.group(1)

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", text)
    errors = sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
    errors += int(grab(r"Non-2xx or 3xx responses: (\d+)", "0"))
    return {"rps": float(grab(r"Requests/sec:\s+([\d.]+)")),
            "p50_ms": _ms(grab(r"\n\s+50%\s+(\S+)")),
            "p99_ms": _ms(grab(r"\n\s+99%\s+(\S+)")),
            "requests": int(grab(r"(\d+) requests in ")),
            "errors": errors}


TOKEN_LUA = """
local f = assert(io.open(os.getenv("STASIS_BENCH_TOKEN_FILE"), "r"))
wrk.headers["Authorization"] = "Bearer " .. f:read("*l")
f:close()
"""


def wrk(url: str, connections: int, seconds: float, script: Path | None,
        env: dict[str, str]) -> dict[str, float]:
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections),
               "-d", f"{max(seconds, 1):g}s", "--timeout", "60s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}")
    return parse_wrk(proc.stdout)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, timeout: float = 300.0) -> None:
    """Wait until the server is idle: wrk leaves the requests it had in flight when it
    stopped, and the server answers them after it, into the next run."""
    deadline = time.monotonic() + timeout
    before = cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_s(pid)
        if now - before < 0.05:  # under 10 % of a core: only the scheduler's tick
            return
        before = now


def load_routes(catalog: str, base: str, routes: dict[str, tuple[str, bool]],
                connections: list[int], args: argparse.Namespace, script: Path,
                env: dict[str, str], pid: int) -> list[Run]:
    runs = []
    for name, (path, authed) in routes.items():
        for c in connections:
            if args.warmup > 0:
                wrk(base + path, c, args.warmup, script if authed else None, env)
                settle(pid)
            load = os.getloadavg()[0]
            got = wrk(base + path, c, args.duration, script if authed else None, env)
            settle(pid)
            runs.append(Run(catalog, name, c, got["rps"], got["p50_ms"], got["p99_ms"],
                            int(got["requests"]), int(got["errors"]), load))
            print(f"  {catalog} {name} c={c}: {got['rps']:.1f} req/s, p50 "
                  f"{got['p50_ms']:.1f} ms, p99 {got['p99_ms']:.1f} ms, "
                  f"{int(got['errors'])} errors (load {load:.1f})", file=sys.stderr)
    return runs


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def under_backups(kind: str, base: str, path: str, connections: int, seconds: float,
                  script: Path, env: dict[str, str], pid: int, work: Path,
                  repo_path: Path) -> Run:
    """``path`` loaded for ``seconds`` while image backups run into the repository."""
    image = work / "backup-source.raw"
    with open(image, "wb") as f:
        f.write(os.urandom(32 << 20))  # incompressible: each backup stores and reads it
    stop = threading.Event()
    backups: list[int] = []
    samples: list[float] = []
    secret = (work / "passphrase").read_text().strip()
    benv = {**env, "STASIS_PASSPHRASE": secret, "STASIS_REPO": str(repo_path)}

    def back_up() -> None:
        n = 0
        while not stop.is_set():
            with open(image, "r+b") as f:  # a little new data every time
                f.seek((n % 32) << 20)
                f.write(os.urandom(1 << 20))
            proc = subprocess.run([sys.executable, "-m", "stasis.cli.main", "backup",
                                   "image", str(image), "--name", "under-load"], env=benv,
                                  capture_output=True, text=True, timeout=600)
            backups.append(proc.returncode)
            n += 1

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mib(pid))
            stop.wait(0.5)

    threads = [threading.Thread(target=back_up, daemon=True),
               threading.Thread(target=sample, daemon=True)]
    for t in threads:
        t.start()
    load = os.getloadavg()[0]
    try:
        got = wrk(base + path, connections, seconds, script, env)
    finally:
        stop.set()
        for t in threads:
            t.join(600)
    failed = [c for c in backups if c != 0]
    extra = {"backups": len(backups), "backups_failed": len(failed),
             "rss_start_mib": round(samples[0], 1) if samples else 0.0,
             "rss_peak_mib": round(max(samples), 1) if samples else 0.0,
             "rss_end_mib": round(rss_mib(pid), 1)}
    print(f"  {kind} {path} c={connections} under backups: {got['rps']:.1f} req/s, p50 "
          f"{got['p50_ms']:.1f} ms, p99 {got['p99_ms']:.1f} ms, {int(got['errors'])} errors; "
          f"{len(backups)} backups ({len(failed)} failed); RSS {extra['rss_start_mib']} -> "
          f"peak {extra['rss_peak_mib']} -> {extra['rss_end_mib']} MiB", file=sys.stderr)
    return Run(kind, "points?limit=100 under backups", connections, got["rps"],
               got["p50_ms"], got["p99_ms"], int(got["requests"]), int(got["errors"]), load,
               extra)


def check(base: str, token: str, path: str, items: int) -> None:
    """The route answers what the population holds (not an error page, fast)."""
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        body = json.loads(r.read())
    if len(body["items"]) != items:
        raise RuntimeError(f"{path} answered {len(body['items'])} items, not {items}")


# ------------------------------------------------------------------ the report


def fmt_ms(ms: float) -> str:
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1e3:.2f} s"


def render(runs: list[Run]) -> list[str]:
    """The table: every route of every catalog, and its share of the two floors."""
    floors = {(r.catalog, r.connections): r.rps for r in runs if r.route == "trivial route"}
    hello = {r.connections: r.rps for r in runs if r.route == "bare uvicorn"}
    lines = ["| catalog | route | connections | requests/s | p50 | p99 | errors "
             "| of the trivial route | of bare uvicorn |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        floor = floors.get((r.catalog, r.connections))
        bare = hello.get(r.connections)
        lines.append(
            f"| {r.catalog} | {r.route} | {r.connections} | {r.rps:.1f} | {fmt_ms(r.p50_ms)} "
            f"| {fmt_ms(r.p99_ms)} | {r.errors} "
            f"| {f'{r.rps / floor:.1%}' if floor and r.route != 'bare uvicorn' else '–'} "
            f"| {f'{r.rps / bare:.1%}' if bare else '–'} |")
    return lines


def bench_catalog(kind: str, url: str, work: Path, args: argparse.Namespace,
                  repo_path: Path, repo: Any, connect: str, env: dict[str, str]) -> list[Run]:
    t0 = time.monotonic()
    token = populate(url, repo, vms=args.vms, jobs=args.jobs)
    print(f"{kind}: catalog populated in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    token_file = work / f"token-{kind}"
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    script = work / "token.lua"
    script.write_text(TOKEN_LUA)
    env = {**env, "STASIS_BENCH_TOKEN_FILE": str(token_file)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = server_command(catalog=url, repo=repo_path, passphrase_file=work / "passphrase",
                             connect=connect, port=port)
    v = min(7, args.vms - 1)
    vm = f"vm-{v:03d}"
    routes = {"points?limit=100": ("/api/v1/points?limit=100", True),
              f"points?vm={vm}": (f"/api/v1/points?vm={vm}&limit=100", True),
              "vms?limit=100": ("/api/v1/vms?limit=100", True),
              "trivial route": ("/api/v1/problems/usage-error", False)}
    with running(command, base + "/api/v1/problems/usage-error", env,
                 work / f"server-{kind}.log") as server:
        check(base, token, "/api/v1/points?limit=100", min(100, args.points))
        check(base, token, f"/api/v1/points?vm={vm}&limit=100",
              min(100, len(range(v, args.points, args.vms))))
        check(base, token, "/api/v1/vms?limit=100", min(100, args.vms))
        runs = load_routes(kind, base, routes, args.connections, args, script, env,
                           server.pid)
        if args.under_backups > 0:
            runs.append(under_backups(kind, base, "/api/v1/points?limit=100",
                                      max(args.connections), args.under_backups, script, env,
                                      server.pid, work, repo_path))
        return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("serve", help="(internal) the server of a run")
    s.add_argument("--catalog", required=True)
    s.add_argument("--repo", required=True)
    s.add_argument("--passphrase-file", required=True)
    s.add_argument("--connect", required=True)
    s.add_argument("--port", type=int, required=True)
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--catalogs", default="sqlite,postgresql")
    parser.add_argument("--connections", default="10,100")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--under-backups", type=float, default=0.0, metavar="SECONDS",
                        help="also load the points listing this long while backups run")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
        return
    args.connections = [int(c) for c in str(args.connections).split(",")]
    # SIGTERM (a timeout, Ctrl-C's cousin) stops the servers and removes the work dir.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk; ./scripts/setup does)")

    with tempfile.TemporaryDirectory(prefix="stasis-bench-api-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # the PostgreSQL server (user postgres) is started from here
        pythonpath = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
        env = {**os.environ, "PYTHONPATH": pythonpath, "STASIS_STATE_DIR": str(work / "state")}
        passphrase = work / "passphrase"
        passphrase.touch(mode=0o600)
        passphrase.write_bytes(PASSPHRASE + b"\n")
        connect = node_file(work / "node.xml", args.vms)
        t0 = time.monotonic()
        repo = make_repository(work / "repo", args.vms, args.points)
        print(f"repository: {args.points} points in {time.monotonic() - t0:.1f} s",
              file=sys.stderr)
        runs: list[Run] = []
        for kind in [k.strip() for k in args.catalogs.split(",") if k.strip()]:
            if kind == "sqlite":
                runs += bench_catalog(kind, f"sqlite:///{work / 'catalog.db'}", work, args,
                                      work / "repo", repo, connect, env)
            elif kind == "postgresql":
                with postgres_catalog() as url:
                    runs += bench_catalog(kind, url, work, args, work / "repo", repo,
                                          connect, env)
            else:
                sys.exit(f"--catalogs: {kind!r} is sqlite or postgresql")
        port = free_port()
        with running([sys.executable, "-c", HELLO, str(port)], f"http://127.0.0.1:{port}/",
                     env, work / "hello.log") as hello:
            runs += load_routes("–", f"http://127.0.0.1:{port}", {"bare uvicorn": ("/", False)},
                                args.connections, args, work / "token.lua", env, hello.pid)
    report = {"vms": args.vms, "points": args.points, "jobs": args.jobs,
              "duration_s": args.duration, "warmup_s": args.warmup, "cores": os.cpu_count(),
              "runs": [asdict(r) for r in runs],
              "median_load": statistics.median([r.load for r in runs]) if runs else 0.0}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{args.vms} VMs, {args.points} points, {args.jobs} jobs; wrk "
              f"{args.duration:g} s after {args.warmup:g} s; {os.cpu_count()} cores, median "
              f"load {report['median_load']:.1f}")
        print("\n".join(render(runs)))


if __name__ == "__main__":
    main()
