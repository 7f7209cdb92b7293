"""``stasis serve``, ``stasis policy run`` and ``stasis status``.

``serve`` is the long-running service (:mod:`stasis.service.runner`); ``policy
run`` hands a run to it through the catalog's queue when one runs on this host, and
otherwise runs the policy here, recorded as a job all the same; ``status`` shows
per VM how protected it is.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from stasis.backends import open_backend
from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    credentials,
    err,
    open_repo,
    out,
    print_json,
)
from stasis.cli.jobs import CatalogOpt
from stasis.cli.vms import ConnectOpt
from stasis.errors import PolicyNotFound, UsageError
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Repository
from stasis.settings import run_dir, scratch_dir

if TYPE_CHECKING:
    from stasis.catalog import Catalog
    from stasis.catalog.db import Clock
    from stasis.service.policy import Policy

PoliciesOpt = Annotated[Path | None, typer.Option(
    "--policies", envvar="STASIS_POLICIES", show_default=False,
    help="The policy file (TOML; $STASIS_POLICIES).")]

# Only for tests: "RATE@EPOCH" makes the service's clock run RATE times as fast as
# the wall clock from the Unix time EPOCH, so that a 1m schedule comes every few
# seconds. Never set it in production.
TEST_CLOCK_ENV = "STASIS_TEST_CLOCK_RATE"


def service_clock() -> Clock:
    from stasis.catalog.db import utc_now

    spec = os.environ.get(TEST_CLOCK_ENV, "")
    if not spec:
        return utc_now
    rate_text, _, epoch_text = spec.partition("@")
    rate, epoch = float(rate_text), float(epoch_text)

    def fast() -> datetime:
        now = datetime.now(UTC).timestamp()
        return datetime.fromtimestamp(epoch + (now - epoch) * rate, UTC)

    return fast


def _duration(text: str, what: str) -> timedelta:
    from stasis.service.duration import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None


def find_policy(c: Catalog, name: str, policies: Path | None, *, doing: str) -> Policy:
    """Policy ``name`` from the file ``policies``, else from those stored in the catalog."""
    from stasis.service.status import stored_policies

    found = [p for p in (_load(policies) if policies else stored_policies(c)) if p.name == name]
    if not found:
        where = str(policies) if policies else f"the catalog {c.shown}"
        raise PolicyNotFound(f"no policy named '{name}' in {where}. Nothing was {doing}; "
                             "'stasis policy list FILE' shows the policies.")
    return found[0]


def _load(path: Path | None) -> list[Policy]:
    from stasis.service.policy import load_policies

    if path is None:
        raise UsageError("give the policy file with --policies FILE (or $STASIS_POLICIES)")
    return load_policies(path)


def serve(
    repo: RepoOpt,
    policies: PoliciesOpt = None,
    catalog: CatalogOpt = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    max_jobs: Annotated[int, typer.Option(min=1, help="Jobs at once on this host.")] = 2,
    max_repo_jobs: Annotated[int, typer.Option(
        min=1, help="Jobs at once on one repository.")] = 1,
    keep_logs: Annotated[str, typer.Option(
        help="Delete job log lines older than this (e.g. 30d, 12w).")] = "30d",
    tick: Annotated[float, typer.Option(help="Seconds between scheduler passes.")] = 1.0,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Run the scheduler and the job runner until SIGTERM or Ctrl-C.

    At start, jobs left running by a service that died are marked failed and their
    debris cleaned, and each policy whose runs were missed meanwhile runs once.
    SIGTERM interrupts the running jobs cleanly (nothing half committed) and exits.
    """
    from stasis.catalog import Catalog
    from stasis.service.prune import policy_retention
    from stasis.service.runner import Limits, Service

    keep = _duration(keep_logs, "--keep-logs")
    loaded = _load(policies)
    creds = credentials(passphrase_file, key_file)
    # Opened now, so that it fails here, not at the first job, when it cannot be.
    r = Repository.open(open_backend(repo), creds)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Catalog.open(catalog, clock=service_clock()) as c:
        service = Service(c, loaded, open_repo=lambda: r, connect=lambda: lv.connect(connect),
                          run_dir=run_dir(), scratch_dir=scratch_dir(),
                          limits=Limits(max_jobs, max_repo_jobs), keep_logs=keep,
                          retention=policy_retention)
        stop = threading.Event()
        service.start()
        err.print(f"stasis serve: {len(loaded)} policies, repository {r.url}, catalog "
                  f"{c.shown}", highlight=False)
        try:
            service.serve(stop, tick_s=tick)
        except KeyboardInterrupt:  # SIGTERM or Ctrl-C: serve() stopped the jobs
            err.print("stasis serve: stopped; running jobs were interrupted cleanly",
                      highlight=False)


