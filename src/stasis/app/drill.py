"""Recovery drills as jobs: ``stasis drill POINT|VM|GROUP`` brings the point's VMs up
in an isolated network, runs the checks, measures the RTO and tears everything down
(:mod:`stasis.recovery.drill`).

A drill is a job of kind ``drill`` whose result holds, per VM, its copy and addresses;
per check (``check 1``, ...) whether it passed, in how long, its output; and the
drill's outcome with the measured RTO (``drill``). The target is a point (id, unique
prefix, NAME@latest), or the name of a VM or a group: then its newest point (a VM that
has points only in a group's points is drilled alone from the newest of them).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from stasis.app.jobs import Warn
from stasis.app.kinds import (
    DrillCheckParams,
    DrillParams,
    Env,
    Plan,
    Where,
    env_here,
    run_here,
)
from stasis.app.models import DrillRecordModel, DrillResult
from stasis.errors import DrillFailed, PointNotFound, StasisError, UsageError
from stasis.progress import Progress
from stasis.repository import Credentials, Manifest, Repository
from stasis.repository.drills import DrillProof


def parse_checks(texts: list[str], default_timeout_s: float | None = None
                 ) -> list[DrillCheckParams]:
    """``--check KIND[@VM][~SECONDS][:ARG]`` options as a drill's checks."""
    from stasis.recovery.drill import parse_check

    specs = [parse_check(t, default_timeout_s) for t in texts]
    return [DrillCheckParams(kind=c.kind, arg=c.arg, vm=c.vm, timeout_s=c.timeout_s)
            for c in specs]


def _specs(p: DrillParams) -> list[Any]:
    from stasis.recovery.drill.checks import check_spec

    return [check_spec(c.kind, c.arg, c.vm, c.timeout_s) for c in p.checks]


def check_drill(p: DrillParams) -> None:
    """What is refused before anything is opened."""
    from stasis.recovery.drill.run import check_place

    check_place(p.mode, p.storage, p.pool)
    _specs(p)
    if p.order is not None and not p.order:
        raise UsageError("--order is empty; name the VMs of the point, e.g. --order db,app")


def resolve_target(repo: Repository, target: str) -> tuple[Manifest, list[str] | None]:
    """The point a drill of ``target`` brings up, and its VMs to bring up (None: all)."""
    points = repo.points()
    for spec in (target, f"{target}@latest"):
        try:
            return repo.resolve(spec, points), None
        except PointNotFound:
            continue
    holding = [m for m in points if any(v.name == target and v.kind == "vm" for v in m.vms)]
    if holding:
        return holding[-1], [target]
    raise PointNotFound(target)


def plan_drill(p: DrillParams, env: Env) -> Plan:
    check_drill(p)
    env.conn()
    repo = env.repo()
    point, vms = resolve_target(repo, p.target)
    names = vms or [v.name for v in point.vms if v.kind == "vm"]
    return Plan(p.target, names, repo, state=(point, vms))


def run_drill_job(p: DrillParams, plan: Plan, job: Any, env: Env) -> DrillResult:
    from stasis.recovery.drill import DrillReport, run_drill

    point, vms = plan.state
    creds = env.credentials() if p.mode == "instant" and env.credentials else None
    try:
        report: DrillReport = run_drill(
            env.conn(), env.repo(), point, vms=vms, mode=p.mode, network=p.network,
            checks=_specs(p), order=p.order, storage=p.storage, pool=p.pool, keep=p.keep,
            creds=creds,
            target=point.name if vms is None else vms[0],
            log=lambda level, text: job.log(level, text), progress=env.sink(job.cancel),
            cancel=job.cancel, run_dir=env.where().run)
    except DrillFailed as e:
        failed = getattr(e, "report", None)
        if failed is not None:
            _record(job, failed)
            _remember(failed, p, job, env, group=vms is None and point.kind == "group")
        raise
    _record(job, report)
    _remember(report, p, job, env, group=vms is None and point.kind == "group")
    return DrillResult.model_validate(report.to_dict())


