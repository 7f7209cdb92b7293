"""A checked policy as the rest of Stasis uses it: :class:`Policy` and its parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from stasis.protection.consistency import LEVELS, Hooks
from stasis.service.retention import PERIOD_RULES, Duration, RetentionRules
from stasis.service.schedule import Schedule

EVENTS = ("failure", "rpo", "recovered", "drill")
"""What a policy can notify about: a failed job, an RPO breach, the RPO met again, a
drill target breached (a drill failed, took longer than ``rto``, or is older than
``max_age``)."""

DEFAULT_EVENTS = ("failure", "rpo", "drill")
DEFAULT_CHECK_TIMEOUT = timedelta(minutes=2)
DEFAULT_WEBHOOK_TIMEOUT = timedelta(seconds=10)
DEFAULT_SMTP_TIMEOUT = timedelta(seconds=30)
DEFAULT_HOOK_TIMEOUT = timedelta(seconds=60)


@dataclass(frozen=True)
class Members:
    """Who a policy protects, resolved again at every run (names, stored groups, selectors)."""

    vms: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    select: tuple[str, ...] = ()  # fnmatch globs on VM names
    labels: Mapping[str, str] = field(default_factory=dict)  # every one must match

    def describe(self) -> str:
        parts = [*(f"vm {v}" for v in self.vms), *(f"group {g}" for g in self.groups),
                 *(f"select {s}" for s in self.select)]
        if self.labels:
            parts.append("labels " + ",".join(f"{k}={v}" for k, v in self.labels.items()))
        return "; ".join(parts)


@dataclass(frozen=True)
class Retention:
    """The policy's retention, as the file gives it.

    ``counts`` holds the count of every rule of
    :data:`~stasis.service.retention.PERIOD_RULES` by the rule's name (the file's
    ``keep_<rule>`` keys; 0 turns a rule off). ``keep_within`` and ``min_age`` are
    spans in the retention engine's grammar (``36h``, ``10d``, ``2w``, ``6m`` months,
    ``1y``); :meth:`rules` converts the whole to
    :class:`~stasis.service.retention.RetentionRules` in the policy's time zone.
    """

    counts: Mapping[str, int] = field(default_factory=dict)
    keep_within: str | None = None
    min_age: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts",
                           {rule.name: self.counts.get(rule.name, 0) for rule in PERIOD_RULES})

    @classmethod
    def from_keys(cls, keys: Mapping[str, Any]) -> Retention:
        """From a retention table's keys (``keep_daily = 7``, ``keep_within = "2d"``)."""
        return cls(counts={rule.name: keys.get(rule.key, 0) for rule in PERIOD_RULES},
                   keep_within=keys.get("keep_within"), min_age=keys.get("min_age"))

    def rules(self, timezone: str = "UTC") -> RetentionRules:
        """The engine's :class:`~stasis.service.retention.RetentionRules` for these numbers."""
        return RetentionRules.of(
            self.counts,
            within=None if self.keep_within is None else Duration.parse(self.keep_within),
            min_age=None if self.min_age is None else Duration.parse(self.min_age),
            timezone=timezone,
        )

    @property
    def keeps_everything(self) -> bool:
        """No rule at all: nothing is pruned under this policy."""
        return not any(self.counts.values()) and not self.keep_within

@dataclass(frozen=True)
class CopyTarget:
    """Where a policy's points are copied (a repository the service names), when
    (``schedule`` None: after every successful run of the policy), and how long they
    are kept there (``retention`` None: the policy's own rules, applied by the
    destination's own prune)."""

    to: str
    schedule: Schedule | None = None
    retention: Retention | None = None

    @property
    def after_runs(self) -> bool:
        return self.schedule is None


@dataclass(frozen=True)
class EmailTarget:
    """Where email notifications go, through SMTP (STARTTLS and login optional)."""

    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    password_file: str | None = None  # read at send time: no secret in the policy file
    timeout: timedelta = DEFAULT_SMTP_TIMEOUT


@dataclass(frozen=True)
class NotifyConfig:
    """Which events are told, and to which webhooks and mailboxes."""

    on: frozenset[str] = frozenset(DEFAULT_EVENTS)
    webhooks: tuple[str, ...] = ()
    webhook_timeout: timedelta = DEFAULT_WEBHOOK_TIMEOUT
    email: EmailTarget | None = None

    @property
    def anywhere(self) -> bool:
        return bool(self.webhooks or self.email)


@dataclass(frozen=True)
class DrillConfig:
    """A policy's recovery drill: run on ``schedule`` (None: only when asked) for each of
    its groups and VMs, with ``checks`` (as ``stasis drill --check`` takes them), held to
    ``rto`` (the measured recovery time) and ``max_age`` (the age of the last good
    drill)."""

    schedule: Schedule | None = None
    mode: str = "restore"
    checks: tuple[str, ...] = ()
    check_timeout: timedelta = DEFAULT_CHECK_TIMEOUT
    network: str | None = None
    order: tuple[str, ...] = ()
    storage: str | None = None
    pool: str | None = None  # a restore drill's disks as volumes of this libvirt pool
    rto: timedelta | None = None
    max_age: timedelta | None = None


@dataclass(frozen=True)
class Policy:
    """One checked policy. ``origin`` is ``FILE:LINE`` of its table, ``source`` its TOML."""

    name: str
    members: Members
    schedule: Schedule
    consistency: str = "crash"
    require: str | None = None
    hooks: Hooks = field(default_factory=Hooks)
    retention: Retention = field(default_factory=Retention)
    rpo: timedelta | None = None
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    repository: str | None = None  # a repository the service names; None: its default
    copies: tuple[CopyTarget, ...] = ()
    drill: DrillConfig | None = None
    description: str = ""
    origin: str = ""
    source: str = ""

    @property
    def timezone(self) -> str:
        return self.schedule.timezone

    @property
    def required_level(self) -> str:
        """The level below which a run fails (``require``, else ``crash``)."""
        return self.require or LEVELS[0]

    def retention_rules(self) -> RetentionRules:
        return self.retention.rules(self.timezone)

    def copy_target(self, to: str) -> CopyTarget | None:
        return next((c for c in self.copies if c.to == to), None)

    def copy_retention(self, target: CopyTarget) -> Retention:
        """The retention at ``target``: its own, else the policy's."""
        return target.retention if target.retention is not None else self.retention
