"""What is wrong with a policy file, each problem with its line and policy.

Pydantic's errors are turned into messages that name the key and show the value
as TOML would write it; the rules between keys (one schedule, ``require`` not
above ``consistency``, hooks only at ``application``, unique names, at least one
member) are checked on whatever values were well formed. E.g.
``policies.toml:12: policy 'nightly': retention.keep_daily must be a whole number
>= 0, not "seven"``.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from stasis.errors import UsageError
from stasis.protection.consistency import LEVELS, level_rank
from stasis.service.policy.schema import KNOWN_KEYS
from stasis.service.policy.toml_lines import KeyPath
from stasis.service.policy.values import show


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a policy file, with the line it is on."""

    line: int
    policy: str | None
    text: str

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        who = f"policy '{self.policy}': " if self.policy else ""
        return f"{where}: {who}{self.text}"


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class Report:
    def __init__(self, raw: Mapping[str, Any], lines: Mapping[KeyPath, int]) -> None:
        self.raw = raw
        self.lines = lines
        self.problems: list[Problem] = []

    def line_of(self, path: KeyPath) -> int:
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return 1

    def policy_name(self, index: int) -> str:
        policies = self.raw.get("policy")
        if isinstance(policies, list) and index < len(policies):
            entry = policies[index]
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                return str(entry["name"])
        return f"#{index + 1}"

    def add(self, path: KeyPath, text: str) -> None:
        policy = None
        if len(path) >= 2 and path[0] == "policy" and isinstance(path[1], int):
            policy = self.policy_name(path[1])
        self.problems.append(Problem(self.line_of(path), policy, text))


_MESSAGES = {
    "string_type": "must be a string, not {shown}",
    "list_type": "must be an array, not {shown}",
    "bool_type": "must be true or false, not {shown}",
    "dict_type": "must be a table, not {shown}",
    "model_type": "must be a table, not {shown}",
    "model_attributes_type": "must be a table, not {shown}",
    "int_type": "must be a whole number, not {shown}",
}


