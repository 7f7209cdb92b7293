"""One drill: the point's VMs restored (or started instantly from the repository)
beside the originals, in the drill's isolated network, started in order, each checked
before the next starts, timed, and torn down.

The measured RTO is the time from the drill's start until its last check passed:
restoring (or exporting) the disks, starting every VM, and every check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt

from stasis.errors import DrillFailed, HypervisorError, UsageError
from stasis.hypervisor.pools import open_pool
from stasis.progress import Progress
from stasis.recovery.drill.checks import (
    CheckOutcome,
    CheckSpec,
    VmUnderCheck,
    run_script,
    run_vm_check,
)
from stasis.recovery.drill.network import ensure_network, lease_addresses, planned_network
from stasis.recovery.drill.record import (
    DrillRecord,
    drill_lock,
    mark,
    new_record,
    save,
    teardown,
)
from stasis.recovery.group import group_vms, restore_group, start_order
from stasis.recovery.instant.start import start_on_export
from stasis.recovery.vm import DEFAULT_STORAGE
from stasis.repository import Credentials, Manifest, Repository

MODES = ("restore", "instant")
RUNNING_TIMEOUT_S = 60.0

Log = Callable[[str, str], None]  # (level, text)


@dataclass
class DrillVm:
    vm: str
    name: str
    started_at: str = ""
    running_after_s: float = 0.0
    addresses: list[str] = field(default_factory=list)


@dataclass
class DrillReport:
    id: str
    target: str
    point: str
    point_name: str
    mode: str
    network: str
    network_created: bool
    storage: str  # "" when the disks are volumes of ``pool``
    started_at: str
    pool: str | None = None
    passed: bool = False
    rto_s: float | None = None  # None: a check did not pass
    duration_s: float = 0.0
    vms: list[DrillVm] = field(default_factory=list)
    start_order: list[str] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)
    kept: bool = False
    removed: list[str] = field(default_factory=list)
    failure: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["vms"] = [dict(v.__dict__) for v in self.vms]
        d["checks"] = [c.to_dict() for c in self.checks]
        return d


def check_place(mode: str, storage: Path | None, pool: str | None) -> None:
    """Refuse a pool given with a storage directory, or for an instant drill."""
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: a drill's mode is restore or instant; nothing was "
                         "made")
    if pool is not None and storage is not None:
        raise UsageError("--pool and --storage are two places for the disks: give one; "
                         "nothing was made")
    if pool is not None and mode == "instant":
        # An instant VM's disks stay in the repository; only its overlays are written,
        # and those are files beside its export (instant finalize --pool moves the disks).
        raise UsageError("--pool puts restored disks into a storage pool, and an instant "
                         "drill restores none (its VMs run from the repository, their "
                         "overlays in --storage): drop --pool or use --mode restore; "
                         "nothing was made")


def check_request(point: Manifest, vms: Sequence[str] | None, mode: str,
                  checks: Sequence[CheckSpec], order: Sequence[str] | None,
                  creds: Credentials | None) -> list[str]:
    """The point's VMs in start order, once everything asked was checked."""
    if mode == "instant" and creds is None:
        raise UsageError("an instant drill needs the repository's credentials here; nothing "
                         "was made")
    names = [v.name for v in group_vms(point)]
    chosen = list(vms) if vms else names
    missing = [v for v in chosen if v not in names]
    if missing:
        raise UsageError(f"point {point.id[:12]} has no VM {', '.join(missing)} (it has: "
                         f"{', '.join(names)}); nothing was made")
    unknown = sorted({c.vm for c in checks if c.vm is not None and c.vm not in chosen})
    if unknown:
        raise UsageError(f"a check names VM {', '.join(unknown)}, which the drill does not "
                         f"bring up ({', '.join(chosen)}); nothing was made")
    recs = [v for v in group_vms(point) if v.name in chosen]
    return start_order(recs, order)


def run_drill(
    conn: libvirt.virConnect,
    repo: Repository,
    point: Manifest,
    *,
    vms: Sequence[str] | None = None,
    mode: str = "restore",
    network: str | None = None,
    checks: Sequence[CheckSpec] = (),
    order: Sequence[str] | None = None,
    storage: Path | None = None,
    pool: str | None = None,
    keep: bool = False,
    creds: Credentials | None = None,
    target: str | None = None,
    log: Log | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    run_dir: Path | None = None,
) -> DrillReport:
    """Drill ``point`` (its ``vms``, default all); raise DrillFailed, after teardown,
    when a check does not pass. ``target`` names the lock (default the point's name):
    two drills of one target never run at once. With ``pool`` (a restore drill's), the
    disks are volumes made through that libvirt storage pool, deleted again through it."""
    began = time.monotonic()
    say = log or (lambda level, text: None)
    check_place(mode, storage, pool)
    sequence = check_request(point, vms, mode, checks, order, creds)
    if pool is not None:
        open_pool(conn, pool)  # known, running, writable: refused before anything is made
    else:
        storage = (storage or DEFAULT_STORAGE).absolute()
        if not storage.is_dir():
            raise UsageError(f"the storage directory {storage} does not exist; nothing was "
                             "made")
    lock_name = target or point.name
    rec = new_record(lock_name, point.id, mode, storage, pool)
    report = DrillReport(rec.id, lock_name, point.id, point.name, mode, "", False,
                         rec.storage, datetime.now(UTC).isoformat(timespec="milliseconds"),
                         pool=pool, start_order=sequence)
    with drill_lock(lock_name, rec):
        save(rec)
        try:
            _bring_up(conn, repo, point, rec, report, sequence=sequence, mode=mode,
                      network=network or f"stasis-drill-{rec.id}", checks=checks,
                      creds=creds, storage=storage, pool=pool, say=say,
                      progress=progress, cancel=cancel, run_dir=run_dir)
            report.rto_s = round(time.monotonic() - began, 3)
            report.passed = True
            say("info", f"every check passed: measured RTO {report.rto_s:.1f} s")
        except BaseException as e:
            report.failure = e.message if isinstance(e, DrillFailed) else str(e)
            report.duration_s = round(time.monotonic() - began, 3)
            if keep:
                undone = (f"What it made was kept, as --keep asked ('stasis doctor --fix' "
                          f"removes drill {rec.id}).")
                rec.state = "kept"
                save(rec)
            else:
                report.removed = teardown(conn, rec)
                say("info", "torn down: " + (", ".join(report.removed) or "nothing made"))
                undone = ("Everything the drill made was removed again ("
                          + (", ".join(report.removed) or "nothing had been made") + ").")
            if isinstance(e, DrillFailed):
                failed = DrillFailed(*e.args[:4], undone)
                failed.report = report  # type: ignore[attr-defined]
                raise failed from None
            raise
        if keep:
            rec.state = "kept"
            save(rec)
            report.kept = True
            say("info", f"kept (--keep): 'stasis doctor --fix' removes drill {rec.id}")
        else:
            report.removed = teardown(conn, rec)
            say("info", "torn down: " + (", ".join(report.removed) or "nothing made"))
    report.duration_s = round(time.monotonic() - began, 3)
    return report


