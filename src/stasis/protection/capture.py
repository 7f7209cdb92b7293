"""One point of several VMs at one instant (a single VM is a group of one).

Crash consistency for a group: every running member is suspended, every member's
backup job begins (QEMU fixes each VM's instant with copy-before-write), and every
member is resumed as soon as the last job has begun, all in parallel threads; the
window from the first suspend to the last resume is measured and recorded as
``frozen_ms``. What can be done before the window is: each job's directories, debris
removal and XML, and a libvirt connection per member, so that libvirtd serves the
members' calls side by side. Each member's record holds its timeline of the instant
(``extra.instant_ms``: every step asked and returned, in ms from the window's start).
A guardian process resumes the members if Stasis dies inside the window; any error
or signal resumes them in the ``finally``. A single running VM is not suspended at
all: QEMU already fixes all of its disks at one instant.

The data of every member is then read in one pipeline and committed as one point.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from stasis import signals
from stasis.blockio import BlockReader, images
from stasis.blockio.nbd import NBD_STATE_DIRTY, Export, QemuNbd
from stasis.errors import (
    BackupJobLeftRunning,
    ConsistencyNotMet,
    HookFailed,
    PostHookFailed,
    UsageError,
)
from stasis.hypervisor import agent
from stasis.hypervisor import libvirt_api as lv
from stasis.hypervisor.domain import DomainInfo, parse, qemu_run_id
from stasis.hypervisor.pools import resolve_volumes
from stasis.progress import Progress
from stasis.protection.backup import DiskSource, back_up_disks, open_reader
from stasis.protection.chain import (
    DiskPlan,
    file_sources,
    format_options,
    image_bitmaps,
    plan_disk,
    removed_disks,
)
from stasis.protection.consistency import LEVELS, Hooks, level_rank
from stasis.protection.doctor import clean_vm
from stasis.protection.guardian import Guardian
from stasis.protection.hooks import HookResult, run_guest, run_host
from stasis.repository import Manifest, Repository, VmRecord
from stasis.repository.repo import new_point_id, utc_now_iso


@dataclass
class Member:
    dom: libvirt.virDomain
    name: str
    running: bool
    info: DomainInfo
    parent: Manifest | None
    parent_vm: VmRecord | None
    run_id: str = ""
    plans: list[DiskPlan] = field(default_factory=list)
    job: lv.PullBackup | None = None
    record: VmRecord | None = None
    level: str = "crash"  # the consistency this member reached (or will)
    note: str = ""  # why it reached less than asked
    agent: bool = False  # its guest agent answered: freeze, thaw and guest hooks use it
    frozen_filesystems: int = 0
    own: libvirt.virConnect | None = None  # its own connection while a group holds it
    # The instant's steps of this member (freeze, suspend, resume, thaw, connect):
    # monotonic (asked, returned); its job keeps the steps of beginning.
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)

    def timeline_ms(self, start: float) -> dict[str, list[float]]:
        """Every step of the instant, its job's included, as [asked, returned] in ms
        from ``start`` (the window's start: before it is negative), in order asked."""
        steps = {**self.steps, **(self.job.steps if self.job is not None else {})}
        return {name: [round((a - start) * 1000, 3), round((r - start) * 1000, 3)]
                for name, (a, r) in sorted(steps.items(), key=lambda kv: kv[1])}


def latest_with_vm(points: list[Manifest], name: str) -> tuple[Manifest | None, VmRecord | None]:
    """The newest point holding VM ``name`` (alone or in a group), and its record."""
    for point in reversed(points):
        for vm in point.vms:
            if vm.kind == "vm" and vm.name == name:
                return point, vm
    return None, None


def _parallel(fn: Callable[[Member], object], members: Iterable[Member]) -> None:
    """Run ``fn`` on every member at once; raise the first error after all finished.

    A signal (SIGTERM, Ctrl-C) that arrives meanwhile is raised only once every
    member's step has finished: a backup job begun in a thread a moment after the
    signal must still be known to the caller, which ends what began on the way out.
    """
    todo = list(members)
    if len(todo) <= 1:
        with signals.held():
            for m in todo:
                fn(m)
        return
    with signals.held(), ThreadPoolExecutor(max_workers=len(todo),
                                            thread_name_prefix="member") as pool:
        futures = [pool.submit(fn, m) for m in todo]
        errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e


def _prepare(conn: libvirt.virConnect, repo: Repository, name: str, points: list[Manifest],
             scratch_dir: Path) -> Member:
    dom = lv.lookup(conn, name)
    clean_vm(dom, repo)
    parent, parent_vm = latest_with_vm(points, name)
    running = lv.is_running(dom)
    info = resolve_volumes(conn, parse(lv.domain_xml(dom, inactive=not running)))
    m = Member(dom, dom.name(), running, info, parent, parent_vm)
    if running:
        m.run_id = qemu_run_id(m.name)
        chain = {c.name: c for c in lv.checkpoints(dom, lv.chain_prefix(repo.id))}
        m.plans = [
            plan_disk(repo, d, lv.block_info(dom, d.target)[0], parent=parent,
                      parent_vm=parent_vm, info=info, running=True, run_id=m.run_id,
                      live_checkpoints=chain)
            for d in info.disks
        ]
    return m


def _job(m: Member, checkpoint: str, scratch_dir: Path) -> lv.PullBackup:
    bitmap_disks = [p.disk.target for p in m.plans if p.disk.bitmaps]
    return lv.PullBackup(
        m.dom, [lv.JobDisk(p.disk, p.base) for p in m.plans],
        checkpoint=checkpoint if bitmap_disks else None, checkpoint_disks=bitmap_disks,
        run_dir=scratch_dir, dac=m.info.dac,
    )


@dataclass
class Instant:
    """How the instant went: the window, and what ran around it. ``started`` is the
    window's start (monotonic), from which each member's timeline is counted."""

    frozen_ms: float = 0.0
    started: float = 0.0
    hooks: list[HookResult] = field(default_factory=list)


def _timed(m: Member, step: str, fn: Callable[[], object]) -> None:
    asked = time.monotonic()
    try:
        fn()
    finally:
        m.steps[step] = (asked, time.monotonic())


def _make_ready(m: Member, uri: str) -> None:
    """Everything a member's part of the window needs, done before the window: its
    job's directories, XML, scratch images and checkpoint (PullBackup.prepare's
    ``ahead``), and its own libvirt connection. libvirtd serves at most
    ``max_client_requests`` (5 by default) calls of one connection at a time, so on a
    shared connection the sixth member's backupBegin would wait for another's to end."""
    assert m.job is not None
    m.job.prepare(ahead=True)

    def connect() -> None:
        m.own = lv.connect(uri)
        assert m.job is not None
        m.job.dom = m.own.lookupByUUIDString(m.info.uuid)

    _timed(m, "connect", connect)


def _close_own(m: Member) -> None:
    if m.own is not None:
        with contextlib.suppress(libvirt.libvirtError):
            m.own.close()


def _probe_agents(members: list[Member], level: str) -> None:
    """Each running member's reachable level: an agent that does not answer means crash."""
    def one(m: Member) -> None:
        why = agent.probe(m.dom)
        if why:
            m.level, m.note = "crash", f"{why}: crash consistent instead of {level}"
        else:
            m.level, m.agent = level, True

    _parallel(one, [m for m in members if m.job is not None])


def _check_required(members: list[Member], require: str | None, when: str) -> None:
    if require is None:
        return
    short = [m for m in members if m.job is not None and level_rank(m.level) < level_rank(require)]
    if short:
        detail = "; ".join(f"{m.name}: {m.level} ({m.note})" if m.note else f"{m.name}: {m.level}"
                           for m in short)
        raise ConsistencyNotMet(
            f"{require} consistency is required but not reached {when} ({detail}). "
            "Nothing was committed; every VM runs as before.")


def _run_pre_hooks(members: list[Member], hooks: Hooks, env: dict[str, str],
                   results: list[HookResult]) -> HookResult | None:
    """Run the pre hooks in order; return the first that failed (the rest do not run)."""
    by_name = {m.name: m for m in members}
    for command in hooks.pre_host:
        res = run_host("pre", command, env=env, timeout_s=hooks.timeout_s)
        results.append(res)
        if not res.ok:
            return res
    for gc in hooks.pre_guest:
        m = by_name.get(gc.vm)
        if m is None:
            continue  # not a member this time (a selector no longer matches it)
        if not m.agent:
            m.note += "; its guest hooks did not run"
            continue
        res = run_guest("pre", m.dom, gc.command, timeout_s=hooks.timeout_s)
        results.append(res)
        if not res.ok:
            return res
    return None


def _run_post_hooks(members: list[Member], hooks: Hooks, env: dict[str, str],
                    results: list[HookResult]) -> None:
    """Run every post hook, whatever the others did; failures are only recorded."""
    by_name = {m.name: m for m in members}
    for gc in hooks.post_guest:
        m = by_name.get(gc.vm)
        if m is not None and m.agent:
            results.append(run_guest("post", m.dom, gc.command, timeout_s=hooks.timeout_s))
    for command in hooks.post_host:
        results.append(run_host("post", command, env=env, timeout_s=hooks.timeout_s))


def _held(m: Member) -> libvirt.virDomain:
    """The domain as the window reaches it: through the member's own connection."""
    assert m.job is not None
    return m.job.dom


def fix_instant(members: list[Member], stack: contextlib.ExitStack, uri: str, *,
                level: str = "crash", require: str | None = None, hooks: Hooks | None = None,
                env: dict[str, str] | None = None,
                in_window: Callable[[], None] | None = None) -> Instant:
    """Begin every running member's job at one instant, at ``level`` where each can.

    Pre hooks (application), then every agent's filesystems frozen, every member
    suspended (two or more), every job begun, every member resumed and thawed, then
    post hooks. The window from the first freeze or suspend to the last resume or
    thaw is measured. Whatever fails, and on any signal, every member is resumed and
    thawed before this returns or raises; a guardian does it if the process dies.
    ``in_window``, when given, is called inside the window, once every job has begun.
    """
    result = Instant()
    hooks = hooks or Hooks()
    env = env or {}
    running = [m for m in members if m.job is not None]
    if not running:
        return result
    if level_rank(level) >= level_rank("filesystem"):
        _probe_agents(running, level)
    _check_required(members, require, "before the backup began")
    if level == "application":
        failed = _run_pre_hooks(running, hooks, env, result.hooks)
        if failed is not None:
            _run_post_hooks(running, hooks, env, result.hooks)
            raise HookFailed(f"the {failed.describe()}; output: {failed.output.strip()[-300:]!r}."
                             " Nothing was frozen or captured and nothing was committed; "
                             "the post hooks ran.")
    to_freeze = [m for m in running if m.agent]
    if len(running) == 1 and not to_freeze:
        result.started = time.monotonic()
        with signals.held():  # a job that began is on the stack before a signal raises
            stack.enter_context(running[0].job)  # type: ignore[arg-type]
        return result
    guardian = stack.enter_context(Guardian(uri))
    for m in running:
        # Its job's __exit__ ends the job once begun and removes the directories once
        # prepared, so it is on the stack before either; its connection closes after it.
        stack.callback(_close_own, m)
        stack.push(m.job.__exit__)  # type: ignore[union-attr]
    _parallel(lambda m: _make_ready(m, uri), running)
    frozen: list[Member] = []
    suspended: list[Member] = []
    lock = threading.Lock()

    def freeze(m: Member) -> None:
        try:
            with lock:
                frozen.append(m)  # thawed on the way out even if the answer is lost
            asked = time.monotonic()
            try:
                m.frozen_filesystems = agent.freeze(_held(m))
            finally:
                m.steps["freeze"] = (asked, time.monotonic())
        except libvirt.libvirtError as e:
            m.level, m.agent = "crash", False
            m.note = f"fsfreeze failed ({e.get_error_message()}): crash consistent instead"

    def suspend(m: Member) -> None:
        _timed(m, "suspend", _held(m).suspend)
        with lock:
            suspended.append(m)

    def begin(m: Member) -> None:
        assert m.job is not None
        m.job.begin()  # its steps are the job's own

    def resume(m: Member) -> None:
        _timed(m, "resume", _held(m).resume)

    def thaw(m: Member) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            _timed(m, "thaw", lambda: agent.thaw(_held(m)))

    guardian.hold([m.name for m in running])
    result.started = time.monotonic()
    try:
        try:
            _parallel(freeze, to_freeze)
            if len(running) > 1:
                _parallel(suspend, running)
            _parallel(begin, running)
            if in_window is not None:
                in_window()
        finally:
            try:
                _parallel(resume, list(suspended))
            finally:
                _parallel(thaw, list(frozen))
                result.frozen_ms = (time.monotonic() - result.started) * 1000
    finally:
        guardian.release()
    if level == "application":
        _run_post_hooks(running, hooks, env, result.hooks)
    _check_required(members, require, "at the instant")
    return result


def back_up_members(
    conn: libvirt.virConnect,
    repo: Repository,
    names: list[str],
    *,
    point_name: str,
    kind: str,
    run_dir: Path,
    scratch_dir: Path,
    tags: dict[str, str] | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    cancel: threading.Event | None = None,
    consistency: str = "crash",
    require: str | None = None,
    hooks: Hooks | None = None,
) -> Manifest:
    """Make one point holding every VM of ``names`` at one instant, and commit it.

    ``consistency`` is the level to reach (each member without a guest agent
    degrades to crash, recorded in its record); ``require``, when given, the level
    below which nothing is committed (:class:`ConsistencyNotMet`).
    """
    level_rank(consistency)
    if require is not None and level_rank(require) > level_rank(consistency):
        consistency = require  # asking for more than is attempted cannot be met
    if consistency != "application" and hooks:
        raise UsageError("hooks run only at the application consistency level "
                         "(--consistency application)")
    with repo.shared_lock(f"backup {kind} {point_name}"):
        points = repo.points()
        members = [_prepare(conn, repo, n, points, scratch_dir) for n in names]
        point_id = new_point_id()
        checkpoint = lv.checkpoint_name(repo.id, point_id)
        for m in members:
            if m.running:
                m.job = _job(m, checkpoint, scratch_dir)
        group_parent = (members[0].parent if len(members) == 1 and kind == "vm"
                        else _group_parent(points, point_name))
        env = {"STASIS_POINT_NAME": point_name, "STASIS_POINT_ID": point_id,
               "STASIS_VMS": " ".join(m.name for m in members), "STASIS_REPO_ID": repo.id}
        point_time = utc_now_iso()
        with contextlib.ExitStack() as stack:
            instant = fix_instant(members, stack, conn.getURI(), level=consistency,
                                  require=require, hooks=hooks, env=env)
            frozen_ms = instant.frozen_ms
            sources: list[DiskSource] = []
            vms: list[VmRecord] = []
            for index, m in enumerate(members):
                vms.append(_record(m, frozen_ms, consistency, instant.started))
                sources += (_live_sources(m, index, checkpoint, stack) if m.running
                            else _image_sources(repo, m, index, run_dir, stack))
                for f in file_sources(repo, m.info, index, m.parent_vm):
                    stack.callback(f.reader.close)  # type: ignore[attr-defined]
                    sources.append(f)
            extra: dict[str, Any] = {"consistency": {
                "requested": consistency, "required": require,
                "reached": _weakest([vm.consistency for vm in vms]),
            }}
            if instant.hooks:
                extra["hooks"] = [h.to_dict() for h in instant.hooks]
            if kind == "group":
                before = [vm.name for vm in group_parent.vms] if group_parent else []
                now = [m.name for m in members]
                extra["group"] = {"members": now,
                                  "joined": [n for n in now if n not in before],
                                  "left": [n for n in before if n not in now]}
            timings = {"frozen_ms": round(frozen_ms, 3)}
            manifest = back_up_disks(
                repo, sources, name=point_name, kind=kind, vms=vms, tags=tags,
                parent=group_parent, point_id=point_id, point_time=point_time,
                progress=progress, workers=workers, cancel=cancel, extra_timings=timings,
                extra=extra,
            )
            for m in members:
                if m.job is not None:
                    m.job.keep_checkpoint()
        manifest.run_warnings += [PostHookFailed(h.where, h.command, h.error)
                                  for h in instant.hooks if h.phase == "post" and h.error]
        for m in members:
            if m.job is not None and m.job.not_ended is not None:
                manifest.run_warnings.append(
                    BackupJobLeftRunning(*m.job.not_ended.args, manifest.id[:12]))
        for m in members:  # older checkpoints of each chain are no base for anything now
            if m.running:
                for old in lv.checkpoints(m.dom, lv.chain_prefix(repo.id)):
                    if old.name != checkpoint:
                        with contextlib.suppress(libvirt.libvirtError):
                            lv.delete_checkpoint(m.dom, old.name)
        return manifest


def _weakest(levels: list[str]) -> str:
    ranked = [lvl for lvl in levels if lvl in LEVELS]
    if not ranked:
        return levels[0] if levels else ""
    return min(ranked, key=level_rank)


def _group_parent(points: list[Manifest], name: str) -> Manifest | None:
    same = [p for p in points if p.name == name]
    return same[-1] if same else None


def _record(m: Member, frozen_ms: float, requested: str, started: float) -> VmRecord:
    state = "running" if m.running else "shut off"
    vm = VmRecord(name=m.name, kind="vm", uuid=m.info.uuid,
                  domain_xml=lv.domain_xml(m.dom, inactive=True),
                  consistency=m.level if m.running else "shut off", state=state)
    vm.extra = {"disks_removed": removed_disks(m.parent_vm, m.info)}
    if m.running and m.job is not None:
        vm.extra.update(checkpoint_run_id=m.run_id, checkpoint=m.job.checkpoint or "",
                        begin_s=round(m.job.begin_seconds, 4), frozen_ms=round(frozen_ms, 3),
                        consistency_requested=requested,
                        frozen_filesystems=m.frozen_filesystems,
                        instant_ms=m.timeline_ms(started))
        if m.note:
            vm.extra["consistency_note"] = m.note
    else:
        vm.extra["checkpoint_run_id"] = (m.parent_vm.extra.get("checkpoint_run_id", "")
                                         if m.parent_vm else "")
    m.record = vm
    return vm


def _live_sources(m: Member, index: int, checkpoint: str,
                  stack: contextlib.ExitStack) -> list[DiskSource]:
    assert m.job is not None
    sources = []
    for p in m.plans:
        where = m.job.export(p.disk.target, incremental=p.base is not None)
        contexts = (where.dirty_context,) if where.dirty_context else ()
        export = Export(where.socket, name=where.name, meta_contexts=contexts)
        stack.callback(export.close)
        changed = None
        if where.dirty_context is not None:
            changed = functools.partial(export.flagged_extents, where.dirty_context,
                                        NBD_STATE_DIRTY, p.virtual_size)
        sources.append(DiskSource(
            name=p.disk.target, reader=export, virtual_size=p.virtual_size,
            format=p.disk.format, source=p.disk.source, reason=p.reason,
            parent_index=p.parent_index, changed=changed,
            format_options=format_options(p.disk),
            checkpoint=checkpoint if p.disk.bitmaps else "", source_kind=p.disk.kind, vm=index,
        ))
    return sources


def _image_sources(repo: Repository, m: Member, index: int, run_dir: Path,
                   stack: contextlib.ExitStack) -> list[DiskSource]:
    sources = []
    for d in m.info.disks:
        img = images.inspect(d.source, d.format)
        bitmaps = image_bitmaps(d.source) if d.bitmaps else {}
        p = plan_disk(repo, d, img.virtual_size, parent=m.parent, parent_vm=m.parent_vm,
                      info=m.info, running=False, run_id="", live_checkpoints={},
                      image_bitmaps=bitmaps)
        reader: BlockReader
        changed: Callable[[], Iterable[tuple[int, int]]] | None = None
        if p.base is not None:
            export = stack.enter_context(QemuNbd(d.source, d.format, run_dir=run_dir,
                                                 bitmap=p.base))
            reader = export
            changed = functools.partial(export.flagged_extents, f"qemu:dirty-bitmap:{p.base}",
                                        NBD_STATE_DIRTY, img.virtual_size)
        else:
            reader = stack.enter_context(open_reader(img, run_dir))
        # The base checkpoint stays the base: libvirt cannot make one while shut off.
        sources.append(DiskSource(
            name=d.target, reader=reader, virtual_size=img.virtual_size, format=d.format,
            source=d.source, reason=p.reason, parent_index=p.parent_index, changed=changed,
            format_options=img.options, checkpoint=p.base or "", source_kind=d.kind, vm=index,
        ))
    return sources

