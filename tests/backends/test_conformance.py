"""The contract every backend must keep (see stasis.backends.base.Backend).

Every backend is in :data:`KITS` (how to make one, opened through the registry, and
how to leave the debris of a writer killed mid-put) and must pass every test here
unchanged: the local directory (as a path and as a file:// URL) and S3 on each
server the suite starts (tests/s3servers.py), each store a fresh prefix of one
bucket per server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stasis.backends import Backend, Leftover, open_backend
from stasis.errors import ObjectNotFound


@dataclass(frozen=True)
class Kit:
    location: Callable[[Path], str]  # where a store is, as --repo would name it
    # What a writer killed mid-put of ``key`` leaves behind (bypassing the backend).
    kill_mid_put: Callable[[Backend, Path, str, bytes], None]


def _local_kill(_backend: Backend, tmp_path: Path, key: str, data: bytes) -> None:
    path = tmp_path / "store" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / f".{path.name}.tmp-123456").write_bytes(data)


def _s3_kill(backend: Backend, _tmp_path: Path, key: str, data: bytes) -> None:
    # A multipart upload begun, one part sent, never completed nor aborted.
    b: Any = backend
    full = b.base + key
    upload = b.client.create_multipart_upload(Bucket=b.bucket, Key=full)["UploadId"]
    b.client.upload_part(Bucket=b.bucket, Key=full, UploadId=upload, PartNumber=1, Body=data)


def _s3_kit(kind: str) -> Callable[[pytest.FixtureRequest], Kit]:
    def make(request: pytest.FixtureRequest) -> Kit:
        server = request.getfixturevalue(kind)
        buckets = request.getfixturevalue("conformance_buckets")
        if kind not in buckets:
            buckets[kind] = server.new_bucket()
        bucket = buckets[kind]
        return Kit(lambda p: server.url(bucket, f"conformance/{p.name}"), _s3_kill)
    return make


KITS: dict[str, Callable[[pytest.FixtureRequest], Kit]] = {
    "local": lambda _r: Kit(lambda p: str(p / "store"), _local_kill),
    "file-url": lambda _r: Kit(lambda p: f"file://{p / 'store'}", _local_kill),
    **{f"s3-{kind}": _s3_kit(kind) for kind in ("seaweedfs", "rgw", "swift")},
}


@pytest.fixture(scope="session")
def conformance_buckets() -> dict[str, str]:
    """One bucket per S3 server for this module's stores (each a prefix of it)."""
    return {}


@pytest.fixture(params=sorted(KITS))
def kit(request: pytest.FixtureRequest) -> Kit:
    return KITS[request.param](request)


@pytest.fixture
def backend(kit: Kit, tmp_path: Path) -> Backend:
    b = open_backend(kit.location(tmp_path))
    assert isinstance(b, Backend)
    b.create()
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


def test_list_never_shows_partial_writes(kit: Kit, backend: Backend, tmp_path: Path) -> None:
    # A writer that dies mid-put leaves a temporary object, never a visible one.
    kit.kill_mid_put(backend, tmp_path, "chunks/abc", b"half")
    backend.put("chunks/real", b"whole")
    assert [o.key for o in backend.list("chunks/")] == ["chunks/real"]
    assert not backend.exists("chunks/abc")


def test_leftovers_are_the_partial_writes_with_their_age(
    kit: Kit, backend: Backend, tmp_path: Path
) -> None:
    backend.put("chunks/real", b"whole")
    assert list(backend.leftovers()) == []
    before = time.time()
    kit.kill_mid_put(backend, tmp_path, "chunks/abc", b"half")
    (left,) = backend.leftovers()
    assert isinstance(left, Leftover) and left.size == 4
    assert before - 5 <= left.mtime <= time.time() + 5
    backend.discard(left)
    backend.discard(left)  # one already gone is not an error
    assert list(backend.leftovers()) == []
    assert backend.get("chunks/real") == b"whole"  # committed objects are never leftovers


def test_a_committed_object_cannot_be_discarded(backend: Backend) -> None:
    backend.put("chunks/real", b"whole")
    with pytest.raises(ValueError):
        backend.discard(Leftover("chunks/real", 5, 0.0))
    assert backend.get("chunks/real") == b"whole"


def test_create_makes_a_store_and_refuses_one_in_use(kit: Kit, tmp_path: Path) -> None:
    fresh = open_backend(kit.location(tmp_path))
    assert not fresh.store_exists()
    assert list(fresh.list("")) == []  # a missing store lists nothing, makes nothing
    assert not fresh.store_exists()
    fresh.create()
    assert fresh.store_exists()
    fresh.create()  # empty: ready again
    fresh.put("config", b"{}")
    with pytest.raises(FileExistsError):
        open_backend(kit.location(tmp_path)).create()
    assert fresh.get("config") == b"{}"


def test_url_opens_the_same_store(backend: Backend) -> None:
    backend.put("k", b"v")
    assert open_backend(backend.url).get("k") == b"v"


def test_sync_covers_objects_of_other_writers(kit: Kit, backend: Backend,
                                              tmp_path: Path) -> None:
    # A second instance on the same store (another process) puts an object; sync on
    # the first must not fail on it and must leave everything readable.
    other = open_backend(kit.location(tmp_path))
    other.put("chunks/ab/from-other", b"x")
    backend.put("chunks/cd/mine", b"y")
    backend.sync()
    backend.sync()  # repeatable
    assert backend.get("chunks/ab/from-other") == b"x"
    assert backend.get("chunks/cd/mine") == b"y"


def test_puts_from_many_threads_then_sync_are_whole_in_a_fresh_instance(
        backend: Backend) -> None:
    # The backup puts chunks from writer threads and syncs once before its commit.
    objects = {f"chunks/{i % 7:02x}/obj{i}": bytes([i]) * (1000 + i) for i in range(64)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda kv: backend.put(*kv), objects.items()))
    backend.sync()
    fresh = open_backend(backend.url)
    assert {o.key: o.size for o in fresh.list("chunks/")} == {
        k: len(v) for k, v in objects.items()}
    assert all(fresh.get(k) == v for k, v in objects.items())
