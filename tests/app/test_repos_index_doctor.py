"""Repositories, the catalog's index and doctor, in-process: what the CLI only prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from stasis.app import doctor as doctor_app
from stasis.app.index import indexed_points, rebuild_index
from stasis.app.repos import add_key_slot, info, init_repository, key_slots, remove_key_slot
from stasis.backends import open_backend
from stasis.errors import JobNotEnded, KeySlotError, UsageError
from stasis.protection.doctor import DoctorReport
from stasis.repository import Credentials, Manifest, Repository
from stasis.repository.keyfile import read_key_file


def _never() -> bytes:
    raise AssertionError("no passphrase is asked for here")


def test_init_with_a_key_file_writes_it_once_the_repository_exists(tmp_path: Path) -> None:
    key = tmp_path / "key"
    made = init_repository(str(tmp_path / "r"), chunk_size=1 << 20, key_file=key,
                           passphrase=_never)
    assert made.encryption == "aes-256-gcm" and made.chunk_size == 1 << 20
    r = Repository.open(open_backend(str(tmp_path / "r")),
                        Credentials(keyfile=read_key_file(key)))
    assert r.id == made.id
    assert [s.kind for s in key_slots(lambda: r)] == ["keyfile"]
    # A second repository never writes over the key file of the first.
    with pytest.raises(KeySlotError):
        init_repository(str(tmp_path / "r2"), chunk_size=1 << 20, key_file=key,
                        passphrase=_never)


def test_unencrypted_init_asks_no_passphrase_and_info_is_a_model(tmp_path: Path) -> None:
    made = init_repository(str(tmp_path / "p"), encryption="none", chunk_size=1 << 20,
                           passphrase=_never)
    r = Repository.open(open_backend(str(tmp_path / "p")), Credentials())
    i = info(lambda: r)
    assert i.id == made.id and i.points == 0 and i.encryption == "none"


def test_key_slots_added_from_an_existing_key_file_reuse_it(repo: Repository,
                                                          tmp_path: Path) -> None:
    key = tmp_path / "k"
    first = add_key_slot(lambda: repo, new_key_file=key, label="dr")
    material = key.read_bytes()
    second = add_key_slot(lambda: repo, new_key_file=key)
    assert key.read_bytes() == material and first.id != second.id
    with pytest.raises(UsageError):  # neither a key file nor a passphrase
        add_key_slot(lambda: repo)


def test_removing_no_slot_is_refused_before_the_repository_opens() -> None:
    def opener() -> Repository:
        raise AssertionError("opened")

    with pytest.raises(UsageError):
        remove_key_slot(opener, "")


def test_the_index_is_rebuilt_from_the_repository_and_listed(repo: Repository,
                                                             migrated_catalog_url: str) -> None:
    for n, pid in enumerate(("a" * 32, "b" * 32)):
        repo.commit(Manifest(id=pid, name="m", time=f"2026-01-0{n + 1}T00:00:00+00:00"))
    rebuilt = rebuild_index(lambda: repo, catalog=migrated_catalog_url)
    assert (rebuilt.points, rebuilt.damaged, rebuilt.repository) == (2, [], repo.id)
    assert rebuilt.catalog and "catalog" not in rebuilt.to_json()
    found = indexed_points(catalog=migrated_catalog_url, location=repo.url)
    assert [p.id for p in found] == ["a" * 32, "b" * 32]
    assert found[0].to_json()["time"].startswith("2026-01-01T00:00:00")
    assert indexed_points(catalog=migrated_catalog_url, name="other") == []


@pytest.mark.parametrize(("fix", "fixed", "code"), [
    (False, False, 0),  # found, not asked to remove: nothing is stuck
    (True, True, 0),
    (True, False, JobNotEnded.exit_code),  # --fix could not remove it
])
def test_doctor_exits_with_job_not_ended_only_for_what_fix_could_not_remove(
    monkeypatch: pytest.MonkeyPatch, fix: bool, fixed: bool, code: int,
) -> None:
    seen: list[list[Path]] = []

    def find(conn: object, repo: object, run_dirs: list[Path], *, fix: bool) -> DoctorReport:
        seen.append(run_dirs)
        report = DoctorReport()
        report.add("backup job", "vm1 (socket gone)", fixed)
        return report

    monkeypatch.setattr(doctor_app, "find_debris", find)
    result = doctor_app.doctor("test:///default", None, fix=fix)
    assert result.exit_code == code
    assert [f.to_json() for f in result.findings] == [
        {"kind": "backup job", "what": "vm1 (socket gone)", "fixed": fixed}]
    assert len(result.stuck) == (1 if code else 0)
    (dirs,) = seen
    assert dirs == sorted(set(dirs)) and any(d.name == "run" for d in dirs)
