"""Recording to the audit log, in the words of a principal (who, through which token,
from which address, for which tenant)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stasis.app.auth import Principal

if TYPE_CHECKING:
    from stasis.catalog import Catalog
    from stasis.catalog.audit import AuditEntry


def record(catalog: Catalog, who: Principal | None, action: str, obj: str = "", *,
           result: str = "ok", detail: dict[str, Any] | None = None,
           address: str | None = None, user: str | None = None) -> AuditEntry:
    """Append one line: ``who`` did ``action`` (``"backup.start"``, ``"login"``...) to
    ``obj`` (``"vm:web1"``, ``"job:12"``...) with ``result`` (ok, denied, failed).
    ``user`` names who tried when there is no principal (a failed sign-in)."""
    from stasis.catalog.audit import AuditLog

    return AuditLog(catalog).append(
        action, result=result, object=obj, detail=detail,
        user=who.user if who is not None else user,
        token=who.token if who is not None else None,
        address=address if address is not None else (who.address if who else None),
        tenant=who.tenant.name if who is not None and who.tenant is not None else None)