def pydantic_problems(report: Report, error: ValidationError) -> None:
    for e in error.errors():
        loc: KeyPath = tuple(e["loc"])
        rest = loc[2:] if len(loc) >= 2 and loc[0] == "policy" else loc
        what = _dotted(rest) or "the file"
        kind = e["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            section = next((str(p) for p in reversed(loc[:-1]) if isinstance(p, str)), "")
            known = KNOWN_KEYS.get(section, set())
            hint = difflib.get_close_matches(key, sorted(known), n=1)
            where = f" in {_dotted(rest[:-1])}" if rest[:-1] else ""
            text = f"unknown key '{key}'{where}"
            text += f" (did you mean '{hint[0]}'?)" if hint else (
                f" (known: {', '.join(sorted(known))})" if known else "")
        elif kind == "missing":
            text = f"{what} is missing"
            if loc == ("policy",):
                text = "no [[policy]] table: a policy file holds one or more"
        elif kind == "too_short":
            text = f"{what} must not be empty"
            if loc == ("policy",):
                text = "no [[policy]] table: a policy file holds one or more"
        elif kind == "list_type" and loc == ("policy",):
            text = ("policies are [[policy]] tables, one per policy (an array of tables), "
                    f"not {show(e.get('input'))}")
        elif kind in _MESSAGES:
            text = f"{what} " + _MESSAGES[kind].format(shown=show(e.get("input")))
        else:
            text = f"{what} {e['msg']}"
        report.add(loc, text)


def rule_problems(report: Report, repositories: Collection[str] | None = None, *,
                  default_repository: str | None = None,
                  locked: Mapping[str, str] | None = None,
                  immutable: Mapping[str, int] | None = None) -> None:
    """The rules between keys, on the values that are well formed; with
    ``repositories``, each policy's ``repository`` and copy destinations must be one
    of them, and a destination must not be the policy's own repository (None: the
    ``default_repository``) nor one ``locked`` says cannot be unlocked (name ->
    why). At a repository of ``immutable`` (name -> its Object Lock in seconds), the
    retention must keep every point at least as long as the lock (:func:`lock_problems`)."""
    policies = report.raw.get("policy")
    if not isinstance(policies, list):
        return
    seen: dict[str, int] = {}
    for index, p in enumerate(policies):
        if not isinstance(p, dict):
            continue
        at: KeyPath = ("policy", index)
        name = p.get("name")
        if isinstance(name, str):
            if name in seen:
                report.add((*at, "name"), f"the name is used by the policy at line "
                                          f"{seen[name]} too; names must be unique")
            else:
                seen[name] = report.line_of((*at, "name"))
        repository = p.get("repository")
        if repositories is not None and isinstance(repository, str) \
                and repository not in repositories:
            known = ", ".join(sorted(repositories)) or "none"
            report.add((*at, "repository"), f"repository '{repository}' is not one the service "
                                            f"serves (configured: {known})")
        copy_problems(report, at, p, repositories, default_repository, locked or {})
        drill_problems(report, at, p)
        lock_problems(report, at, p, default_repository, immutable or {})
        if "cron" in p and "every" in p:
            report.add((*at, "every"), "has both cron and every: give one of them")
        elif "cron" not in p and "every" not in p:
            report.add(at, "has no schedule: give cron = \"0 2 * * *\" or every = \"6h\"")
        if not any(p.get(k) for k in ("vms", "groups", "select", "labels")):
            report.add(at, "has no members: give vms, groups, select or labels")
        vms = p.get("vms")
        if isinstance(vms, list):
            for n, vm in enumerate(vms):
                if isinstance(vm, str) and vms.index(vm) != n:
                    report.add((*at, "vms", n), f"vms names '{vm}' twice")
        consistency = p.get("consistency", LEVELS[0])
        require = p.get("require")
        if consistency in LEVELS and require in LEVELS and (
                level_rank(require) > level_rank(consistency)):
            report.add((*at, "require"),
                       f"require '{require}' is above consistency '{consistency}': a run "
                       "never reaches more than it attempts; raise consistency or lower "
                       "require")
        hooks = p.get("hooks")
        if isinstance(hooks, dict) and any(
                hooks.get(k) for k in ("pre_host", "post_host", "pre_guest", "post_guest")) \
                and consistency in LEVELS and consistency != "application":
            report.add((*at, "hooks"),
                       f"hooks run only at consistency 'application', and this policy's is "
                       f"'{consistency}': set consistency = \"application\" or drop the hooks")
        notify = p.get("notify")
        if isinstance(notify, dict):
            on = notify.get("on")
            if isinstance(on, list) and "rpo" in on and "rpo" not in p:
                report.add((*at, "notify", "on"),
                           "notify.on has 'rpo' but the policy sets no rpo")
            if not notify.get("webhooks") and not notify.get("email"):
                report.add((*at, "notify"), "notify names no webhooks and no email")


def drill_problems(report: Report, at: KeyPath, p: Mapping[str, Any]) -> None:
    """A policy's drill section: one schedule at most, one place for the disks, and a
    pool only for a restore drill (an instant drill restores no disk)."""
    drill = p.get("drill")
    if not isinstance(drill, dict):
        return
    where: KeyPath = (*at, "drill")
    if "cron" in drill and "every" in drill:
        report.add((*where, "every"), "drill has both cron and every: give one of them (or "
                                      "neither, to drill only when asked)")
    if "pool" not in drill:
        return
    if "storage" in drill:
        report.add((*where, "pool"), "drill has both pool and storage, two places for the "
                                     "disks: give one of them")
    if drill.get("mode") == "instant":
        report.add((*where, "pool"), "drill has a pool, but an instant drill restores no "
                                     "disk (its VMs run from the repository, their overlays "
                                     "in storage): drop pool or set mode = \"restore\"")


def copy_problems(report: Report, at: KeyPath, p: Mapping[str, Any],
                  repositories: Collection[str] | None, default_repository: str | None,
                  locked: Mapping[str, str]) -> None:
    """A policy's copy destinations: known, not its own repository, each once, each
    unlockable, one schedule at most."""
    copies = p.get("copy")
    entries = [copies] if isinstance(copies, dict) else copies
    if not isinstance(entries, list):
        return
    source = p.get("repository", default_repository)
    seen: set[str] = set()
    for n, c in enumerate(entries):
        if not isinstance(c, dict):
            continue
        where: KeyPath = (*at, "copy") if isinstance(copies, dict) else (*at, "copy", n)
        if "cron" in c and "every" in c:
            report.add((*where, "every"), "copy has both cron and every: give one of them "
                                          "(or neither, to copy after every run)")
        to = c.get("to")
        if not isinstance(to, str):
            continue
        if to in seen:
            report.add((*where, "to"), f"copy names the destination '{to}' twice")
        seen.add(to)
        if isinstance(source, str) and to == source:
            report.add((*where, "to"), f"copy destination '{to}' is the policy's own "
                                       "repository: a copy goes to another site")
        elif repositories is not None and to not in repositories:
            known = ", ".join(sorted(repositories)) or "none"
            report.add((*where, "to"), f"copy destination '{to}' is not a repository the "
                                       f"service serves (configured: {known})")
        elif to in locked:
            report.add((*where, "to"), f"copy destination '{to}' cannot be unlocked from the "
                                       f"config: {locked[to]}")


def lock_problems(report: Report, at: KeyPath, p: Mapping[str, Any],
                  default_repository: str | None, immutable: Mapping[str, int]) -> None:
    """At an immutable repository (the policy's own, or a copy's destination), a
    retention that prunes must keep every point at least as long as the repository's
    Object Lock: else prune is due to delete points whose lock has not ended, and
    cannot (the lock outlives the retention). The least time a retention keeps every
    point is :meth:`~stasis.service.retention.RetentionRules.shortest_keep`."""
    if not immutable:
        return
    own = p.get("retention")
    source = p.get("repository", default_repository)
    if isinstance(source, str) and source in immutable:
        _lock_problem(report, (*at, "retention") if own is not None else at, own, source,
                      immutable[source])
    copies = p.get("copy")
    entries = [copies] if isinstance(copies, dict) else copies
    for n, c in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(c, dict) or not isinstance(c.get("to"), str) \
                or c["to"] not in immutable:
            continue
        where: KeyPath = (*at, "copy") if isinstance(copies, dict) else (*at, "copy", n)
        theirs = c.get("retention")
        _lock_problem(report, (*where, "retention") if theirs is not None else (*where, "to"),
                      theirs if theirs is not None else own, c["to"], immutable[c["to"]])


def _lock_problem(report: Report, where: KeyPath, raw: Any, repository: str,
                  lock_s: int) -> None:
    from stasis.service.policy.model import Retention

    if raw is not None and not isinstance(raw, dict):
        return  # reported as a value of the wrong type
    try:
        retention = Retention.from_keys(raw or {})
        if retention.keeps_everything:
            return  # nothing is ever pruned: every lock is renewed as long as it stays
        shortest = retention.rules().shortest_keep()
    except (UsageError, ValueError, TypeError):
        return  # a malformed value, reported on its own line
    lock = timedelta(seconds=lock_s)
    if shortest >= lock:
        return
    kept = (f"keeps a point for as little as {_span(shortest)} (the longer of keep_within "
            "and min_age)" if shortest else
            "guarantees no time at all to a point (its count rules remove a point as soon "
            "as a newer one replaces it in its period, however young), and sets no "
            "keep_within or min_age")
    report.add(where, f"retention at the immutable repository '{repository}' {kept}, "
                      f"shorter than its Object Lock of {_span(lock)}: prune could not delete "
                      "its points on time (the lock outlives the retention). Set min_age "
                      f"(or keep_within) to at least the lock, e.g. min_age = "
                      f"\"{_span_value(lock)}\", or keep every point (no retention)")


def _span(t: timedelta) -> str:
    s = int(t.total_seconds())
    if s % 86400 == 0:
        return f"{s // 86400} day{'s' if s != 86400 else ''}"
    if s % 3600 == 0:
        return f"{s // 3600} hour{'s' if s != 3600 else ''}"
    return f"{s} seconds"


def _span_value(t: timedelta) -> str:
    """The least span of the retention grammar (h, d) that is at least ``t``."""
    s = int(t.total_seconds())
    return f"{-(-s // 86400)}d" if s % 86400 == 0 or s >= 86400 else f"{-(-s // 3600)}h"
