"""Policies as the service last loaded them, and when each last ran and runs next.

The definition itself lives in the policy file (:mod:`stasis.service.policy` reads
it); the catalog keeps its TOML source so that ``stasis status`` and the REST API can
show it without the file, and the schedule's state (last and next run) so that runs
missed while the service was down are found when it comes back.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from stasis.catalog.db import Catalog
from stasis.catalog.models import PolicyRow


@dataclass
class PolicyState:
    name: str
    source: str
    last_run: datetime | None
    next_run: datetime | None
    updated: datetime
    tenant: str | None = None  # the tenant that defined it (None: the system's)
    template: bool = False  # offered to tenants to make policies of their own from


def _state(r: PolicyRow) -> PolicyState:
    return PolicyState(r.name, r.source, r.last_run, r.next_run, r.updated, r.tenant,
                       bool(r.template))


class PolicyStore:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def get(self, name: str) -> PolicyState | None:
        with self.catalog.session(write=False) as session:
            row = session.get(PolicyRow, name)
            return _state(row) if row is not None else None

    def list(self) -> list[PolicyState]:
        with self.catalog.session(write=False) as session:
            return [_state(r) for r in session.scalars(select(PolicyRow).order_by(PolicyRow.name))]

    def store(self, name: str, source: str, *, tenant: str | None = None,
              template: bool | None = None) -> PolicyState:
        """Record policy ``name`` with its TOML source (its run times are kept); a new
        one is ``tenant``'s (None: the system's), a template when ``template`` (None:
        as it was)."""
        with self.catalog.session() as session:
            row = session.get(PolicyRow, name)
            if row is None:
                row = PolicyRow(name=name, source=source, updated=self.catalog.clock.now(),
                                tenant=tenant, template=bool(template))
                session.add(row)
            else:
                if row.source != source:
                    row.source, row.updated = source, self.catalog.clock.now()
                if template is not None and bool(row.template) != template:
                    row.template, row.updated = template, self.catalog.clock.now()
            session.flush()
            return _state(row)

    def create(self, name: str, source: str, *, tenant: str | None = None,
               template: bool = False) -> PolicyState | None:
        """Record a new policy ``name``; None (nothing written) when one exists."""
        with self.catalog.session() as session:
            if session.get(PolicyRow, name) is not None:
                return None
            row = PolicyRow(name=name, source=source, updated=self.catalog.clock.now(),
                            tenant=tenant, template=template)
            session.add(row)
            session.flush()
            return _state(row)

    def delete(self, name: str) -> PolicyState | None:
        """Forget policy ``name``; what it was, or None when there was none."""
        with self.catalog.session() as session:
            row = session.get(PolicyRow, name)
            if row is None:
                return None
            gone = _state(row)
            session.delete(row)
            return gone

    def set_runs(self, name: str, *, last_run: datetime | None = None,
                 next_run: datetime | None = None) -> None:
        """Set the last run (when given) and the next run (None: not scheduled)."""
        with self.catalog.session() as session:
            row = session.get(PolicyRow, name)
            if row is None:
                return
            if last_run is not None:
                row.last_run = last_run
            row.next_run = next_run

    def retire(self, keep: set[str]) -> builtins.list[str]:
        """Forget the policies not in ``keep`` (gone from the file); return their names."""
        with self.catalog.session() as session:
            rows = [r for r in session.scalars(select(PolicyRow)) if r.name not in keep]
            for r in rows:
                session.delete(r)
            return [r.name for r in rows]
