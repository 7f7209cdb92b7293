"""Which VMs a group holds: the selection rule on plain data, and labels' XML form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stasis.errors import GroupError, HypervisorError, UsageError
from stasis.hypervisor import labels as lb
from stasis.protection.consistency import Hooks
from stasis.protection.groups import Group, effective_level, matches, select, validate

INVENTORY = {
    "db-1": {"app": "shop", "tier": "db"},
    "db-2": {"app": "shop", "tier": "db"},
    "web-1": {"app": "shop", "tier": "web"},
    "web-2": {"app": "blog", "tier": "web"},
    "queue": {"app": "shop"},
    "DB-3": {},
    "lonely": {},
}


def test_explicit_members_first_in_their_order_then_selected_by_name() -> None:
    g = Group("shop", members=["queue", "db-2"], name_globs=["web-*"])
    r = select(g, INVENTORY)
    assert r.members == ["queue", "db-2", "web-1", "web-2"]
    assert r.selected == ["web-1", "web-2"] and r.missing == []


def test_a_label_selector_needs_every_listed_label() -> None:
    g = Group("shop", labels={"app": "shop", "tier": "db"})
    assert select(g, INVENTORY).members == ["db-1", "db-2"]
    g = Group("shop", labels={"app": "shop"})
    assert select(g, INVENTORY).members == ["db-1", "db-2", "queue", "web-1"]
    assert not matches(g, "queue", {"app": "shop2"})
    assert not matches(g, "queue", {"App": "shop"})


def test_globs_and_labels_each_select_and_nothing_twice() -> None:
    g = Group("mix", members=["web-1"], name_globs=["db-*", "web-?"],
              labels={"tier": "web"})
    r = select(g, INVENTORY)
    assert r.members == ["web-1", "db-1", "db-2", "web-2"]
    assert len(set(r.members)) == len(r.members)


def test_globs_are_case_sensitive_fnmatch() -> None:
    assert select(Group("g", name_globs=["db-*"]), INVENTORY).members == ["db-1", "db-2"]
    assert select(Group("g", name_globs=["[dD][bB]-*"]), INVENTORY).members == [
        "DB-3", "db-1", "db-2"]


def test_missing_explicit_members_are_named_and_fail_a_backup() -> None:
    g = Group("shop", members=["db-1", "gone", "also-gone"], labels={"tier": "web"})
    r = select(g, INVENTORY)
    assert r.members == ["db-1", "web-1", "web-2"]
    assert r.missing == ["gone", "also-gone"]
    with pytest.raises(GroupError, match="do not exist: gone, also-gone") as e:
        r.check("shop")
    assert e.value.exit_code == 26 and "Nothing was backed up" in str(e.value)


def test_a_selector_matching_nothing_is_no_error_but_no_member_at_all_is() -> None:
    r = select(Group("g", name_globs=["nothing-*"]), INVENTORY)
    assert r.members == [] and r.missing == []
    with pytest.raises(GroupError, match="no members now"):
        r.check("g")


def test_a_vm_that_left_is_gone_from_the_next_resolution() -> None:
    g = Group("shop", labels={"app": "shop"})
    before = select(g, INVENTORY).members
    moved = {**INVENTORY, "queue": {"app": "other"}, "new": {"app": "shop"}}
    after = select(g, moved).members
    assert set(before) - set(after) == {"queue"} and set(after) - set(before) == {"new"}


names = st.text(alphabet="abcxyz-1", min_size=1, max_size=4)
label_sets = st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["a", "b"]))


@settings(deadline=None)  # the machine is shared with booting guests
@given(inventory=st.dictionaries(names, label_sets, max_size=8),
       members=st.lists(names, max_size=4, unique=True),
       globs=st.lists(st.sampled_from(["a*", "*1", "x?", "[bc]*"]), max_size=2),
       labels=label_sets)
def test_resolution_rules_hold_for_any_inventory(
        inventory: dict[str, dict[str, str]], members: list[str], globs: list[str],
        labels: dict[str, str]) -> None:
    g = Group("g", members=members, name_globs=globs, labels=labels)
    r = select(g, inventory)
    present = [m for m in members if m in inventory]
    assert r.members[:len(present)] == present
    rest = r.members[len(present):]
    assert rest == sorted(rest) == r.selected
    assert len(set(r.members)) == len(r.members)
    assert r.missing == [m for m in members if m not in inventory]
    assert all(matches(g, vm, inventory[vm]) for vm in rest)
    assert all(vm in present or not matches(g, vm, lbls) for vm, lbls in inventory.items()
               if vm not in r.members)


def test_levels_and_hooks() -> None:
    assert effective_level("crash", None) == "crash"
    assert effective_level("crash", "filesystem") == "filesystem"  # requiring raises it
    assert effective_level("application", "crash") == "application"
    with pytest.raises(UsageError, match="'fs' is not a consistency level"):
        effective_level("fs", None)
    with pytest.raises(UsageError, match="--require 'all' is not a consistency level"):
        effective_level("crash", "all")
    validate(Group("g", consistency="application", hooks=Hooks(pre_host=["true"])))
    validate(Group("g", require="application", hooks=Hooks(pre_host=["true"])))
    with pytest.raises(UsageError, match="hooks run only at the application"):
        validate(Group("g", consistency="filesystem", hooks=Hooks(pre_host=["true"])))
    with pytest.raises(UsageError, match="more than 0 seconds"):
        validate(Group("g", consistency="application",
                       hooks=Hooks(pre_host=["x"], timeout_s=0)))


def test_label_text_and_xml() -> None:
    assert lb.parse_labels(["app=shop", "note=a=b", "empty="]) == {
        "app": "shop", "note": "a=b", "empty": ""}
    for bad, message in (("app", "KEY=VALUE"), ("=x", "not a label key"),
                         ("bad key=x", "not a label key"), ("-x=1", "not a label key")):
        with pytest.raises(UsageError, match=message):
            lb.parse_labels([bad])
    with pytest.raises(UsageError, match="given twice"):
        lb.parse_labels(["app=a", "app=b"])
    assert lb.parse_labels(["app=a", "app=a"]) == {"app": "a"}
    with pytest.raises(UsageError, match="one line"):
        lb.parse_label("app=two\nlines")
    labels = {"app": "shop & <co>", "example.com/role": "db", "quote": "\"'"}
    xml = lb.encode(labels)
    assert lb.decode(xml) == labels
    # As libvirt hands it back: prefixed, with the namespace declared.
    assert lb.decode(f'<stasis:labels xmlns:stasis="{lb.NAMESPACE}">'
                     '<stasis:label key="a" value="1"/></stasis:labels>') == {"a": "1"}
    with pytest.raises(HypervisorError, match="not XML"):
        lb.decode("<labels")


def test_labels_are_stripped_from_a_domain_xml_for_a_restore_beside_the_original() -> None:
    xml = (f'<domain type="qemu"><name>a</name><metadata>'
           f'<stasis:labels xmlns:stasis="{lb.NAMESPACE}"><stasis:label key="app" value="x"/>'
           '</stasis:labels><k:guest xmlns:k="https://example.com/kit"/></metadata>'
           '<memory>1</memory></domain>')
    out = lb.without_labels(xml)
    assert lb.NAMESPACE not in out and "https://example.com/kit" in out and "<memory>" in out
    bare = lb.without_labels(f'<domain><metadata><stasis:labels xmlns:stasis="{lb.NAMESPACE}"/>'
                             '</metadata><name>b</name></domain>')
    assert "metadata" not in bare and "<name>b</name>" in bare
    plain = "<domain><name>c</name></domain>"
    assert lb.without_labels(plain) == plain