def _bring_up(conn: libvirt.virConnect, repo: Repository, point: Manifest, rec: DrillRecord,
              report: DrillReport, *, sequence: list[str], mode: str, network: str,
              checks: Sequence[CheckSpec], creds: Credentials | None,
              storage: Path | None, pool: str | None, say: Log,
              progress: Progress | None, cancel: threading.Event | None,
              run_dir: Path | None) -> None:
    planned = planned_network(network)
    rec.network = dict(planned.__dict__)
    save(rec)  # before the network is made: a kill -9 between leaves doctor its UUID
    net = ensure_network(conn, network, rec.id, planned)
    rec.network = dict(net.__dict__)
    save(rec)
    report.network, report.network_created = net.name, net.created
    say("info", f"drill {rec.id} of point {point.id[:12]} ({point.name}), mode {mode}, in "
        f"{'the new' if net.created else 'the existing'} isolated network {net.name}"
        + (f", its disks volumes of the storage pool {pool}" if pool is not None else ""))
    recs = {v.name: v for v in group_vms(point) if v.name in sequence}
    names = {vm: f"{vm}{rec.suffix}" for vm in sequence}
    rec.domains = list(names.values())
    save(rec)
    if mode == "restore":
        shadow = Manifest(id=point.id, name=point.name, time=point.time,
                          vms=[recs[vm] for vm in sequence])
        restore_group(conn, repo, shadow, suffix=rec.suffix, storage=storage, pool=pool,
                      network=net.name, start=False, progress=progress, run_dir=run_dir)
    else:
        assert creds is not None and storage is not None
        for vm in sequence:
            rec.instants.append(names[vm])
            save(rec)
            start_on_export(conn, repo, creds, point, recs[vm], kind="instant",
                            name=names[vm], network=net.name, storage=storage, start=False)
    for vm in sequence:
        mark(conn.lookupByName(names[vm]), rec)
    say("info", f"{len(sequence)} VM(s) made: {', '.join(names.values())}")
    rec.state = "checking"
    save(rec)
    under: list[VmUnderCheck] = []
    for vm in sequence:
        dv = DrillVm(vm, names[vm])
        report.vms.append(dv)
        dom = conn.lookupByName(names[vm])
        dv.started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        dv.running_after_s = _start(dom, names[vm])
        say("info", f"{names[vm]} (of {vm}) running after {dv.running_after_s:.1f} s")
        v = VmUnderCheck(vm, names[vm], dom)
        under.append(v)
        for spec in [c for c in checks if c.kind != "script" and c.vm in (None, vm)]:
            outcome = run_vm_check(spec, v, cancel=cancel)
            _heard(report, outcome, say)
        dv.addresses = v.addresses or lease_addresses(dom)
    for spec in [c for c in checks if c.kind == "script"]:
        _heard(report, run_script(spec, drill_id=rec.id, network=net.name, vms=under,
                                  cancel=cancel), say)


def _heard(report: DrillReport, outcome: CheckOutcome, say: Log) -> None:
    report.checks.append(outcome)
    where = f" on {outcome.name}" if outcome.name else ""
    label = f"{outcome.kind}:{outcome.arg}" if outcome.arg else outcome.kind
    if outcome.passed:
        say("info", f"check {label}{where} passed in {outcome.seconds:.1f} s")
        return
    say("error", f"check {label}{where} failed: {outcome.error}"
        + (f"; output:\n{outcome.output}" if outcome.output else ""))
    shown = outcome.output.strip()
    raise DrillFailed(report.target, label, outcome.name or "(the host)",
                      outcome.error.rstrip(".") + "."
                      + (f" Output: {shown[-400:]}" if shown else ""), "")


def _start(dom: libvirt.virDomain, name: str) -> float:
    t0 = time.monotonic()
    try:
        dom.create()
    except libvirt.libvirtError as e:
        raise HypervisorError(f"the drill's VM {name} did not start "
                              f"({e.get_error_message()})", "") from None
    while dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
        if time.monotonic() - t0 > RUNNING_TIMEOUT_S:
            raise HypervisorError(f"the drill's VM {name} is not running after "
                                  f"{RUNNING_TIMEOUT_S:g} s", "")
        time.sleep(0.05)
    return round(time.monotonic() - t0, 3)
