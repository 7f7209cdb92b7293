"""The CLI as a user meets it: results, JSON, point names."""

from __future__ import annotations

import json
from pathlib import Path

from stasis.backends import open_backend
from stasis.repository import Credentials, Manifest, Repository
from stasis.repository.crypto import DEFAULT_KDF
from tests.conftest import PASSPHRASE, Cli, images_equal, mixed_image, to_qcow2


def test_backup_list_show_restore_verify(cli_repo: Cli, tmp_path: Path) -> None:
    cli = cli_repo
    src = to_qcow2(mixed_image(tmp_path / "d.raw"), tmp_path / "d.qcow2")
    b1 = cli.ok("backup", "image", str(src), "--name", "web", "--tag", "env=prod",
                "--json").json()
    assert isinstance(b1, dict)
    disk = b1["vms"][0]["disks"][0]
    assert disk["target"] == "d.qcow2" and disk["mode"] == "full"
    assert disk["virtual_size"] == (tmp_path / "d.raw").stat().st_size
    assert disk["bytes_read"] > 0 and "reason" in disk
    b2 = cli.ok("backup", "image", str(src), "--name", "web", "--json").json()
    assert isinstance(b2, dict) and b2["parent"] == b1["id"]

    points = cli.ok("list", "--json").json()
    assert isinstance(points, list) and [p["id"] for p in points] == [b1["id"], b2["id"]]
    for key in ("id", "name", "time", "size"):
        assert key in points[0]
    assert points[0]["tags"] == {"env": "prod"}
    assert cli.ok("list", "--name", "other", "--json").json() == []

    shown = cli.ok("show", "web@latest", "--json").json()
    assert isinstance(shown, dict) and shown["id"] == b2["id"]
    assert cli.ok("show", b1["id"][:10], "--json").json()["id"] == b1["id"]  # type: ignore[index]
    human = cli.ok("show", b1["id"][:10]).out
    assert "d.qcow2" in human and "env=prod" in human

    out = tmp_path / "r.qcow2"
    restored = cli.ok("restore", "disk", "web@latest", "--to", str(out), "--json").json()
    assert isinstance(restored, dict) and restored["format"] == "qcow2"
    assert images_equal(src, out)

    verified = cli.ok("verify", "--deep", "--json").json()
    assert isinstance(verified, dict) and verified["ok"] and verified["chunks"] > 0
    info = cli.ok("repo", "info", "--json").json()
    assert isinstance(info, dict) and info["points"] == 2 and info["dedup_ratio"] >= 2
    assert "points" in cli.ok("repo", "info").out


def test_help_lists_exit_codes(cli: Cli) -> None:
    out = cli.ok("--help").out
    for code in ("13", "14", "17", "18", "19"):
        assert f" {code} " in out


def test_key_management(cli_repo: Cli, tmp_path: Path) -> None:
    cli = cli_repo
    keyfile = tmp_path / "dr.key"
    cli.ok("repo", "key", "add", "--new-key-file", str(keyfile), "--label", "dr")
    cli.ok("repo", "key", "add", env={"STASIS_NEW_PASSPHRASE": "second"})
    slots = cli.ok("repo", "key", "list", "--json").json()
    assert isinstance(slots, list) and sorted(s["kind"] for s in slots) == [
        "keyfile", "passphrase", "passphrase"]
    # The key file alone opens it, with no passphrase anywhere.
    env = {"STASIS_PASSPHRASE": ""}
    cli.ok("list", "--key-file", str(keyfile), env=env)
    cli.ok("list", env={"STASIS_PASSPHRASE": "second"})
    first = next(s["id"] for s in slots if s["label"] == "initial passphrase")
    cli.ok("repo", "key", "remove", first)
    assert cli("list").code == 13  # the original passphrase no longer opens it
    # A new key file is never written over an existing one.
    r = cli("repo", "key", "add", "--key-file", str(keyfile), "--new-key-file", str(keyfile))
    assert r.code == 0  # existing key file is reused as is
    assert keyfile.read_text().startswith("stasis-keyfile-v1")


def test_init_makes_a_slot_of_real_kdf_cost_whatever_the_environment(
    cli: Cli, tmp_path: Path,
) -> None:
    cli.ok("repo", "init", "--repo", str(tmp_path / "r"), env={"STASIS_KDF_MEMORY_KIB": "1024"})
    (slot,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "keys").iterdir()]
    assert slot["kdf"] == DEFAULT_KDF.to_slot()


def test_init_with_key_file_and_unencrypted(cli: Cli, tmp_path: Path) -> None:
    keyfile = tmp_path / "k"
    cli.ok("repo", "init", "--repo", str(tmp_path / "kr"), "--key-file", str(keyfile))
    cli.ok("list", "--repo", str(tmp_path / "kr"), "--key-file", str(keyfile))
    cli.ok("repo", "init", "--repo", str(tmp_path / "pr"), "--encryption", "none",
           env={"STASIS_PASSPHRASE": ""})
    assert cli.ok("list", "--repo", str(tmp_path / "pr"), "--json").json() == []


def test_ambiguous_prefix_and_unknown_point(cli_repo: Cli) -> None:
    repo = Repository.open(open_backend(cli_repo.repo), Credentials(passphrase=PASSPHRASE.encode()))
    for pid in ("abcd" + "1" * 28, "abcd" + "2" * 28):
        repo.commit(Manifest(id=pid, name="m", time="2026-01-01T00:00:00+00:00"))
    r = cli_repo("show", "abcd")
    assert r.code == 15 and "matches 2 points" in r.err
    assert cli_repo.ok("show", "abcd1", "--json").json()["id"].startswith("abcd1")  # type: ignore[index]
    for spec in ("ffff", "nosuch@latest", "m@yesterday", "not-hex"):
        r = cli_repo("show", spec)
        assert r.code == 14 and "No recovery point matches" in r.err, spec
    assert cli_repo.ok("show", "m@latest", "--json").json()["id"].startswith("abcd2")  # type: ignore[index]
