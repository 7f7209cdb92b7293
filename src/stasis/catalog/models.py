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

from sqlalchemy import JSON, CheckConstraint, DateTime, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

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
