"""Every run is a job: verify, restore, prune and gc through the CLI, on disk-image
points, with their results in ``stasis jobs`` and the last verification in
``stasis status``. The catalog is SQLite or PostgreSQL (``catalog_url``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stasis.backends import open_backend
from stasis.errors import IntegrityError
from stasis.repository import Credentials, Repository
from stasis.repository.repo import chunk_key
from tests.conftest import PASSPHRASE, Cli, images_equal, mixed_image


def _jobs(cli: Cli, **kw: Any) -> list[dict[str, Any]]:
    rows = cli.ok("jobs", "--json", **kw).json()
    assert isinstance(rows, list)
    return rows


def _status(cli: Cli, vm: str) -> dict[str, Any]:
    rows = cli.ok("status", "--json").json()
    assert isinstance(rows, list)
    return next(r for r in rows if r["vm"] == vm)


def test_verify_is_a_job_and_the_last_verification_in_status(
        cli_repo: Cli, tmp_path: Path, migrated_catalog_url: str) -> None:
    cli = cli_repo
    cli.env["STASIS_CATALOG"] = migrated_catalog_url
    src = mixed_image(tmp_path / "web.raw", size=4 << 20)
    b1 = cli.ok("backup", "image", str(src), "--name", "web", "--json").json()
    b2 = cli.ok("backup", "image", str(src), "--name", "web", "--json").json()
    assert isinstance(b1, dict) and isinstance(b2, dict)
    assert _status(cli, "web")["last_verify"] is None  # never verified yet

    cli.ok("verify", "--deep")
    (job,) = [j for j in _jobs(cli) if j["kind"] == "verify"]
    assert (job["kind"], job["state"], job["name"]) == ("verify", "succeeded", "all points")
    assert job["vms"] == ["web"] and job["error"] is None and job["bytes_read"] > 0
    assert set(job["result"]) == {b1["id"], b2["id"]}
    assert all(r["ok"] and r["problems"] == [] for r in job["result"].values())
    last = _status(cli, "web")["last_verify"]
    assert last == {"job": job["id"], "state": "succeeded", "ended": job["ended"],
                    "deep": True, "error": None}
    shown = cli.ok("job", "show", str(job["id"]), "--log").out
    assert "verify all points" in shown and "intact" in shown and "verified (deep)" in shown

    # A damaged chunk of the newest point: verify fails, and so does its job.
    repo = Repository.open(open_backend(cli.repo), Credentials(passphrase=PASSPHRASE.encode()))
    index = repo.load_index(repo.resolve(b2["id"]).vms[0].disks[0].index)
    entry, name = list(index.stored())[-1]
    path = Path(repo.url) / chunk_key(name)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    failed = cli("verify", "--deep", b2["id"][:12])
    assert failed.code == IntegrityError.exit_code, failed.err
    newest = _jobs(cli)[0]
    assert newest["kind"] == "verify" and newest["state"] == "failed"
    assert newest["exit_code"] == IntegrityError.exit_code
    assert "verify found 1 problem" in newest["error"]
    assert newest["name"] == "web" and newest["vms"] == ["web"]
    (outcome,) = newest["result"].values()
    assert outcome["point"] == b2["id"] and not outcome["ok"]
    assert f"offset {entry * index.chunk_size}" in outcome["problems"][0]
    last = _status(cli, "web")["last_verify"]
    assert last["job"] == newest["id"] and last["state"] == "failed"
    assert "problem" in last["error"]
    log = cli.ok("job", "show", str(newest["id"]), "--log", "--json").json()
    assert isinstance(log, dict)
    assert any(line["text"].startswith("quarantined:") for line in log["log"])


def test_restore_prune_and_gc_are_jobs(cli_repo: Cli, tmp_path: Path) -> None:
    cli = cli_repo
    src = mixed_image(tmp_path / "db.raw", size=4 << 20)
    points = []
    for seed in range(3):  # three different images: prune leaves garbage for gc
        mixed_image(src, size=4 << 20, seed=seed + 1)
        p = cli.ok("backup", "image", str(src), "--name", "db", "--json").json()
        assert isinstance(p, dict)
        points.append(p["id"])

    out = tmp_path / "restored.raw"
    cli.ok("restore", "disk", "db@latest", "--to", str(out), "--format", "raw")
    assert images_equal(src, out)
    restore = _jobs(cli)[0]
    assert (restore["kind"], restore["state"], restore["name"]) == ("restore", "succeeded", "db")
    assert restore["vms"] == ["db"] and restore["bytes_written"] > 0
    assert restore["result"]["db"]["point"] == points[-1]
    assert restore["result"]["db"]["disks"] == {"db.raw": str(out)}

    cli.ok("prune", "--keep-last", "1", "--dry-run")
    cli.ok("gc", "--dry-run")
    assert _jobs(cli)[0]["id"] == restore["id"]  # dry runs change nothing: no jobs

    cli.ok("prune", "--keep-last", "1")
    prune = _jobs(cli)[0]
    assert (prune["kind"], prune["state"], prune["name"]) == ("prune", "succeeded",
                                                              "all chains")
    actions = {pid: r["action"] for pid, r in prune["result"].items()}
    assert actions == {points[0]: "removed", points[1]: "removed", points[2]: "keep"}
    assert "stasis prune" not in cli.ok("job", "show", str(prune["id"])).out

    gc = cli.ok("gc", "--json").json()
    assert isinstance(gc, dict) and gc["reclaimed_bytes"] > 0
    job = _jobs(cli)[0]
    assert (job["kind"], job["state"]) == ("gc", "succeeded")
    assert job["result"]["gc"]["reclaimed_bytes"] == gc["reclaimed_bytes"]
    assert "reclaimed_bytes" in cli.ok("job", "show", str(job["id"])).out
    assert [j["kind"] for j in _jobs(cli)] == ["gc", "prune", "restore", "backup", "backup",
                                              "backup"]


def test_a_catalog_that_cannot_be_opened_does_not_stop_verify(cli_repo: Cli,
                                                              tmp_path: Path) -> None:
    src = mixed_image(tmp_path / "d.raw", size=2 << 20)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {"STASIS_CATALOG": str(blocker / "catalog.db")}
    cli_repo.ok("backup", "image", str(src), "--name", "d", env=env)
    done = cli_repo.ok("verify", "--deep", "--json", env=env)
    assert "not recorded as a job" in done.err
    report = done.json()
    assert isinstance(report, dict) and report["ok"]
