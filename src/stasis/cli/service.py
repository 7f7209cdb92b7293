"""``stasis serve``, ``stasis policy run`` and ``stasis status``.

``serve`` is the long-running service (:mod:`stasis.service.runner`); ``policy
run`` hands a run to it through the catalog's queue when one runs on this host, and
otherwise runs the policy here, recorded as a job all the same; ``status`` shows
per VM, and per group, how protected it is.
"""

from __future__ import annotations

import logging
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from stasis.app.models import DrillStatusRow, GroupStatusRow, UnrecordedRun, VmStatusRow
from stasis.app.serve import ApiEndpoint, Opened, Serving, api_endpoint
from stasis.app.serve import service as serving
from stasis.app.status import group_status, run_policy_now, vm_status
from stasis.backends import open_backend
from stasis.cli.common import (
    CatalogOpt,
    ConnectOpt,
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    chosen_repository,
    configured_credentials,
    current_config,
    err,
    named_repository,
    open_repo,
    open_repo_for_export,
    out,
    print_model,
)
from stasis.errors import UsageError
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Repository

if TYPE_CHECKING:
    from stasis.api.server import ApiServer

PoliciesOpt = Annotated[Path | None, typer.Option(
    "--policies", envvar="STASIS_POLICIES", show_default=False,
    help="The policy file (TOML; $STASIS_POLICIES).")]


def serve(
    ctx: typer.Context,
    repo: Annotated[str | None, typer.Option(
        "--repo", "-r", envvar="STASIS_REPO", callback=named_repository, show_default=False,
        help="Serve this one repository (a path, a URL or a configured name; "
             "$STASIS_REPO) instead of every repository of the config file.")] = None,
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
    listen: Annotated[str | None, typer.Option(
        "--listen", envvar="STASIS_LISTEN", show_default=False,
        help="Serve the REST API here: HOST:PORT, [IPV6]:PORT or unix:/PATH "
             "($STASIS_LISTEN; else the config's listen; none: no API).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", envvar="STASIS_TLS_CERT", show_default=False,
        help="The API's certificate, PEM with its chain ($STASIS_TLS_CERT; else the "
             "config's tls_certificate).")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", envvar="STASIS_TLS_KEY", show_default=False,
        help="The certificate's private key, readable by its owner only "
             "($STASIS_TLS_KEY; else the config's tls_key).")] = None,
    insecure_http: Annotated[bool, typer.Option(
        "--insecure-http", help="Allow plain HTTP on an address that is not loopback "
                                "(only behind a proxy that does TLS).")] = False,
) -> None:
    """Run the scheduler, the job runner and the REST API until SIGTERM or Ctrl-C.

    It serves the repositories of the config file (each unlocked by its own key file
    or passphrase file; a policy's ``repository`` says which one it backs up into,
    else the default one), or the one --repo gives. At start, jobs left running by a
    service that died are marked failed and their debris cleaned, and each policy
    whose runs were missed meanwhile runs once. SIGTERM interrupts the running jobs
    cleanly (nothing half committed) and exits.

    With --listen (or the config's listen) it serves the REST API there too
    (docs/api.md): HTTPS with --tls-cert and --tls-key, plain HTTP only on a loopback
    address or a unix socket unless --insecure-http. On SIGTERM the jobs are
    interrupted first (a client following one sees it end), then requests in flight
    get a few seconds.
    """
    endpoint = _api_endpoint(ctx, listen, tls_cert, tls_key, insecure_http)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with serving(lambda: _served_repositories(ctx, repo, passphrase_file, key_file),
                 policies=policies, catalog=catalog, connect=connect, max_jobs=max_jobs,
                 max_repo_jobs=max_repo_jobs, keep_logs=keep_logs) as run:
        stop = threading.Event()
        run.service.start()
        api = _start_api(run, endpoint)
        try:
            where = f", API at {api.url}" if api is not None else ""
            err.print(f"stasis serve: {run.policies} policies, repositories "
                      f"{run.repositories} (default {run.default}), catalog {run.catalog}"
                      f"{where}", highlight=False)
            try:
                run.service.serve(stop, tick_s=tick)
            except KeyboardInterrupt:  # SIGTERM or Ctrl-C: serve() stopped the jobs
                err.print("stasis serve: stopped; running jobs were interrupted cleanly",
                          highlight=False)
        finally:
            if api is not None:
                api.stop()


