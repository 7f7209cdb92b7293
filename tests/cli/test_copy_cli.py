"""``stasis copy`` and ``stasis repo init --copy-key-from`` as a user runs them: the
JSON result, the job and its log, named destinations, errors and exit codes, and a
copy killed with SIGKILL at random instants that resumes to a destination where
every point verifies deep."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stasis.backends import open_backend
from stasis.protection.verify import verify
from stasis.repository import Credentials, Repository
from stasis.repository.repo import manifest_key
from tests.conftest import BIN, PASSPHRASE, Cli, MiB, init_repo, mixed_image, write_image

DEST_PASS = "the passphrase of the second site"


def _secret(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def _dest_repo(path: Path) -> Repository:
    return init_repo(path, passphrase=DEST_PASS)


def _open_dest(path: Path) -> Repository:
    return Repository.open(open_backend(path), Credentials(passphrase=DEST_PASS.encode()))


def test_copy_to_a_location_then_restore_there_on_a_fresh_state_dir(
        cli_repo: Cli, tmp_path: Path) -> None:
    image = mixed_image(tmp_path / "disk.raw")
    cli_repo.ok("backup", "image", str(image), "--name", "web")
    dest = tmp_path / "dr"
    _dest_repo(dest)
    env = {"STASIS_TO_PASSPHRASE": DEST_PASS}
    r = cli_repo.ok("copy", "--to", str(dest), "--all", "--json", env=env)
    result = r.json()
    assert isinstance(result, dict)
    assert result["shared_key"] is False and len(result["copied"]) == 1
    assert result["objects_sent"] > 0 and result["skipped"] == []
    point = result["copied"][0]

    # The job, with each point's outcome and a log.
    jobs = cli_repo.ok("jobs", "--json").json()
    assert isinstance(jobs, list)
    (job,) = [j for j in jobs if j["kind"] == "copy"]
    assert job["state"] == "succeeded" and job["result"][point]["action"] == "copied"
    shown = cli_repo.ok("job", "show", str(job["id"]), "--log", "--json").json()
    assert isinstance(shown, dict)
    assert any("copied" in line["text"] for line in shown["log"])
    text = cli_repo.ok("job", "show", str(job["id"])).out
    assert f"point {point[:12]} 'web' copied" in text and "object(s) sent" in text

    again = cli_repo.ok("copy", "--to", str(dest), "--all", "--json", env=env).json()
    assert isinstance(again, dict)
    assert again["skipped"] == [point] and again["objects_sent"] == 0

    # The second site alone: no source, a state directory that never saw either.
    expected = image.read_bytes()
    subprocess.run(["rm", "-rf", str(cli_repo.repo)], check=True)
    fresh = {"STASIS_REPO": str(dest), "STASIS_PASSPHRASE": DEST_PASS,
             "STASIS_STATE_DIR": str(tmp_path / "fresh-state")}
    cli_repo.ok("verify", "--deep", env=fresh)
    out = tmp_path / "restored.raw"
    cli_repo.ok("restore", "disk", point, "--to", str(out), "--format", "raw", env=fresh)
    assert out.read_bytes() == expected


def test_init_copy_key_from_and_a_named_destination(cli_repo: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.raw", 4 * MiB, [(MiB, random.Random(1).randbytes(MiB))])
    cli_repo.ok("backup", "image", str(image), "--name", "a")
    dest = tmp_path / "twin"
    src_pass = _secret(tmp_path, "src.pass", PASSPHRASE)
    new_pass = _secret(tmp_path, "twin.pass", DEST_PASS)
    created = cli_repo.ok("repo", "init", "--repo", str(dest), "--copy-key-from",
                          str(cli_repo.repo), "--from-passphrase-file", str(src_pass),
                          "--passphrase-file", str(new_pass), "--json",
                          env={"STASIS_PASSPHRASE": ""}).json()
    assert isinstance(created, dict) and created["chunk_size"] == 256 << 10
    config = tmp_path / "stasis.toml"
    config.write_text(f'default_repository = "prod"\n'
                      f'[repositories.prod]\nurl = "{cli_repo.repo}"\n'
                      f'passphrase_file = "{src_pass}"\n'
                      f'[repositories.dr]\nurl = "{dest}"\npassphrase_file = "{new_pass}"\n')
    env = {"STASIS_CONFIG": str(config), "STASIS_REPO": "", "STASIS_PASSPHRASE": ""}
    env = {k: v for k, v in {**cli_repo.env, **env}.items() if v != ""}
    r = cli_repo("copy", "--to", "dr", "--name", "a", "--json", env=env)
    assert r.code == 0, r.err
    result = r.json()
    assert isinstance(result, dict) and result["shared_key"] is True
    src_files = sorted(p.relative_to(cli_repo.repo) for p in (cli_repo.repo / "chunks").rglob("*"))
    dst_files = sorted(p.relative_to(dest) for p in (dest / "chunks").rglob("*"))
    assert src_files == dst_files

    # --copy-key-from onto a repository with a key of its own: refused, with its code.
    own = tmp_path / "own"
    _dest_repo(own)
    r = cli_repo("repo", "init", "--repo", str(own), "--copy-key-from", str(cli_repo.repo),
                 "--from-passphrase-file", str(src_pass), "--passphrase-file", str(new_pass))
    assert r.code == 39, r.err
    assert "key of its own" in r.err and "nothing was written" in r.err


def test_copy_bad_input(cli_repo: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.raw", 2 * MiB, [(0, b"x" * 5000)])
    cli_repo.ok("backup", "image", str(image), "--name", "a")
    dest = tmp_path / "dr"
    _dest_repo(dest)
    env = {"STASIS_TO_PASSPHRASE": DEST_PASS}
    r = cli_repo("copy", "--to", str(dest), env=env)
    assert r.code == 2 and "say which points" in r.err
    r = cli_repo("copy", "--to", str(dest), "--all", "--limit-rate", "fast", env=env)
    assert r.code == 2 and "not a size" in r.err
    r = cli_repo("copy", "--to", str(dest), "--name", "nothing", env=env)
    assert r.code == 14
    r = cli_repo("copy", "--to", str(dest), "--all", env={"STASIS_TO_PASSPHRASE": "wrong"})
    assert r.code == 13
    r = cli_repo("copy", "--to", str(cli_repo.repo), "--all",
                 env={"STASIS_TO_PASSPHRASE": PASSPHRASE})
    assert r.code == 40 and "same repository" in r.err
    big = tmp_path / "big"
    Repository.init(open_backend(big), passphrase=DEST_PASS.encode(), chunk_size=1 << 20)
    r = cli_repo("copy", "--to", str(big), "--all", env=env)
    assert r.code == 40 and "--chunk-size" in r.err
    assert _open_dest(dest).point_ids() == [] and _open_dest(big).point_ids() == []
    dry = cli_repo.ok("copy", "--to", str(dest), "--all", "--dry-run", "--json", env=env).json()
    assert isinstance(dry, dict) and dry["dry_run"] and dry["objects_sent"] > 0
    assert _open_dest(dest).point_ids() == []


@pytest.mark.slow
def test_a_copy_killed_at_random_instants_resumes_and_verifies_deep(
        cli_repo: Cli, tmp_path: Path) -> None:
    rnd = random.Random(14)
    points = []
    image = tmp_path / "disk.raw"
    write_image(image, 16 * MiB, [(0, rnd.randbytes(16 * MiB))])
    for i in range(3):
        with open(image, "r+b") as f:
            f.seek(i * 5 * MiB)
            f.write(rnd.randbytes(2 * MiB))
        points.append(cli_repo.ok("backup", "image", str(image), "--name", "web",
                                  "--json").json())
    dest = tmp_path / "dr"
    _dest_repo(dest)
    env = {**cli_repo.env, "STASIS_TO_PASSPHRASE": DEST_PASS}
    # 5 MiB/s: the ~22 MiB to send take about 4.5 s over the rounds, so the kills
    # land before the first commit, between commits and within the last point.
    args = [str(BIN), "copy", "--to", str(dest), "--all", "--limit-rate", "5M", "--json"]
    kills = 0
    for delay in (0.5, 0.9, 1.3, 1.7, 2.1, 2.5):
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay * rnd.uniform(0.8, 1.2))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        # Nothing committed early: every manifest there names only what is there.
        committed = _open_dest(dest)
        assert verify(committed, deep=True).ok
    assert kills >= 3
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    final = _open_dest(dest)
    assert sorted(final.point_ids()) == sorted(p["id"] for p in points)
    for p in points:
        assert final.backend.exists(manifest_key(p["id"]))
    assert verify(final, deep=True).ok
