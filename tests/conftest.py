"""Fixtures shared by the whole suite: repositories, images, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import subprocess as _subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stasis.backends import open_backend
from stasis.catalog.db import CATALOG_FILE
from stasis.repository import Credentials, Repository
from stasis.repository.crypto import KdfParams
from tests import inprocess

# The throwaway PostgreSQL server and the catalog_url fixture (SQLite and PostgreSQL);
# the real S3 servers (SeaweedFS, Ceph RGW, Swift) and the fault proxy in front of them.
pytest_plugins = ["tests.postgres", "tests.s3servers"]

PASSPHRASE = "correct horse battery staple"
MiB = 1 << 20
BIN = Path(sys.executable).parent / "stasis"
ROOT = Path(__file__).resolve().parents[1]
# STASIS_TESTS_SUBPROCESS=1 runs every `cli(...)` as a process of its own (to check
# that nothing depends on running in the test process).
IN_SUBPROCESS = os.environ.get("STASIS_TESTS_SUBPROCESS") == "1"


def driver(*options: str) -> list[str]:
    """The command line that runs ``stasis`` with test parameters injected
    (:mod:`tests.drivers.stasis`); the arguments for stasis follow it."""
    return [sys.executable, "-m", "tests.drivers.stasis", *options, "--"]


# Argon2id at its real cost (64 MiB) takes ~0.15 s per unlock and tests open
# repositories often: the slots they make cost little. The slot stores its
# parameters, so a CLI run opening the repository pays only this.
CHEAP_KDF = KdfParams(memory_kib=1024, iterations=1)


def init_repo(path: Path, *, chunk_size: int = 256 << 10, compression: str = "zstd-1",
              passphrase: str = PASSPHRASE) -> Repository:
    """A passphrase repository as `stasis repo init` makes it, with a cheap key slot."""
    return Repository.init(open_backend(path), passphrase=passphrase.encode(),
                           chunk_size=chunk_size,
                           compression=compression, kdf=CHEAP_KDF)


# A catalog migrated once per session: tests that do not test the migrations copy it
# instead of running Alembic (production still migrates every new catalog for real).
@pytest.fixture(scope="session")
def catalog_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite catalog migrated to the head, once per session: copy it, never open it."""
    from stasis.catalog import Catalog

    path = tmp_path_factory.mktemp("catalog-template") / "catalog.db"
    Catalog.open(str(path)).close()
    # Closing the last connection checkpoints the WAL into the file: it stands alone
    # (beside it only the lock file serializing migrations).
    assert not path.with_name(f"{path.name}-wal").exists()
    return path


def seed_catalog(template: Path, path: Path) -> Path:
    """Put a copy of the migrated ``template`` at ``path`` (a catalog that needs no
    migration when first opened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return path


@pytest.fixture
def migrated_catalog_url(catalog_url: str, catalog_template: Path) -> str:
    """Like :func:`catalog_url`, at the newest schema revision already (SQLite: a copy
    of the template; PostgreSQL: migrated by its first open, as before)."""
    prefix = "sqlite:///"
    if catalog_url.startswith(prefix):
        seed_catalog(catalog_template, Path(catalog_url.removeprefix(prefix)))
    return catalog_url


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STASIS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("STASIS_REPO", raising=False)
    monkeypatch.delenv("STASIS_PASSPHRASE", raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(open_backend(tmp_path / "repo"), passphrase=PASSPHRASE.encode(),
                           chunk_size=256 << 10,
                           kdf=CHEAP_KDF)


@pytest.fixture
def plain_repo(tmp_path: Path) -> Repository:
    return Repository.init(open_backend(tmp_path / "plain-repo"), encryption="none",
                           chunk_size=256 << 10)


def reopen(repo: Repository) -> Repository:
    return Repository.open(open_backend(repo.url), Credentials(passphrase=PASSPHRASE.encode()))


def write_image(path: Path, size: int, regions: list[tuple[int, bytes]]) -> Path:
    """A sparse raw image of ``size`` with ``regions`` (offset, data) written."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in regions:
            f.seek(offset)
            f.write(data)
    return path


def text_data(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    i = seed
    while len(out) < n:
        out += b"%08d INFO service=backup request=%d took %d ms\n" % (i, i * 7919 % 10007, i % 97)
        i += 1
    return bytes(out[:n])


def mixed_image(path: Path, size: int = 24 * MiB, seed: int = 1) -> Path:
    """Holes, random data, compressible data and a partly written chunk."""
    rnd = __import__("random").Random(seed)
    return write_image(path, size, [
        (0, rnd.randbytes(MiB + 12345)),
        (3 * MiB + 4096, text_data(2 * MiB, seed)),
        (9 * MiB, bytes(MiB)),  # explicit zeros: stored as nothing
        (13 * MiB + 512, rnd.randbytes(3000)),
        (size - 70000, rnd.randbytes(70000)),  # touches the last chunk
    ])


def to_qcow2(raw: Path, dest: Path, *extra: str) -> Path:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", *extra, str(raw), str(dest)],
                   check=True)
    return dest


