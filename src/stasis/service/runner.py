"""``stasis serve``: the scheduler and the job runner in one long-running process.

Every tick the scheduler queues a job for each policy whose slot came (one job for
however many slots passed), and the runner starts queued jobs of any kind (the
registry of :mod:`stasis.app.kinds`: backups, restores, verify, prune, gc, policy
runs) in threads, oldest first, within the limits: at most ``per_host`` jobs at
once, at most ``per_repo`` on one repository, and never a VM in two backups or
restores (a job whose VM is busy waits in the queue). Jobs queued by ``stasis policy
run`` or a command's ``--queue`` are taken the same way; a job whose kind or
parameters are unknown fails with the reason. A job that ``stasis job cancel`` asked
to stop is interrupted at the next tick, with nothing committed. A tick comes every
``tick_s`` seconds, and at once when a command on this host queued a job or asked
to cancel one (it wakes the service: :mod:`stasis.service.wake`) and when a job
ends (its slot is free for the next).

At start the service marks failed, with a log line, the jobs left ``running`` by a
runner that died, and cleans their debris (libvirt backup job, checkpoint of a
point that never committed, scratch files); then each policy whose slots passed
while no service ran runs once. Stopping (SIGTERM, Ctrl-C) cancels the running
jobs, which end ``interrupted`` with nothing committed, and waits for them.

The clock is injected: scheduling decisions and the catalog's times come from it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import libvirt

from stasis.app.kinds import (
    KINDS,
    OCCUPYING,
    CopyParams,
    DrillParams,
    Env,
    Kind,
    Params,
    Plan,
    PolicyParams,
    Where,
    job_params,
    opened,
    parse_params,
)
from stasis.catalog import Catalog, Job, JobStore, PointIndex, PolicyStore
from stasis.clock import Clock
from stasis.errors import HypervisorError, PolicyNotFound, StasisError, UsageError, VmState
from stasis.hypervisor import libvirt_api as lv
from stasis.memory import release_free_memory
from stasis.progress import Progress
from stasis.protection.doctor import clean_vm
from stasis.repository import Credentials, Repository
from stasis.rundirs import remove_dead_debris
from stasis.service.jobs import (
    JobRun,
    LiveProgress,
    dead_jobs,
    expire_logs,
    fail_dead_job,
    recorded,
    this_runner,
)
from stasis.service.notify import Notifier
from stasis.service.policy import Policy
from stasis.service.policy_run import UnitProgress
from stasis.service.rpo import rpo_status

log = logging.getLogger("stasis.serve")

Retention = Callable[[Repository, Policy, datetime, JobRun], None]


@dataclass
class Limits:
    per_host: int = 2  # jobs at once in this service
    per_repo: int = 1  # jobs at once on one repository


@dataclass
class Running:
    job: Job
    thread: threading.Thread
    cancel: threading.Event
    vms: set[str] = field(default_factory=set)


class Service:
    """The scheduler and runner over one catalog, named repositories and one libvirt.

    ``repositories`` opens each repository by name (called once, when first needed);
    ``default_repository`` is the one of policies that name none (the first name when
    not given). A queued job names its repository by id.
    """

    def __init__(
        self,
        catalog: Catalog,
        policies: list[Policy],
        *,
        repositories: Mapping[str, Callable[[], Repository]],
        default_repository: str | None = None,
        connect: Callable[[], libvirt.virConnect],
        run_dir: Path,
        scratch_dir: Path,
        limits: Limits | None = None,
        keep_logs: timedelta | None = None,
        retention: Retention | None = None,
        notifier: Notifier | None = None,
        unit_progress: UnitProgress | None = None,
        policies_from_catalog: bool = False,
        credentials: Mapping[str, Credentials] | None = None,
    ) -> None:
        self.catalog = catalog
        # The catalog's policies are the truth (they are edited through the API) rather
        # than a file's: each tick takes up what changed there since the last.
        self.policies_from_catalog = policies_from_catalog
        self._sources: dict[str, str] = {p.name: p.source for p in policies}
        self.clock: Clock = catalog.clock
        self.policies = {p.name: p for p in policies}
        if not repositories:
            raise ValueError("a service needs at least one repository")
        self.repositories = dict(repositories)
        self.default_repository = default_repository or next(iter(self.repositories))
        self.connect = connect
        self.run_dir, self.scratch_dir = run_dir, scratch_dir
        self.limits = limits or Limits()
        self.keep_logs = keep_logs
        self.retention = retention
        self.notifier = notifier or Notifier(clock=self.clock)
        self.unit_progress = unit_progress
        self.jobs = JobStore(catalog)
        self.states = PolicyStore(catalog)
        self.running: dict[int, Running] = {}
        self._lock = threading.Lock()
        self._service_id: int | None = None
        self._waiting_logged: set[int] = set()
        self._opened: dict[str, Repository] = {}
        self._last_housekeeping: datetime | None = None
        # The next slot of each copy with a schedule of its own, by (policy,
        # destination): kept here, not in the catalog, since any copy run sends every
        # point the destination lacks, so a slot missed while no service ran is made
        # up by the next one.
        self._copy_next: dict[tuple[str, str], datetime] = {}
        # The next drill of each policy with a drill schedule, kept the same way.
        self._drill_next: dict[str, datetime] = {}
        # Each repository's credentials, concrete, for the exports of instant drills.
        self.credentials = dict(credentials or {})
        # Set to run the next tick now rather than at the end of the tick's wait: a
        # job was queued or a cancel asked (a wake-up from another process), a job
        # ended (its slot is free for the next queued one), or serving stops.
        self._wake = threading.Event()
        self._conn: libvirt.virConnect | None = None
        self._conn_lock = threading.Lock()

    # ------------------------------------------------------------ start and stop

    def repo(self, name: str | None = None) -> Repository:
        """The repository ``name`` (None: the default one), opened once."""
        name = name or self.default_repository
        if name not in self._opened:
            self._opened[name] = self.repositories[name]()
        return self._opened[name]

    def repo_of(self, policy: Policy) -> Repository:
        """The repository that ``policy``'s runs back up into."""
        return self.repo(policy.repository)

    def conn(self) -> libvirt.virConnect:
        """libvirt, connected once and shared by every job (libvirt connections are
        thread-safe), connected again after it dropped."""
        with self._conn_lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None
            self._conn = self.connect()
            return self._conn

    def _repo_by_id(self, repo_id: str | None) -> Repository | None:
        for name in self.repositories:
            if self.repo(name).id == repo_id:
                return self.repo(name)
        return None

    def start(self) -> None:
        """Register, recover from a dead predecessor, and schedule the policies."""
        self._forget_dead_services()
        self.recover()
        self.schedule_policies()
        # The names repositories are served under, so that status finds a policy's
        # sites (its repository and its copies' destinations) in the points index.
        # Only the config file's names: a repository given by its location is served
        # under that location, which is no name (and may be longer than a name column).
        PointIndex(self.catalog).name_repositories(
            {name: self.repo(name) for name in self.repositories
             if "/" not in name and ":" not in name})
        # Last: a client that sees this service registered queues for it, and expects
        # its policies stored and its repositories named already.
        self._service_id = self.jobs.register_service(this_runner(), self.repo().id)

    def _forget_dead_services(self) -> None:
        from stasis.service.jobs import runner_alive

        for s in self.jobs.services():
            if s.id != self._service_id and runner_alive(s.host, s.pid, s.pid_start) is False:
                self.jobs.unregister_service(s.id)

    def recover(self) -> list[Job]:
        """Fail the jobs of dead runners and clean their debris; return them."""
        dead = dead_jobs(self.catalog)
        for job in dead:
            log.warning("job %d (%s %s) was running in a process that died: marked failed",
                        job.id, job.kind, job.name)
            fail_dead_job(self.catalog, job, self._clean)
        return dead

    def _clean(self, job: Job) -> list[str]:
        found: list[str] = []
        repo = self._repo_by_id(job.repo) or self.repo()
        try:
            conn = self.conn()
        except HypervisorError as e:
            return [f"libvirt not reachable, VMs not checked ({e.message})"]
        for vm in job.vms:
            try:
                dom = lv.lookup(conn, vm)
            except StasisError:
                continue
            try:
                report = clean_vm(dom, repo)
            except (VmState, libvirt.libvirtError) as e:
                found.append(f"{vm}: not cleaned ({e})")
                continue
            found += [f"{f.kind}: {f.what}" for f in report.findings]
        for d in (self.run_dir, self.scratch_dir):
            found += [f"scratch: {p}" for p in remove_dead_debris(d, dry_run=False)]
        return found

    def schedule_policies(self) -> None:
        """Store each policy's source; queue once those whose slots passed unrun."""
        now = self.clock.now()
        if not self.policies_from_catalog:
            for name in self.states.retire(set(self.policies)):
                self.notifier.forget(name)
        for p in self.policies.values():
            state = self.states.get(p.name)
            if not self.policies_from_catalog:
                self.states.store(p.name, p.source)
            next_run = p.schedule.next_after(now)
            last = state.last_run if state else None
            missed = p.schedule.missed(last, now) if last is not None else None
            if missed is None and state is not None and last is None and state.next_run \
                    and state.next_run <= now:
                slot = p.schedule.latest_at_or_before(now)
                self._queue(p, slot, "its first run was due while no service ran")
            elif missed is not None:
                self._queue(p, missed.latest,
                            f"{missed.count}{'' if missed.count_is_exact else '+'} run(s) "
                            "missed while no service ran; running once")
            else:
                self.states.set_runs(p.name, next_run=next_run)
                continue
            self.states.set_runs(p.name, next_run=next_run)
        self._copy_next = {(p.name, c.to): c.schedule.next_after(now)
                           for p in self.policies.values() for c in p.copies
                           if c.schedule is not None}
        self._drill_next = {p.name: p.drill.schedule.next_after(now)
                            for p in self.policies.values()
                            if p.drill is not None and p.drill.schedule is not None}

    def stop(self, timeout: float = 120.0) -> None:
        """Cancel the running jobs (they end interrupted) and wait for them."""
        with self._lock:
            running = list(self.running.values())
        for r in running:
            r.cancel.set()
        for r in running:
            r.thread.join(timeout)
        if self._service_id is not None:
            self.jobs.unregister_service(self._service_id)
            self._service_id = None

    # ------------------------------------------------------------ scheduling

    def _queue(self, p: Policy, slot: datetime, why: str) -> Job | None:
        queued = self.jobs.list(state="queued", kind="backup", policy=p.name, limit=1)
        self.states.set_runs(p.name, last_run=slot,
                             next_run=p.schedule.next_after(self.clock.now()))
        if queued:
            return None  # a run of it is waiting already: the slots coalesce
        job = self.jobs.create("backup", p.name, policy=p.name, repo=self.repo_of(p).id,
                               params={"op": "policy", "policy": p.name,
                                       "slot": slot.isoformat()})
        self.jobs.log(job.id, "info", f"queued for the slot {slot.isoformat()}: {why}")
        log.info("job %d queued: policy %s (%s)", job.id, p.name, why)
        return job

    def queue_copy(self, p: Policy, to: str, why: str) -> Job | None:
        """Queue the copy of ``p``'s points to ``to`` (one waiting copy per policy and
        destination: the slots coalesce, since one run sends all that is missing)."""
        for j in self.jobs.list(state="queued", kind="copy", policy=p.name):
            if j.params.get("to") == to:
                return None
        params = CopyParams(to=to, policy=p.name)
        job = self.jobs.create("copy", KINDS["copy"].title(params), policy=p.name,
                               repo=self.repo_of(p).id,
                               params=params.model_dump(mode="json", exclude_defaults=True)
                               | {"op": "copy"})
        self.jobs.log(job.id, "info", f"queued: {why}")
        log.info("job %d queued: copy of policy %s to %s (%s)", job.id, p.name, to, why)
        return job

    def drill_targets(self, p: Policy) -> list[str]:
        """What a policy's drill brings up: each of its groups (its newest point) and
        each of its VMs (those its selectors found in its last run, too)."""
        targets = list(p.members.groups) + list(p.members.vms)
        if p.members.select or p.members.labels:
            targets += [v for v in self._policy_vms(p) if v not in targets]
        return list(dict.fromkeys(targets))

    def queue_drills(self, p: Policy, why: str) -> list[Job]:
        """Queue a drill of each of ``p``'s targets (one waiting drill per target: the
        slots coalesce)."""
        from stasis.app.drill import parse_checks

        if p.drill is None:
            return []
        d = p.drill
        waiting = {j.params.get("target") for j in
                   self.jobs.list(state="queued", kind="drill", policy=p.name)}
        queued = []
        for target in self.drill_targets(p):
            if target in waiting:
                continue
            params = DrillParams(
                target=target, mode=d.mode, network=d.network,
                checks=parse_checks(list(d.checks), d.check_timeout.total_seconds()),
                order=list(d.order) or None,
                storage=Path(d.storage) if d.storage else None, pool=d.pool,
                policy=p.name)
            job = self.jobs.create("drill", target, policy=p.name, repo=self.repo_of(p).id,
                                   params=params.model_dump(mode="json",
                                                            exclude_defaults=True)
                                   | {"op": "drill"})
            self.jobs.log(job.id, "info", f"queued: {why}")
            log.info("job %d queued: drill of %s for policy %s (%s)", job.id, target,
                     p.name, why)
            queued.append(job)
        return queued

    def check_drills(self, policy: Policy, targets: list[str] | None = None) -> None:
        """Tell a drill target breached (failed, too slow, too old) or met again."""
        from stasis.catalog import DrillStore
        from stasis.service.drill_status import drill_status

        if policy.drill is None:
            return
        store = DrillStore(self.catalog)
        groups = set(policy.members.groups)
        for target in targets or self.drill_targets(policy):
            newest = store.get("group" if target in groups else "vm", target)
            status = drill_status(target, newest, self.clock.now(), rto=policy.drill.rto,
                                  max_age=policy.drill.max_age)
            self._tell(partial(self.notifier.drill_checked, policy, status))

    def _drill_recorded(self, policy: Policy, target: str, job: Job) -> bool:
        from stasis.catalog import DrillStore

        kind = "group" if target in policy.members.groups else "vm"
        newest = DrillStore(self.catalog).get(kind, target)
        return newest is not None and newest.job == job.id

    def due(self) -> None:
        now = self.clock.now()
        for p in self.policies.values():
            state = self.states.get(p.name)
            if state is None or state.next_run is None:
                continue
            if state.next_run > now:
                # The clock went back: the stored slot lies beyond the schedule's next
                # one from now, and waiting for it would skip every run until then.
                soonest = p.schedule.next_after(now)
                if state.next_run > soonest:
                    log.warning("policy %s: the clock went back (its next run was %s); "
                                "next run now %s", p.name, state.next_run.isoformat(),
                                soonest.isoformat())
                    self.states.set_runs(p.name, next_run=soonest)
                continue
            self._queue(p, p.schedule.latest_at_or_before(now), "scheduled")
        for (name, to), at in list(self._copy_next.items()):
            target = self.policies[name].copy_target(to)
            if target is not None and target.schedule is not None and at > now:
                self._copy_next[(name, to)] = min(at, target.schedule.next_after(now))
            if at > now or target is None or target.schedule is None:
                continue
            self._copy_next[(name, to)] = target.schedule.next_after(now)
            self.queue_copy(self.policies[name], to, f"scheduled for {at.isoformat()}")
        for name, at in list(self._drill_next.items()):
            drill = self.policies[name].drill if name in self.policies else None
            if at > now or drill is None or drill.schedule is None:
                continue
            self._drill_next[name] = drill.schedule.next_after(now)
            self.queue_drills(self.policies[name], f"scheduled for {at.isoformat()}")

    # ------------------------------------------------------------ running

    def _reap(self) -> None:
        with self._lock:
            for job_id in [i for i, r in self.running.items() if not r.thread.is_alive()]:
                del self.running[job_id]

    def busy_vms(self) -> set[str]:
        """VMs in a running job, of this service or of any live process."""
        with self._lock:
            busy = {vm for r in self.running.values() for vm in r.vms}
        from stasis.service.jobs import runner_alive

        for j in self.jobs.list(state="running"):
            if j.kind in OCCUPYING and runner_alive(j.host, j.pid, j.pid_start) is not False:
                busy.update(j.vms)  # a dead runner's job is failed by recover()
        return busy

    def dispatch(self) -> list[int]:
        """Start the queued jobs the limits allow; return their ids."""
        self._reap()
        started: list[int] = []
        for job in self.jobs.list(state="queued", newest_first=False):
            with self._lock:
                if len(self.running) >= self.limits.per_host:
                    break
                # By id: one repository, whatever path or URL each job opened it by.
                on_repo = sum(1 for r in self.running.values() if r.job.repo == job.repo)
                # One copy at a time into a destination, whichever source it reads.
                to = job.params.get("to") if job.kind == "copy" else None
                into = to is not None and any(
                    r.job.kind == "copy" and r.job.params.get("to") == to
                    for r in self.running.values())
            if on_repo >= self.limits.per_repo or into:
                continue
            try:
                params = parse_params(job_params(job.params, job.policy))
            except StasisError as e:
                self._fail_unstarted(job, f"not run: {e.message}", e.exit_code)
                continue
            kind = KINDS[params.op]
            env = self._env(job)
            try:
                plan = kind.plan(params, env)
            except (StasisError, libvirt.libvirtError) as e:
                self._fail_unstarted(job, f"not started: {getattr(e, 'message', e)}",
                                     getattr(e, "exit_code", 1))
                continue
            busy = self.busy_vms() & set(plan.vms) if kind.occupies_vms else set()
            if busy:
                if job.id not in self._waiting_logged:
                    self._waiting_logged.add(job.id)
                    self.jobs.log(job.id, "info", f"waits: VM {', '.join(sorted(busy))} is "
                                  "in another job")
                continue
            if not self.jobs.start(job.id, this_runner(), plan.vms):
                continue  # taken by another runner, or cancelled, meanwhile
            job.vms = plan.vms
            self._launch(job, kind, params, plan, env)
            started.append(job.id)
        return started

    def _fail_unstarted(self, job: Job, why: str, code: int) -> None:
        if self.jobs.start(job.id, this_runner()):
            self.jobs.log(job.id, "error", why)
            self.jobs.finish(job.id, "failed", error=why, exit_code=code)

    def repo_for(self, job: Job) -> Repository:
        """The repository of ``job`` (named by id in the job), opened with the
        service's own credentials; a job of another repository is refused."""
        if job.repo is None:
            return self.repo()
        repo = self._repo_by_id(job.repo)
        if repo is None:
            served = ", ".join(f"{n} ({self.repo(n).url})" for n in self.repositories)
            raise UsageError(f"job {job.id} is of the repository {job.repo}, which this "
                             f"service does not serve (it serves {served}); not run")
        return repo

    def _find_policy(self, _catalog: Catalog, name: str) -> Policy:
        policy = self.policies.get(name)
        if policy is None:
            raise PolicyNotFound(f"no policy '{name}' is loaded by the service")
        return policy

    def _env(self, job: Job) -> Env:
        """Where a job runs in this service: its repository, libvirt, the catalog."""

        def record(plan: Plan, params: Params) -> AbstractContextManager[JobRun]:
            return recorded(self.catalog, KINDS[params.op].job_kind, job.name, job_id=job.id,
                            vms=plan.vms, policy=job.policy)

        # The job's progress in its row as it runs (what a client following it sees).
        live = LiveProgress(self.jobs, job.id, written=job.kind == "restore")
        heard = self.unit_progress

        def unit_progress(cancel: threading.Event) -> Progress:
            return live.sink(heard(cancel) if heard is not None else None)

        return Env(open_repo=lambda: self.repo_for(job), connect=self.conn,
                   catalog=lambda: opened(self.catalog), record=record,
                   dirs=lambda: Where(self.run_dir, self.scratch_dir), clock=self.clock,
                   find_policy=self._find_policy, retention=self.retention,
                   unit_progress=unit_progress, open_destination=self._destination,
                   credentials=lambda: self._credentials_of(job))

    def _credentials_of(self, job: Job) -> Credentials:
        """The credentials of ``job``'s repository (an instant drill's export needs them)."""
        for name, creds in self.credentials.items():
            if (job.repo is None and name == self.default_repository) \
                    or (job.repo is not None and self.repo(name).id == job.repo):
                return creds
        raise UsageError(f"job {job.id} needs its repository's credentials for an export "
                         "(an instant drill), and this service was given none; run the "
                         "drill in restore mode. Nothing was made.")

    def _destination(self, name: str) -> Repository:
        """A copy's destination: one of the service's repositories, by name (opened
        with the service's credentials for it)."""
        if name not in self.repositories:
            served = ", ".join(sorted(self.repositories))
            raise UsageError(f"a copy run by the service names its destination by one of "
                             f"the service's repositories ({served}), not '{name}'; "
                             "nothing was copied")
        return self.repo(name)

    def _launch(self, job: Job, kind: Kind[Any], params: Params, plan: Plan,
                env: Env) -> None:
        cancel = threading.Event()
        thread = threading.Thread(target=self._run, args=(job, kind, params, plan, env, cancel),
                                  name=f"job-{job.id}", daemon=True)
        with self._lock:
            self.running[job.id] = Running(job, thread, cancel,
                                           set(plan.vms) if kind.occupies_vms else set())
        thread.start()

    def _run(self, job: Job, kind: Kind[Any], params: Params, plan: Plan, env: Env,
             cancel: threading.Event) -> None:
        try:
            self._run_job(job, kind, params, plan, env, cancel)
        finally:
            release_free_memory()  # its buffers, kept by glibc's arenas (stasis.memory)
            self.wake()  # its slot is free: a job waiting for it starts now

    def _run_job(self, job: Job, kind: Kind[Any], params: Params, plan: Plan, env: Env,
                 cancel: threading.Event) -> None:
        error: str | None = None
        try:
            with env.record(plan, params) as run:
                run.cancel = cancel
                kind.run(params, plan, run, env)
                if run.failure is not None:
                    error = run.failure.message
        except BaseException as e:  # recorded in the job; the service goes on
            error = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            if cancel.is_set():
                return  # stopping or cancelled: interrupted, nothing to tell
        if isinstance(params, PolicyParams):
            policy = plan.state[0]
            if error is not None:
                self._tell(lambda: self.notifier.job_failed(policy, job=str(job.id),
                                                            error=error, vms=plan.vms))
            else:
                for target in policy.copies:
                    if target.after_runs:
                        self.queue_copy(policy, target.to, f"after the run of job {job.id}")
            self.check_rpo(policy)
        elif isinstance(params, DrillParams) and params.policy in self.policies:
            drilled = self.policies[params.policy]
            self.check_drills(drilled, [params.target])
            if error is not None and not self._drill_recorded(drilled, params.target, job):
                # Not a check that failed (that is told as a drill breach): the drill
                # could not run at all.
                self._tell(lambda: self.notifier.job_failed(drilled, job=str(job.id),
                                                            error=error, vms=plan.vms))
        elif isinstance(params, CopyParams) and params.policy in self.policies \
                and error is not None:
            failed = self.policies[params.policy]
            self._tell(lambda: self.notifier.job_failed(failed, job=str(job.id),
                                                        error=error, vms=plan.vms))

    def poll_cancels(self) -> list[int]:
        """Interrupt the running jobs that ``stasis job cancel`` asked to stop."""
        with self._lock:
            running = dict(self.running)
        asked = self.jobs.cancels_requested(list(running))
        for job_id in asked:
            if not running[job_id].cancel.is_set():
                log.info("job %d: cancel requested, interrupting it", job_id)
                running[job_id].cancel.set()
        return sorted(asked)

    def _tell(self, send: Callable[[], object]) -> None:
        try:
            send()
        except Exception as e:  # a notification never stops the service
            log.warning("notification failed: %s", e)

    def check_rpo(self, policy: Policy) -> None:
        if policy.rpo is None:
            return
        vms = self._policy_vms(policy)
        served = self._opened.get(policy.repository or self.default_repository)
        newest = newest_point_time(self.catalog, vms, served.id if served else None)
        status = rpo_status(newest, self.clock.now(), policy.rpo)
        self._tell(lambda: self.notifier.rpo_checked(policy, status, vms=vms))

    def _policy_vms(self, policy: Policy) -> list[str]:
        last = self.jobs.list(policy=policy.name, kind="backup", state="succeeded", limit=1)
        return last[0].vms if last else list(policy.members.vms)

    # ------------------------------------------------------------ the loop

    def reload_policies(self) -> None:
        """Take up the catalog's policies as they are now: a new or changed one is
        scheduled from now on, a deleted one is no longer run; templates are not run,
        and a source that does not check any more is logged and left out."""
        from stasis.errors import PolicyError
        from stasis.service.policy import parse_policies

        now = self.clock.now()
        loaded: dict[str, Policy] = {}
        sources: dict[str, str] = {}
        for s in self.states.list():
            if s.template:
                continue
            current = self.policies.get(s.name)
            if current is not None and self._sources.get(s.name) == s.source:
                loaded[s.name], sources[s.name] = current, s.source
                continue
            try:
                p = parse_policies(s.source, file=f"catalog:{s.name}",
                                   repositories=set(self.repositories),
                                   default_repository=self.default_repository)[0]
            except (PolicyError, UsageError) as e:
                log.error("policy %s in the catalog is not run: %s", s.name, e)
                continue
            loaded[s.name], sources[s.name] = p, s.source
            self.states.set_runs(s.name, next_run=p.schedule.next_after(now))
            log.info("policy %s %s", s.name, "changed" if current else "added")
        for gone in set(self.policies) - set(loaded):
            self.notifier.forget(gone)
            log.info("policy %s is no longer run", gone)
        self.policies, self._sources = loaded, sources

    def tick(self) -> None:
        self.poll_cancels()
        if self.policies_from_catalog:
            self.reload_policies()
        self.due()
        self.dispatch()
        now = self.clock.now()
        if self._last_housekeeping is None or now - self._last_housekeeping >= timedelta(
                minutes=1):
            self._last_housekeeping = now
            self.recover()  # a command killed meanwhile (kill -9) left a job running
            if self.keep_logs is not None:
                gone = expire_logs(self.catalog, self.keep_logs)
                if gone:
                    log.info("expired %d job log lines older than %s", gone, self.keep_logs)
            for p in self.policies.values():
                self.check_rpo(p)

    def wake(self) -> None:
        """Run the next tick now instead of after the tick's wait."""
        self._wake.set()

    def serve(self, stop: threading.Event, tick_s: float = 1.0) -> None:
        """Run until ``stop`` is set (or an interrupt), then :meth:`stop`.

        A tick runs every ``tick_s`` seconds, and at once when woken (:meth:`wake`;
        another process through :mod:`stasis.service.wake`).
        """
        from stasis.service.wake import WakeListener

        def wake_on_stop() -> None:
            stop.wait()
            self.wake()

        listener = WakeListener(this_runner(), self.wake)
        threading.Thread(target=wake_on_stop, name="serve-stop", daemon=True).start()
        try:
            while not stop.is_set():
                self._wake.clear()  # before the tick: what it misses wakes the next
                try:
                    self.tick()
                except StasisError as e:  # the catalog or libvirt hiccuped: try again
                    log.error("%s", e.message)
                self._wake.wait(tick_s)
        finally:
            listener.close()
            self.stop()


def newest_point_time(catalog: Catalog, vms: list[str], repo_id: str | None) -> datetime | None:
    """The time of the newest indexed point holding every one of ``vms`` (each, oldest)."""
    if not vms:
        return None
    points = PointIndex(catalog).list(repo_id)
    newest: list[datetime] = []
    for vm in vms:
        times = [p.time for p in points if vm in p.vms]
        if not times:
            return None
        newest.append(max(times))
    return min(newest)
