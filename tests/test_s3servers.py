"""The S3 test servers themselves (tests/s3servers.py): each starts, stores, lists and
keeps its data across a SIGKILL, and enforces what its flags say it enforces."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.s3proxy import S3Proxy
from tests.s3servers import S3Server, skewed_clock_env


def error_code(e: ClientError) -> str:
    return str(e.response["Error"]["Code"])


def test_the_environment_points_at_the_session_files_only() -> None:
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    config = Path(os.environ["AWS_CONFIG_FILE"])
    credentials = Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"])
    assert config.parent == credentials.parent
    leaks = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
             "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_PROFILE"}
    assert not leaks & set(os.environ)


def test_put_get_list_delete(s3_server: S3Server, s3_bucket: str) -> None:
    c = s3_server.client()
    for i in range(5):
        c.put_object(Bucket=s3_bucket, Key=f"dir/k{i}", Body=b"x" * i)
    assert c.get_object(Bucket=s3_bucket, Key="dir/k3")["Body"].read() == b"xxx"
    pages = c.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix="dir/",
                                                        PaginationConfig={"PageSize": 2})
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert keys == [f"dir/k{i}" for i in range(5)]
    # DeleteObjects: Swift wants Content-MD5 (client() adds it)
    out = c.delete_objects(Bucket=s3_bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    assert not out.get("Errors")
    assert c.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


def test_the_profile_in_the_aws_files_reaches_the_server(s3_server: S3Server,
                                                         s3_bucket: str) -> None:
    import boto3

    # the endpoint and keys from the profile alone, as a CLI run would take them
    session = boto3.session.Session(profile_name=s3_server.profile)
    assert session.region_name == "us-east-1"
    c = session.client("s3")
    assert c.meta.endpoint_url == s3_server.endpoint
    names = [b["Name"] for b in c.list_buckets()["Buckets"]]
    assert s3_bucket in names
    assert s3_server.url(s3_bucket, "a/b/") == (
        f"s3://{s3_bucket}/a/b?endpoint={s3_server.endpoint}&profile={s3_server.profile}")


def test_append_only_profile_cannot_delete(s3_server: S3Server, s3_bucket: str) -> None:
    profile = s3_server.append_only_profile(s3_bucket)
    admin, appender = s3_server.client(), s3_server.client(profile=profile)
    admin.put_object(Bucket=s3_bucket, Key="by-admin", Body=b"a")
    appender.put_object(Bucket=s3_bucket, Key="by-appender", Body=b"b")
    assert appender.get_object(Bucket=s3_bucket, Key="by-appender")["Body"].read() == b"b"
    listed = appender.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert {o["Key"] for o in listed} == {"by-admin", "by-appender"}
    for key in ("by-admin", "by-appender"):
        with pytest.raises(ClientError) as e:
            appender.delete_object(Bucket=s3_bucket, Key=key)
        assert error_code(e.value) == "AccessDenied"
    # refused per key (SeaweedFS) or as a whole (RGW)
    try:
        out = appender.delete_objects(Bucket=s3_bucket,
                                      Delete={"Objects": [{"Key": "by-admin"}]})
        codes = [err["Code"] for err in out.get("Errors", [])]
    except ClientError as e:
        codes = [error_code(e)]
    assert codes == ["AccessDenied"]
    listed = admin.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert {o["Key"] for o in listed} == {"by-admin", "by-appender"}


def test_object_lock_is_enforced_where_flagged(s3_server: S3Server) -> None:
    import datetime as dt

    bucket = s3_server.new_bucket(object_lock=True)
    c = s3_server.client()
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    put = c.put_object(Bucket=bucket, Key="locked", Body=b"keep", ObjectLockMode="COMPLIANCE",
                       ObjectLockRetainUntilDate=until)
    # Swift keeps no versions: deleting the key is deleting the data
    version = {"VersionId": put["VersionId"]} if put.get("VersionId") else {}
    try:
        c.delete_object(Bucket=bucket, Key="locked", **version)
        refused = False
    except ClientError as e:
        assert error_code(e) == "AccessDenied"
        refused = True
    assert refused == s3_server.object_lock
    if refused:
        assert c.get_object(Bucket=bucket, Key="locked")["Body"].read() == b"keep"
    else:  # Swift took the lock request with success, and then the delete
        with pytest.raises(ClientError) as gone:
            c.get_object(Bucket=bucket, Key="locked", **version)
        assert error_code(gone.value) == "NoSuchKey"


def test_kill_and_start_keep_the_data(s3_server: S3Server, s3_bucket: str) -> None:
    c = s3_server.client()
    c.put_object(Bucket=s3_bucket, Key="before", Body=b"durable")
    s3_server.kill()
    with pytest.raises(Exception):  # noqa: B017 - connection refused, in botocore's words
        s3_server.client(config=_no_retries()).get_object(Bucket=s3_bucket, Key="before")
    s3_server.start()
    c = s3_server.client()
    assert c.get_object(Bucket=s3_bucket, Key="before")["Body"].read() == b"durable"
    c.put_object(Bucket=s3_bucket, Key="after", Body=b"too")
    assert c.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 2


def _no_retries() -> object:
    from botocore.config import Config

    return Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5)


# --- the fault proxy ---------------------------------------------------------------

def _through(proxy: S3Proxy, server: S3Server, **config: object) -> Any:
    from botocore.config import Config

    return server.client(endpoint_url=proxy.endpoint,
                         config=Config(retries={"total_max_attempts": 1}, **config))


def test_the_proxy_forwards_and_signatures_verify(s3_server: S3Server, s3_bucket: str,
                                                  s3_proxy: S3Proxy) -> None:
    c = _through(s3_proxy, s3_server)
    big = os.urandom(9 << 20)  # multipart parts, Expect: 100-continue
    c.upload_fileobj(io.BytesIO(big), s3_bucket, "big",
                     Config=TransferConfig(multipart_threshold=5 << 20,
                                           multipart_chunksize=5 << 20))
    c.put_object(Bucket=s3_bucket, Key="small", Body=b"s")
    assert c.get_object(Bucket=s3_bucket, Key="big")["Body"].read() == big
    assert c.head_object(Bucket=s3_bucket, Key="small")["ContentLength"] == 1
    assert c.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 2
    assert s3_proxy.requests >= 6 and s3_proxy.failed == 0
    assert s3_proxy.url(s3_bucket) == (
        f"s3://{s3_bucket}?endpoint={s3_proxy.endpoint}&profile={s3_server.profile}")


def test_the_proxy_answers_slow_down(seaweedfs: S3Server, s3_proxy_sw: S3Proxy) -> None:
    bucket = seaweedfs.new_bucket()
    c = _through(s3_proxy_sw, seaweedfs)
    s3_proxy_sw.fail(2, "503")
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket=bucket, Key="k", Body=b"v")
        assert error_code(e.value) == "SlowDown"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    c.put_object(Bucket=bucket, Key="k", Body=b"v")  # the third goes through
    assert seaweedfs.client().get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    # botocore's own retries take SlowDown for throttling and try again
    s3_proxy_sw.fail(1, "503", method="GET")
    retrying = seaweedfs.client(endpoint_url=s3_proxy_sw.endpoint)
    assert retrying.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    assert s3_proxy_sw.failed == 3


def test_the_proxy_resets_connections(seaweedfs: S3Server, s3_proxy_sw: S3Proxy) -> None:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    bucket = seaweedfs.new_bucket()
    c = _through(s3_proxy_sw, seaweedfs)
    s3_proxy_sw.fail(1, "reset", method="PUT")
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)) as e:
        c.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert "reset" in str(e.value).lower() or "closed" in str(e.value).lower()
    with pytest.raises(ClientError):  # the request never reached the server
        seaweedfs.client().head_object(Bucket=bucket, Key="k")
    c.put_object(Bucket=bucket, Key="k", Body=b"v")


def test_the_proxy_stalls(seaweedfs: S3Server, s3_proxy_sw: S3Proxy) -> None:
    from botocore.exceptions import ReadTimeoutError

    bucket = seaweedfs.new_bucket()
    seaweedfs.client().put_object(Bucket=bucket, Key="k", Body=b"v")
    c = _through(s3_proxy_sw, seaweedfs, read_timeout=0.5)
    s3_proxy_sw.fail(1, "stall")
    with pytest.raises(ReadTimeoutError):
        c.get_object(Bucket=bucket, Key="k")
    # the next request is answered (a client of ordinary patience: the short timeout
    # could run out on a busy machine)
    c = _through(s3_proxy_sw, seaweedfs)
    assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


def test_unknown_fault_mode_is_refused(s3_proxy_sw: S3Proxy) -> None:
    with pytest.raises(ValueError, match="unknown fault mode 'slow'"):
        s3_proxy_sw.fail(1, "slow")


@pytest.fixture
def s3_proxy_sw(seaweedfs: S3Server) -> Iterator[S3Proxy]:
    # the fault modes are the proxy's own: one server shows them
    with S3Proxy(seaweedfs.endpoint, profile=seaweedfs.profile) as proxy:
        yield proxy


SKEWED_PUT = """
import sys, time
sys.path[:0] = [{root!r}]
from tests.s3servers import make_client
print(round(time.time()))
c = make_client({profile!r})
try:
    c.put_object(Bucket={bucket!r}, Key="skewed", Body=b"x")
    print("stored")
except Exception as e:
    print(e.response["Error"]["Code"])
"""


def test_a_skewed_clock_is_refused_by_the_server(seaweedfs: S3Server) -> None:
    bucket = seaweedfs.new_bucket()
    script = SKEWED_PUT.format(root=str(Path(__file__).resolve().parents[1]),
                               profile=seaweedfs.profile, bucket=bucket)
    env = {**os.environ, **skewed_clock_env("+1h")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    then, outcome = proc.stdout.split()
    assert abs(int(then) - time.time() - 3600) < 300  # its clock is an hour ahead
    assert outcome == "RequestTimeTooSkewed"
    with pytest.raises(ClientError):
        seaweedfs.client().head_object(Bucket=bucket, Key="skewed")
