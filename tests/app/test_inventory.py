"""The VM inventory against the host's real libvirt while other VMs come and go."""

from __future__ import annotations

import secrets
from typing import Any

import libvirt
import pytest

from stasis.app.inventory import list_vms
from stasis.protection.doctor import DoctorReport, clean_vms
from stasis.repository import Repository
from stasis_testkit import GuestKit
from tests.conftest import remove_domain

pytestmark = pytest.mark.vm


class _Vanishing:
    """A libvirt connection whose listing is followed, before anything is asked of the
    listed VMs, by another client undefining one of them (as `virsh undefine` may)."""

    def __init__(self, conn: libvirt.virConnect, name: str) -> None:
        self._conn, self._name = conn, name

    def listAllDomains(self, flags: int = 0) -> list[libvirt.virDomain]:
        domains = self._conn.listAllDomains(flags)
        self._conn.lookupByName(self._name).undefine()
        return domains

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_a_vm_undefined_while_listing_is_left_out(kit: GuestKit) -> None:
    name = f"stasis-vanishing-{secrets.token_hex(4)}"
    kit.conn.defineXML(f"<domain type='qemu'><name>{name}</name><memory>65536</memory>"
                       "<os><type>hvm</type></os></domain>")
    try:
        before = {r.name for r in list_vms(kit.conn)}
        assert name in before
        after = {r.name for r in list_vms(_Vanishing(kit.conn, name))}  # type: ignore[arg-type]
    finally:
        remove_domain(kit.conn, name)
    assert name not in after
    # Every other VM is still listed (those that other clients did not remove meanwhile).
    still = {d.name() for d in kit.conn.listAllDomains()}
    assert (before - {name}) & still <= after


def test_doctor_skips_a_vm_undefined_while_it_looks(kit: GuestKit, repo: Repository) -> None:
    """Found in a full run beside other work: a drill's VM torn down during `stasis
    doctor`'s scan made doctor fail with libvirt's traceback."""
    name = f"stasis-vanishing-{secrets.token_hex(4)}"
    kit.conn.defineXML(f"<domain type='qemu'><name>{name}</name><memory>65536</memory>"
                       "<os><type>hvm</type></os></domain>")
    report = DoctorReport()
    try:
        clean_vms(_Vanishing(kit.conn, name), repo, report, fix=True)  # type: ignore[arg-type]
    finally:
        remove_domain(kit.conn, name)
    assert not any(name in f.what for f in report.findings)
