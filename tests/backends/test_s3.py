"""What is S3-specific in the S3 backend: its URLs, the errors it names against real
servers, its retries (through a fault proxy in front of a real server), paging and
the bound on requests in flight. The contract itself is test_conformance.py's."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from stasis.backends import open_backend
from stasis.backends.s3 import RetryPolicy, S3Backend, S3Location, Timeouts
from stasis.errors import (
    BackendAccessDenied,
    BackendCredentialsRejected,
    BackendError,
    BackendStoreMissing,
    BackendUnreachable,
    NotARepository,
    RepositoryExists,
    RepositoryNotFound,
    UsageError,
)
from stasis.repository import Credentials, Repository
from stasis.repository.crypto import KdfParams
from stasis.repository.storage import Storage
from tests.s3proxy import S3Proxy

QUICK = RetryPolicy(attempts=4, base=0.01, cap=0.05, deadline=30)
FAST_KDF = KdfParams(memory_kib=1024, iterations=1, lanes=1)


# --------------------------------------------------------------------- URLs


def test_urls_parse_and_print_back_without_anything_else() -> None:
    loc = S3Location.parse("s3://my-bucket/a/b.c?endpoint=http://127.0.0.1:9000"
                           "&region=eu-west-1&profile=site2&path_style=false"
                           "&ca_bundle=/etc/ssl/ca.pem")
    assert loc == S3Location("my-bucket", "a/b.c", "http://127.0.0.1:9000", "eu-west-1",
                             "site2", False, "/etc/ssl/ca.pem")
    assert S3Location.parse(loc.url) == loc
    assert S3Location.parse("s3://bucket").prefix == ""
    assert S3Location.parse("s3://bucket/x/").url == "s3://bucket/x"
    assert S3Location.parse("s3://bucket/x?profile=p&region=r").url == (
        "s3://bucket/x?region=r&profile=p")


@pytest.mark.parametrize("url, why", [
    ("s3://key:secret@bucket/x", "holds credentials"),
    ("s3:///x", "is not a bucket name"),
    ("s3://Bucket_Name/x", "is not a bucket name"),
    ("s3://bucket/a/../b", "is not made of"),
    ("s3://bucket/a b", "is not made of"),
    ("s3://bucket/x?endpoint=ftp://h", "is not an http:// or https://"),
    ("s3://bucket/x?endpoint=http://h:port", "invalid port"),
    ("s3://bucket/x?colour=blue", "unknown option 'colour'"),
    ("s3://bucket/x?region=a&region=b", "given twice"),
    ("s3://bucket/x?region=", "is empty"),
    ("s3://bucket/x?path_style=maybe", "not true or false"),
    ("s3://bucket/x?ca_bundle=ca.pem", "not an absolute path"),
    ("s3://bucket/x#frag", "#fragment"),
])
def test_a_bad_url_is_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(UsageError) as e:
        open_backend(url)
    assert e.value.exit_code == 2
    assert why in e.value.message and "nothing was read or written" in e.value.message
    assert "s3://BUCKET[/PREFIX]" in e.value.hint


def test_an_unknown_profile_is_refused_at_open() -> None:
    with pytest.raises(UsageError) as e:
        open_backend("s3://bucket/x?profile=no-such-profile-here")
    assert "no-such-profile-here" in e.value.message


def test_path_style_with_a_custom_endpoint_virtual_host_on_aws() -> None:
    custom = open_backend("s3://bucket/x?endpoint=http://127.0.0.1:1&region=us-east-1")
    aws = open_backend("s3://bucket/x?region=eu-west-1")
    assert isinstance(custom, S3Backend) and isinstance(aws, S3Backend)
    assert custom.client.meta.config.s3["addressing_style"] == "path"
    assert aws.client.meta.config.s3["addressing_style"] == "virtual"
    forced = open_backend("s3://bucket/x?endpoint=http://127.0.0.1:1&path_style=false")
    assert isinstance(forced, S3Backend)
    assert forced.client.meta.config.s3["addressing_style"] == "virtual"


# --------------------------------------------------------------------- errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_wrong_endpoint_is_unreachable_and_said_so_quickly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "any")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "any")
    url = f"s3://bucket/x?endpoint=http://127.0.0.1:{_free_port()}&region=us-east-1"
    store = Storage(open_backend(url))
    with pytest.raises(BackendUnreachable) as e:
        store.store_exists()
    assert e.value.exit_code == 44
    assert "127.0.0.1" in e.value.message and "attempts" in e.value.message
    assert "endpoint" in e.value.hint
    with pytest.raises(BackendUnreachable):
        Repository.read_config(store)


def test_an_unknown_bucket_is_no_repository(s3_server: Any) -> None:
    url = s3_server.url("no-such-bucket-here-17")
    with pytest.raises(RepositoryNotFound) as e:
        Repository.read_config(open_backend(url))
    assert e.value.exit_code == 10 and "no-such-bucket-here-17" in e.value.message
    with pytest.raises(BackendStoreMissing) as missing:
        Storage(open_backend(url)).get("config")
    assert missing.value.exit_code == 10 and "no-such-bucket-here-17" in missing.value.message


def test_a_bucket_that_is_not_a_repository(s3_server: Any, s3_bucket: str) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="holiday.jpg", Body=b"x")
    with pytest.raises(NotARepository):
        Repository.read_config(open_backend(s3_server.url(s3_bucket)))
    with pytest.raises(RepositoryExists):
        Repository.init(open_backend(s3_server.url(s3_bucket)), passphrase=b"p", kdf=FAST_KDF)
    assert [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)[
        "Contents"]] == ["holiday.jpg"]  # nothing written


@pytest.mark.parametrize("which", ["secret", "key id"])
def test_wrong_credentials_are_rejected(s3_server: Any, s3_bucket: str, which: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    creds = s3_server.client()._request_signer._credentials
    key, secret = creds.access_key, creds.secret_key
    if which == "secret":
        secret = secret + "x"
    else:
        key = "NOSUCHKEY" + key[:4]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    url = f"s3://{s3_bucket}?endpoint={s3_server.endpoint}&region=us-east-1"
    started = time.monotonic()
    with pytest.raises(BackendCredentialsRejected) as e:
        Storage(open_backend(url)).put("k", b"v")
    assert e.value.exit_code == 42 and s3_server.endpoint in e.value.message
    assert "AWS_SECRET_ACCESS_KEY" in e.value.hint
    assert time.monotonic() - started < 30  # permanent: not retried for a minute


def test_an_append_only_key_may_not_delete_and_is_told_so(s3_server: Any,
                                                          s3_bucket: str) -> None:
    profile = s3_server.append_only_profile(s3_bucket)
    admin = Storage(open_backend(s3_server.url(s3_bucket)))
    admin.create()
    url = f"s3://{s3_bucket}?endpoint={s3_server.endpoint}&profile={profile}"
    store = Storage(open_backend(url))
    store.put("manifests/one", b"1")
    assert store.get("manifests/one") == b"1"
    with pytest.raises(BackendAccessDenied) as e:
        store.delete("manifests/one")
    assert e.value.exit_code == 41 and "deleting manifests/one" in e.value.message
    assert "prune and gc" in e.value.hint
    assert admin.get("manifests/one") == b"1"


# --------------------------------------------------------------------- behaviour


def test_listing_pages_through_more_than_a_thousand_keys(seaweedfs: Any) -> None:
    bucket = seaweedfs.new_bucket()
    store = open_backend(seaweedfs.url(bucket, "many"))
    store.create()
    keys = [f"chunks/{i % 256:02x}/k{i:05d}" for i in range(1205)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: store.put(k, b"x"), keys))
    store.put("manifests/m", b"m")
    assert sorted(o.key for o in store.list("chunks/")) == sorted(keys)
    assert len(list(store.list(""))) == 1206


def test_requests_in_flight_are_bounded(seaweedfs: Any) -> None:
    bucket = seaweedfs.new_bucket()
    store = S3Backend(S3Location.parse(seaweedfs.url(bucket, "bounded")), max_in_flight=3)
    store.create()
    lock, now, peak = threading.Lock(), [0], [0]

    def sent(**_: Any) -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.01)  # keep it on the wire long enough for others to pile up

    def answered(**_: Any) -> None:
        with lock:
            now[0] -= 1

    store.client.meta.events.register("before-send.s3", sent)
    store.client.meta.events.register("response-received.s3", answered)
    with ThreadPoolExecutor(max_workers=24) as pool:
        list(pool.map(lambda i: store.put(f"k/{i}", b"x" * 1000), range(96)))
    assert peak[0] == 3
    assert len(list(store.list("k/"))) == 96


def test_a_big_object_goes_up_in_parts(s3_server: Any, s3_bucket: str) -> None:
    store = S3Backend(S3Location.parse(s3_server.url(s3_bucket)),
                      multipart_threshold=5 << 20, part_size=5 << 20)
    data = bytes(range(256)) * (11 << 12)  # 11 MiB: three parts
    store.put("config", data)
    assert store.get("config") == data and store.size("config") == len(data)
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="config")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag
    assert list(store.leftovers()) == []


def test_two_inits_racing_on_one_store_one_wins(s3_server: Any, s3_bucket: str) -> None:
    if not s3_server.conditional_put:
        pytest.skip(f"{s3_server.kind} answers If-None-Match: * with 501: put_if_absent "
                    "checks then puts there, which racers can both pass")
    url = s3_server.url(s3_bucket, "race")
    barrier = threading.Barrier(6)
    results: list[str] = []

    def init() -> None:
        store = open_backend(url)
        barrier.wait()
        try:
            results.append(Repository.init(store, passphrase=b"p", kdf=FAST_KDF).id)
        except RepositoryExists:
            results.append("refused")

    threads = [threading.Thread(target=init) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r != "refused"]
    assert len(winners) == 1 and len(results) == 6
    opened = Repository.open(open_backend(url), Credentials(passphrase=b"p"))
    assert opened.id == winners[0]
    assert len(list(opened.backend.list("keys/"))) == 1  # the losers took theirs back


def test_put_if_absent_falls_back_where_the_server_cannot(s3_server: Any,
                                                          s3_bucket: str) -> None:
    store = open_backend(s3_server.url(s3_bucket))
    store.put_if_absent("config", b"1")
    with pytest.raises(FileExistsError):
        store.put_if_absent("config", b"2")
    assert store.get("config") == b"1"


# --------------------------------------------------------------------- faults


def _through(proxy: S3Proxy, bucket: str, **kw: Any) -> S3Backend:
    return S3Backend(S3Location.parse(proxy.url(bucket, "faults")), **kw)


@pytest.mark.parametrize("fault", ["503", "reset", "stall"])
def test_transient_faults_are_retried_then_succeed(s3_proxy: S3Proxy, s3_bucket: str,
                                                   fault: str) -> None:
    store = _through(s3_proxy, s3_bucket, retry=QUICK, timeouts=Timeouts(connect=2, read=1))
    store.put("k", b"v")
    s3_proxy.fail(3, fault)
    assert store.get("k") == b"v"
    store.put("k2", b"w")
    assert s3_proxy.failed == 3  # all three met, and retried past
    assert store.get("k2") == b"w"


def test_throttling_that_does_not_end_is_a_clear_error(s3_proxy: S3Proxy,
                                                       s3_bucket: str) -> None:
    store = _through(s3_proxy, s3_bucket, retry=QUICK)
    store.put("k", b"v")
    s3_proxy.fail(10, "503")
    with pytest.raises(BackendError) as e:
        Storage(store).get("k")
    assert e.value.exit_code == 21
    assert "SlowDown" in e.value.message and "4 attempts" in e.value.message
    assert "reading k" in e.value.message and "not changed" in e.value.message
    assert s3_proxy.failed == 4  # exactly the bounded number of attempts


def test_a_connection_that_stays_stalled_times_out_then_is_a_clear_error(
        s3_proxy: S3Proxy, s3_bucket: str) -> None:
    store = _through(s3_proxy, s3_bucket, retry=QUICK, timeouts=Timeouts(connect=2, read=1))
    Storage(store).put("k", b"v")
    s3_proxy.fail(10, "stall", method="PUT")
    with pytest.raises(BackendError) as e:
        Storage(store).put("k2", b"w")
    assert e.value.exit_code == 21
    assert "timeout" in e.value.message.lower() and "4 attempts" in e.value.message
    assert "writing k2" in e.value.message
    assert s3_proxy.failed == 4
    s3_proxy.heal()
    assert Storage(store).get("k") == b"v" and not store.exists("k2")


# --------------------------------------------------------------------- the CLI


def test_the_cli_backs_up_to_and_restores_from_s3(cli: Any, s3_server: Any, s3_bucket: str,
                                                  tmp_path: Any) -> None:
    from tests.conftest import images_equal, mixed_image

    url = s3_server.url(s3_bucket, "cli")
    src = mixed_image(tmp_path / "a.raw", size=6 << 20)
    cli.ok("repo", "init", "--repo", url, "--chunk-size", "256K")
    again = cli("repo", "init", "--repo", url)
    assert again.code == 11 and "Traceback" not in again.err
    cli.ok("backup", "image", str(src), "--repo", url, "--name", "a")
    listed = cli.ok("list", "--repo", url, "--json").json()
    assert [p["name"] for p in listed] == ["a"]  # type: ignore[index]
    cli.ok("restore", "disk", "a@latest", "--to", str(tmp_path / "out.raw"), "--repo", url)
    assert images_equal(src, tmp_path / "out.raw")


def test_the_cli_says_what_is_wrong_with_an_s3_location(cli: Any, s3_server: Any,
                                                        tmp_path: Any,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.chdir(tmp_path)
    bad = cli("list", "--repo", "s3://bucket/x?endpint=http://h")
    assert bad.code == 2 and "unknown option 'endpint'" in bad.err
    assert "s3://BUCKET[/PREFIX]" in bad.err and "Traceback" not in bad.err
    gone = cli("list", "--repo", s3_server.url("no-such-bucket-cli"))
    assert gone.code == 10 and "no-such-bucket-cli" in gone.err
    far = cli("list", "--repo", f"s3://bucket/x?endpoint=http://127.0.0.1:{_free_port()}"
                                "&profile=" + s3_server.profile)
    assert far.code == 44 and "cannot be reached" in far.err and "Traceback" not in far.err
    assert not any(p.name.startswith("s3") for p in tmp_path.iterdir())  # no s3: directory


def test_callers_are_asked_for_sixteen_requests_at_once_within_the_bound(tmp_path: Any) -> None:
    from stasis.backends import LocalBackend

    # bench/bench_s3.py: 1 MiB PUTs peaked at 16 threads on the servers here
    url = "s3://bucket/r?endpoint=http://127.0.0.1:9"
    assert S3Backend(S3Location.parse(url)).parallel_requests == 16
    assert S3Backend(S3Location.parse(url), max_in_flight=8).parallel_requests == 8
    assert Storage(open_backend(url)).parallel_requests == 16
    assert LocalBackend(tmp_path).parallel_requests == 4
