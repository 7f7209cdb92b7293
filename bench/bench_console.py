#!/usr/bin/env python3
"""Time to first render of the web console, in a real browser: the dashboard and the
page of a VM with 500 points, against a floor.

A population is made as bench/bench_api.py makes one (its node XML of test-driver
domains, its catalog population and user), with its own points: ``--points`` points of
``vm-000``, hourly back from now (the VM's page), and ``--daily`` daily points of
every other VM (the dashboard's 30-day strips), all committed to a real repository,
and a policy with an RPO over them. The API and console are served (the app ``stasis
serve`` builds, in a subprocess of this script on 127.0.0.1, without the scheduler)
and Debian's chromium, driven by Playwright, opens each page ``--runs`` times, each
time in a new browser context (no cache, a new session cookie):

- **first render**: from the navigation's start to the moment the page's main
  content is in the document (a MutationObserver, installed before any script of the
  page, notes ``performance.now()`` when ``main h1`` appears: the console replaces
  its "Loading…" with the whole page at once, when the API has answered), checked
  afterwards to be the page asked for (the VM's 100 newest points, the dashboard's
  strips);
- **floor**: the same page, as the console rendered it (its HTML with the scripts
  taken out, the same stylesheet), served as a static page by the same server and
  timed the same way: what a page of that size costs to fetch, parse and lay out
  with no script and no API call.

Prints a Markdown table (``--json``: a JSON report) of the medians (and min/max) in
milliseconds, each page's API requests, the floors and the load.

    flock /tmp/stasis-measure.lock python bench/bench_console.py        # about 1 min
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid as uuidlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_api as ba  # noqa: E402

USER, PASSWORD = "bench", "bench password"  # what bench_api.populate makes
FLAGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]
GiB = 1 << 30

# Noted before any script of the page runs: when the main content is first there.
OBSERVER = """
window.__rendered = null;
new MutationObserver(() => {
  if (window.__rendered === null && document.querySelector("main h1")) {
    window.__rendered = performance.now();
  }
}).observe(document, { subtree: true, childList: true });
"""

POLICY = """
[[policy]]
name = "hourly"
select = ["vm-*"]
every = "1h"
rpo = "26h"
"""


# ------------------------------------------------------------------ the population


def make_repository(path: Path, vms: int, points: int, daily: int, now: datetime) -> Any:
    """``points`` hourly points of vm-000 up to an hour ago, ``daily`` daily points of
    each other VM; every point with two disks (the first of a chain full, then
    incremental), a consistency and a frozen window."""
    from stasis.backends import open_backend
    from stasis.repository import DiskRecord, Manifest, Repository, VmRecord
    from stasis.repository.crypto import KdfParams
    from stasis.repository.index import IndexBuilder
    from stasis.repository.repo import new_point_id

    repo = Repository.init(open_backend(path), passphrase=ba.PASSPHRASE, chunk_size=1 << 20,
                           kdf=KdfParams(memory_kib=1024, iterations=1))
    rnd = random.Random(16)
    builder = IndexBuilder(64 << 20, 1 << 20, base=None, changed=None,
                           emit=repo.page_emitter())
    for i in range(64):
        builder.set(i, rnd.randbytes(32))
    index = repo.store_index(builder.finish())
    plan = [(0, now - timedelta(hours=points - i)) for i in range(points)]
    plan += [(n, now - timedelta(days=daily - d, hours=n % 5))
             for n in range(1, vms) for d in range(daily)]
    parents: dict[int, str] = {}
    for n, at in sorted(plan, key=lambda p: p[1]):
        name = f"vm-{n:03d}"
        first = n not in parents
        disks = [DiskRecord(name=d, index=index, virtual_size=20 * GiB, format="qcow2",
                            source=f"/var/lib/libvirt/images/{name}-{r}.qcow2",
                            mode="full" if first else "incremental",
                            bytes_read=rnd.randrange(1, 4 * GiB),
                            stored_new=rnd.randrange(1, 64 << 20), checkpoint="stasis-x")
                 for d, r in (("vda", "root"), ("vdb", "data"))]
        m = Manifest(id=new_point_id(), name=name, kind="vm", parent=parents.get(n),
                     time=at.isoformat(), host="bench", chunk_size=1 << 20,
                     tags={"policy": "hourly"}, timings={"frozen_ms": rnd.uniform(2, 40)},
                     vms=[VmRecord(name=name, kind="vm",
                                   uuid=str(uuidlib.UUID(int=0x6695EB01F6A4830479AA97F2502E0000
                                                         + n)),
                                   domain_xml=ba.domain_xml(n),
                                   consistency=("crash", "filesystem")[rnd.randrange(2)],
                                   state="running", disks=disks)])
        repo.commit(m)
        parents[n] = m.id
    return repo


# ------------------------------------------------------------------ the server


def serve(args: argparse.Namespace) -> None:
    """``serve``: the API and console as ``stasis serve`` builds them (no scheduler),
    and the floor pages of ``--floor-dir`` at /bench-floor/NAME, until SIGTERM."""
    from fastapi.responses import HTMLResponse

    from stasis.api.app import create_app
    from stasis.api.context import ApiContext
    from stasis.api.routes.console import HEADERS
    from stasis.api.server import ApiServer
    from stasis.app.accounts import CatalogAuthenticator
    from stasis.app.listen import Listen
    from stasis.backends import open_backend
    from stasis.catalog import Catalog
    from stasis.repository import Credentials, Repository

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    secret = Path(args.passphrase_file).read_bytes().rstrip(b"\n")
    repo = Repository.open(open_backend(args.repo), Credentials(passphrase=secret))
    floors = Path(args.floor_dir)
    with Catalog.open(args.catalog) as c:
        ctx = ApiContext(catalog=c, repositories={"main": repo}, default_repository="main",
                         connect=args.connect, authenticator=CatalogAuthenticator(c))
        app = create_app(ctx)

        def floor(name: str) -> HTMLResponse:
            return HTMLResponse((floors / f"{name}.html").read_text(), headers=HEADERS)

        app.add_api_route("/bench-floor/{name}", floor, include_in_schema=False)
        api = ApiServer(app, Listen("127.0.0.1", args.port))
        api.start()
        try:
            while not stop:
                time.sleep(0.2)
        finally:
            api.stop()


# ------------------------------------------------------------------ the browser


@dataclass
class Target:
    name: str  # dashboard | vm
    hash: str
    check: str  # a selector the rendered page must hold
    count: int  # ... this many times


@dataclass
class Result:
    page: str
    runs_ms: list[float]
    floor_ms: list[float]
    api_requests: int
    html_bytes: int
    load: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.runs_ms)

    @property
    def floor(self) -> float:
        return statistics.median(self.floor_ms)


def _render_once(browser: Any, base: str, url: str, *, sign_in: bool,
                 check: tuple[str, int] | None
                 ) -> tuple[float, list[str], str, list[tuple[str, float, float]]]:
    ctx = browser.new_context(base_url=base, viewport={"width": 1280, "height": 860})
    try:
        if sign_in:
            r = ctx.request.post(f"{base}/api/v1/session",
                                 data={"user": USER, "password": PASSWORD})
            if r.status != 200:
                raise RuntimeError(f"sign-in failed: {r.status} {r.text()}")
        ctx.add_init_script(OBSERVER)
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        api: list[str] = []
        page.on("request", lambda q: api.append(q.url) if "/api/v1/" in q.url else None)
        page.goto(base + url)
        page.wait_for_function("() => window.__rendered !== null")
        rendered = float(page.evaluate("window.__rendered"))
        timings = page.evaluate(
            "() => performance.getEntriesByType('resource').map((e) =>"
            " [e.name, e.startTime, e.responseEnd])")
        html = ""
        if check is not None:
            selector, count = check
            got = page.locator(selector).count()
            if got != count:
                raise RuntimeError(f"{url}: {got} of {selector!r}, not {count}: "
                                   + page.locator("main").inner_text()[:500])
            html = page.evaluate(
                "(() => { const d = document.documentElement.cloneNode(true);"
                " d.querySelectorAll('script').forEach((s) => s.remove());"
                " return '<!doctype html>\\n' + d.outerHTML; })()")
        return rendered, api, html, timings
    finally:
        ctx.close()


def measure(browser: Any, base: str, target: Target, runs: int, floors: Path) -> Result:
    load = os.getloadavg()[0]
    times, html, api = [], "", []
    took: dict[str, list[float]] = {}  # per resource: ms from its start to its end
    _render_once(browser, base, target.hash, sign_in=True, check=None)  # warm the server
    for _ in range(runs):
        t, api, html, timings = _render_once(browser, base, target.hash, sign_in=True,
                                             check=(target.check, target.count))
        times.append(t)
        for url, start, end in timings:
            took.setdefault(url.removeprefix(base).split("?")[0], []).append(end - start)
    (floors / f"{target.name}.html").write_text(html)
    floor = [_render_once(browser, base, f"/bench-floor/{target.name}", sign_in=False,
                          check=None)[0] for _ in range(runs)]
    print(f"  {target.name}: first render median {statistics.median(times):.0f} ms, "
          f"floor {statistics.median(floor):.0f} ms, {len(api)} API requests "
          f"(load {load:.1f})", file=sys.stderr)
    slowest = sorted(((statistics.median(v), k) for k in took for v in [took[k]]
                      if k.startswith("/api/v1/")), reverse=True)[:3]
    if os.environ.get("BENCH_CONSOLE_TRACE"):
        for url, start, end in timings:
            print(f"    {start:7.0f} {end:7.0f} {url.removeprefix(base)}", file=sys.stderr)
    print("    slowest requests (median): " + ", ".join(f"{k} {ms:.0f} ms"
                                                      for ms, k in slowest), file=sys.stderr)
    return Result(target.name, times, floor, len(api), len(html.encode()), load,
                  {"api": sorted({u.split("/api/v1", 1)[1].split("?")[0] for u in api}),
                   "slowest_ms": {k: round(ms, 1) for ms, k in slowest}})


def render(results: list[Result]) -> list[str]:
    lines = ["| page | first render (median) | min – max | floor (static page, same size) "
             "| over the floor | API requests | page size |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r.page} | {r.median:.0f} ms | {min(r.runs_ms):.0f} – "
                     f"{max(r.runs_ms):.0f} ms | {r.floor:.0f} ms | "
                     f"{r.median / r.floor:.1f}× | {r.api_requests} | "
                     f"{r.html_bytes / 1024:.0f} KiB |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("serve", help="(internal) the server of a run")
    for opt in ("--catalog", "--repo", "--passphrase-file", "--connect", "--floor-dir"):
        s.add_argument(opt, required=True)
    s.add_argument("--port", type=int, required=True)
    parser.add_argument("--vms", type=int, default=20)
    parser.add_argument("--points", type=int, default=500, help="points of vm-000")
    parser.add_argument("--daily", type=int, default=30, help="daily points of each other VM")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    exe = shutil.which("chromium")
    if exe is None:
        sys.exit("Debian's chromium is not installed (./scripts/setup installs it)")
    from playwright import sync_api

    from stasis.catalog import Catalog, PolicyStore

    with tempfile.TemporaryDirectory(prefix="stasis-bench-console-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
               "STASIS_STATE_DIR": str(work / "state")}
        passphrase = work / "passphrase"
        passphrase.touch(mode=0o600)
        passphrase.write_bytes(ba.PASSPHRASE + b"\n")
        floors = work / "floors"
        floors.mkdir()
        connect = ba.node_file(work / "node.xml", args.vms)
        t0 = time.monotonic()
        now = datetime.now(UTC).replace(microsecond=0)
        repo = make_repository(work / "repo", args.vms, args.points, args.daily, now)
        catalog = f"sqlite:///{work / 'catalog.db'}"
        ba.populate(catalog, repo, vms=args.vms, jobs=args.jobs)
        with Catalog.open(catalog) as c:
            PolicyStore(c).store("hourly", POLICY)
        print(f"population: {args.vms} VMs, {args.points} + {(args.vms - 1) * args.daily} "
              f"points in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        port = ba.free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, str(Path(__file__).resolve()), "serve", "--catalog",
                   catalog, "--repo", str(work / "repo"), "--passphrase-file",
                   str(passphrase), "--connect", connect, "--floor-dir", str(floors),
                   "--port", str(port)]
        targets = [Target("dashboard", "/#/", "[data-testid^='strip-vm-']", args.vms),
                   Target(f"vm with {args.points} points", "/#/vms/vm-000",
                          "[data-testid='timeline'] a.mark", min(args.points, 100))]
        results = []
        with ba.running(command, base + "/api/v1/problems/usage-error", env,
                        work / "server.log"), sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, headless=True, args=FLAGS)
            try:
                for i, t in enumerate(targets):
                    t.name = ("dashboard", "vm")[i]
                    results.append(measure(browser, base, t, args.runs, floors))
            finally:
                browser.close()
    for r, label in zip(results, ("dashboard", f"a VM with {args.points} points"), strict=True):
        r.page = label
    report = {"vms": args.vms, "points": args.points, "daily": args.daily,
              "runs": args.runs, "cores": os.cpu_count(),
              "results": [asdict(r) | {"median_ms": r.median, "floor_ms_median": r.floor}
                          for r in results]}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{args.vms} VMs, vm-000 with {args.points} points, {args.daily} daily points "
              f"of each other VM; {args.runs} runs each, a new browser context each; "
              f"{os.cpu_count()} cores")
        print("\n".join(render(results)))


if __name__ == "__main__":
    main()