def policy_run(
    name: Annotated[str, typer.Argument(help="The policy to run now.")],
    repo: RepoOpt,
    policies: PoliciesOpt = None,
    catalog: CatalogOpt = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    wait: Annotated[bool, typer.Option(
        help="Run it here even when a service runs (instead of queueing it).")] = False,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Start a policy's run now: queued for the running service, or run here.

    The policy comes from --policies, else from the catalog (as the service last
    loaded it).
    """
    from stasis.catalog import Catalog, JobStore
    from stasis.service.jobs import recorded, runner_alive
    from stasis.service.policy_run import plan_units, run_policy
    from stasis.service.prune import policy_retention

    with Catalog.open(catalog) as c:
        policy = find_policy(c, name, policies, doing="run")
        store = JobStore(c)
        live = [s for s in store.services() if runner_alive(s.host, s.pid, s.pid_start)]
        if live and not wait:
            repo_id = str(Repository.read_config(open_backend(repo))["id"])  # no key needed
            queued = store.create("backup", name, policy=name, repo=repo_id,
                                  params={"policy": name, "slot": "now"})
            store.log(queued.id, "info", "queued by 'stasis policy run'")
            if json_output:
                print_json({"job": queued.id, "state": "queued", "service_pid": live[0].pid})
            else:
                out.print(f"Job {queued.id} queued for the service (pid {live[0].pid}); "
                          f"'stasis job show {queued.id} --log' follows it.", highlight=False)
            return
        r = open_repo(repo, passphrase_file, key_file)
        conn = lv.connect(connect)
        plan = plan_units(conn, c, policy)
        with recorded(c, "backup", name, vms=plan.vms, policy=name, repo=r.id) as run:
            run_policy(run, policy, plan, conn=conn, repo=r, run_dir=run_dir(),
                       scratch_dir=scratch_dir(), retention=policy_retention)
        job = store.get(run.id) if run.id is not None else None
    if json_output:
        print_json(job.to_dict() if job else {"state": "unrecorded", "result": run.result})
    else:
        for vm, res in run.result.items():
            what = f"point {res['point'][:12]}" if res.get("point") else f"failed: {res['error']}"
            out.print(f"{vm}: {what}", highlight=False)
        out.print(f"Job {run.id}: {job.state if job else 'done'}.", highlight=False)
    if run.failure is not None:
        raise run.failure


def status(
    repo: Annotated[str | None, typer.Option(
        "--repo", "-r", envvar="STASIS_REPO", show_default=False,
        help="Bring the points index up to date from this repository first.")] = None,
    policies: PoliciesOpt = None,
    catalog: CatalogOpt = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Per VM: newest point and its age, next run, RPO met or breached, last verification."""
    from stasis.catalog import Catalog, PointIndex
    from stasis.service.status import age_text, vm_status

    with Catalog.open(catalog) as c:
        repo_id = None
        if repo is not None:
            r = open_repo(repo, passphrase_file, key_file)
            PointIndex(c).sync(r, on_damaged=lambda pid, e: err.print(
                f"[yellow]warning:[/] manifest {pid[:12]} is damaged ({e})", highlight=False))
            repo_id = r.id
        rows = vm_status(c, c.clock(), repo_id=repo_id,
                         policies=_load(policies) if policies else None)
    if json_output:
        print_json([row.to_dict() for row in rows])
        return
    if not rows:
        out.print("No VM is known to the catalog yet.")
        return
    table = Table(box=None)
    for col in ("vm", "newest point", "age", "next run", "RPO", "last verify"):
        table.add_column(col)
    for row in rows:
        verify = row.last_verify
        table.add_row(row.vm, (row.newest_point or "-")[:12], age_text(row.age_s),
                      row.next_run.strftime("%Y-%m-%d %H:%M:%S") if row.next_run else "-",
                      row.rpo, f"{verify['state']} (job {verify['job']})" if verify else "-")
    out.print(table)
