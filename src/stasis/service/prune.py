"""Pruning: remove the points that no retention rule keeps.

:func:`prune_points` is what ``stasis prune`` and the service's retention step after
a policy's run both call: the plan (:func:`stasis.service.retention.plan`) is made
under the repository's shared lock, on the points and holds as they are then, and a
point held since the plan was made is kept. Chunks stay until ``stasis gc``.

In an immutable repository a point whose manifest the storage still locks is kept,
its reason saying until when, and a prune that removed anything ends with the lock
renewal of the epoch if none ran yet (docs/immutability.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from stasis.errors import PointHeld, PointLocked, PointNotFound
from stasis.repository import ObjectDamaged, Repository
from stasis.service.retention import Decision, PointInfo, RetentionRules, plan

if TYPE_CHECKING:  # the CLI's prune imports this module: no catalog or pydantic for it
    from stasis.service.jobs import JobRun
    from stasis.service.policy import Policy

log = logging.getLogger("stasis.prune")

OnDamaged = Callable[[str, ObjectDamaged], None]


@dataclass
class PruneResult:
    decisions: list[Decision] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _decide(repo: Repository, rules: RetentionRules, now: datetime, *,
            names: Sequence[str | None],
            vm: str | None, on_damaged: OnDamaged | None) -> list[Decision]:
    points = [PointInfo.from_manifest(m) for m in repo.points(on_damaged=on_damaged)]
    if vm is not None and not any(vm in p.vms for p in points):
        raise PointNotFound(f"vm {vm}")
    decisions: list[Decision] = []
    for name in names:
        if name is not None and not any(p.name == name for p in points):
            raise PointNotFound(name)
        decisions += plan(points, rules, now=now, holds=repo.holds(), name=name, vm=vm)
    return decisions


def prune_points(
    repo: Repository,
    rules: RetentionRules,
    *,
    now: datetime,
    names: Sequence[str | None] | None = None,
    vm: str | None = None,
    dry_run: bool = False,
    on_damaged: OnDamaged | None = None,
) -> PruneResult:
    """Plan (and unless ``dry_run`` carry out) retention over the chains ``names``
    (``[None]``: every chain, each on its own) or the points holding ``vm``."""
    names = names if names is not None else [None]
    if dry_run:
        return PruneResult(_decide(repo, rules, now, names=names, vm=vm, on_damaged=on_damaged))
    repo.check_may_delete("prune")
    result = PruneResult()
    with repo.shared_lock("prune", frees_space=True):
        result.decisions = _decide(repo, rules, now, names=names, vm=vm, on_damaged=on_damaged)
        for i, d in enumerate(result.decisions):
            if d.keep:
                continue
            try:
                repo.remove_point(d.point.id, now=now)
            except PointHeld:  # held since the plan was made
                hold = repo.hold_of(d.point.id)
                why = hold.describe() if hold else "held"
                result.decisions[i] = Decision(d.point, True, (why,), d.series)
                continue
            except PointLocked as e:  # the storage's Object Lock: not before its date
                why = f"locked by the storage until {e.args[1]}"
                result.decisions[i] = Decision(d.point, True, (why,), d.series)
                continue
            except PointNotFound:
                pass  # another prune removed it first
            result.removed.append(d.point.id)
            log.info("removed point %s '%s' of %s: %s", d.point.id[:12], d.point.name,
                     d.point.time.isoformat(), "; ".join(d.reasons))
        if repo.immutability is not None:
            repo.ensure_renewed()  # the kept points' locks, extended once an epoch
    return result


def policy_chains(repo: Repository, policy_name: str) -> list[str]:
    """The chains (point names) a policy's runs made: its points carry its tag."""
    return sorted({m.name for m in repo.points() if m.tags.get("policy") == policy_name})


def policy_retention(repo: Repository, policy: Policy, now: datetime, run: JobRun) -> None:
    """The retention step after a policy's successful run: its rules over its chains."""
    chains = policy_chains(repo, policy.name)
    if not chains:
        return
    result = prune_points(repo, policy.retention_rules(), now=now, names=chains)
    run.result["retention"] = {"removed": result.removed,
                               "kept": [d.point.id for d in result.decisions if d.keep]}
    log.info("retention of policy '%s': %d of %d points removed (chains %s); gc reclaims "
             "their chunks", policy.name, len(result.removed), len(result.decisions),
             ", ".join(chains))
