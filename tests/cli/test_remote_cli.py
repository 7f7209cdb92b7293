"""``stasis --server URL`` runs commands through a real server's REST API: the server
(tests/cli/remote_server.py: serve's service and the API) is a process of its own on
a loopback port, over the same catalog and repository as the local CLI, so each
command's remote output can be compared with the local one's."""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from stasis.app import accounts as acc
from stasis.app import catalog_policies, passwords
from stasis.catalog import Catalog, JobStore
from stasis.catalog.db import CATALOG_FILE
from stasis.errors import (
    ArchiveRefused,
    FileTargetExists,
    NotAuthenticated,
    PermissionDenied,
    ServerUnreachable,
    UsageError,
)
from stasis_testkit.fsimages import ext4_disk
from tests.api.conftest import CHEAP_PASSWORDS, PASSWORD
from tests.conftest import ROOT, Cli, mixed_image

pytestmark = pytest.mark.slow


@dataclass
class Served:
    local: Cli  # the CLI on this host's repository and catalog
    url: str
    catalog: str
    tmp: Path

    def remote(self, role: str = "admin", **env: str) -> Cli:
        """The CLI against the server, with a token file of a new user of ``role``."""
        return Cli(self.local.repo, {**self._remote_env(), "STASIS_TOKEN_FILE": str(
            self.token(role)), **env})

    def _remote_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.local.env.items()
               if k not in ("STASIS_REPO", "STASIS_PASSPHRASE")}
        env["STASIS_SERVER"] = self.url
        # The local state dir is not the server's: nothing local may be used.
        env["STASIS_STATE_DIR"] = str(self.tmp / "remote-state")
        return env

    def token(self, role: str) -> Path:
        with Catalog.open(self.catalog) as c:
            n = len(acc.list_users(c)) + 1
            acc.add_user(c, f"{role}-{n}", role=role, password=PASSWORD)
            secret = acc.create_token(c, f"{role}-{n}", "test").secret
        path = self.tmp / f"token-{n}"
        path.write_text(secret + "\n")
        path.chmod(0o600)
        return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(cli_repo: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[Served]:
    """Image points (web, twice; db; fs, an ext4 with /etc) in the repository, and a
    server over it."""
    monkeypatch.setenv(passwords.COST_ENV, CHEAP_PASSWORDS)
    cli = cli_repo
    cli.env[passwords.COST_ENV] = CHEAP_PASSWORDS
    web = mixed_image(tmp_path / "web.raw", size=2 << 20)
    db = mixed_image(tmp_path / "db.raw", size=2 << 20, seed=2)
    cli.ok("backup", "image", str(web), "--name", "web")
    cli.ok("backup", "image", str(web), "--name", "web")
    cli.ok("backup", "image", str(db), "--name", "db")
    tree = tmp_path / "tree"
    (tree / "etc" / "app").mkdir(parents=True)
    (tree / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (tree / "etc" / "app" / "app.conf").write_text("debug = false\n")
    (tree / "etc" / "app" / "run.sh").write_bytes(bytes(range(256)) * 300)
    (tree / "etc" / "app" / "run.sh").chmod(0o750)
    (tree / "etc" / "app").chmod(0o750)
    (tree / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/UTC")  # data, not followed
    fs = ext4_disk(tmp_path / "fs.raw", tree, size=8 << 20)
    cli.ok("backup", "image", str(fs.path), "--name", "fs")
    catalog = "sqlite:///" + str(Path(cli.env["STASIS_STATE_DIR"]) / CATALOG_FILE)
    with Catalog.open(catalog) as c:
        acc.sync_roles(c)
    port_file = tmp_path / "port"
    log = (tmp_path / "server.log").open("w")
    env = {**cli.env, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cli.remote_server", "--repo", str(cli.repo),
         "--catalog", catalog, str(port_file)], env=env, stdout=log, stderr=log, cwd=ROOT)
    try:
        for _ in range(600):
            if port_file.exists() and port_file.read_text():
                break
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        else:
            pytest.fail("the server did not start: " + (tmp_path / "server.log").read_text())
        yield Served(cli, f"http://127.0.0.1:{port_file.read_text()}", catalog, tmp_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _same(local: Cli, remote: Cli, *args: str) -> str:
    """Run ``args`` here and through the server: the same output; it."""
    here = local.ok(*args).out
    there = remote.ok(*args).out
    assert there == here, f"stasis {' '.join(args)}"
    return there


def test_read_commands_answer_as_locally(served: Served) -> None:
    local, remote = served.local, served.remote("admin")
    for args in (["list"], ["list", "--name", "web"], ["show", "web@latest"],
                 ["jobs"], ["jobs", "--kind", "backup", "--limit", "2"]):
        _same(local, remote, *args, "--json")
        _same(local, remote, *args)
    newest = local.ok("jobs", "--json").json()[0]["id"]  # type: ignore[index]
    for args in (["job", "show", str(newest)], ["job", "show", str(newest), "--log"]):
        _same(local, remote, *args, "--json")
        _same(local, remote, *args)
    # vms: the server tells protection from its default repository, as --repo does here
    here = local.ok("vms", "--connect", "test:///default", "--repo", str(local.repo),
                    "--json").out
    assert remote.ok("vms", "--json").out == here


def test_status_answers_as_locally(served: Served) -> None:
    local, remote = served.local, served.remote("admin")

    def ageless(rows: object) -> object:  # the age grows between the two runs
        assert isinstance(rows, list) and rows
        return [{**r, "age_s": None} for r in rows]

    assert ageless(remote.ok("status", "--json").json()) == ageless(
        local.ok("status", "--json").json())
    age = re.compile(r"\b\d+(\.\d+)?\s?[smhd]\b")
    assert age.sub("AGE", remote.ok("status").out) == age.sub("AGE", local.ok("status").out)


def test_hold_and_release_through_the_server(served: Served) -> None:
    local, remote = served.local, served.remote("operator")
    held = remote.ok("hold", "db@latest", "--reason", "audit", "--json").json()
    assert isinstance(held, dict) and held["reason"] == "audit" and held["active"]
    assert local.ok("holds", "--json").json()[0]["point"] == held["point"]  # type: ignore[index]
    shown = remote.ok("release", "db@latest").out
    assert shown.startswith(f"Released point {held['point'][:12]}")
    assert local.ok("holds", "--json").json() == []


def test_a_backup_through_the_server_is_followed_to_its_end(served: Served) -> None:
    local, remote = served.local, served.remote("admin")
    image = served.tmp / "web.raw"
    before = {p["id"] for p in local.ok("list", "--json").json()}  # type: ignore[union-attr]
    made = remote.ok("backup", "image", str(image), "--name", "web", "--json").json()
    assert isinstance(made, dict) and made["id"] not in before and made["name"] == "web"
    # the point as a local backup reports it (the same model, read back from the server)
    assert local.ok("show", made["id"], "--json").json()["time"] == made["time"]  # type: ignore[index]
    assert made["parent"] in before and made["vms"][0]["disks"][0]["stored_new"] == 0
    text = remote.ok("backup", "image", str(image), "--name", "web").out
    assert text.startswith("Point ") and "committed in" in text and "web.raw" in text
    job = local.ok("jobs", "--json", "--limit", "1").json()[0]  # type: ignore[index]
    assert job["kind"] == "backup" and job["state"] == "succeeded" and job["by"]

    queued = remote.ok("backup", "image", str(image), "--name", "web", "--no-wait",
                       "--json").json()
    assert isinstance(queued, dict) and queued["job"]["kind"] == "backup"


def test_a_failed_job_exits_with_its_code(served: Served) -> None:
    remote = served.remote("admin")
    gone = served.tmp / "missing.raw"
    r = remote("backup", "image", str(gone), "--name", "x")
    assert r.code == 16, r.err  # SourceUnreadable, as locally
    assert str(gone) in r.err
    here = served.local("backup", "image", str(gone), "--name", "x")
    assert here.code == r.code


def test_errors_come_back_as_the_local_errors(served: Served) -> None:
    local, remote = served.local, served.remote("admin")
    here, there = local("show", "nosuch"), remote("show", "nosuch")
    assert there.code == here.code == 14 and there.err == here.err
    bad = remote("list", env={"STASIS_TOKEN": "stasis_wrong"}, )
    assert bad.code == 0  # the token file comes first
    wrong = served.tmp / "wrong-token"
    wrong.write_text("stasis_not-a-token\n")
    r = remote("list", env={"STASIS_TOKEN_FILE": str(wrong)})
    assert r.code == NotAuthenticated.exit_code and "error:" in r.err and "token" in r.err
    viewer = served.remote("auditor")
    r = viewer("hold", "web@latest")
    assert r.code == PermissionDenied.exit_code and "points:hold" in r.err, r.err


def test_a_command_that_does_not_run_remotely_says_so(served: Served) -> None:
    remote = served.remote("admin")
    target = served.tmp / "restored.raw"
    for args in (["gc"], ["repo", "info"], ["catalog", "rebuild"], ["doctor"],
                 ["user", "list"], ["restore", "disk", "web@latest", "--to", str(target)],
                 ["policy", "check", str(served.tmp / "none.toml")]):
        r = remote(*args)
        assert r.code == UsageError.exit_code, (args, r.err)
        assert "does not run against a server" in r.err and f"'stasis {args[0]}" in r.err
    assert not target.exists()


def test_a_server_that_is_not_there(served: Served, tmp_path: Path) -> None:
    remote = served.remote("admin", STASIS_SERVER=f"http://127.0.0.1:{_free_port()}")
    r = remote("list")
    assert r.code == ServerUnreachable.exit_code and "cannot be reached" in r.err, r.err
    off = served.remote("admin", STASIS_SERVER="http://192.0.2.1:8080")
    r = off("list")
    assert r.code == UsageError.exit_code and "plain HTTP" in r.err
    r = served.remote("admin", STASIS_SERVER=f"unix:{tmp_path}/none.sock")("jobs")
    assert r.code == ServerUnreachable.exit_code, r.err
    no_token = Cli(served.local.repo, served._remote_env())
    r = no_token("list")
    assert r.code == UsageError.exit_code and "--token-file" in r.err


def test_files_verify_prune_groups_through_the_server(served: Served) -> None:
    local, remote = served.local, served.remote("admin")
    for args in (["files", "ls", "fs@latest"], ["files", "ls", "fs@latest", "/etc"],
                 ["files", "ls", "fs@latest", "/etc/hosts"],
                 ["files", "find", "fs@latest", "*.conf"], ["group", "list"]):
        _same(local, remote, *args, "--json")
        _same(local, remote, *args)
    dry = ["prune", "--keep-last", "1", "--dry-run"]
    here, there = local.ok(*dry, "--json").json(), remote.ok(*dry, "--json").json()
    assert isinstance(here, dict) and isinstance(there, dict) and here["removed"]
    assert {**there, "now": None} == {**here, "now": None}  # the same but for when
    _same(local, remote, *dry)
    jobs = len(local.ok("jobs", "--json").json())  # type: ignore[arg-type]
    done = remote.ok("verify", "--json").json()
    assert isinstance(done, dict) and done["kind"] == "verify"
    assert done["state"] == "succeeded" and len(done["result"]) == 4
    assert all(r["ok"] for r in done["result"].values())
    assert len(local.ok("jobs", "--json").json()) == jobs + 1  # type: ignore[arg-type]
    shown = remote.ok("verify").out
    assert shown.startswith(f"Job {done['id'] + 1}: verify") and "intact" in shown
    r = served.remote("operator")("restore", "vm", "web@latest", "--name", "copy")
    here = local("restore", "vm", "web@latest", "--name", "copy", "-c", "test:///default")
    assert r.code == here.code != 0, (r.err, here.err)
    # --pool goes through to the server's job (which then finds no VM in an image point).
    queued = served.remote("operator").ok("restore", "vm", "web@latest", "--name", "copy2",
                                          "--pool", "vmpool", "--queue")
    assert "queued" in queued.out
    with Catalog.open(served.catalog) as c:
        newest = JobStore(c).list(kind="restore")[0]
    assert (newest.params["name"], newest.params["pool"]) == ("copy2", "vmpool")


def test_own_tokens_through_the_server(served: Served) -> None:
    remote = served.remote("viewer")
    made = remote.ok("token", "create", "ci", "--expires", "30d", "--json").json()
    assert isinstance(made, dict) and made["token"]["user"].startswith("viewer-")
    listed = remote.ok("token", "list", "--json").json()
    assert isinstance(listed, list) and {t["name"] for t in listed} == {"test", "ci"}
    secret = served.tmp / "ci-token"
    secret.write_text(made["secret"])
    assert remote.ok("list", env={"STASIS_TOKEN_FILE": str(secret)}).out
    revoked = remote.ok("token", "revoke", str(made["token"]["id"])).out
    assert f"Token {made['token']['id']} (ci of" in revoked
    r = remote("list", env={"STASIS_TOKEN_FILE": str(secret)})
    assert r.code == NotAuthenticated.exit_code, r.err
    text = remote("token", "create", "x").err
    assert "shown" in text


# ------------------------------------------------------------------ files get


def _tree(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    """Everything below ``root``: (kind, mode bits, mtime in us, content or link target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            what = ("symlink", 0, os.readlink(path).encode())
        elif stat.S_ISDIR(st.st_mode):
            what = ("dir", stat.S_IMODE(st.st_mode), b"")
        else:
            what = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
        # the tar's pax header carries the time to the microsecond
        found[str(path.relative_to(root))] = (what[0], what[1], round(st.st_mtime_ns / 1000),
                                              what[2])
    return found


_RATE = re.compile(r" in \d+\.\d+ s \((\d+ chunks? read|streamed from \S+)\)\.$")


def test_files_get_through_the_server_writes_what_a_local_get_writes(served: Served) -> None:
    local, remote = served.local, served.remote("restore")
    for n, (args, names) in enumerate([
            (["/etc"], {"etc", "etc/hosts", "etc/app", "etc/app/app.conf", "etc/app/run.sh",
                        "etc/localtime"}),
            (["/etc/app/run.sh"], {"run.sh"}),
            (["/etc/hosts", "/etc/app"], {"hosts", "app", "app/app.conf", "app/run.sh"})]):
        here, there = served.tmp / f"here-{n}", served.tmp / f"there-{n}"
        here.mkdir()
        there.mkdir()
        shown_here = local.ok("files", "get", "fs@latest", *args, "--to", str(here)).out
        shown_there = remote.ok("files", "get", "fs@latest", *args, "--to", str(there)).out
        assert _RATE.sub("", shown_there.strip()).replace(str(there), "DIR") == \
            _RATE.sub("", shown_here.strip()).replace(str(here), "DIR")
        assert f"(streamed from {served.url})" in shown_there
        assert set(_tree(there)) == names, args
        assert _tree(there) == _tree(here), args
    assert stat.S_IMODE((served.tmp / "there-0" / "etc" / "app").stat().st_mode) == 0o750
    assert os.readlink(served.tmp / "there-0" / "etc" / "localtime") == \
        "/usr/share/zoneinfo/UTC"
    # --json: the local report, but for where, how long, and the chunks the server read
    here, there = served.tmp / "here-j", served.tmp / "there-j"
    here.mkdir()
    there.mkdir()
    mine = local.ok("files", "get", "fs@latest", "/", "--to", str(here), "--json").json()
    theirs = remote.ok("files", "get", "fs@latest", "/", "--to", str(there), "--json").json()
    assert isinstance(mine, dict) and isinstance(theirs, dict) and theirs["files"] == 3
    assert theirs["loads"] == 0 and mine["loads"] > 0
    ignored = {"target": None, "duration_s": None, "loads": None}
    assert {**theirs, **ignored} == {**mine, **ignored}
    assert _tree(there) == _tree(here)


def test_files_get_through_the_server_replaces_nothing_without_force(served: Served) -> None:
    remote = served.remote("restore")
    there = served.tmp / "there"
    there.mkdir()
    remote.ok("files", "get", "fs@latest", "/etc", "--to", str(there))
    (there / "etc" / "hosts").write_text("mine\n")
    (there / "etc" / "app" / "run.sh").unlink()
    (there / "etc" / "extra").write_text("kept\n")
    before = _tree(there)
    r = remote("files", "get", "fs@latest", "/etc", "--to", str(there))
    assert r.code == FileTargetExists.exit_code, r.err
    assert f"{there}/etc/hosts" in r.err and "Nothing was written" in r.err
    assert "app.conf" in r.err and "run.sh" not in r.err  # what is missing is no conflict
    assert _tree(there) == before  # nothing written, nothing staged left behind
    r = remote("files", "get", "fs@latest", "/nosuch", "--to", str(there))
    assert r.code == 33, r.err  # FileNotInPoint, as locally
    assert _tree(there) == before
    remote.ok("files", "get", "fs@latest", "/etc", "--to", str(there), "--force")
    after = _tree(there)
    assert (there / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n"
    assert after["etc/extra"] == before["etc/extra"] and "etc/app/run.sh" in after
    assert not any(".stasis-get-" in name for name in after)
    r = served.remote("viewer")("files", "get", "fs@latest", "/etc", "--to", str(there))
    assert r.code == PermissionDenied.exit_code and "files:read" in r.err, r.err


def _tar_zst(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return zstandard.ZstdCompressor().compress(raw.getvalue())


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, link, 0o644, 1_700_000_000
    return info


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A server that answers a point with an id and its archive with ``archive``."""

    archive = b""

    def do_GET(self) -> None:
        if "/files/archive" in self.path:
            body, media = self.archive, "application/zstd"
        else:
            body, media = json.dumps({"id": "f" * 64}).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hostile(cli: Cli) -> Iterator[tuple[Cli, type[_Hostile]]]:
    """The CLI against a fake server whose archives are crafted (``handler.archive``)."""
    handler = type("Handler", (_Hostile,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    env = {k: v for k, v in cli.env.items() if k not in ("STASIS_REPO", "STASIS_PASSPHRASE")}
    env.update(STASIS_SERVER=f"http://127.0.0.1:{httpd.server_address[1]}",
               STASIS_TOKEN="stasis_anything")
    try:
        yield Cli(cli.repo, env), handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_files_get_refuses_a_hostile_archive_and_writes_nothing(
        hostile: tuple[Cli, type[_Hostile]], tmp_path: Path) -> None:
    remote, handler = hostile
    outside = tmp_path / "outside"
    outside.mkdir()
    into = tmp_path / "into"
    into.mkdir()
    good = (_member("fine.txt"), b"an honest file\n")
    whole = _tar_zst(good, (_member("big.bin"), os.urandom(300_000)))
    cases = {
        "escaping with ..": _tar_zst(good, (_member("../outside/escaped"), b"x")),
        "an absolute name": _tar_zst(good, (_member(f"{outside}/absolute"), b"x")),
        "through a symlink": _tar_zst(
            good, (_member("d", tarfile.DIRTYPE), b""),
            (_member("d/out", tarfile.SYMTYPE, str(outside)), b""),
            (_member("d/out/through"), b"x")),
        "a hard link": _tar_zst(good, (_member("passwd", tarfile.LNKTYPE, "/etc/passwd"), b"")),
        "a device": _tar_zst(good, (_member("sda", tarfile.BLKTYPE), b"")),
        "a name twice": _tar_zst(good, good),
        "a file before its directory": _tar_zst(good, (_member("nodir/x"), b"x")),
        "cut short": whole[: len(whole) // 2],
        "not an archive": b"<html>a proxy's error page</html>",
    }
    for why, archive in cases.items():
        handler.archive = archive
        r = remote("files", "get", "p", "/", "--to", str(into))
        assert r.code == ArchiveRefused.exit_code, (why, r.err)
        assert "was not extracted" in r.err and "Nothing was written" in r.err, (why, r.err)
        assert list(into.iterdir()) == [], why  # not even fine.txt, nor the staging dir
        assert list(outside.iterdir()) == [], why
    handler.archive = whole  # the same server, honest: the files land
    remote.ok("files", "get", "p", "/", "--to", str(into))
    assert (into / "fine.txt").read_bytes() == b"an honest file\n"
    assert sorted(p.name for p in into.iterdir()) == ["big.bin", "fine.txt"]


# ------------------------------------------------------------------ policy list


POLICIES = """\
[[policy]]
name = "apps"
vms = ["web", "db"]
select = ["app-*"]
labels = { tier = "front" }
cron = "30 2 * * *"
timezone = "Europe/Berlin"
consistency = "filesystem"
require = "crash"
rpo = "26h"

[policy.retention]
keep_daily = 7

[[policy]]
name = "fs"
vms = ["fs"]
every = "12h"

[policy.retention]
keep_last = 3
"""


def test_policy_list_through_the_server_shows_what_a_file_shows(served: Served) -> None:
    local, remote = served.local, served.remote("viewer")
    path = served.tmp / "policies.toml"
    path.write_text(POLICIES)
    rules = catalog_policies.Rules(repositories={"main"}, default_repository="main")
    catalog_policies.create_policies(served.catalog, POLICIES, rules=rules)
    catalog_policies.create_policies(served.catalog, POLICIES.split("\n\n[[policy]]")[0]
                                     .replace('"apps"', '"offer"'), rules=rules,
                                     template=True)
    after = ["--after", "2026-03-28T12:00:00+00:00"]  # over the switch to summer time
    here = local.ok("policy", "list", str(path), *after).out
    assert remote.ok("policy", "list", *after).out == here
    assert "2026-03-29 03:00 CEST" in here and "offer" not in here  # a template does not run
    mine, theirs = (local.ok("policy", "list", str(path), *after, "--json").json(),
                    remote.ok("policy", "list", *after, "--json").json())
    assert isinstance(mine, list) and isinstance(theirs, list) and len(theirs) == 2
    assert [{**p, "origin": None} for p in theirs] == [{**p, "origin": None} for p in mine]
    r = remote("policy", "list", str(path))
    assert r.code == UsageError.exit_code and "takes no FILE" in r.err, r.err
    assert local("policy", "list").code == UsageError.exit_code