def images_equal(a: Path, b: Path) -> bool:
    proc = subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], capture_output=True)
    return proc.returncode == 0


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@dataclass
class Cli:
    """``stasis`` as a user runs it: in this process by default (the same entry point,
    environment and exit code: see tests/inprocess.py), or as a process of its own
    with ``subprocess=True`` (what signals, timeouts or a real process need)."""

    repo: Path
    env: dict[str, str]

    def __call__(self, *args: str, input: str | None = None, timeout: float = 300,
                 env: dict[str, str] | None = None, subprocess: bool = False) -> Result:
        full_env = {**self.env, **(env or {})}
        if not subprocess and not IN_SUBPROCESS:
            code, out, err = inprocess.run(list(args), full_env, input)
            return Result(code, out, err)
        proc = _subprocess.run(
            [str(BIN), *args], capture_output=True, text=True, env=full_env, input=input,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kw: object) -> Result:
        r = self(*args, **kw)  # type: ignore[arg-type]
        assert r.code == 0, f"stasis {' '.join(args)} failed ({r.code}):\n{r.err}\n{r.out}"
        return r


def make_cli(base: Path) -> Cli:
    """The CLI with its repository and state directory under ``base`` (neither made)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STASIS_")}
    env.update(
        STASIS_REPO=str(base / "clirepo"),
        STASIS_PASSPHRASE=PASSPHRASE,
        STASIS_STATE_DIR=str(base / "clistate"),
        COLUMNS="200",
        # The test drivers (python -m tests.drivers...) import from the checkout.
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    return Cli(base / "clirepo", env)


def make_cli_repo(base: Path, catalog_template: Path) -> Cli:
    """:func:`make_cli` on a new repository with its catalog already migrated."""
    cli = make_cli(base)
    init_repo(cli.repo)
    seed_catalog(catalog_template, Path(cli.env["STASIS_STATE_DIR"]) / CATALOG_FILE)
    return cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return make_cli(tmp_path)


@pytest.fixture
def cli_repo(cli: Cli, catalog_template: Path) -> Cli:
    """The CLI on a new repository (made in-process: see CHEAP_KDF), with its default
    catalog already migrated (a copy of the session's template)."""
    init_repo(cli.repo)
    seed_catalog(catalog_template, Path(cli.env["STASIS_STATE_DIR"]) / CATALOG_FILE)
    return cli


def nbd_processes() -> list[str]:
    """Command lines of qemu-nbd processes (to show nothing is left running)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue  # exited, waiting to be reaped: not running
        if cmd and cmd[0].endswith(b"qemu-nbd"):
            found.append(b" ".join(cmd).decode(errors="replace"))
    return found


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name or "stasis-partial" in p.name]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs mount (needs root) for disk-full tests."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The test-guest kit (real libvirt guests under TCG), one per test module."""
    libvirt = pytest.importorskip("libvirt")
    from stasis_testkit import GuestKit

    if os.geteuid() != 0:
        pytest.skip("test guests need root (qemu:///system)")
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as e:
        pytest.skip(f"libvirt is not reachable: {e}")
    try:
        with GuestKit(conn, tmp_path_factory.mktemp("kit")) as guest_kit:
            yield guest_kit
    finally:
        conn.close()


def define_pool(conn: Any, name: str, path: Path, *, start: bool) -> Any:
    """A libvirt ``dir`` storage pool named ``name`` at ``path`` (made), started or not."""
    path.mkdir(parents=True, exist_ok=True)
    pool = conn.storagePoolDefineXML(f"<pool type='dir'><name>{name}</name><target><path>"
                                     f"{path}</path></target></pool>", 0)
    if start:
        pool.create(0)
    return pool


def remove_pool(pool: Any) -> None:
    """Delete a test's pool: its volumes, then the pool (stopped and undefined)."""
    if pool.isActive():
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        pool.destroy()
    pool.undefine()


def remove_domain(conn: object, name: str) -> None:
    """Stop and undefine a domain a test restored or cloned; gone already is fine."""
    import libvirt

    try:
        dom = conn.lookupByName(name)  # type: ignore[attr-defined]
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefine()