def _api_endpoint(ctx: typer.Context, listen: str | None, tls_cert: Path | None,
                  tls_key: Path | None, insecure_http: bool) -> ApiEndpoint | None:
    """Where the API listens: each setting from its flag, else its environment
    variable, else the config file; checked before anything is opened."""
    config = current_config(ctx)
    values = config.values if config is not None else None
    if values is not None:
        listen = listen if listen is not None else values.listen
        if tls_cert is None and tls_key is None and values.tls_certificate is not None:
            tls_cert, tls_key = Path(values.tls_certificate), Path(values.tls_key or "")
        insecure_http = insecure_http or values.insecure_http
    return api_endpoint(listen, tls_certificate=tls_cert, tls_key=tls_key,
                        insecure_http=insecure_http)


def _start_api(run: Serving, endpoint: ApiEndpoint | None) -> ApiServer | None:
    """The API server listening at ``endpoint`` (None: none); if it cannot listen, the
    service, registered already, is stopped and unregistered before the error."""
    if endpoint is None:
        return None
    from stasis.api.server import serve_api

    try:
        return serve_api(run, endpoint)
    except BaseException:
        run.service.stop()
        raise


def _served_repositories(ctx: typer.Context, repo: str | None, passphrase_file: Path | None,
                         key_file: Path | None) -> Opened:
    """The repositories ``serve`` serves, opened, by name, the default one's name and
    their credentials: the one --repo names (its config name if it has one; a
    passphrase asked once, on a terminal), else the config file's, each unlocked by the
    file it names."""
    if repo is not None:
        chosen = chosen_repository()
        name = chosen[0] if chosen else repo
        one, creds = open_repo_for_export(repo, passphrase_file, key_file)
        return Opened({name: one}, name, {name: creds})
    config = current_config(ctx)
    if config is None or not config.repositories:
        raise UsageError("no repository to serve; nothing was started",
                         hint="Pass --repo, or name repositories in the config file "
                              "(--config; docs/config.md).")
    if passphrase_file is not None or key_file is not None:
        raise UsageError("--passphrase-file and --key-file open the one repository --repo "
                         "names; the config file's repositories are each unlocked by the "
                         "file it names; nothing was started")
    keys = {name: configured_credentials(r) for name, r in config.repositories.items()}
    opened = {name: Repository.open(open_backend(r.url), keys[name])
              for name, r in config.repositories.items()}
    return Opened(opened, config.default_repository or next(iter(opened)), keys)


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
    done = run_policy_now(name, catalog=catalog, policies=policies, location=repo,
                          open_repo=lambda: open_repo(repo, passphrase_file, key_file),
                          connect=connect, here=wait)
    if done.queued is not None:
        if json_output:
            print_model(done.queued)
        else:
            out.print(f"Job {done.queued.job} queued for the service (pid "
                      f"{done.queued.service_pid}); 'stasis job show {done.queued.job} --log' "
                      "follows it.", highlight=False)
        return
    if json_output:
        if done.job is not None:
            print_model(done.job)
        else:
            print_model(UnrecordedRun(result=done.result))
    else:
        for vm, res in done.result.items():
            what = f"point {res['point'][:12]}" if res.get("point") else f"failed: {res['error']}"
            out.print(f"{vm}: {what}", highlight=False)
        out.print(f"Job {done.job.id if done.job else None}: "
                  f"{done.job.state if done.job else 'done'}.", highlight=False)
    if done.failure is not None:
        raise done.failure


