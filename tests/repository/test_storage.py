"""Backend errors are translated once, at the repository boundary: a backend's
OSError is a BackendError (or RepositoryFull) naming the store, the operation and
the key; nothing above the repository sees an OSError from a backend."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from stasis.backends import LocalBackend, ObjectInfo
from stasis.errors import BackendError, ObjectNotFound, RepositoryFull
from stasis.repository import Repository
from stasis.repository.storage import Storage
from tests.conftest import CHEAP_KDF, PASSPHRASE


class Failing(LocalBackend):
    """A local store whose chosen calls fail as a disk or a network would."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fail: dict[str, int] = {}

    def _maybe(self, call: str) -> None:
        if call in self.fail:
            raise OSError(self.fail[call], "injected")

    def get(self, key: str) -> bytes:
        self._maybe("get")
        return super().get(key)

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._maybe("put")
        super().put(key, data)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._maybe("list")
        yield from super().list(prefix)


def test_a_failed_read_is_a_backend_error_naming_the_object(tmp_path: Path) -> None:
    backend = Failing(tmp_path / "r")
    repo = Repository.init(backend, passphrase=PASSPHRASE.encode(), chunk_size=64 << 10,
                           kdf=CHEAP_KDF)
    name = repo.chunk_name(b"x" * 100)
    repo.store_chunk(name, b"x" * 100)
    backend.fail["get"] = errno.EIO
    with pytest.raises(BackendError) as e:
        repo.load_chunk(name)
    assert type(e.value) is BackendError and e.value.exit_code == 21
    assert e.value.message == (f"The repository storage at {tmp_path / 'r'} failed reading "
                               f"chunks/{name.hex()[:2]}/{name.hex()}: injected. The "
                               "repository was not changed.")
    assert not isinstance(e.value, OSError)
    backend.fail["list"] = errno.EACCES
    with pytest.raises(BackendError, match="failed listing manifests/"):
        repo.points()


def test_no_space_is_repository_full(tmp_path: Path) -> None:
    backend = Failing(tmp_path / "r")
    repo = Repository.init(backend, passphrase=PASSPHRASE.encode(), chunk_size=64 << 10,
                           kdf=CHEAP_KDF)
    for code in (errno.ENOSPC, errno.EDQUOT):
        backend.fail["put"] = code
        with pytest.raises(RepositoryFull) as e:
            repo.store_chunk(repo.chunk_name(b"y"), b"y")
        assert e.value.exit_code == 18 and "not committed" in e.value.message


def test_a_missing_object_passes_unchanged(tmp_path: Path) -> None:
    store = Storage(LocalBackend(tmp_path / "r"))
    with pytest.raises(ObjectNotFound):
        store.get("nope")


def test_a_restore_context_is_added_to_the_failure() -> None:
    e = BackendError("/r", "reading chunks/ab/abcd", "injected", "The repository was not "
                     "changed.")
    more = e.leaving("The restore target /t was not completed.")
    assert more.message.endswith("The repository was not changed. The restore target /t "
                                 "was not completed.")
    assert more.exit_code == 21 and more.hint == e.hint