def _remember(report: Any, p: DrillParams, job: Any, env: Env, *, group: bool) -> None:
    """The drill as the newest of its VMs (and group) in the catalog and, as a drill
    proof, in the repository; what cannot be written is said in the log, the drill's
    outcome stands."""
    from datetime import UTC, datetime, timedelta

    from stasis.catalog import DrillRecord, DrillStore

    started = datetime.fromisoformat(report.started_at)
    ended = started + timedelta(seconds=report.duration_s)
    subjects = [("vm", v.vm) for v in report.vms] or [("vm", vm) for vm in report.start_order]
    if group:
        subjects.append(("group", report.point_name))
    checks = [c.to_dict() for c in report.checks]
    try:
        with env.catalog() as c:
            store = DrillStore(c)
            for kind, subject in subjects:
                store.record(DrillRecord(
                    kind, subject, report.id, report.point, report.point_name, report.mode,
                    report.passed, report.rto_s, started.astimezone(UTC), ended,
                    job=job.id, repo=env.repo().id, policy=p.policy,
                    failure=report.failure or None,
                    checks=[x for x in checks if kind == "group" or x["vm"] in (subject, None)]))
    except StasisError as e:
        job.log("warning", f"the drill was not recorded as the newest of its VMs: {e.message}")
    try:
        for kind, subject in subjects:
            env.repo().record_drill(DrillProof(
                kind, subject, report.id, report.point, report.mode, report.passed,
                report.rto_s, started, ended, host=socket.gethostname(),
                checks=[{k: x[k] for k in ("kind", "arg", "vm", "passed", "seconds")}
                        for x in checks if kind == "group" or x["vm"] in (subject, None)],
                failure=report.failure))
    except (StasisError, OSError) as e:
        job.log("warning", f"the drill's proof was not written to the repository: {e}")


def _record(job: Any, report: Any) -> None:
    """The drill in its job's result: per VM its copy, per check its outcome."""
    for v in report.vms:
        job.result[v.vm] = {"point": report.point, "point_name": report.point_name,
                            "drilled_as": v.name, "addresses": v.addresses,
                            "running_after_s": v.running_after_s, "error": None}
    for n, c in enumerate(report.checks, 1):
        job.result[f"check {n}"] = c.to_dict()
    job.result["drill"] = {"id": report.id, "mode": report.mode, "passed": report.passed,
                           "rto_s": report.rto_s, "network": report.network,
                           "failure": report.failure or None, "kept": report.kept}


def drill(connect: str, open_repo: Callable[[], tuple[Repository, Credentials]],
          target: str, *, catalog: str | None, warn: Warn, mode: str = "restore",
          network: str | None = None, checks: list[DrillCheckParams] | None = None,
          order: list[str] | None = None, storage: Path | None = None,
          pool: str | None = None, keep: bool = False, progress: Progress | None = None,
          where: Where | None = None) -> DrillResult:
    """Drill ``target`` here, recorded as a job (DrillFailed: a check did not pass)."""
    params = DrillParams(target=target, mode=mode, network=network, checks=checks or [],
                         order=order, storage=storage, pool=pool, keep=keep)
    check_drill(params)
    opened: list[tuple[Repository, Credentials]] = []

    def both() -> tuple[Repository, Credentials]:
        if not opened:
            opened.append(open_repo())
        return opened[0]

    env = env_here(catalog=catalog, warn=warn, open_repo=lambda: both()[0], connect=connect,
                   where=where, progress=progress)
    env.credentials = lambda: both()[1]
    return cast(DrillResult, run_here(params, env))


def newest_drills(catalog: Any) -> list[DrillRecordModel]:
    """The newest drill of each VM and group, from the open ``catalog``."""
    from stasis.catalog import DrillStore

    return [DrillRecordModel.model_validate({
        **r.__dict__, "started": r.started.isoformat(), "ended": r.ended.isoformat()})
        for r in DrillStore(catalog).list()]
