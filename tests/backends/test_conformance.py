"""The contract every backend must keep (see stasis.backends.base.Backend).

A new backend (S3 is next) joins the ``backend`` fixture's params and must pass
every test here unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from stasis.backends import Backend, LocalBackend
from stasis.errors import ObjectNotFound

Factory = Callable[[Path], Backend]
FACTORIES: dict[str, Factory] = {"local": lambda p: LocalBackend(p / "store")}


@pytest.fixture(params=sorted(FACTORIES))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    b = FACTORIES[request.param](tmp_path)
    assert isinstance(b, Backend)
    return b


def test_put_get_roundtrip(backend: Backend) -> None:
    backend.put("chunks/ab/abcd", b"hello")
    assert backend.get("chunks/ab/abcd") == b"hello"
    assert backend.exists("chunks/ab/abcd")
    assert backend.size("chunks/ab/abcd") == 5


def test_put_accepts_memoryview_and_empty(backend: Backend) -> None:
    backend.put("a/b", memoryview(b"xyz")[1:])
    backend.put("a/empty", b"")
    assert backend.get("a/b") == b"yz"
    assert backend.get("a/empty") == b""


def test_missing_object_is_object_not_found(backend: Backend) -> None:
    with pytest.raises(ObjectNotFound):
        backend.get("nope/x")
    with pytest.raises(ObjectNotFound):
        backend.size("nope/x")
    assert not backend.exists("nope/x")


def test_put_replaces_whole_object(backend: Backend) -> None:
    backend.put("k", b"a" * 1000)
    backend.put("k", b"b")
    assert backend.get("k") == b"b"


def test_delete_is_idempotent(backend: Backend) -> None:
    backend.put("k", b"1")
    backend.delete("k")
    backend.delete("k")
    assert not backend.exists("k")


def test_list_by_prefix_with_sizes(backend: Backend) -> None:
    backend.put("manifests/one", b"1")
    backend.put("manifests/two", b"22")
    backend.put("chunks/aa/x", b"333")
    listed = {o.key: o.size for o in backend.list("manifests/")}
    assert listed == {"manifests/one": 1, "manifests/two": 2}
    assert {o.key for o in backend.list("")} == {"manifests/one", "manifests/two", "chunks/aa/x"}
    assert list(backend.list("nothing/")) == []


def test_invalid_keys_are_refused(backend: Backend) -> None:
    for key in ("", "/abs", "a/../b"):
        with pytest.raises(ValueError):
            backend.put(key, b"x")


def test_concurrent_puts_of_one_key_leave_a_whole_object(backend: Backend) -> None:
    payloads = [bytes([i]) * (256 << 10) for i in range(8)]
    threads = [threading.Thread(target=backend.put, args=("race", p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.get("race") in payloads
    assert [o.key for o in backend.list("")] == ["race"]


def test_list_never_shows_partial_writes(backend: Backend, tmp_path: Path) -> None:
    # A writer that dies mid-put leaves a temporary object, never a visible one.
    if isinstance(backend, LocalBackend):
        (backend.root / "chunks").mkdir(parents=True)
        (backend.root / "chunks" / ".abc.tmp-123456").write_bytes(b"half")
    backend.put("chunks/real", b"whole")
    assert [o.key for o in backend.list("chunks/")] == ["chunks/real"]


def test_sync_covers_objects_of_other_writers(backend: Backend, tmp_path: Path) -> None:
    # A second instance on the same store (another process) puts an object; sync on
    # the first must not fail on it and must leave everything readable.
    other = FACTORIES[next(iter(FACTORIES))](tmp_path) if isinstance(backend, LocalBackend) \
        else backend
    other.put("chunks/ab/from-other", b"x")
    backend.put("chunks/cd/mine", b"y")
    backend.sync()
    backend.sync()  # repeatable
    assert backend.get("chunks/ab/from-other") == b"x"
    assert backend.get("chunks/cd/mine") == b"y"
