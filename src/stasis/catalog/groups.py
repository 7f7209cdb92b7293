"""Stored groups: create, read, change and delete them in the catalog.

A stored group is a :class:`~stasis.protection.groups.Group` (the definition the
protection layer resolves and backs up) with the times it was created and last
changed. Every change is validated before anything is written and made in one
transaction, so a refused change leaves the group as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stasis.catalog.db import Catalog
from stasis.catalog.models import GroupRow
from stasis.errors import GroupError, GroupNotFound
from stasis.protection.consistency import Hooks
from stasis.protection.groups import Group, validate


@dataclass
class StoredGroup:
    group: Group
    created: datetime
    updated: datetime
    tenant: str | None = None  # the tenant that defined it (None: the system's)

    @property
    def name(self) -> str:
        return self.group.name

    def to_dict(self) -> dict[str, Any]:
        g = self.group
        return {
            "name": g.name,
            "members": list(g.members),
            "select": list(g.name_globs),
            "labels": dict(g.labels),
            "consistency": g.consistency,
            "require": g.require,
            "hooks": g.hooks.to_dict(),
            "description": g.description,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
        }


def _from_row(row: GroupRow) -> StoredGroup:
    group = Group(
        name=row.name,
        members=list(row.members),
        name_globs=list(row.name_globs),
        labels=dict(row.labels),
        consistency=row.consistency,
        require=row.require,
        hooks=Hooks.from_dict(row.hooks),
        description=row.description,
    )
    return StoredGroup(group, row.created, row.updated, row.tenant)


def _fill(row: GroupRow, g: Group) -> None:
    row.name = g.name
    row.members = list(g.members)
    row.name_globs = list(g.name_globs)
    row.labels = dict(g.labels)
    row.consistency = g.consistency
    row.require = g.require
    row.hooks = g.hooks.to_dict()
    row.description = g.description


class GroupStore:
    """The groups of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    @staticmethod
    def _row(session: Session, name: str) -> GroupRow | None:
        return session.scalars(select(GroupRow).where(GroupRow.name == name)).one_or_none()

    def _must(self, session: Session, name: str) -> GroupRow:
        row = self._row(session, name)
        if row is None:
            raise GroupNotFound(f"no group named '{name}' in the catalog {self.catalog.shown}. "
                             "Nothing was changed. 'stasis group list' shows the groups.")
        return row

    def create(self, group: Group, *, tenant: str | None = None) -> StoredGroup:
        """Store ``group``, defined by ``tenant`` (None: the system)."""
        validate(group)
        now = self.catalog.clock.now()
        with self.catalog.session() as session:
            if self._row(session, group.name) is not None:
                raise GroupError(f"a group named '{group.name}' exists already. Nothing was "
                                 f"changed; change it with 'stasis group edit {group.name}'.")
            row = GroupRow(created=now, updated=now, tenant=tenant)
            _fill(row, group)
            session.add(row)
            try:
                session.flush()
            except IntegrityError:  # created by another process since the check above
                raise GroupError(f"a group named '{group.name}' exists already. Nothing was "
                                 "changed.") from None
        return _from_row(row)

    def get(self, name: str) -> StoredGroup | None:
        with self.catalog.session(write=False) as session:
            row = self._row(session, name)
            return _from_row(row) if row is not None else None

    def must_get(self, name: str) -> StoredGroup:
        with self.catalog.session(write=False) as session:
            return _from_row(self._must(session, name))

    def list(self) -> list[StoredGroup]:
        with self.catalog.session(write=False) as session:
            rows = session.scalars(select(GroupRow).order_by(GroupRow.name)).all()
            return [_from_row(r) for r in rows]

    def update(self, name: str, change: Callable[[Group], Group]) -> StoredGroup:
        """Apply ``change`` to a copy of group ``name`` and store the result.

        ``change`` may raise to refuse; the stored group is then untouched.
        """
        with self.catalog.session() as session:
            row = self._must(session, name)
            current = _from_row(row).group
            new = validate(change(replace(current, members=list(current.members),
                                          name_globs=list(current.name_globs),
                                          labels=dict(current.labels),
                                          hooks=Hooks.from_dict(current.hooks.to_dict()))))
            if new.name != name and self._row(session, new.name) is not None:
                raise GroupError(f"a group named '{new.name}' exists already. Nothing was "
                                 "changed.")
            if new != current:
                _fill(row, new)
                row.updated = self.catalog.clock.now()
        return _from_row(row)

    def delete(self, name: str) -> StoredGroup:
        with self.catalog.session() as session:
            row = self._must(session, name)
            gone = _from_row(row)
            session.delete(row)
        return gone
