"""The newest drill of each VM and each group: what the last drill proved, and when.

A drill of a group's point is the newest drill of the group and of each of its VMs; a
drill of one VM is that VM's. A drill replaces the one recorded before it (passed or
failed alike: the newest says what is proven now); its own history is its job.

A repository holds the same as drill proofs (docs/format.md, "Drill proofs"), also
those a copy brought from another site: :meth:`DrillStore.learn` records them where
the catalog knows no newer drill, so a catalog rebuilt at a second site shows what
was proven.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from stasis.catalog.db import Catalog
from stasis.catalog.models import DrillRow, PointRow
from stasis.repository import ObjectDamaged, Repository

SUBJECT_KINDS = ("vm", "group")


@dataclass
class DrillRecord:
    subject_kind: str  # vm | group
    subject: str
    drill_id: str
    point: str
    point_name: str
    mode: str
    passed: bool
    rto_s: float | None
    started: datetime
    ended: datetime
    job: int | None = None
    repo: str | None = None
    policy: str | None = None
    failure: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)


_FIELDS = ("subject_kind", "subject", "drill_id", "point", "point_name", "mode", "passed",
           "rto_s", "started", "ended", "job", "repo", "policy", "failure", "checks")


def _record(r: DrillRow) -> DrillRecord:
    return DrillRecord(**{f: getattr(r, f) for f in _FIELDS})


class DrillStore:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def record(self, rec: DrillRecord) -> None:
        """``rec`` becomes the newest drill of its subject (unless a newer one is)."""
        with self.catalog.session() as session:
            row = session.get(DrillRow, (rec.subject_kind, rec.subject))
            if row is None:
                session.add(DrillRow(**{f: getattr(rec, f) for f in _FIELDS}))
                return
            if row.started > rec.started:
                return  # a drill that began later ended first: it is the newer one
            for f in _FIELDS[2:]:
                setattr(row, f, getattr(rec, f))

    def learn(self, repo: Repository,
              on_damaged: Callable[[str, ObjectDamaged], None] | None = None) -> int:
        """Record ``repo``'s drill proofs as the newest drills of their subjects, where
        the catalog has none of that drill and none newer; return how many were
        recorded. A proof that does not open goes to ``on_damaged``."""
        proofs = repo.drill_proofs(on_damaged=on_damaged)
        if not proofs:
            return 0
        learned = 0
        with self.catalog.session() as session:
            names = dict(session.execute(select(PointRow.id, PointRow.name).where(
                PointRow.repo == repo.id, PointRow.id.in_({p.point for p in proofs}))).all())
            for p in proofs:
                row = session.get(DrillRow, (p.subject_kind, p.subject))
                # The catalog's own record of a drill has its job: never replaced by the
                # proof of the same drill (its times are to the second only).
                if row is not None and (row.drill_id == p.drill or row.started >= p.started):
                    continue
                fields = {"drill_id": p.drill, "point": p.point,
                          "point_name": names.get(p.point, ""), "mode": p.mode,
                          "passed": p.passed, "rto_s": p.rto_s, "started": p.started,
                          "ended": p.ended, "job": None, "repo": repo.id, "policy": None,
                          "failure": p.failure or None, "checks": list(p.checks)}
                if row is None:
                    session.add(DrillRow(subject_kind=p.subject_kind, subject=p.subject,
                                         **fields))
                else:
                    for k, v in fields.items():
                        setattr(row, k, v)
                learned += 1
        return learned

    def get(self, subject_kind: str, subject: str) -> DrillRecord | None:
        with self.catalog.session(write=False) as session:
            row = session.get(DrillRow, (subject_kind, subject))
            return _record(row) if row is not None else None

    def list(self) -> builtins.list[DrillRecord]:
        with self.catalog.session(write=False) as session:
            rows = session.scalars(select(DrillRow).order_by(DrillRow.subject_kind,
                                                             DrillRow.subject))
            return [_record(r) for r in rows]
