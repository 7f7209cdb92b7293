"""Tenant scopes: what a tenant's principal sees, and that the rest is 'not found'."""

from __future__ import annotations

import pytest

from stasis.app.auth import BUILTIN_ROLES, Principal, Tenant
from stasis.app.scope import Scope
from stasis.errors import JobNotFound, PointNotFound, VmNotFound

LABELS = {"web1": {"team": "acme", "tier": "web"}, "db1": {"team": "acme"},
          "other": {"team": "globex"}}


def scope(tenant: Tenant | None) -> Scope:
    p = Principal(user="u", role="viewer", permissions=BUILTIN_ROLES["viewer"][1],
                  tenant=tenant)
    return Scope(p, LABELS.get)


def test_a_system_principal_sees_everything() -> None:
    s = scope(None)
    assert s.everything and s.owns_vms([]) and s.owns_vm("anything")
    assert s.owns_defined(None) and s.owns_defined("acme")


def test_a_tenant_owns_its_names_and_its_label_selector() -> None:
    s = scope(Tenant("acme", vms=frozenset({"gone"}), labels={"team": "acme"}))
    assert s.owns_vm("web1") and s.owns_vm("db1")
    assert s.owns_vm("gone")  # named: owned even when no longer defined
    assert not s.owns_vm("other") and not s.owns_vm("unknown")
    assert s.owns_vms(["web1", "db1"]) and not s.owns_vms(["web1", "other"])
    assert not s.owns_vms([])  # a prune, a gc, images: the system's alone
    with pytest.raises(VmNotFound):
        s.check_vm("other", "test:///default")
    with pytest.raises(PointNotFound):
        s.check_point("p1", ["web1", "other"])


def test_a_tenant_with_an_empty_selector_owns_no_vm() -> None:
    s = scope(Tenant("empty"))
    assert not s.owns_vm("web1") and not s.owns_vm("other")


def test_what_a_tenant_defined_and_started_is_its_own() -> None:
    s = scope(Tenant("acme", labels={"team": "acme"}))
    assert s.owns_defined("acme") and not s.owns_defined(None)
    assert not s.owns_defined("globex")
    assert s.owns_job("acme", [])  # started by it, no VM (a verify it asked for)
    assert s.owns_job(None, ["web1"])
    with pytest.raises(JobNotFound):
        s.check_job(3, None, ["other"])
