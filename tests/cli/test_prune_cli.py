"""stasis prune, hold, release and holds on real points made by ``stasis backup image``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, MiB, images_equal, mixed_image


def repo_state(repo: Path) -> dict[str, bytes]:
    """Every committed object (locks aside), to show a command changed nothing."""
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and p.relative_to(repo).parts[0] != "locks"
    }


def backup(cli: Cli, src: Path, name: str) -> str:
    result = cli.ok("backup", "image", str(src), "--name", name, "--json").json()
    assert isinstance(result, dict)
    return str(result["id"])


@pytest.fixture
def chains(cli_repo: Cli, tmp_path: Path) -> tuple[Cli, list[str], str, Path]:
    """Three points of chain web, then one of chain db."""
    src = mixed_image(tmp_path / "web.raw", size=2 * MiB)
    other = mixed_image(tmp_path / "db.raw", size=2 * MiB, seed=2)
    web = [backup(cli_repo, src, "web") for _ in range(3)]
    return cli_repo, web, backup(cli_repo, other, "db"), src


def point_ids(cli: Cli) -> list[str]:
    listed = cli.ok("list", "--json").json()
    assert isinstance(listed, list)
    return [p["id"] for p in listed]


def test_dry_run_table_and_json_delete_nothing(
    chains: tuple[Cli, list[str], str, Path],
) -> None:
    cli, web, db, _ = chains
    before = repo_state(cli.repo)
    table = cli.ok("prune", "--keep-last", "2", "--dry-run").out
    lines = {line.split()[0]: line for line in table.splitlines() if line.strip()}
    assert "would remove" in lines[web[0][:12]] and "no rule keeps it" in lines[web[0][:12]]
    assert "keep" in lines[web[1][:12]] and "last #2" in lines[web[1][:12]]
    assert "last #1; newest of vm web" in lines[web[2][:12]]
    assert "last #1; newest of vm db" in lines[db[:12]]
    assert "would remove 1 (dry run: nothing was deleted)" in table
    report: Any = cli.ok("prune", "--keep-last", "2", "--dry-run", "--json").json()
    assert report["dry_run"] is True and report["removed"] == [web[0]]
    assert sorted(report["kept"]) == sorted([web[1], web[2], db])
    assert report["rules"]["keep_last"] == 2 and report["rules"]["timezone"] == "UTC"
    by_id = {p["id"]: p for p in report["points"]}
    assert by_id[web[0]]["keep"] is False and by_id[web[0]]["reasons"] == ["no rule keeps it"]
    assert by_id[web[2]]["reasons"] == ["last #1", "newest of vm web"]
    assert by_id[db]["series"] == "chain db" and by_id[web[0]]["series"] == "chain web"
    assert repo_state(cli.repo) == before
    assert point_ids(cli) == [*web, db]


def test_real_prune_removes_points_and_the_rest_restores(
    chains: tuple[Cli, list[str], str, Path], tmp_path: Path,
) -> None:
    cli, web, db, src = chains
    report: Any = cli.ok("prune", "--name", "web", "--keep-last", "1", "--json").json()
    assert report["dry_run"] is False and report["removed"] == web[:2]
    assert [p["id"] for p in report["points"]] == web  # only the chain asked for
    assert point_ids(cli) == [web[2], db]
    assert not list((cli.repo / "locks").glob("*"))  # the shared lock was let go
    # The chunks stayed (gc's job), so what is left is whole.
    assert cli.ok("verify", "--deep", "--json").json()["ok"]  # type: ignore[index]
    out = tmp_path / "back.raw"
    cli.ok("restore", "disk", "web@latest", "--to", str(out))
    assert images_equal(src, out)
    # Pruning again finds nothing more to remove; the text report says so.
    again = cli.ok("prune", "--keep-last", "1")
    assert "removed 0" in again.out and point_ids(cli) == [web[2], db]


def test_prune_by_vm(chains: tuple[Cli, list[str], str, Path]) -> None:
    cli, web, db, _ = chains
    report: Any = cli.ok("prune", "--vm", "web", "--keep-last", "2", "--json").json()
    assert report["removed"] == [web[0]]
    assert {p["series"] for p in report["points"]} == {"vm web"}
    assert point_ids(cli) == [web[1], web[2], db]


def test_hold_keeps_a_point_until_released(chains: tuple[Cli, list[str], str, Path]) -> None:
    cli, web, db, _ = chains
    held: Any = cli.ok("hold", web[0][:10], "--until", "30d", "--reason", "legal case 42",
                       "--json").json()
    assert held["point"] == web[0] and held["active"] is True
    assert held["reason"] == "legal case 42" and held["until"] and held["by"]
    assert "held until" in cli.ok("hold", "db@latest", "--reason", "keep forever").out
    listed: Any = cli.ok("holds", "--json").json()
    assert {h["point"]: (h["until"] is None, h["name"]) for h in listed} == {
        web[0]: (False, "web"), db: (True, "db")}
    assert "legal case 42" in cli.ok("holds").out

    report: Any = cli.ok("prune", "--keep-last", "1", "--json").json()
    assert report["removed"] == [web[1]]
    reasons = {p["id"]: p["reasons"] for p in report["points"]}
    assert reasons[web[0]][0].startswith("held until ") and "legal case 42" in reasons[web[0]][0]
    assert point_ids(cli) == [web[0], web[2], db]

    assert "Released point" in cli.ok("release", web[0][:10]).out
    assert "was not held" in cli.ok("release", web[0]).out
    assert cli.ok("prune", "--keep-last", "1", "--json").json()["removed"] == [web[0]]  # type: ignore[index]
    assert point_ids(cli) == [web[2], db]
    assert [h["point"] for h in cli.ok("holds", "--json").json()] == [db]  # type: ignore[union-attr]


BAD_INPUT: list[tuple[list[str], int, str]] = [
    (["prune"], 2, "prune never removes every point by default"),
    (["prune", "--min-age", "1d"], 2, "give at least one --keep-last"),
    (["prune", "--keep-within", "3x"], 2, "'3x' is not a --keep-within span"),
    (["prune", "--keep-last", "1", "--min-age", "two days"], 2, "is not a --min-age span"),
    (["prune", "--keep-last", "1", "--timezone", "Mars/Olympus"], 2, "unknown time zone"),
    (["prune", "--keep-last", "-1"], 2, "keep-last"),
    (["prune", "--keep-last", "1", "--name", "web", "--vm", "web"], 2, "give one"),
    (["prune", "--keep-last", "1", "--name", "nosuch"], 14, "No recovery point matches"),
    (["prune", "--keep-last", "1", "--vm", "nosuch"], 14, "No recovery point matches"),
    (["hold", "web@latest", "--until", "2026-13-45"], 2, "is not a date"),
    (["hold", "web@latest", "--until", "tomorrow"], 2, "is not a date"),
    (["hold", "web@latest", "--until", "2020-01-01"], 2, "is in the past"),
    (["hold", "ffffffff"], 14, "No recovery point matches"),
    (["hold", "nosuch@latest"], 14, "No recovery point matches"),
    (["release", "ffffffff"], 14, "No recovery point matches"),
]


def test_bad_input_changes_nothing(chains: tuple[Cli, list[str], str, Path]) -> None:
    cli, web, db, _ = chains
    before = repo_state(cli.repo)
    for args, code, message in BAD_INPUT:
        r = cli(*args)
        assert r.code == code, (args, r.err)
        assert message in r.err and "Traceback" not in r.err, (args, r.err)
        assert repo_state(cli.repo) == before, args
    assert point_ids(cli) == [*web, db]
