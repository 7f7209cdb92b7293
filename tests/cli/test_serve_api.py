"""``stasis serve --listen``: the REST API served beside the scheduler, as a process of
its own: where it listens (flag, environment, config file), HTTPS with a certificate,
plain HTTP refused off loopback before anything is opened, the built-in roles of a
fresh catalog, and SIGTERM ending a job an API client follows (its event stream gets
the job's end, then the server stops). The real flow on real guests is
tests/service/test_api_serve_vm.py."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stasis.app import passwords
from stasis.app.auth import BUILTIN_ROLES
from stasis.catalog import Catalog, JobStore
from stasis.catalog.accounts import AccountStore
from stasis.service.jobs import this_runner
from tests.api.conftest import CHEAP_PASSWORDS
from tests.api.test_server import self_signed
from tests.conftest import Cli, driver

pytestmark = pytest.mark.slow

TEST_URI = "test:///default"


@dataclass
class Served:
    """A ``stasis serve`` process and where its API listens."""

    proc: subprocess.Popen[str]
    url: str
    log: Path

    def text(self) -> str:
        return self.log.read_text()


def admin_token(cli: Cli, tmp_path: Path, name: str = "alice",
                env: dict[str, str] | None = None) -> str:
    """A new admin user made with the CLI (its password from a file), and a token of
    it: what the host's root does to bootstrap the first admin."""
    password = tmp_path / f"{name}.pass"
    password.write_text("a long enough password\n")
    password.chmod(0o600)
    env = {passwords.COST_ENV: CHEAP_PASSWORDS, **(env or {})}
    cli.ok("user", "add", name, "--role", "admin", "--password-file", str(password),
           env=env)
    return cli.ok("token", "create", "flow", "--user", name, env=env).out.strip()


