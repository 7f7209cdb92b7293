"""Drill proofs live in the repository: sealed under a keyed name, replaced by the next
drill of the same VM or group, read back at a site that has only the repository, and a
damaged or moved proof is reported, never believed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from stasis.repository import Repository
from stasis.repository.drills import KIND_DRILL, DrillProof, proof_key, proof_name
from tests.conftest import reopen

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def proof(subject: str, *, kind: str = "vm", passed: bool = True, drill: str = "d1",
          rto: float | None = 42.5) -> DrillProof:
    return DrillProof(kind, subject, drill, "ab" * 16, "instant", passed, rto, NOW,
                      NOW + timedelta(seconds=50), host="site-a",
                      checks=[{"kind": "tcp", "arg": "22", "vm": subject, "passed": passed,
                               "seconds": 3.0}],
                      failure="" if passed else "check tcp:22 did not pass")


def test_proofs_persist_are_replaced_and_name_nothing(repo: Repository) -> None:
    repo.record_drill(proof("db"))
    repo.record_drill(proof("app", kind="group", rto=80.0))
    again = reopen(repo)
    assert again.drill_proofs() == [proof("app", kind="group", rto=80.0), proof("db")]
    # The next drill of db replaces its proof: the newest says what is proven now.
    again.record_drill(proof("db", passed=False, drill="d2", rto=None))
    (app, db) = reopen(repo).drill_proofs()
    assert app == proof("app", kind="group", rto=80.0)
    assert (db.drill, db.passed, db.rto_s, db.failure) == (
        "d2", False, None, "check tcp:22 did not pass")
    # The store sees keyed names only, and sealed contents.
    keys = [o.key for o in repo.backend.list("drills/")]
    assert sorted(keys) == sorted(proof_key(proof_name(repo.keys.id, k, s))
                                  for k, s in (("vm", "db"), ("group", "app")))
    for key in keys:
        assert b"site-a" not in repo.backend.get(key)


def test_a_damaged_or_moved_proof_is_reported_and_left_out(repo: Repository) -> None:
    repo.record_drill(proof("db"))
    repo.record_drill(proof("web"))
    db_key = proof_key(proof_name(repo.keys.id, "vm", "db"))
    web_key = proof_key(proof_name(repo.keys.id, "vm", "web"))
    # web's proof copied over db's name: its seal names web, so it does not open as db.
    repo.backend.put(db_key, repo.backend.get(web_key))
    damaged: list[str] = []
    assert repo.drill_proofs(on_damaged=lambda name, e: damaged.append(e.key)) == [
        proof("web")]
    assert damaged == [db_key]
    # Sealed under its own name but naming another subject: refused too.
    name = db_key.rsplit("/", 1)[-1]
    repo.backend.put(db_key, repo.sealer.seal(KIND_DRILL, name, proof("web").encode()))
    damaged.clear()
    assert repo.drill_proofs(on_damaged=lambda name, e: damaged.append(e.reason)) == [
        proof("web")]
    assert damaged == ["it names another VM or group"]


def test_an_unencrypted_repository_keeps_proofs_too(plain_repo: Repository,
                                                   tmp_path: Path) -> None:
    plain_repo.record_drill(proof("db"))
    assert plain_repo.drill_proofs() == [proof("db")]
