"""A repository in an S3 bucket (AWS S3, Ceph RGW, Swift's s3api, SeaweedFS, MinIO).

Every object of the repository is one S3 object, ``PREFIX/`` + its key (no prefix:
the key itself). A put is one PutObject, atomic and durable when it returns, so
``sync`` has nothing to do; objects above :data:`MULTIPART_THRESHOLD` go up in parts,
and a writer that dies mid-upload leaves an unfinished multipart upload (the
backend's leftovers), never a visible object. A repository under a prefix has a
zero-byte marker object ``PREFIX/`` that says the store was created.

The client is botocore's, configured for what every server here accepts (checksums
only where an operation requires them, Content-MD5 on DeleteObjects, path-style
addressing with a custom endpoint) and with its own retries off: this module is the
one retry layer. A request that fails transiently (throttling, 5xx, a reset, a
timeout) is retried with exponential backoff and full jitter within a bounded number
of attempts and a deadline; one that fails for good (access denied, rejected
credentials, no such bucket, clock skew) is raised at once, as a
:class:`stasis.backends.base.PermanentError` naming the endpoint and bucket. At most
``max_in_flight`` requests run at once, whatever the number of calling threads, and
the connection pool has that many connections.

Location grammar (:class:`S3Location`)::

    s3://BUCKET[/PREFIX][?endpoint=URL][&region=R][&profile=P]
        [&path_style=true|false][&ca_bundle=/abs/path]

What the URL does not say comes from boto3's standard chain (``AWS_*`` variables,
``AWS_ENDPOINT_URL(_S3)``, ``AWS_PROFILE``, the AWS config and credentials files).
Secrets never appear in a URL.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit

from stasis.backends.base import (
    AccessDenied,
    ClockSkew,
    CredentialsRejected,
    Leftover,
    LockUnsupported,
    ObjectInfo,
    ObjectLocked,
    PermanentError,
    Retention,
    RetriesExhausted,
    StoreMissing,
    Unreachable,
)
from stasis.errors import ObjectNotFound, UsageError

_T = TypeVar("_T")
log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 64 << 20  # chunks are ≤ 32 MiB: multipart is for the rare big object
PART_SIZE = 16 << 20
MAX_IN_FLIGHT = 32  # requests at once per backend; the connection pool is as big
# What callers should keep in flight (bench/bench_s3.py): PUTs of 1 MiB peaked at 16
# threads on SeaweedFS, RGW and Swift here; a single request is mostly waiting.
PARALLEL_REQUESTS = 16

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_OPTIONS = ("endpoint", "region", "profile", "path_style", "ca_bundle")
_UPLOAD = re.compile(r"^(?P<key>.+)\?uploadId=(?P<id>.+)$")

# Error codes, by what they mean for the caller. Anything else that is a 4xx is
# permanent too (raised as a plain OSError with the server's code and message).
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
              "TooManyRequests", "ServiceUnavailable", "InternalError", "RequestTimeout",
              "OperationAborted", "ConditionalRequestConflict"}
_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                "InvalidToken", "TokenRefreshRequired", "InvalidSecurity",
                "AuthorizationHeaderMalformed", "InvalidClientTokenId"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}
_NO_BUCKET = {"NoSuchBucket"}
_SKEW = {"RequestTimeTooSkewed"}
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}
# Every object is written so that the bucket's owner controls it: on RGW an object
# belongs to its uploader, and one put by an append-only key would otherwise answer
# 403 to the maintenance credentials (prune, gc, verify). On AWS with ACLs disabled
# (BucketOwnerEnforced) this is the one ACL still accepted.
_OWNER = "bucket-owner-full-control"


@dataclass(frozen=True)
class S3Location:
    """A parsed ``s3://`` repository URL."""

    bucket: str
    prefix: str = ""  # no leading or trailing slash; "" for the bucket's root
    endpoint: str | None = None
    region: str | None = None
    profile: str | None = None
    path_style: bool | None = None  # None: path-style with a custom endpoint
    ca_bundle: str | None = None

    @classmethod
    def parse(cls, location: str) -> S3Location:
        """The location of an ``s3://`` URL; :class:`UsageError` saying what is wrong."""
        return _parse(urlsplit(location), location)

    @property
    def url(self) -> str:
        """The URL in its canonical form (the options in a fixed order)."""
        path = f"/{self.prefix}" if self.prefix else ""
        options = [(name, getattr(self, name)) for name in _OPTIONS]
        query = "&".join(
            f"{name}={_option_text(value)}" for name, value in options if value is not None)
        return f"s3://{self.bucket}{path}" + (f"?{query}" if query else "")


