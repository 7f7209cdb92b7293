"""Policies: a policy file checked and summarised, and where a command finds a policy
(a policy file, else those the service stored in the catalog).

Files are read with :func:`stasis.service.policy.load_policies`, the function the
service loads them with, so what a check accepts is what ``stasis serve`` runs.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stasis.app.models import PolicyCheck, PolicyProblem, PolicySummary
from stasis.errors import PolicyNotFound, StasisError, UsageError

if TYPE_CHECKING:
    from stasis.app.config import Config
    from stasis.catalog import Catalog
    from stasis.service.policy import Policy


def repository_rules(config: Config | None) -> dict[str, Any]:
    """What the repositories a policy names are checked against (the keyword
    arguments of :func:`load_policy_file`): the config file's names, its default,
    the repositories whose key file or passphrase file cannot be read (name -> why),
    which a copy could not unlock, and the immutable ones (name -> their Object Lock
    in seconds, from each repository's config: one read, no key needed; one that
    cannot be read now is not checked here, and ``stasis serve`` checks it when it
    opens it). No config file: nothing is checked."""
    if config is None or not config.repositories:
        return {}
    locked: dict[str, str] = {}
    immutable: dict[str, int] = {}
    for name, r in config.repositories.items():
        secret = r.secret_file
        what = "key_file" if r.key_file else "passphrase_file"
        if not secret.is_file():
            locked[name] = f"its {what} {secret} does not exist"
        elif not os.access(secret, os.R_OK):
            locked[name] = f"its {what} {secret} cannot be read by this user"
        lock = _lock_of(r.url)
        if lock is not None:
            immutable[name] = lock
    return {"repositories": set(config.repositories),
            "default_repository": config.default_repository, "locked": locked,
            "immutable": immutable}


def _lock_of(url: str) -> int | None:
    """The Object Lock (seconds) of the repository at ``url``, None when it has none
    or its config cannot be read."""
    from stasis.backends import open_backend
    from stasis.repository import Repository
    from stasis.repository.immutability import Immutability

    try:
        found = Immutability.from_config(Repository.read_config(open_backend(url)))
    except (StasisError, OSError, ValueError):
        return None
    return None if found is None else found.retain_s


def load_policy_file(path: Path | None, *, repositories: Collection[str] | None = None,
                     default_repository: str | None = None,
                     locked: Mapping[str, str] | None = None,
                     immutable: Mapping[str, int] | None = None) -> list[Policy]:
    """Every policy of the file ``path`` (validated whole: every problem is listed); with
    ``repositories``, a policy's ``repository`` and copy destinations must be among
    those names; at a repository of ``immutable`` the retention must outlast the lock
    (see :func:`stasis.service.policy.check_text`)."""
    from stasis.service.policy import load_policies

    if path is None:
        raise UsageError("give the policy file with --policies FILE (or $STASIS_POLICIES, "
                         "or policies in the config file)")
    return load_policies(path, repositories=repositories,
                         default_repository=default_repository, locked=locked,
                         immutable=immutable)


def find_policy(c: Catalog, name: str, policies: Path | None, *, doing: str) -> Policy:
    """Policy ``name`` from the file ``policies``, else from those stored in the catalog;
    ``doing`` says what was not done when there is none ("run", "deleted")."""
    from stasis.service.status import stored_policies

    found = [p for p in (load_policy_file(policies) if policies else stored_policies(c))
             if p.name == name]
    if not found:
        where = str(policies) if policies else f"the catalog {c.shown}"
        raise PolicyNotFound(f"no policy named '{name}' in {where}. Nothing was {doing}; "
                             "'stasis policy list FILE' shows the policies.")
    return found[0]


RUNS_SHOWN = 3


def parse_after(text: str | None) -> datetime:
    """``--after``: an ISO 8601 instant (UTC when it has no offset); None: now."""
    if text is None:
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--after '{text}' is not an ISO 8601 time "
                         "(e.g. 2026-03-29T00:00:00+01:00)") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def summary(p: Policy, after: datetime, runs: int = RUNS_SHOWN) -> PolicySummary:
    from stasis.service.duration import format_duration
    from stasis.service.notify import redact_url
    from stasis.service.schedule import CronSchedule, IntervalSchedule

    s = p.schedule
    schedule: dict[str, Any] = {"timezone": s.timezone}
    if isinstance(s, CronSchedule):
        schedule["cron"] = s.expression
    elif isinstance(s, IntervalSchedule):
        schedule["every"] = format_duration(s.every)
    email = p.notify.email
    return PolicySummary(
        name=p.name, description=p.description, origin=p.origin,
        members={"vms": list(p.members.vms), "groups": list(p.members.groups),
                 "select": list(p.members.select), "labels": dict(p.members.labels)},
        schedule=schedule, next_runs=[t.isoformat() for t in s.upcoming(after, runs)],
        consistency=p.consistency, require=p.require,
        hooks=p.hooks.to_dict() if p.hooks else None,
        retention=dict(vars(p.retention)),
        rpo=None if p.rpo is None else format_duration(p.rpo),
        repository=p.repository,
        copies=[{"to": c.to, "schedule": "after every run" if c.schedule is None
                 else c.schedule.describe(),
                 "retention": dict(vars(p.copy_retention(c)))} for c in p.copies],
        notify={
            "on": sorted(p.notify.on),
            "webhooks": [redact_url(u) for u in p.notify.webhooks],
            "email": None if email is None else {"server": f"{email.host}:{email.port}",
                                                 "from": email.sender, "to": list(email.to)},
        },
    )


def check_policy_file(path: Path, *, repositories: Collection[str] | None = None,
                      default_repository: str | None = None,
                      locked: Mapping[str, str] | None = None,
                      immutable: Mapping[str, int] | None = None) -> PolicyCheck:
    """Every problem of the policy file ``path`` with its line (a file that cannot be
    read at all raises the PolicyError that says why); ``repositories``,
    ``default_repository``, ``locked``, ``immutable``: as :func:`load_policy_file`."""
    from stasis.service.policy import check_text, load_policies

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        load_policies(path)  # raises the PolicyError that says why
        raise
    policies, problems = check_text(text, repositories=repositories,
                                    default_repository=default_repository, locked=locked,
                                    immutable=immutable)
    return PolicyCheck(file=str(path), ok=not problems, policies=[p.name for p in policies],
                       problems=[PolicyProblem(line=p.line, policy=p.policy, message=p.text,
                                               text=p.render(str(path))) for p in problems])


def list_policy_file(path: Path, *, after: datetime | None = None) -> list[PolicySummary]:
    """Each policy of the file ``path``, with its next runs after ``after`` (now)."""
    start = after or datetime.now(UTC)
    return [summary(p, start) for p in load_policy_file(path)]