def start_serve(cli: Cli, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                hold_ms: int = 0, timeout: float = 60) -> Served:
    """``stasis serve ARGS`` started, once its first words say where the API listens."""
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    options = ("--job-hold-ms", str(hold_ms)) if hold_ms else ()
    with open(log, "w") as out:
        proc = subprocess.Popen([*driver(*options), "serve", "--tick", "0.5", *args],
                                env={**cli.env, **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(r"API at (\S+)", log.read_text())
        if found:
            return Served(proc, found.group(1), log)
        if proc.poll() is not None:
            raise AssertionError(f"stasis serve exited ({proc.returncode}):\n"
                                 f"{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"stasis serve said nowhere it listens:\n{log.read_text()}")
        time.sleep(0.1)


def stop_serve(served: Served, timeout: float = 60) -> int:
    """SIGTERM, and the exit code (killed if it does not end)."""
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
    try:
        return served.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        served.proc.wait()
        raise


@pytest.fixture
def serving(cli_repo: Cli, tmp_path: Path) -> Iterator[list[Served]]:
    """The serve processes a test starts, stopped at its end whatever happened."""
    started: list[Served] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """The (event, data) pairs of a Server-Sent Events stream, as they come."""
    kind, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


def test_serve_listens_where_asked_and_a_fresh_catalog_has_the_builtin_roles(
        cli_repo: Cli, tmp_path: Path, serving: list[Served]) -> None:
    catalog = tmp_path / "fresh.db"  # never opened before serve
    served = start_serve(cli_repo, tmp_path, "--listen", "127.0.0.1:0", "--catalog",
                         str(catalog), "--connect", TEST_URI)
    serving.append(served)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", served.url) and \
        not served.url.endswith(":0")
    with Catalog.open(str(catalog)) as c:  # read without syncing them again
        roles = {r.name for r in AccountStore(c).roles()}
    assert roles >= set(BUILTIN_ROLES), roles
    token = admin_token(cli_repo, tmp_path, env={"STASIS_CATALOG": str(catalog)})
    me = httpx.get(f"{served.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["user"] == "alice"
    assert httpx.get(f"{served.url}/api/v1/me").status_code == 401
    repos = httpx.get(f"{served.url}/api/v1/repositories",
                      headers={"Authorization": f"Bearer {token}"})
    assert repos.status_code == 200 and len(repos.json()["items"]) == 1, repos.text
    assert stop_serve(served) == 0, served.text()
    with pytest.raises(httpx.ConnectError):  # stopped: nothing listens any more
        httpx.get(f"{served.url}/api/v1/me", timeout=5)


def test_no_listen_no_api(cli_repo: Cli, tmp_path: Path, serving: list[Served]) -> None:
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*driver(), "serve", "--connect", TEST_URI, "--tick", "0.5"],
                                env=cli_repo.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "stasis serve:" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert "API at" not in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_https_from_the_config_file_and_me_over_it(
        cli_repo: Cli, tmp_path: Path, serving: list[Served]) -> None:
    tls = self_signed(tmp_path)
    config = tmp_path / "stasis.toml"
    config.write_text(f'listen = "127.0.0.1:0"\ntls_certificate = "{tls.certificate}"\n'
                      f'tls_key = "{tls.key}"\nlibvirt = "{TEST_URI}"\n')
    served = start_serve(cli_repo, tmp_path, env={"STASIS_CONFIG": str(config)})
    serving.append(served)
    assert served.url.startswith("https://127.0.0.1:"), served.text()
    token = admin_token(cli_repo, tmp_path)
    verify = ssl.create_default_context(cafile=str(tls.certificate))
    me = httpx.get(f"{served.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"},
                   verify=verify)
    assert me.status_code == 200 and me.json()["user"] == "alice", me.text
    with pytest.raises(httpx.HTTPError):  # no plain HTTP beside it
        httpx.get(served.url.replace("https", "http") + "/api/v1/me", timeout=5)
    assert stop_serve(served) == 0, served.text()


def test_the_flag_beats_the_environment_which_beats_the_file(
        cli_repo: Cli, tmp_path: Path, serving: list[Served]) -> None:
    config = tmp_path / "stasis.toml"
    # a short directory for the sockets: a unix socket's path is at most 107 bytes
    short = Path(tempfile.mkdtemp(prefix="st-"))
    config.write_text(f'listen = "unix:{short}/file.sock"\nlibvirt = "{TEST_URI}"\n')
    env = {"STASIS_CONFIG": str(config), "STASIS_LISTEN": f"unix:{short}/env.sock"}
    served = start_serve(cli_repo, tmp_path, env=env)
    serving.append(served)
    assert served.url == f"unix:{short}/env.sock", served.text()
    assert stop_serve(served) == 0
    served = start_serve(cli_repo, tmp_path, "--listen", f"unix:{short}/flag.sock",
                         env=env)
    serving.append(served)
    assert served.url == f"unix:{short}/flag.sock", served.text()
    with httpx.Client(transport=httpx.HTTPTransport(uds=f"{short}/flag.sock")) as c:
        assert c.get("http://stasis/api/v1/me").status_code == 401
    assert stop_serve(served) == 0
    served = start_serve(cli_repo, tmp_path, env={"STASIS_CONFIG": str(config)})
    serving.append(served)
    assert served.url == f"unix:{short}/file.sock", served.text()
    assert stop_serve(served) == 0
    shutil.rmtree(short)


@pytest.mark.parametrize(("args", "config", "message"), [
    (["--listen", "0.0.0.0:8443"], "", "in plain HTTP"),
    ([], 'listen = "0.0.0.0:8443"\n', "in plain HTTP"),
    (["--listen", "127.0.0.1:8443", "--tls-cert", "{tmp}/cert.pem"], "",
     "go together"),
    (["--tls-key", "{tmp}/key.pem", "--tls-cert", "{tmp}/cert.pem"], "",
     "no address for the API"),
    (["--listen", "127.0.0.1:8443", "--tls-key", "{tmp}/open.pem", "--tls-cert",
      "{tmp}/cert.pem"], "", "is accessible to every user"),
    (["--listen", "127.0.0.1:8443", "--tls-key", "{tmp}/none.pem", "--tls-cert",
      "{tmp}/cert.pem"], "", "does not exist"),
    (["--listen", "somewhere"], "", "expected HOST:PORT"),
])
def test_a_refused_api_address_starts_nothing(cli_repo: Cli, tmp_path: Path,
                                              args: list[str], config: str,
                                              message: str) -> None:
    tls = self_signed(tmp_path)
    (tmp_path / "open.pem").write_bytes(tls.key.read_bytes())
    (tmp_path / "open.pem").chmod(0o644)
    (tmp_path / "stasis.toml").write_text(config + f'libvirt = "{TEST_URI}"\n')
    catalog = tmp_path / "untouched.db"
    r = cli_repo("--config", str(tmp_path / "stasis.toml"), "serve", "--catalog",
                 str(catalog), *(a.format(tmp=tmp_path) for a in args))
    assert r.code == 2 and message in r.err and "nothing was" in r.err, r.err
    assert not catalog.exists()  # refused before anything was opened


def test_a_port_in_use_stops_serve_and_unregisters_it(cli_repo: Cli, tmp_path: Path,
                                                      serving: list[Served]) -> None:
    first = start_serve(cli_repo, tmp_path, "--listen", "127.0.0.1:0", "--connect", TEST_URI)
    serving.append(first)
    r = cli_repo("serve", "--listen", first.url.removeprefix("http://"), "--connect",
                 TEST_URI, subprocess=True, timeout=60)
    assert r.code == 2 and "could not listen" in r.err, r.err
    with Catalog.open(str(Path(cli_repo.env["STASIS_STATE_DIR"]) / "catalog.db")) as c:
        assert [s.pid for s in JobStore(c).services()] == [first.proc.pid]
    assert stop_serve(first) == 0


def test_sigterm_ends_the_event_streams_and_the_server(
        cli_repo: Cli, tmp_path: Path, serving: list[Served]) -> None:
    """A client follows a job that runs elsewhere (in this test's process, so it never
    ends while serve runs): SIGTERM ends its stream, and serve exits 0."""
    catalog = str(Path(cli_repo.env["STASIS_STATE_DIR"]) / "catalog.db")
    with Catalog.open(catalog) as c:
        job = JobStore(c).create("backup", "elsewhere", vms=["elsewhere"], state="running",
                                 runner=this_runner())
    served = start_serve(cli_repo, tmp_path, "--listen", "127.0.0.1:0", "--connect",
                         TEST_URI)
    serving.append(served)
    auth = {"Authorization": f"Bearer {admin_token(cli_repo, tmp_path)}"}
    seen: list[str] = []
    try:
        with httpx.Client(base_url=served.url, headers=auth, timeout=60) as c, \
                c.stream("GET", f"/api/v1/jobs/{job.id}/events") as stream:
            assert stream.status_code == 200
            with contextlib.suppress(httpx.RemoteProtocolError):  # cut at the deadline
                for kind, _data in events(stream):
                    seen.append(kind)
                    if seen == ["progress"]:
                        served.proc.send_signal(signal.SIGTERM)
        assert stop_serve(served) == 0, served.text()
        assert seen[:1] == ["progress"] and "end" not in seen, seen
        assert "stopped" in served.text()
    finally:
        with Catalog.open(catalog) as c:
            JobStore(c).finish(job.id, "failed", error="test over")
