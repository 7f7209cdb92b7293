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
    Float,
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
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)  # its owner




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
    """One run of backup, restore, verify, prune, gc, copy or drill."""

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
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)  # whose job
    by: Mapped[str | None] = mapped_column(String(128), nullable=True)  # who started it


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
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)  # its owner
    template: Mapped[bool] = mapped_column(Boolean, default=False)  # offered to tenants


class ServiceRow(Base):
    """A running ``stasis serve`` (so that commands hand work to it rather than run it)."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    pid_start: Mapped[int] = mapped_column(BigInteger)
    started: Mapped[datetime] = mapped_column(UtcDateTime())
    repo: Mapped[str | None] = mapped_column(Text)  # the repository's id


# ------------------------------------------------------------------ users, tenants, audit
# The server's accounts (stasis.app.auth holds the rules: roles, permissions, scopes).
# Secrets are never stored: a password as its Argon2id hash, a token or a session as the
# SHA-256 of its random secret (a 256-bit secret needs no slow hash).


class RoleRow(Base):
    """A role as data: its name and the permissions it grants (built-in ones are
    written by the migration and kept up to date when the catalog is opened)."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    permissions: Mapped[list[str]] = mapped_column(JSON)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")


class TenantRow(Base):
    """An owner of VMs (by explicit names or a label selector) and of what they define,
    with the places its users may restore to."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    vms: Mapped[list[str]] = mapped_column(JSON)  # VM names it owns
    labels: Mapped[dict[str, str]] = mapped_column(JSON)  # and VMs carrying all of these
    restore_pools: Mapped[list[str]] = mapped_column(JSON)  # where it may restore to
    restore_networks: Mapped[list[str]] = mapped_column(JSON)
    restore_dirs: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(UtcDateTime())


class UserRow(Base):
    """A local account, bound to one role over the whole system (tenant None) or over
    one tenant."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password: Mapped[str] = mapped_column(Text)  # an encoded Argon2id hash
    role: Mapped[str] = mapped_column(String(64), ForeignKey("roles.name"))
    tenant: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    last_login: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class TokenRow(Base):
    """A bearer API token of a user: named, scoped, expiring, revocable, never more
    powerful than its user (checked at every use, not only at creation)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # shown in listings
    hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the secret
    role: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: the user's
    permissions: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # a subset
    created: Mapped[datetime] = mapped_column(UtcDateTime())
    expires: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_used: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_address: Mapped[str | None] = mapped_column(String(64), nullable=True)


class SessionRow(Base):
    """A browser's signed-in session (a cookie) with its CSRF token."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the cookie
    csrf: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(UtcDateTime())
    expires: Mapped[datetime] = mapped_column(UtcDateTime())
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditRow(Base):
    """One line of the append-only audit log: who did what to which object, and how
    it ended. Rows are only ever inserted."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    user: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: anonymous
    token: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the token's id
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(64))  # "login", "backup.start", ...
    object: Mapped[str] = mapped_column(Text, default="")  # "vm:web1", "job:12", ...
    result: Mapped[str] = mapped_column(String(16))  # ok | denied | failed
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class IdempotencyRow(Base):
    """What a POST with an ``Idempotency-Key`` answered, so that the same key from the
    same user answers the same again instead of starting the work twice."""

    __tablename__ = "idempotency"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    request: Mapped[str] = mapped_column(String(64))  # sha256 of method, path and body
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_idempotency_user_key", "user", "key", unique=True),)


# ------------------------------------------------------------------ recovery drills (issue 17)


class DrillRow(Base):
    """The newest drill of one VM or one group: what it proved, and when."""

    __tablename__ = "drills"

    subject_kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # vm | group
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    drill_id: Mapped[str] = mapped_column(String(16))
    job: Mapped[int | None] = mapped_column(Integer, nullable=True)
    repo: Mapped[str | None] = mapped_column(String(64), nullable=True)  # repository id
    point: Mapped[str] = mapped_column(String(64))
    point_name: Mapped[str] = mapped_column(String(255))
    mode: Mapped[str] = mapped_column(String(16))
    passed: Mapped[bool] = mapped_column(Boolean)
    rto_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    started: Mapped[datetime] = mapped_column(UtcDateTime())
    ended: Mapped[datetime] = mapped_column(UtcDateTime())
    policy: Mapped[str | None] = mapped_column(String(128), nullable=True)
    failure: Mapped[str | None] = mapped_column(Text, nullable=True)
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
