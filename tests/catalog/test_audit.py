"""The audit log: lines appended with who, what, result; read newest first, filtered."""

from __future__ import annotations

import pytest

from stasis.app.audit import record
from stasis.app.auth import BUILTIN_ROLES, Principal, Tenant
from stasis.catalog import Catalog
from stasis.catalog.audit import AuditLog


def test_lines_are_appended_and_read_newest_first(migrated_catalog_url: str) -> None:
    who = Principal(user="ann", role="restore", permissions=BUILTIN_ROLES["restore"][1],
                    tenant=Tenant("acme"), token=7, address="10.0.0.5")
    with Catalog.open(migrated_catalog_url) as c:
        record(c, None, "login", "user:bob", result="denied", user="bob",
               address="10.0.0.9")
        record(c, who, "files.download", "point:abc", detail={"path": "/etc/hosts"})
        log = AuditLog(c)
        first, second = log.list()
        assert (first.user, first.token, first.tenant, first.address) == (
            "ann", 7, "acme", "10.0.0.5")
        assert first.action == "files.download" and first.detail == {"path": "/etc/hosts"}
        assert (second.user, second.result, second.token) == ("bob", "denied", None)
        assert [e.user for e in log.list(tenant="acme")] == ["ann"]
        assert [e.action for e in log.list(action="login")] == ["login"]
        assert [e.id for e in log.list(before_id=first.id)] == [second.id]
        with pytest.raises(ValueError, match="audit result"):
            log.append("login", result="maybe")