def status(
    repo: Annotated[str | None, typer.Option(
        "--repo", "-r", envvar="STASIS_REPO", show_default=False,
        help="Bring the points index up to date from this repository first.")] = None,
    policies: PoliciesOpt = None,
    catalog: CatalogOpt = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    groups: Annotated[bool, typer.Option(
        "--groups", help="Per group instead: newest group point, policies, newest drill "
                         "against the drill targets (a listing of its own with --json)."
    )] = False,
    json_output: JsonOpt = False,
) -> None:
    """Per VM: newest point and its age, next run, RPO met or breached, last verification,
    newest drill; then per group (only the groups with --groups)."""
    from stasis.cli.remote import remote

    server = remote()
    opened: list[Repository] = []

    def opener() -> Repository:  # the groups' rows need it too: one passphrase prompt
        assert repo is not None
        if not opened:
            opened.append(open_repo(repo, passphrase_file, key_file))
        return opened[0]

    def damaged(pid: str, e: Exception) -> None:
        err.print(f"[yellow]warning:[/] manifest {pid[:12]} is damaged ({e})",
                  highlight=False)

    def group_rows(learn: bool) -> list[GroupStatusRow]:
        if server is not None:
            return server.items("/group-status", GroupStatusRow.model_validate,
                                repository=repo)
        return group_status(catalog, policies=policies, on_damaged=damaged,
                            open_repo=opener if repo else None, learn_drills=learn)

    if groups:
        found = group_rows(True)
        if json_output:
            print_model(found)
        elif not found:
            out.print("No group is known to the catalog yet.")
        else:
            _print_groups(found)
        return
    rows = vm_status(catalog, policies=policies, on_damaged=damaged,
                     open_repo=opener if repo else None, learn_drills=True
                     ) if server is None else server.items("/status", VmStatusRow.model_validate,
                                                           repository=repo)
    if json_output:
        print_model(rows)
        return
    if not rows:
        out.print("No VM is known to the catalog yet.")
        return
    _print_vms(rows)
    found = group_rows(False)  # the VMs' rows learned the drill proofs already
    if found:
        _print_groups(found)


def _drill_cell(drill: DrillStatusRow | None) -> str:
    from stasis.service.status import age_text

    if drill is None:
        return "-"
    return (drill.state + (f", RTO {drill.rto_s:.0f}s" if drill.rto_s is not None else "")
            + (f", {age_text(drill.age_s)} ago" if drill.age_s is not None else ""))


def _print_groups(found: list[GroupStatusRow]) -> None:
    from stasis.service.status import age_text

    table = Table(box=None)
    for col in ("group", "vms", "newest point", "age", "next run", "drill"):
        table.add_column(col)
    for g in found:
        next_run = datetime.fromisoformat(g.next_run) if g.next_run else None
        table.add_row(g.group, ", ".join(g.vms) or "-", (g.newest_point or "-")[:12],
                      age_text(g.age_s),
                      next_run.strftime("%Y-%m-%d %H:%M:%S") if next_run else "-",
                      _drill_cell(g.drill))
    out.print(table)
    for g in found:
        if g.drill is not None and g.drill.state == "breached":
            out.print(f"drill target breached (group {g.group}): {g.drill.detail}")


def _print_vms(rows: list[VmStatusRow]) -> None:
    from stasis.service.status import age_text

    table = Table(box=None)
    for col in ("vm", "newest point", "age", "next run", "RPO", "last verify", "drill"):
        table.add_column(col)
    for row in rows:
        verify = row.last_verify
        next_run = datetime.fromisoformat(row.next_run) if row.next_run else None
        drill = row.drill
        table.add_row(row.vm, (row.newest_point or "-")[:12], age_text(row.age_s),
                      next_run.strftime("%Y-%m-%d %H:%M:%S") if next_run else "-",
                      row.rpo, f"{verify['state']} (job {verify['job']})" if verify else "-",
                      _drill_cell(drill))
    out.print(table)
    detail = [(row.vm, d) for row in rows for d in [row.drill, *row.group_drills]
              if d is not None and d.state == "breached"]
    for vm, d in dict.fromkeys((vm, d.detail) for vm, d in detail):
        out.print(f"drill target breached ({vm}): {d}")
    sites = [(row.vm, x) for row in rows for x in row.sites]
    if sites:
        table = Table(box=None)
        for col in ("vm", "policy", "site", "newest point", "time", "copy lag"):
            table.add_column(col)
        for vm, x in sites:
            where = f"{x.role} {x.repository or '(default)'}"
            lag = "-" if x.role == "source" else (
                f"{age_text(x.lag_s)}, {x.lag_points} point(s)" if x.lag_s is not None
                else f"nothing copied yet, {x.lag_points} point(s)")
            table.add_row(vm, x.policy, where, (x.newest_point or "-")[:12],
                          x.newest_time[:19] if x.newest_time else "-", lag)
        out.print(table)
