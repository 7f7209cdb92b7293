"""What the resource routes' tests share: VMs defined on the libvirt test driver for
two tenants, and metadata-only points of them committed to the served repository."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

from stasis.app.auth import Tenant
from stasis.hypervisor import labels as lb
from stasis.repository import Manifest, Repository, VmRecord
from tests.api.conftest import TEST_URI

ACME = Tenant(name="acme", vms=frozenset({"acme-web"}), labels={"owner": "acme"})
GLOBEX = Tenant(name="globex", vms=frozenset({"globex-db"}))
VMS = {"acme-web": {}, "acme-app": {"owner": "acme"}, "globex-db": {"owner": "globex"}}


def _xml(name: str) -> str:
    return (f"<domain type='test'><name>{name}</name><memory>65536</memory>"
            "<os><type>hvm</type></os></domain>")


@pytest.fixture
def tenant_vms() -> Iterator[libvirt.virConnect]:
    """acme-web (acme's by name), acme-app (acme's by label), globex-db (globex's)."""
    conn = libvirt.open(TEST_URI)
    made = []
    for name, labels in VMS.items():
        dom = conn.defineXML(_xml(name))
        made.append(dom)
        if labels:
            lb.update_labels(dom, labels, [])
    yield conn
    for dom in made:
        dom.undefine()
    conn.close()


def commit(repo: Repository, n: int, vms: list[str], *, name: str | None = None,
           tags: dict[str, str] | None = None, kind: str = "image") -> Manifest:
    m = Manifest(id=f"{n:032x}", name=name or vms[0], kind=kind,
                 time=f"2026-01-{n:02d}T00:00:00+00:00", tags=tags or {},
                 vms=[VmRecord(name=v, kind="vm") for v in vms])
    repo.commit(m)
    return m
