"""Every bad input: a clear message, a documented exit code, and nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    BIN,
    Cli,
    MiB,
    images_equal,
    init_repo,
    leftovers,
    mixed_image,
    nbd_processes,
)


def repo_state(repo: Path) -> dict[str, bytes]:
    """Every committed object of a repository, to show a failure changed nothing."""
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and p.relative_to(repo).parts[0] != "locks"
    }


def test_wrong_passphrase(cli_repo: Cli, tmp_path: Path) -> None:
    before = repo_state(cli_repo.repo)
    src = mixed_image(tmp_path / "a.raw")
    r = cli_repo("backup", "image", str(src), env={"STASIS_PASSPHRASE": "nope"})
    assert r.code == 13
    assert "No key slot" in r.err and "Nothing was read or written" in r.err
    assert "Traceback" not in r.err
    assert repo_state(cli_repo.repo) == before
    pf = tmp_path / "pass"
    pf.write_text("also wrong\n")
    assert cli_repo("list", "--passphrase-file", str(pf)).code == 13


def test_no_passphrase_and_no_terminal(cli_repo: Cli) -> None:
    env = {k: v for k, v in cli_repo.env.items() if k != "STASIS_PASSPHRASE"}
    proc = subprocess.run([str(BIN), "list"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 13 and "no $STASIS_PASSPHRASE" in proc.stderr


def test_no_repository_at_path(cli: Cli, tmp_path: Path) -> None:
    r = cli("list", "--repo", str(tmp_path / "missing"))
    assert r.code == 10 and "does not exist" in r.err and "stasis repo init" in r.err
    assert not (tmp_path / "missing").exists()


def test_path_is_not_a_repository(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    r = cli("list", "--repo", str(other))
    assert r.code == 11 and "not a Stasis repository" in r.err
    r = cli("repo", "init", "--repo", str(other))
    assert r.code == 11 and "not empty" in r.err
    assert sorted(os.listdir(other)) == ["cat.jpg"]
    assert (other / "cat.jpg").read_bytes() == b"meow"


@pytest.mark.parametrize("damage", ["truncated", "not-json", "wrong-format", "tampered"])
def test_corrupted_config(cli_repo: Cli, tmp_path: Path, damage: str) -> None:
    config = cli_repo.repo / "config"
    text = config.read_text()
    if damage == "truncated":
        config.write_text(text[: len(text) // 2])
    elif damage == "not-json":
        config.write_bytes(b"\x00\xff" * 20)
    elif damage == "wrong-format":
        config.write_text(json.dumps({**json.loads(text), "format": "something-else"}))
    else:
        config.write_text(json.dumps({**json.loads(text), "chunk_size": 1 << 20}))
    before = repo_state(cli_repo.repo)
    r = cli_repo("backup", "image", str(mixed_image(tmp_path / "a.raw")))
    assert r.code == 12, r.err
    assert "config" in r.err and "damaged" in r.err and "Nothing was written" in r.err
    assert repo_state(cli_repo.repo) == before


def test_missing_or_unreadable_image(cli_repo: Cli, tmp_path: Path) -> None:
    before = repo_state(cli_repo.repo)
    r = cli_repo("backup", "image", str(tmp_path / "nope.qcow2"))
    assert r.code == 16 and "no such file" in r.err and "Nothing was written" in r.err
    broken = tmp_path / "broken.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(broken), "64M"], check=True)
    with open(broken, "r+b") as f:  # destroy the L1 table offset in the header
        f.seek(40)
        f.write(b"\xff" * 8)
    good = mixed_image(tmp_path / "good.raw")
    r = cli_repo("backup", "image", str(good), str(broken))  # one bad source: no point at all
    assert r.code == 16 and "broken.qcow2" in r.err
    r = cli_repo("backup", "image", str(tmp_path))
    assert r.code == 16 and "not a regular file" in r.err
    assert repo_state(cli_repo.repo) == before
    assert cli_repo.ok("list", "--json").json() == []


def test_existing_restore_target(cli_repo: Cli, tmp_path: Path) -> None:
    src = mixed_image(tmp_path / "a.raw")
    cli_repo.ok("backup", "image", str(src), "--name", "a")
    target = tmp_path / "precious.img"
    target.write_bytes(b"do not lose me")
    r = cli_repo("restore", "disk", "a@latest", "--to", str(target))
    assert r.code == 17 and "already exists" in r.err and "--force" in r.err
    assert target.read_bytes() == b"do not lose me"
    cli_repo.ok("restore", "disk", "a@latest", "--to", str(target), "--force")
    assert images_equal(src, target)
    assert leftovers(tmp_path) == []


def test_point_name_matches_nothing_or_disk_unknown(cli_repo: Cli, tmp_path: Path) -> None:
    a, b = mixed_image(tmp_path / "a.raw"), mixed_image(tmp_path / "b.raw", seed=5)
    cli_repo.ok("backup", "image", str(a), str(b), "--name", "pair")
    r = cli_repo("restore", "disk", "nothing@latest", "--to", str(tmp_path / "o"))
    assert r.code == 14 and "No recovery point matches 'nothing@latest'" in r.err
    r = cli_repo("restore", "disk", "pair@latest", "--to", str(tmp_path / "o"))
    assert r.code == 2 and "choose one with --vm and --disk" in r.err
    r = cli_repo("restore", "disk", "pair@latest", "--disk", "c.raw", "--to", str(tmp_path / "o"))
    assert r.code == 14 and "has no disk 'c.raw'" in r.err and "a.raw" in r.err
    assert not (tmp_path / "o").exists()


def test_bad_tag_and_chunk_size(cli: Cli, tmp_path: Path) -> None:
    r = cli("repo", "init", "--chunk-size", "3M")
    assert r.code == 2 and "power of two" in r.err
    r = cli("repo", "init", "--compression", "lz4")
    assert r.code == 2 and "unknown compression" in r.err
    assert not cli.repo.exists() or not any(cli.repo.iterdir())
    cli.ok("repo", "init")
    r = cli("backup", "image", str(mixed_image(tmp_path / "a.raw")), "--tag", "novalue")
    assert r.code == 2 and "KEY=VALUE" in r.err


@pytest.mark.root
def test_disk_full_during_backup(cli: Cli, tmpfs: Path, tmp_path: Path) -> None:
    repo = tmpfs / "repo"
    init_repo(repo)
    small = mixed_image(tmp_path / "small.raw", 4 * MiB, seed=3)
    cli.ok("backup", "image", str(small), "--repo", str(repo), "--name", "small")
    before = cli.ok("list", "--repo", str(repo), "--json").json()
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        f.write(os.urandom(8 * MiB))  # incompressible, more than the 3 MiB tmpfs holds
    r = cli("backup", "image", str(big), "--repo", str(repo), "--name", "big")
    assert r.code == 18, r.err
    assert "full" in r.err and "not committed" in r.err and "still usable" in r.err
    assert cli.ok("list", "--repo", str(repo), "--json").json() == before
    assert leftovers(repo) == []
    assert not list((repo / "locks").iterdir())
    # Usable: space freed, the repository verifies and the earlier point restores.
    subprocess.run(["mount", "-o", "remount,size=64M", str(tmpfs)], check=True)
    cli.ok("verify", "--deep", "--repo", str(repo))
    out = tmp_path / "small.out"
    cli.ok("restore", "disk", "small@latest", "--repo", str(repo), "--to", str(out))
    assert images_equal(small, out)
    cli.ok("backup", "image", str(big), "--repo", str(repo), "--name", "big")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_backup_commits_nothing(cli_repo: Cli, tmp_path: Path, sig: int) -> None:
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        for _ in range(16):
            f.write(os.urandom(16 * MiB))  # 256 MiB of random data: 1,024 chunks
    proc = subprocess.Popen([str(BIN), "backup", "image", str(big), "--name", "big"],
                            env=cli_repo.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    chunks = cli_repo.repo / "chunks"
    deadline = time.monotonic() + 60
    while sum(1 for _ in chunks.rglob("*")) < 300 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.poll() is None, "backup finished before it could be interrupted"
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert "interrupted" in err and "nothing was committed" in err
    assert cli_repo.ok("list", "--json").json() == []
    assert leftovers(cli_repo.repo) == []
    assert not list((cli_repo.repo / "locks").iterdir())
    assert [p for p in nbd_processes() if str(big) in p] == []
    state = Path(cli_repo.env["STASIS_STATE_DIR"]) / "run"
    assert not state.exists() or list(state.iterdir()) == []
    # The repository is usable: the same backup now completes and restores exactly.
    cli_repo.ok("backup", "image", str(big), "--name", "big")
    out = tmp_path / "big.out"
    cli_repo.ok("restore", "disk", "big@latest", "--to", str(out))
    assert images_equal(big, out)
    shutil.rmtree(cli_repo.repo)


def test_a_repository_url_of_another_scheme_is_refused_not_made_a_directory(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taken as a path, gs://bucket/x would be the local directory gs: (a Path folds
    # the //), and the backup would land there.
    monkeypatch.chdir(tmp_path)
    src = mixed_image(tmp_path / "a.raw")
    before = sorted(os.listdir(tmp_path))
    for args in (["repo", "init"], ["backup", "image", str(src)], ["list"]):
        for url in ("gs://bucket/x", "gs:bucket/x"):
            r = cli(*args, "--repo", url)
            assert r.code == 36, (args, r.err)
            assert f"'{url}' is a URL of the scheme 'gs'" in r.err, r.err
            assert "not taken as a local path" in r.err and "file://" in r.err
            assert "Traceback" not in r.err
    r = cli("backup", "image", str(src), env={"STASIS_REPO": "gs://bucket/x"})
    assert r.code == 36, r.err
    assert sorted(os.listdir(tmp_path)) == before  # no s3: directory, nothing written


def test_file_url_repository(cli: Cli, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/url-repo"
    cli.ok("repo", "init", "--repo", url, "--chunk-size", "256K")
    src = mixed_image(tmp_path / "a.raw")
    cli.ok("backup", "image", str(src), "--repo", url, "--name", "a")
    listed = cli.ok("list", "--repo", str(tmp_path / "url-repo"), "--json").json()
    assert [p["name"] for p in listed] == ["a"]  # type: ignore[index]


def test_a_failed_repository_read_during_a_restore_is_the_repository(
    cli_repo: Cli, tmp_path: Path
) -> None:
    src = mixed_image(tmp_path / "a.raw")
    cli_repo.ok("backup", "image", str(src), "--name", "a")
    # A chunk that cannot be read, even by root: a symlink that loops (ELOOP). Not a
    # missing chunk (that is damage, 19): the storage fails.
    chunk = sorted((cli_repo.repo / "chunks").rglob("*"))[-1]
    assert chunk.is_file()
    chunk.unlink()
    chunk.symlink_to(chunk.name)
    target = tmp_path / "out.qcow2"
    r = cli_repo("restore", "disk", "a@latest", "--to", str(target))
    assert r.code == 21, r.err
    assert "The repository storage at" in r.err and "failed reading chunks/" in r.err, r.err
    assert "The repository was not changed." in r.err
    assert f"The restore target {target} was not completed" in r.err
    assert "Cannot write the restore target" not in r.err and "Traceback" not in r.err
    assert not target.exists() and leftovers(tmp_path) == []
