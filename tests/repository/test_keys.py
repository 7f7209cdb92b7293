"""Key slots: passphrases and key files open the repository; nothing else does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stasis.backends import open_backend
from stasis.errors import ConfigCorrupt, KeySlotError, WrongPassphrase
from stasis.repository import Credentials, Repository
from stasis.repository.crypto import new_keyfile_material
from tests.conftest import PASSPHRASE


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
