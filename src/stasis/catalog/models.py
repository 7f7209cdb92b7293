"""The catalog's tables, one model each.

Every change to a model comes with a migration in ``migrations/versions`` (the
catalog is upgraded from whatever revision a file holds, never re-created). Times
are stored in UTC and read back as aware datetimes on every database. Structured
fields that are read and written whole (a group's members, selectors, hooks) are
JSON columns: the catalog never queries inside them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from stasis.catalog.records import JOB_KINDS, JOB_STATES, LOG_LEVELS

# Named constraints, so that migrations can drop and alter them on every database
# (SQLite's batch mode needs names to find them).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no zone; PostgreSQL's ``timestamptz`` does. Either way the
    application sees aware UTC datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the catalog stores aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


LEVEL_CHECK = "{col} IN ('crash', 'filesystem', 'application')"


class GroupRow(Base):
    """A stored group: VMs that must be captured at one instant."""

    __tablename__ = "groups"
    __table_args__ = (
        CheckConstraint(LEVEL_CHECK.format(col="consistency"), name="consistency_level"),
        CheckConstraint(f"require IS NULL OR {LEVEL_CHECK.format(col='require')}",
                        name="require_level"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    members: Mapped[list[str]] = mapped_column(JSON)  # VM names, in their order
    name_globs: Mapped[list[str]] = mapped_column(JSON)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)  # a VM must carry all of them
    consistency: Mapped[str] = mapped_column(String(16))
    require: Mapped[str | None] = mapped_column(String(16))
    hooks: Mapped[dict[str, Any]] = mapped_column(JSON)  # Hooks.to_dict()
    description: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UtcDateTime())
    updated: Mapped[datetime] = mapped_column(UtcDateTime())




def _one_of(col: str, values: tuple[str, ...]) -> str:
    return f"{col} IN ({', '.join(repr(v) for v in values)})"


class RepositoryRow(Base):
    """A repository the catalog has seen, by its id (from its config) and URL."""

    __tablename__ = "repositories"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime())
    indexed: Mapped[datetime | None] = mapped_column(UtcDateTime())  # last points rebuild/sync
    # The config name a service last served it under (one repository per name).
    name: Mapped[str | None] = mapped_column(String(64))


class VmRow(Base):
    """A VM seen in a point or a job (by name; its UUID as last seen)."""

    __tablename__ = "vms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    uuid: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime())


class PointRow(Base):
    """One committed manifest of a repository, as an index entry (rebuilt from it).

    Keyed by repository and point: a copy keeps the point's id at its destination,
    so one point may be indexed in several repositories."""

    __tablename__ = "points"
    __table_args__ = (Index("ix_points_repo_time", "repo", "time"),)

    repo: Mapped[str] = mapped_column(
        String(64), ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(UtcDateTime())
    vms: Mapped[list[str]] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(BigInteger)
    bytes_read: Mapped[int] = mapped_column(BigInteger)
    parent: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    consistency: Mapped[dict[str, str]] = mapped_column(JSON)  # VM name -> level reached


class JobRow(Base):
    """One run of backup, restore, verify, prune, gc or copy."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_one_of("kind", JOB_KINDS), name="kind"),
        CheckConstraint(_one_of("state", JOB_STATES), name="state"),
        Index("ix_jobs_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    policy: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))  # what it works on: a point name, a group
    vms: Mapped[list[str]] = mapped_column(JSON)  # target VMs (none for prune, gc)
    repo: Mapped[str | None] = mapped_column(Text)  # the repository's id (not its URL)
    state: Mapped[str] = mapped_column(String(16))
    queued: Mapped[datetime] = mapped_column(UtcDateTime())
    started: Mapped[datetime | None] = mapped_column(UtcDateTime())
    ended: Mapped[datetime | None] = mapped_column(UtcDateTime())
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_written: Mapped[int] = mapped_column(BigInteger, default=0)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)  # per VM: point, bytes, error
    error: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # how to run it again (the queue)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    pid_start: Mapped[int | None] = mapped_column(BigInteger)  # /proc/PID/stat starttime
    # Asked to stop: the service running it interrupts it at its next tick.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)


class JobLogRow(Base):
    """One line of a job's log."""

    __tablename__ = "job_logs"
    __table_args__ = (
        CheckConstraint(_one_of("level", LOG_LEVELS), name="level"),
        Index("ix_job_logs_job_time", "job", "time"),
        Index("ix_job_logs_time", "time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[int] = mapped_column(Integer, ForeignKey("jobs.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UtcDateTime())
    level: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)


class PolicyRow(Base):
    """A policy as the service last loaded it, with its schedule's state."""

    __tablename__ = "policies"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(Text)  # the policy's TOML
    last_run: Mapped[datetime | None] = mapped_column(UtcDateTime())
    next_run: Mapped[datetime | None] = mapped_column(UtcDateTime())
    updated: Mapped[datetime] = mapped_column(UtcDateTime())


class ServiceRow(Base):
    """A running ``stasis serve`` (so that commands hand work to it rather than run it)."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    pid_start: Mapped[int] = mapped_column(BigInteger)
    started: Mapped[datetime] = mapped_column(UtcDateTime())
    repo: Mapped[str | None] = mapped_column(Text)  # the repository's id
