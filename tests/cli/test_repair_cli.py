"""``stasis verify --repair-from`` as a user runs it: a chunk corrupted on disk is
healed from the copy (the table, --json, the job's result), one damaged at both
sites is not (exit code 19, saying so), and ``stasis status`` shows each site of a
policy that copies."""

from __future__ import annotations

from pathlib import Path

from stasis.backends import open_backend
from stasis.repository import Credentials, Repository
from stasis.repository.repo import chunk_key
from tests.conftest import Cli, init_repo, mixed_image

DEST_PASS = "the passphrase of the second site"


def _damage(root: Path, name: bytes) -> None:
    path = root / chunk_key(name)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x55
    path.write_bytes(bytes(data))


def test_verify_repair_from_heals_and_says_what_it_could_not(cli_repo: Cli,
                                                              tmp_path: Path) -> None:
    image = mixed_image(tmp_path / "disk.raw")
    cli_repo.ok("backup", "image", str(image), "--name", "web")
    dest = tmp_path / "dr"
    init_repo(dest, passphrase=DEST_PASS)
    secret = tmp_path / "dr.pass"
    secret.write_text(DEST_PASS)
    secret.chmod(0o600)
    cli_repo.ok("copy", "--to", str(dest), "--all", "--to-passphrase-file", str(secret))
    src = Repository.open(open_backend(cli_repo.repo),
                          Credentials(passphrase=cli_repo.env["STASIS_PASSPHRASE"].encode()))
    (point,) = src.points()
    names = [n for n in src.load_index(point.vms[0].disks[0].index).names()
             if n != bytes(len(n))]
    _damage(cli_repo.repo, names[0])

    r = cli_repo("verify", "--deep", "--repair-from", str(dest), "--from-passphrase-file",
                 str(secret), "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert isinstance(result, dict)
    assert result["ok"] is True and result["problems"][0]["healed"] is True
    repair = result["repair"]
    assert repair["healed"] == [names[0].hex()] and repair["unhealed"] == []
    assert repair["shared_key"] is False and repair["source_url"] == str(dest)
    jobs = cli_repo.ok("jobs", "--json").json()
    assert isinstance(jobs, list)
    job = next(j for j in jobs if j["kind"] == "verify")
    assert job["state"] == "succeeded" and job["result"]["repair"]["healed"] == [
        names[0].hex()]
    cli_repo.ok("verify", "--deep")

    # Damaged here and there: not healed, exit code 19, the table says so.
    dst = Repository.open(open_backend(dest), Credentials(passphrase=DEST_PASS.encode()))
    their = list(dst.load_index(dst.load_manifest(point.id).vms[0].disks[0].index).names())
    here = list(src.load_index(point.vms[0].disks[0].index).names())
    _damage(cli_repo.repo, names[1])
    _damage(dest, their[here.index(names[1])])
    r = cli_repo("verify", "--deep", "--repair-from", str(dest), "--from-passphrase-file",
                 str(secret))
    assert r.code == 19, r.err
    assert "0 chunks healed, 1 chunk not healed" in r.out
    assert "not healed:" in r.err and "in " + str(dest) + " too" in r.err
    assert "could not be healed" in r.err
