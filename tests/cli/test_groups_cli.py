"""``stasis group``, ``stasis label`` and ``stasis backup group`` refusing bad input:
a message that says what was wrong and that nothing changed, and a stable exit code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Cli


def refused(r: object, code: int, *words: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)  # type: ignore[attr-defined]
    err = r.err  # type: ignore[attr-defined]
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


def libvirt_reachable() -> bool:
    try:
        import libvirt

        libvirt.open("qemu:///system").close()
    except Exception:
        return False
    return os.geteuid() == 0


def test_group_lifecycle_through_the_cli(cli: Cli) -> None:
    made = cli.ok("group", "create", "shop", "--vm", "db", "--vm", "web", "--vm", "db",
                  "--select", "worker-*", "--label", "app=shop", "--consistency",
                  "application", "--require", "filesystem", "--pre-host", "/bin/true",
                  "--post-guest", "db:sync", "--hook-timeout", "5", "--description",
                  "the shop", "--json").json()
    assert isinstance(made, dict)
    assert made["members"] == ["db", "web"] and made["select"] == ["worker-*"]
    assert made["labels"] == {"app": "shop"} and made["consistency"] == "application"
    assert made["require"] == "filesystem" and made["description"] == "the shop"
    assert made["hooks"]["pre_host"] == ["/bin/true"]
    assert made["hooks"]["post_guest"] == [{"vm": "db", "command": "sync"}]
    assert made["hooks"]["timeout_s"] == 5
    assert (Path(cli.env["STASIS_STATE_DIR"]) / "catalog.db").is_file()

    changed = cli.ok("group", "edit", "shop", "--remove-vm", "web", "--add-vm", "cache",
                     "--remove-select", "worker-*", "--add-select", "job-*",
                     "--add-label", "tier=db", "--remove-label", "app", "--no-require",
                     "--clear-hooks", "--pre-host", "/bin/sync", "--description", "",
                     "--json").json()
    assert isinstance(changed, dict)
    assert changed["members"] == ["db", "cache"] and changed["select"] == ["job-*"]
    assert changed["labels"] == {"tier": "db"} and changed["require"] is None
    assert changed["hooks"]["pre_host"] == ["/bin/sync"] and changed["hooks"]["post_guest"] == []
    assert changed["created"] == made["created"] and changed["updated"] >= made["updated"]

    cli.ok("group", "create", "blog", "--select", "blog-*")
    listed = cli.ok("group", "list", "--json").json()
    assert isinstance(listed, list) and [g["name"] for g in listed] == ["blog", "shop"]
    shown = cli.ok("group", "show", "shop", "--json").json()
    assert isinstance(shown, dict)
    assert {k: v for k, v in shown.items() if k != "resolved"} == {
        k: v for k, v in changed.items() if k != "resolved"}
    text = cli.ok("group", "show", "shop").out
    assert "db, cache" in text and "job-*" in text and "tier=db" in text
    assert "shop" in cli.ok("group", "list").out
    assert "deleted" in cli.ok("group", "delete", "blog").out
    assert [g["name"] for g in cli.ok("group", "list", "--json").json()] == ["shop"]  # type: ignore[union-attr]


def test_bad_group_input_changes_nothing(cli: Cli) -> None:
    cli.ok("group", "create", "shop", "--vm", "db", "--label", "app=shop")
    before = cli.ok("group", "show", "shop", "--json").json()
    for args, code, words in [
        (["create", "shop", "--vm", "x"], 26, ["exists already", "Nothing was changed"]),
        (["create", "new", "--label", "app"], 2, ["KEY=VALUE, not 'app'"]),
        (["create", "new", "--label", "bad key=1"], 2, ["not a label key"]),
        (["create", "new", "--vm", "a", "--consistency", "strong"], 2,
         ["'strong' is not a consistency level", "Nothing was changed"]),
        (["create", "new", "--vm", "a", "--require", "total"], 2, ["--require 'total'"]),
        (["create", "new", "--vm", "a", "--pre-host", "true"], 2,
         ["hooks run only at the application", "Nothing was changed"]),
        (["create", "new", "--vm", "a", "--consistency", "application",
          "--pre-guest", "nocolon"], 2, ["VM:COMMAND"]),
        (["create", "new", "--vm", "a", "--consistency", "application", "--pre-host", "x",
          "--hook-timeout", "0"], 2, ["more than 0 seconds"]),
        (["create", "new"], 2, ["no members", "Nothing was changed"]),
        (["create", "bad name", "--vm", "a"], 2, ["not a group name"]),
        (["show", "nope"], 26, ["no group named 'nope'"]),
        (["delete", "nope"], 26, ["no group named 'nope'", "Nothing was changed"]),
        (["edit", "nope", "--vm", "a"], 26, ["no group named 'nope'"]),
        (["edit", "shop"], 2, ["nothing to change"]),
        (["edit", "shop", "--remove-vm", "web"], 26, ["'web' is not a member", "members: db"]),
        (["edit", "shop", "--vm", "ok", "--remove-select", "x*"], 26,
         ["'x*' is not a name glob", "Nothing was changed"]),
        (["edit", "shop", "--remove-label", "tier"], 26, ["no label 'tier'"]),
        (["edit", "shop", "--consistency", "fs"], 2, ["'fs' is not a consistency level"]),
        (["edit", "shop", "--require", "crash", "--no-require"], 2, ["contradict"]),
        (["edit", "shop", "--pre-host", "x"], 2, ["hooks run only at the application"]),
        (["edit", "shop", "--remove-vm", "db", "--remove-label", "app"], 2,
         ["no members and no selectors"]),
    ]:
        refused(cli("group", *args), code, *words)
    assert cli.ok("group", "show", "shop", "--json").json() == before
    assert [g["name"] for g in cli.ok("group", "list", "--json").json()] == ["shop"]  # type: ignore[union-attr]


def test_a_damaged_catalog_exits_27(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "damaged.db"
    bad.write_bytes(b"SQLite format 2? no.\n" * 100)
    before = bad.read_bytes()
    refused(cli("group", "list", "--catalog", str(bad)), 27, str(bad), "Nothing was changed")
    refused(cli("group", "create", "g", "--vm", "a", env={"STASIS_CATALOG": str(bad)}), 27,
            "damaged")
    refused(cli("backup", "group", "g", "--vm", "a", env={"STASIS_CATALOG": str(bad)}), 27)
    refused(cli("group", "list", "--catalog", "not a url://x"), 27, "not a catalog URL")
    assert bad.read_bytes() == before


def test_backup_group_needs_a_stored_group_or_vms(cli: Cli) -> None:
    refused(cli("backup", "group", "app"), 2, "no stored group named 'app'", "--vm",
            "Nothing was backed up")
    refused(cli("backup", "group", "app", "--vm", "a", "--consistency", "nope"), 2,
            "'nope' is not a consistency level")


@pytest.mark.skipif(not libvirt_reachable(), reason="needs libvirt at qemu:///system (root)")
def test_missing_members_and_vms_are_named(cli: Cli) -> None:
    cli.ok("group", "create", "ghosts", "--vm", "stasis-no-such-vm-1", "--select",
           "stasis-no-such-*")
    shown = cli.ok("group", "show", "ghosts", "--json").json()
    assert isinstance(shown, dict)
    assert shown["resolved"] == {"members": [], "missing": ["stasis-no-such-vm-1"],
                                 "selected": []}
    refused(cli("backup", "group", "ghosts"), 26, "do not exist: stasis-no-such-vm-1",
            "Nothing was backed up")
    refused(cli("label", "stasis-no-such-vm-1"), 14, "No VM named 'stasis-no-such-vm-1'")
    refused(cli("label", "stasis-no-such-vm-1", "novalue"), 2, "KEY=VALUE")
