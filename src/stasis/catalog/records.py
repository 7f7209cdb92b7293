"""The catalog's records as plain data: jobs, their log lines, the running services,
the names of job kinds, states and log levels, and a manifest's time.

Nothing here loads SQLAlchemy: :mod:`stasis.catalog.jobs` reads and writes these
through the ORM, :mod:`stasis.catalog.quick` through the standard library's sqlite3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CATALOG_FILE = "catalog.db"  # in the state directory, when no catalog is named
JOB_KINDS = ("backup", "restore", "verify", "prune", "gc", "copy", "drill")
JOB_STATES = ("queued", "running", "succeeded", "failed", "interrupted")
LOG_LEVELS = ("debug", "info", "warning", "error")
FINAL_STATES = ("succeeded", "failed", "interrupted")


@dataclass
class Job:
    id: int
    kind: str
    name: str
    policy: str | None
    vms: list[str]
    repo: str | None
    state: str
    queued: datetime
    started: datetime | None = None
    ended: datetime | None = None
    bytes_read: int = 0
    bytes_written: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    exit_code: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    host: str | None = None
    pid: int | None = None
    pid_start: int | None = None
    cancel_requested: bool = False
    tenant: str | None = None  # whose job (None: the system's)
    by: str | None = None  # who started it

    @property
    def duration_s(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return (self.ended - self.started).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "name": self.name, "policy": self.policy,
            "vms": list(self.vms), "repo": self.repo, "state": self.state,
            "queued": _iso(self.queued), "started": _iso(self.started),
            "ended": _iso(self.ended), "duration_s": self.duration_s,
            "bytes_read": self.bytes_read, "bytes_written": self.bytes_written,
            "result": self.result, "error": self.error, "exit_code": self.exit_code,
            "host": self.host, "pid": self.pid, "tenant": self.tenant, "by": self.by,
        }


@dataclass
class LogLine:
    time: datetime
    level: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"time": _iso(self.time), "level": self.level, "text": self.text}


@dataclass
class Service:
    id: int
    host: str
    pid: int
    pid_start: int
    started: datetime
    repo: str | None


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def parse_time(text: str) -> datetime:
    """A manifest's ISO 8601 time as an aware UTC datetime."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
