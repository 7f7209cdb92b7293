"""The audit log: who did what to which object, when, and how it ended.

Append-only: this store inserts and reads, and has no way to change or remove a line
(the catalog's job-log expiry does not touch it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from stasis.catalog.db import Catalog
from stasis.catalog.models import AuditRow

RESULTS = ("ok", "denied", "failed")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: datetime
    user: str | None
    token: int | None
    address: str | None
    tenant: str | None
    action: str
    object: str
    result: str
    detail: dict[str, Any]


def _entry(r: AuditRow) -> AuditEntry:
    return AuditEntry(r.id, r.time, r.user, r.token, r.address, r.tenant, r.action,
                      r.object, r.result, dict(r.detail))


class AuditLog:
    """The audit log of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def append(self, action: str, *, result: str, user: str | None = None,
               token: int | None = None, address: str | None = None,
               tenant: str | None = None, object: str = "",
               detail: dict[str, Any] | None = None) -> AuditEntry:
        if result not in RESULTS:
            raise ValueError(f"an audit result is one of {RESULTS}, not {result!r}")
        row = AuditRow(time=self.catalog.clock.now(), user=user, token=token,
                       address=address, tenant=tenant, action=action, object=object,
                       result=result, detail=dict(detail or {}))
        with self.catalog.session() as session:
            session.add(row)
            session.flush()
            return _entry(row)

    def list(self, *, user: str | None = None, action: str | None = None,
             tenant: str | None = None, since: datetime | None = None,
             before_id: int | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first; ``before_id`` pages back from a line already seen."""
        q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if user is not None:
            q = q.where(AuditRow.user == user)
        if action is not None:
            q = q.where(AuditRow.action.startswith(action))
        if tenant is not None:
            q = q.where(AuditRow.tenant == tenant)
        if since is not None:
            q = q.where(AuditRow.time >= since)
        if before_id is not None:
            q = q.where(AuditRow.id < before_id)
        with self.catalog.session(write=False) as session:
            return [_entry(r) for r in session.scalars(q)]
