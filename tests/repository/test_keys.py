"""Key slots: passphrases and key files open the repository; nothing else does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stasis.backends import open_backend
from stasis.errors import ConfigCorrupt, KeySlotError, WrongPassphrase
from stasis.repository import Credentials, Repository
from stasis.repository.crypto import DEFAULT_KDF, KdfParams, new_keyfile_material
from tests.conftest import CHEAP_KDF, PASSPHRASE


def test_open_with_passphrase_then_wrong_one(repo: Repository) -> None:
    opened = Repository.open(open_backend(repo.url), Credentials(passphrase=PASSPHRASE.encode()))
    assert opened.keys == repo.keys
    with pytest.raises(WrongPassphrase):
        Repository.open(open_backend(repo.url), Credentials(passphrase=b"wrong"))


def test_key_slot_stores_no_secret_in_clear(repo: Repository) -> None:
    for path in (Path(repo.url) / "keys").iterdir():
        text = path.read_text()
        assert PASSPHRASE not in text
        slot = json.loads(text)
        assert slot["kdf"]["name"] == "argon2id"
        assert "master" not in slot


def test_added_passphrase_and_keyfile_open_the_same_master(repo: Repository) -> None:
    second = repo.add_key_slot(kind="passphrase", secret=b"second", label="ops")
    material = new_keyfile_material()
    third = repo.add_key_slot(kind="keyfile", secret=material, label="dr site")
    assert {s["id"] for s in repo.key_slots()} >= {second, third}
    by_pass = Repository.open(open_backend(repo.url), Credentials(passphrase=b"second"))
    by_file = Repository.open(open_backend(repo.url), Credentials(keyfile=material))
    assert by_pass.keys == by_file.keys == repo.keys
    with pytest.raises(WrongPassphrase):
        Repository.open(open_backend(repo.url), Credentials(keyfile=new_keyfile_material()))


def test_removed_slot_no_longer_opens_and_last_slot_stays(repo: Repository) -> None:
    other = repo.add_key_slot(kind="passphrase", secret=b"temp", label="temp")
    repo.remove_key_slot(other)
    with pytest.raises(WrongPassphrase):
        Repository.open(open_backend(repo.url), Credentials(passphrase=b"temp"))
    (only,) = [s["id"] for s in repo.key_slots()]
    with pytest.raises(KeySlotError, match="last key slot"):
        repo.remove_key_slot(only)
    assert Repository.open(open_backend(repo.url), Credentials(passphrase=PASSPHRASE.encode()))


def test_unencrypted_repository_needs_no_secret(plain_repo: Repository) -> None:
    assert not plain_repo.encrypted
    assert Repository.open(open_backend(plain_repo.url), Credentials()).keys == plain_repo.keys
    with pytest.raises(KeySlotError):
        plain_repo.add_key_slot(kind="passphrase", secret=b"x", label="x")


def test_config_tampering_is_caught(repo: Repository) -> None:
    path = Path(repo.url) / "config"
    config = json.loads(path.read_text())
    config["chunk_size"] = 1 << 20  # a plausible but wrong value
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigCorrupt, match="MAC"):
        Repository.open(open_backend(repo.url), Credentials(passphrase=PASSPHRASE.encode()))


def _passphrase_slots(path: str | Path) -> list[dict[str, object]]:
    slots = [json.loads(p.read_text()) for p in (Path(path) / "keys").iterdir()]
    return [s for s in slots if s["kind"] == "passphrase"]


def test_slots_get_the_real_kdf_cost_unless_a_caller_passes_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The environment variable that once lowered it is no hook any more.
    monkeypatch.setenv("STASIS_KDF_MEMORY_KIB", "1024")
    real = Repository.init(open_backend(tmp_path / "real"), passphrase=b"p")
    real.add_key_slot(kind="passphrase", secret=b"q", label="q")
    assert KdfParams(memory_kib=65536, iterations=3, lanes=2) == DEFAULT_KDF
    assert [s["kdf"] for s in _passphrase_slots(real.url)] == [DEFAULT_KDF.to_slot()] * 2

    cheap = Repository.init(open_backend(tmp_path / "cheap"), passphrase=b"p", kdf=CHEAP_KDF)
    cheap.add_key_slot(kind="passphrase", secret=b"q", label="q", kdf=CHEAP_KDF)
    assert [s["kdf"] for s in _passphrase_slots(cheap.url)] == [CHEAP_KDF.to_slot()] * 2
    # Opening uses the cost stored in the slot.
    assert Repository.open(open_backend(cheap.url), Credentials(passphrase=b"q")).keys == cheap.keys


def test_key_derivations_in_several_threads_at_once_all_succeed() -> None:
    """A command derives its key in a thread beside other work; OpenSSL's Argon2id
    refuses two derivations of one process at once unless they take turns."""
    import threading

    from stasis.repository.crypto import passphrase_key

    params = {"name": "argon2id", "memory_kib": 1024, "iterations": 1, "lanes": 2}
    keys: list[bytes] = []
    errors: list[BaseException] = []

    def derive() -> None:
        try:
            keys.extend(passphrase_key(b"pw", b"s" * 16, params) for _ in range(3))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=derive) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(keys)) == 1 and len(keys) == 12