def _option_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return quote(str(value), safe=":/.-_~")


def _bad(location: str, why: str) -> UsageError:
    return UsageError(
        f"'{location}' is not a valid S3 repository URL: {why}; nothing was read or written.",
        hint="The form is s3://BUCKET[/PREFIX][?endpoint=URL][&region=R][&profile=P]"
             "[&path_style=true|false][&ca_bundle=/abs/path]; credentials come from the "
             "AWS environment variables or config files, never from the URL.")


def _parse(url: SplitResult, location: str) -> S3Location:
    if "@" in url.netloc:
        raise _bad(location, "it holds credentials (user@); give them through the AWS "
                             "environment or config files")
    bucket = url.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise _bad(location, f"'{bucket}' is not a bucket name (3 to 63 lowercase letters, "
                             "digits, dots and hyphens)")
    if url.fragment:
        raise _bad(location, "it has a #fragment")
    prefix = url.path.strip("/")
    if url.path.startswith("//") or (prefix and not all(
            _SEGMENT.match(s) and s not in (".", "..") for s in prefix.split("/"))):
        raise _bad(location, f"the prefix '{url.path}' is not made of slash-separated "
                             "segments of letters, digits, '.', '_' and '-'")
    try:
        pairs = parse_qsl(url.query, keep_blank_values=True, strict_parsing=bool(url.query))
    except ValueError:
        raise _bad(location, f"the query '{url.query}' is not name=value pairs") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in _OPTIONS:
            raise _bad(location, f"unknown option '{name}' (known: {', '.join(_OPTIONS)})")
        if name in options:
            raise _bad(location, f"the option '{name}' is given twice")
        if not value:
            raise _bad(location, f"the option '{name}' is empty")
        options[name] = value
    endpoint = options.get("endpoint")
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.hostname or ep.query or ep.username:
            raise _bad(location, f"the endpoint '{endpoint}' is not an http:// or https:// "
                                 "URL of a host (without credentials or a query)")
        try:
            ep.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise _bad(location, f"the endpoint '{endpoint}' has an invalid port") from None
    path_style: bool | None = None
    if "path_style" in options:
        text = options["path_style"].lower()
        if text not in ("true", "false"):
            raise _bad(location, f"path_style is '{options['path_style']}', not true or false")
        path_style = text == "true"
    ca_bundle = options.get("ca_bundle")
    if ca_bundle is not None and not os.path.isabs(ca_bundle):
        raise _bad(location, f"ca_bundle '{ca_bundle}' is not an absolute path")
    return S3Location(bucket=bucket, prefix=prefix, endpoint=endpoint,
                      region=options.get("region"), profile=options.get("profile"),
                      path_style=path_style, ca_bundle=ca_bundle)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: exponential backoff with full jitter
    (a pause drawn from ``[0, min(cap, base·2^n)]`` after the n-th failure), at most
    ``attempts`` tries and no new try after ``deadline`` seconds. A connection
    refused is retried ``refused_attempts`` times only: nobody listens at the
    endpoint, and saying so fast is worth more than waiting."""

    attempts: int = 8
    base: float = 0.1
    cap: float = 10.0
    deadline: float = 120.0
    refused_attempts: int = 3


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 60.0  # a stalled server: the request fails and is retried


@dataclass
class _InFlight:
    """The bounded number of requests in flight, with the peak it reached."""

    limit: int
    sem: threading.BoundedSemaphore = field(init=False)
    current: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sem = threading.BoundedSemaphore(self.limit)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self.sem:
            with self.lock:
                self.current += 1
                self.peak = max(self.peak, self.current)
            try:
                yield
            finally:
                with self.lock:
                    self.current -= 1


def _content_md5(request: Any, **_: Any) -> None:
    # Swift's s3api refuses a DeleteObjects without Content-MD5, and botocore ≥ 1.36
    # sends a CRC32 header instead of it.
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    if "Content-MD5" not in request.headers:
        request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()


class S3Backend:
    """Objects in an S3 bucket, under a prefix (see the module docstring)."""

    def __init__(self, location: S3Location, *, retry: RetryPolicy | None = None,
                 timeouts: Timeouts | None = None, max_in_flight: int = MAX_IN_FLIGHT,
                 multipart_threshold: int = MULTIPART_THRESHOLD,
                 part_size: int = PART_SIZE) -> None:
        self.location = location
        self.url = location.url
        self.bucket = location.bucket
        self.base = f"{location.prefix}/" if location.prefix else ""
        self.retry = retry or RetryPolicy()
        self.in_flight = _InFlight(max_in_flight)
        self.parallel_requests = min(PARALLEL_REQUESTS, max_in_flight)
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._conditional = True  # If-None-Match: * until the server says 501
        self.client = _make_client(location, timeouts or Timeouts(), max_in_flight)
        self.endpoint = str(self.client.meta.endpoint_url)
        self.where = f"bucket '{self.bucket}' at {self.endpoint}"

    # ------------------------------------------------------------ the requests

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or key.endswith("/") or any(
                s in ("", ".", "..") for s in key.split("/")):
            raise ValueError(f"invalid object key {key!r}")
        return self.base + key

    def _call(self, doing: str, call: Callable[[], _T]) -> _T:
        """``call`` with the transient failures retried and every failure turned
        into an ``OSError`` of :mod:`stasis.backends.base`."""
        from botocore.exceptions import ClientError

        policy = self.retry
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.in_flight.slot():
                    return call()
            except ClientError as e:
                err: OSError | None = self._client_error(e)
                reason = _reason(e)
                refused = False
            except Exception as e:  # botocore's own (connection, timeout, credentials)
                err, reason, refused = self._transport_error(e)
            if err is not None:
                raise err
            limit = policy.refused_attempts if refused else policy.attempts
            pause = random.uniform(0, min(policy.cap, policy.base * 2 ** (attempt - 1)))
            elapsed = time.monotonic() - start
            if attempt >= limit or elapsed + pause > policy.deadline:
                tried = f"{attempt} attempts over {elapsed:.1f} s"
                if refused:
                    raise Unreachable(errno.ECONNREFUSED, f"nothing answers at {self.endpoint}"
                                      f", {tried}")
                raise RetriesExhausted(errno.EAGAIN, f"{reason}, from {self.where}, "
                                       f"{tried}")
            log.debug("%s at %s: %s; retry %d in %.2f s", doing, self.where, reason, attempt,
                      pause)
            time.sleep(pause)

    def _client_error(self, e: Any) -> OSError | None:
        """The error to raise for a server's answer, or None when worth a retry."""
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        reason = _reason(e)
        if code in _THROTTLED or (status in _TRANSIENT_STATUS and code not in _DENIED):
            return None
        at = f"{reason}, from {self.endpoint}"
        if code in _NO_BUCKET:
            return StoreMissing(errno.ENOENT, f"bucket '{self.bucket}': {at}")
        if code in _CREDENTIALS:
            return CredentialsRejected(errno.EACCES, at)
        if code in _SKEW:
            return ClockSkew(errno.EACCES, at)
        if code in _DENIED or status == 403:
            return AccessDenied(errno.EACCES, f"bucket '{self.bucket}': {at}")
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFoundError(errno.ENOENT, reason)
        return _Refused(code, status, f"{self.where} refused it ({reason})")

    def _transport_error(self, e: Exception) -> tuple[OSError | None, str, bool]:
        from botocore.exceptions import (
            EndpointConnectionError,
            HTTPClientError,
            IncompleteReadError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(e, NoCredentialsError | PartialCredentialsError):
            return CredentialsRejected(errno.EACCES, f"{e}, for {self.endpoint}"), str(e), False
        if isinstance(e, EndpointConnectionError):
            return None, str(e), "refused" in repr(e.kwargs.get("error", "")).lower()
        if isinstance(e, HTTPClientError | IncompleteReadError | ConnectionError | TimeoutError):
            return None, str(e) or type(e).__name__, False
        if isinstance(e, OSError | PermanentError):
            return e, str(e), False
        raise e

    # ------------------------------------------------------------ the contract

    def get(self, key: str) -> bytes:
        full = self._key(key)

        def read() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        try:
            return self._call(f"reading {key}", read)
        except ObjectNotFoundError:
            raise ObjectNotFound(key) from None

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._put(key, data, {})

    def _put(self, key: str, data: bytes | memoryview, extra: dict[str, Any]) -> None:
        full = self._key(key)
        body = data if isinstance(data, bytes) else bytes(data)
        if len(body) > self.multipart_threshold:
            self._put_multipart(key, full, body, extra)
            return
        self._call(f"writing {key}", lambda: self.client.put_object(
            Bucket=self.bucket, Key=full, Body=body, ACL=_OWNER, **extra))

    def put_if_absent(self, key: str, data: bytes | memoryview) -> None:
        full = self._key(key)
        body = data if isinstance(data, bytes) else bytes(data)
        if self._conditional:
            try:
                self._call(f"creating {key}", lambda: self.client.put_object(
                    Bucket=self.bucket, Key=full, Body=body, ACL=_OWNER, IfNoneMatch="*"))
                return
            except _Refused as e:
                if e.status == 412 or e.code == "PreconditionFailed":
                    raise FileExistsError(errno.EEXIST, "object exists", key) from None
                if e.status != 501 and e.code != "NotImplemented":
                    raise
                self._conditional = False
        # The server cannot make the check and the write one step (Swift's s3api):
        # two writers racing here can both pass it.
        if self.exists(key):
            raise FileExistsError(errno.EEXIST, "object exists", key)
        self.put(key, body)

    def _put_multipart(self, key: str, full: str, body: bytes,
                       extra: dict[str, Any] | None = None) -> None:
        doing = f"writing {key}"
        lock = {k: v for k, v in (extra or {}).items() if k != "ContentMD5"}
        upload = self._call(doing, lambda: self.client.create_multipart_upload(
            Bucket=self.bucket, Key=full, ACL=_OWNER, **lock))["UploadId"]
        try:
            parts = []
            for number, offset in enumerate(range(0, len(body), self.part_size), start=1):
                piece = body[offset:offset + self.part_size]
                answer = self._call(doing, functools.partial(
                    self.client.upload_part, Bucket=self.bucket, Key=full, UploadId=upload,
                    PartNumber=number, Body=piece))
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            self._call(doing, lambda: self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload,
                MultipartUpload={"Parts": parts}))
        except BaseException:
            with contextlib.suppress(Exception):
                self._call(f"aborting the upload of {key}", lambda: self.client.
                           abort_multipart_upload(Bucket=self.bucket, Key=full,
                                                  UploadId=upload))
            raise

    def sync(self) -> None:
        """Nothing to do: a PutObject (or a completed multipart upload) is durable when
        it returns, and so is a delete."""

    def _head(self, key: str) -> dict[str, Any] | None:
        full = self._key(key)
        try:
            head: dict[str, Any] = self._call(f"looking up {key}", lambda: self.client.
                                              head_object(Bucket=self.bucket, Key=full))
            return head
        except ObjectNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise ObjectNotFound(key)
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        full = self._key(key)
        with contextlib.suppress(ObjectNotFoundError):
            self._call(f"deleting {key}", lambda: self.client.delete_object(
                Bucket=self.bucket, Key=full))

    def _pages(self, prefix: str, doing: str, max_keys: int = 1000) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
            if token:
                args["ContinuationToken"] = token
            page: dict[str, Any] = self._call(
                doing, functools.partial(self.client.list_objects_v2, **args))
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        try:
            for page in self._pages(self.base + prefix, f"listing {prefix or 'the objects'}"):
                for obj in page.get("Contents", ()):
                    key = str(obj["Key"])[len(self.base):]
                    if key and not key.endswith("/"):  # the prefix's marker, folders
                        yield ObjectInfo(key, int(obj["Size"]))
        except StoreMissing:
            return  # a missing store lists nothing

    # A bucket does not fill up as a disk does: no space set aside.
    def release_reserve(self) -> bool:
        return False

    def keep_reserve(self) -> None:
        return None

    def leftovers(self) -> Iterator[Leftover]:
        """The unfinished multipart uploads under the prefix, as ``KEY?uploadId=ID``,
        with the size of their parts and the time they were initiated."""
        marker: dict[str, str] = {}
        while True:
            page: dict[str, Any] = self._call("listing unfinished uploads", functools.partial(
                self.client.list_multipart_uploads, Bucket=self.bucket, Prefix=self.base,
                **marker))
            for up in page.get("Uploads", ()):
                key, upload = str(up["Key"]), str(up["UploadId"])
                size = self._upload_size(key, upload)
                if size is not None:
                    yield Leftover(f"{key[len(self.base):]}?uploadId={upload}", size,
                                   up["Initiated"].timestamp())
            if not page.get("IsTruncated"):
                return
            marker = {"KeyMarker": page.get("NextKeyMarker", ""),
                      "UploadIdMarker": page.get("NextUploadIdMarker", "")}

    def _upload_size(self, key: str, upload: str) -> int | None:
        size, marker = 0, 0
        while True:
            try:
                page: dict[str, Any] = self._call("listing an upload's parts", functools.partial(
                    self.client.list_parts, Bucket=self.bucket, Key=key, UploadId=upload,
                    PartNumberMarker=marker))
            except (ObjectNotFoundError, _Refused) as e:
                if isinstance(e, ObjectNotFoundError) or e.code == "NoSuchUpload":
                    return None  # finished or aborted meanwhile
                raise
            size += sum(int(p["Size"]) for p in page.get("Parts", ()))
            if not page.get("IsTruncated"):
                return size
            marker = int(page.get("NextPartNumberMarker", 0))

    def discard(self, leftover: Leftover) -> None:
        m = _UPLOAD.match(leftover.name)
        if m is None:
            raise ValueError(f"{leftover.name!r} is not an unfinished upload of this store")
        full = self._key(m.group("key"))
        try:
            self._call(f"aborting the upload of {m.group('key')}", lambda: self.client.
                       abort_multipart_upload(Bucket=self.bucket, Key=full,
                                              UploadId=m.group("id")))
        except (ObjectNotFoundError, _Refused) as e:
            if not isinstance(e, ObjectNotFoundError) and e.code != "NoSuchUpload":
                raise

    # ------------------------------------------------------------ Object Lock

    def object_lock(self) -> bool:
        try:
            answer: dict[str, Any] = self._call(
                "reading the Object Lock configuration",
                lambda: self.client.get_object_lock_configuration(Bucket=self.bucket))
        except (_Refused, ObjectNotFoundError):
            return False  # ObjectLockConfigurationNotFoundError: a bucket without it
        config = answer.get("ObjectLockConfiguration", {})
        return bool(config.get("ObjectLockEnabled") == "Enabled")

    def put_locked(self, key: str, data: bytes | memoryview, retention: Retention) -> None:
        body = data if isinstance(data, bytes) else bytes(data)
        # AWS wants a checksum on every put that carries a retention.
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        try:
            self._put(key, body, {"ObjectLockMode": retention.mode,
                                  "ObjectLockRetainUntilDate": retention.until,
                                  "ContentMD5": md5})
        except _Refused as e:
            if e.status == 400:  # InvalidRequest / InvalidArgument: a bucket without lock
                raise LockUnsupported(errno.EOPNOTSUPP, f"{self.where} refused a retention "
                                      f"({e.strerror}): the bucket has no Object Lock",
                                      key) from None
            raise

    def retention(self, key: str) -> Retention | None:
        head = self._head(key)
        if head is None:
            raise ObjectNotFound(key)
        return _retention_of(head)

    def extend_retention(self, key: str, retention: Retention) -> Retention:
        full = self._key(key)
        try:
            self._call(f"extending the lock of {key}", lambda: self.client.put_object_retention(
                Bucket=self.bucket, Key=full, Retention={
                    "Mode": retention.mode, "RetainUntilDate": retention.until}))
            return retention
        except (AccessDenied, _Refused):
            # Refused when it would shorten a retention (or change COMPLIANCE to
            # GOVERNANCE): then the one in force ends later, which is what was asked.
            current = self.retention(key)
            if current is not None and current.until >= retention.until:
                return current
            raise

    def _versions(self, full: str) -> tuple[str, ...]:
        ids: tuple[str, ...] = ()
        marker: dict[str, str] = {}
        while True:
            page: dict[str, Any] = self._call("listing versions", functools.partial(
                self.client.list_object_versions, Bucket=self.bucket, Prefix=full, **marker))
            for v in (*page.get("Versions", ()), *page.get("DeleteMarkers", ())):
                if v.get("Key") == full and v.get("VersionId"):
                    ids += (str(v["VersionId"]),)
            if not page.get("IsTruncated"):
                return ids
            marker = {"KeyMarker": page.get("NextKeyMarker", ""),
                      "VersionIdMarker": page.get("NextVersionIdMarker", "")}

    def remove(self, key: str) -> None:
        full = self._key(key)
        versions = self._versions(full)
        if not versions:  # an unversioned bucket (Swift's s3api lists none)
            self.delete(key)
            return
        locked: datetime | None = None
        refused = False
        for vid in versions:
            try:
                self._call(f"deleting {key}", functools.partial(
                    self.client.delete_object, Bucket=self.bucket, Key=full, VersionId=vid))
            except ObjectNotFoundError:
                continue
            except AccessDenied:
                until = self._locked_until(full, vid)
                if until is None:
                    raise  # not a lock: these credentials may not delete
                refused = True
                locked = until if locked is None else max(locked, until)
        if refused:
            raise ObjectLocked(key, locked)

    def _locked_until(self, full: str, vid: str) -> datetime | None:
        try:
            head: dict[str, Any] = self._call("looking up a version", functools.partial(
                self.client.head_object, Bucket=self.bucket, Key=full, VersionId=vid))
        except (ObjectNotFoundError, _Refused):
            return None
        found = _retention_of(head)
        if found is None or found.until <= datetime.now(UTC):
            return None
        return found.until

    def probe_lock(self, key: str, retention: Retention) -> str | None:
        full = self._key(key)
        self.put_locked(key, b"stasis object lock probe\n", retention)
        head = self._head(key)
        if head is None:
            return "the probe object was not there after it was written"
        vid = head.get("VersionId")
        if _retention_of(head) is None or not vid:
            self.delete(key)
            return ("the store accepted the lock headers but keeps no retention (nor "
                    "versions) on the object")
        try:
            self._call(f"deleting {key}", functools.partial(
                self.client.delete_object, Bucket=self.bucket, Key=full, VersionId=vid))
        except AccessDenied:
            return None
        return "a version under a retention was deleted with the repository's credentials"

    def _first_keys(self) -> tuple[str, ...] | None:
        """Up to two keys under the prefix (the marker among them), or None when the
        bucket does not exist."""
        try:
            page = next(self._pages(self.base, "looking up the bucket", max_keys=2))
        except StoreMissing:
            return None
        return tuple(str(o["Key"]) for o in page.get("Contents", ()))

    def store_exists(self) -> bool:
        keys = self._first_keys()
        return keys is not None and (not self.base or bool(keys))

    def create(self, *, object_lock: bool = False) -> None:
        keys = self._first_keys()
        if keys is None:
            self._create_bucket(object_lock=object_lock)
        elif [k for k in keys if k != self.base]:
            raise FileExistsError(errno.EEXIST, "the bucket or prefix holds objects already",
                                  self.url)
        if self.base:
            self._call("marking the prefix", lambda: self.client.put_object(
                Bucket=self.bucket, Key=self.base, Body=b""))

    def _create_bucket(self, *, object_lock: bool = False) -> None:
        region = self.client.meta.region_name
        args: dict[str, Any] = {"Bucket": self.bucket}
        if object_lock:
            args["ObjectLockEnabledForBucket"] = True
        if region and region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._call("creating the bucket", lambda: self.client.create_bucket(**args))
        except AccessDenied as e:
            raise AccessDenied(errno.EACCES, f"the bucket does not exist and these "
                               f"credentials may not create it; {e.strerror}") from None
        except _Refused as e:
            if e.code != "BucketAlreadyOwnedByYou":  # a racing create: fine
                raise


