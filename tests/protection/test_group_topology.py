"""Group topology on real guests: members selected by label, resolved at every run.

A stored group selects the VMs labelled ``app=<token>``. Labelling a VM puts it in
the next point without editing the group; removing the label takes it out, and the
point says it left.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from stasis.backends import open_backend
from stasis.hypervisor import labels as lb
from stasis.repository import Credentials, Repository
from stasis_testkit import DiskSpec, Guest, GuestKit, MiB
from tests.conftest import PASSPHRASE, Cli, remove_domain

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")


@pytest.fixture
def pair(kit: GuestKit) -> Iterator[list[Guest]]:
    guests = [kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB)]) for _ in range(2)]
    try:
        for g in guests:
            g.wait_ready(90)
        yield sorted(guests, key=lambda g: g.name)
    finally:
        for g in guests:
            g.destroy()


def labels_in(dom: object, flags: int) -> dict[str, str]:
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, lb.NAMESPACE, flags)  # type: ignore[attr-defined]
    except libvirt.libvirtError:
        return {}
    return lb.decode(xml)


def test_a_vm_labelled_into_the_group_is_in_the_next_point_and_one_unlabelled_left(
    kit: GuestKit, pair: list[Guest], cli_repo: Cli, tmp_path: Path
) -> None:
    a, b = pair
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o711)
    cli = cli_repo
    cli.env["STASIS_SCRATCH_DIR"] = str(scratch)
    app = f"topo-{secrets.token_hex(4)}"  # no other test's guest carries it
    cli.ok("group", "create", "shop", "--label", f"app={app}", "--description", "topology")
    defined = cli.ok("group", "show", "shop", "--json").json()
    assert isinstance(defined, dict)

    # Point 1: only A carries the label (set through the library).
    assert lb.set_labels(a.domain, {"app": app, "tier": "db"}) == {"app": app, "tier": "db"}
    p1 = cli.ok("backup", "group", "shop", "--json").json()
    assert isinstance(p1, dict)
    assert p1["stored_group"] is True and p1["kind"] == "group"
    assert [vm["name"] for vm in p1["vms"]] == [a.name]
    assert p1["members"] == [a.name] and p1["joined"] == [a.name] and p1["left"] == []

    # B is labelled with the CLI: in the persistent definition and the running one.
    shown = cli.ok("label", b.name, f"app={app}", "--json").json()
    assert shown == {"vm": b.name, "labels": {"app": app}}
    assert labels_in(b.domain, libvirt.VIR_DOMAIN_AFFECT_CONFIG) == {"app": app}
    assert labels_in(b.domain, libvirt.VIR_DOMAIN_AFFECT_LIVE) == {"app": app}
    assert cli.ok("label", b.name).out.strip() == f"app={app}"
    now = cli.ok("group", "show", "shop", "--json").json()
    assert isinstance(now, dict) and now["resolved"]["members"] == [a.name, b.name]

    # Point 2: B is in it, the group untouched.
    p2 = cli.ok("backup", "group", "shop", "--json").json()
    assert isinstance(p2, dict)
    assert [vm["name"] for vm in p2["vms"]] == [a.name, b.name]
    assert p2["members"] == [a.name, b.name] and p2["joined"] == [b.name] and p2["left"] == []
    assert p2["parent"] == p1["id"]
    a_disks = next(vm for vm in p2["vms"] if vm["name"] == a.name)["disks"]
    assert [d["mode"] for d in a_disks] == ["incremental"]  # A's chain went on
    after = cli.ok("group", "show", "shop", "--json").json()
    assert isinstance(after, dict) and after["updated"] == defined["updated"]

    # Point 3: A's label removed; A left, and the text output says so.
    assert cli.ok("label", a.name, "--remove", "app", "--json").json() == {
        "vm": a.name, "labels": {"tier": "db"}}
    assert labels_in(a.domain, libvirt.VIR_DOMAIN_AFFECT_CONFIG) == {"tier": "db"}
    text = cli.ok("backup", "group", "shop").out
    assert f"left the group since the last point: {a.name}" in text
    repo = Repository.open(open_backend(cli.repo), Credentials(passphrase=PASSPHRASE.encode()))
    p3 = repo.points()[-1]
    assert p3.name == "shop" and p3.parent == p2["id"]
    assert [vm.name for vm in p3.vms] == [b.name]
    assert p3.extra["group"] == {"members": [b.name], "joined": [], "left": [a.name]}

    # Options add to a stored group's members for one run; nothing is stored.
    p4 = cli.ok("backup", "group", "shop", "--vm", a.name, "--json").json()
    assert isinstance(p4, dict)
    assert p4["members"] == [b.name, a.name] and p4["joined"] == [a.name]
    assert cli.ok("group", "show", "shop", "--json").json() == {**after, "resolved": {
        "members": [b.name], "missing": [], "selected": [b.name]}}

    # A copy of B restored beside it carries no labels: it does not join the group.
    copy = f"{b.name}-copy"
    try:
        cli.ok("restore", "vm", p2["id"], "--vm", b.name, "--name", copy,
               "--storage", str(tmp_path))
        assert labels_in(kit.conn.lookupByName(copy), libvirt.VIR_DOMAIN_AFFECT_CONFIG) == {}
        resolved = cli.ok("group", "show", "shop", "--json").json()
        assert isinstance(resolved, dict) and resolved["resolved"]["members"] == [b.name]
    finally:
        remove_domain(kit.conn, copy)
