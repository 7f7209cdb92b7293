"""Protection status per VM, and a policy's run started now (queued for the service
that runs on this host, or run here)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stasis.app.catalogs import using
from stasis.app.kinds import Env, Params, Plan, PolicyParams, Where, opened, run_here
from stasis.app.models import GroupStatusRow, JobModel, Queued, VmStatusRow, job_model
from stasis.app.policies import find_policy, load_policy_file
from stasis.app.submit import live_services, submit
from stasis.errors import StasisError
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Repository

if TYPE_CHECKING:
    from stasis.catalog import Catalog


def vm_status(catalog: str | Catalog | None, *,
              open_repo: Callable[[], Repository] | None = None,
              policies: Path | None = None,
              on_damaged: Callable[[str, Exception], None] | None = None,
              learn_drills: bool = False) -> list[VmStatusRow]:
    """Per VM: newest point and its age, next run, RPO met or breached, last verification.

    With ``open_repo`` the points index is brought up to date from that repository
    first, and only its points count; with ``learn_drills`` too, its drill proofs newer
    than the catalog's drills are learned (a copy brings them to a second site). That
    reads every proof, so a one-off command asks for it, not the API's every request.
    """
    from stasis.service.status import vm_status as rows_of

    with using(catalog) as c:
        repo_id = _synced(c, open_repo, on_damaged, learn_drills)
        rows = rows_of(c, c.clock.now(), repo_id=repo_id,
                       policies=load_policy_file(policies) if policies else None)
    return [VmStatusRow.model_validate(row.to_dict()) for row in rows]


def group_status(catalog: str | Catalog | None, *,
                 open_repo: Callable[[], Repository] | None = None,
                 policies: Path | None = None,
                 on_damaged: Callable[[str, Exception], None] | None = None,
                 learn_drills: bool = False) -> list[GroupStatusRow]:
    """Per group: newest group point and its age, the policies naming it, its newest
    drill against their targets (``open_repo``, ``learn_drills``: as for
    :func:`vm_status`)."""
    from stasis.service.status import group_status as rows_of

    with using(catalog) as c:
        repo_id = _synced(c, open_repo, on_damaged, learn_drills)
        rows = rows_of(c, c.clock.now(), repo_id=repo_id,
                       policies=load_policy_file(policies) if policies else None)
    return [GroupStatusRow.model_validate(row.to_dict()) for row in rows]


def _synced(c: Catalog, open_repo: Callable[[], Repository] | None,
            on_damaged: Callable[[str, Exception], None] | None, learn_drills: bool
            ) -> str | None:
    """The id of the repository ``open_repo`` opens, once its points are indexed (and
    with ``learn_drills`` its drill proofs learned); None without one."""
    from stasis.catalog import DrillStore, PointIndex

    if open_repo is None:
        return None
    r = open_repo()
    PointIndex(c).sync(r, on_damaged=on_damaged)
    if learn_drills:
        DrillStore(c).learn(r)  # a proof that does not open is as good as none
    return r.id


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
    from stasis.service.jobs import JobRun, recorded
    from stasis.service.prune import policy_retention

    with Catalog.open(catalog) as c:
        policy = find_policy(c, name, policies, doing="run")
        store = JobStore(c)
        live = live_services(store)
        if live and not here:
            params = PolicyParams(policy=name, repo=location)
            queued = submit(catalog, "policy", params, by="'stasis policy run'")
            return PolicyRunNow(queued=Queued(job=queued, service_pid=live[0].pid))
        runs: list[JobRun] = []

        @contextmanager
        def record(plan: Plan, params: Params) -> Iterator[JobRun]:
            with recorded(c, "backup", name, vms=plan.vms, policy=name,
                          repo=plan.repo.id if plan.repo else None,
                          params=params.model_dump(mode="json")) as run:
                runs.append(run)
                yield run

        env = Env(open_repo=open_repo, connect=lambda: lv.connect(connect),
                  catalog=lambda: opened(c), record=record,
                  dirs=(lambda: where) if where is not None else Where.default,
                  find_policy=lambda _c, _name: policy, retention=policy_retention)
        run_here(PolicyParams(policy=name), env)
        run = runs[0]
        job = store.get(run.id) if run.id is not None else None
    return PolicyRunNow(job=job_model(job.to_dict()) if job else None, result=dict(run.result),
                        failure=run.failure)