class ObjectNotFoundError(PermanentError):
    """A 404 for an object, inside this module (the contract's ObjectNotFound is
    raised from it where a caller asked for an object)."""


class _Refused(PermanentError):
    """Any other answer that retrying will not change, with the server's code."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(errno.EIO, message)
        self.code = code
        self.status = status


def _retention_of(head: dict[str, Any]) -> Retention | None:
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    if not mode or until is None:
        return None
    return Retention(str(mode), until.astimezone(UTC))


def _reason(e: Any) -> str:
    error = e.response.get("Error", {})
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    code = error.get("Code", "")
    message = error.get("Message", "")
    return f"{status} {code}" + (f": {message}" if message else "")


def _make_client(location: S3Location, timeouts: Timeouts, pool: int) -> Any:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.session.Session(profile_name=location.profile)
    except ProfileNotFound:
        raise _bad(location.url, f"the AWS profile '{location.profile}' is not in the AWS "
                                 "config files") from None

    def make(style: str) -> Any:
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": style},
            retries={"total_max_attempts": 1, "mode": "standard"},  # S3Backend._call retries
            max_pool_connections=pool,
            connect_timeout=timeouts.connect,
            read_timeout=timeouts.read,
            tcp_keepalive=True,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = session.client("s3", endpoint_url=location.endpoint,
                                region_name=location.region or session.region_name or
                                "us-east-1", verify=location.ca_bundle, config=config)
        client.meta.events.register("before-sign.s3.DeleteObjects", _content_md5)
        return client

    if location.path_style is not None:
        return make("path" if location.path_style else "virtual")
    # Path-style with a custom endpoint (from the URL, the environment or a profile):
    # servers here seldom have a DNS name per bucket. Virtual-host on AWS itself.
    client = make("path")
    host = urlsplit(str(client.meta.endpoint_url)).hostname or ""
    return make("virtual") if host.endswith(".amazonaws.com") else client


def open_s3(url: SplitResult, location: str) -> S3Backend:
    """The registry's opener of ``s3://`` URLs."""
    return S3Backend(_parse(url, location))
