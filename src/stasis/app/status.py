"""Protection status per VM, and a policy's run started now (queued for the service
that runs on this host, or run here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stasis.app.backup import Where
from stasis.app.models import JobModel, Queued, VmStatusRow, job_model
from stasis.app.policies import find_policy, load_policy_file
from stasis.backends import open_backend
from stasis.errors import StasisError
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Repository


def vm_status(catalog: str | None, *, open_repo: Callable[[], Repository] | None = None,
              policies: Path | None = None,
              on_damaged: Callable[[str, Exception], None] | None = None,
              ) -> list[VmStatusRow]:
    """Per VM: newest point and its age, next run, RPO met or breached, last verification.

    With ``open_repo`` the points index is brought up to date from that repository
    first, and only its points count.
    """
    from stasis.catalog import Catalog, PointIndex
    from stasis.service.status import vm_status as rows_of

    with Catalog.open(catalog) as c:
        repo_id = None
        if open_repo is not None:
            r = open_repo()
            PointIndex(c).sync(r, on_damaged=on_damaged)
            repo_id = r.id
        rows = rows_of(c, c.clock.now(), repo_id=repo_id,
                       policies=load_policy_file(policies) if policies else None)
    return [VmStatusRow.model_validate(row.to_dict()) for row in rows]


@dataclass
class PolicyRunNow:
    """A policy run started now: ``queued`` for the service, or run here as ``job``
    (None when the catalog could not record it; ``result`` then says per VM)."""

    queued: Queued | None = None
    job: JobModel | None = None
    result: dict[str, Any] = field(default_factory=dict)
    failure: StasisError | None = None  # the run's first failure, to exit with


def run_policy_now(name: str, *, catalog: str | None, open_repo: Callable[[], Repository],
                   location: str, connect: str, policies: Path | None = None,
                   here: bool = False, where: Where | None = None) -> PolicyRunNow:
    """Start policy ``name``'s run now: queued for the live service of this catalog, or,
    with none (or ``here``), run in this process as a job all the same.
    """
    from stasis.catalog import Catalog, JobStore
    from stasis.service.jobs import recorded, runner_alive
    from stasis.service.policy_run import plan_units, run_policy
    from stasis.service.prune import policy_retention

    with Catalog.open(catalog) as c:
        policy = find_policy(c, name, policies, doing="run")
        store = JobStore(c)
        live = [s for s in store.services() if runner_alive(s.host, s.pid, s.pid_start)]
        if live and not here:
            repo_id = str(Repository.read_config(open_backend(location))["id"])  # no key needed
            queued = store.create("backup", name, policy=name, repo=repo_id,
                                  params={"policy": name, "slot": "now"})
            store.log(queued.id, "info", "queued by 'stasis policy run'")
            return PolicyRunNow(queued=Queued(job=queued.id, service_pid=live[0].pid))
        r = open_repo()
        conn = lv.connect(connect)
        where = where or Where.default()
        plan = plan_units(conn, c, policy)
        with recorded(c, "backup", name, vms=plan.vms, policy=name, repo=r.id) as run:
            run_policy(run, policy, plan, conn=conn, repo=r, run_dir=where.run,
                       scratch_dir=where.scratch, retention=policy_retention)
        job = store.get(run.id) if run.id is not None else None
    return PolicyRunNow(job=job_model(job.to_dict()) if job else None, result=dict(run.result),
                        failure=run.failure)
