"""Fixtures shared by the whole suite: repositories, images, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stasis.backends import open_backend
from stasis.repository import Credentials, Repository

# The throwaway PostgreSQL server and the catalog_url fixture (SQLite and PostgreSQL).
pytest_plugins = ["tests.postgres"]

PASSPHRASE = "correct horse battery staple"
MiB = 1 << 20
BIN = Path(sys.executable).parent / "stasis"


@pytest.fixture(autouse=True)
def _cheap_kdf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Argon2id at 64 MiB costs ~0.15 s per unlock; tests open repositories often.
    monkeypatch.setenv("STASIS_KDF_MEMORY_KIB", "1024")
    monkeypatch.setenv("STASIS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("STASIS_REPO", raising=False)
    monkeypatch.delenv("STASIS_PASSPHRASE", raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(open_backend(tmp_path / "repo"), passphrase=PASSPHRASE.encode(),
                           chunk_size=256 << 10)


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
    repo: Path
    env: dict[str, str]

    def __call__(self, *args: str, input: str | None = None, timeout: float = 300,
                 env: dict[str, str] | None = None) -> Result:
        full_env = {**self.env, **(env or {})}
        proc = subprocess.run(
            [str(BIN), *args], capture_output=True, text=True, env=full_env, input=input,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kw: object) -> Result:
        r = self(*args, **kw)  # type: ignore[arg-type]
        assert r.code == 0, f"stasis {' '.join(args)} failed ({r.code}):\n{r.err}\n{r.out}"
        return r


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STASIS_")}
    env.update(
        STASIS_REPO=str(tmp_path / "clirepo"),
        STASIS_PASSPHRASE=PASSPHRASE,
        STASIS_KDF_MEMORY_KIB="1024",
        STASIS_STATE_DIR=str(tmp_path / "clistate"),
        COLUMNS="200",
    )
    return Cli(tmp_path / "clirepo", env)


@pytest.fixture
def cli_repo(cli: Cli) -> Cli:
    cli.ok("repo", "init", "--chunk-size", "256K")
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
    from stasis.testkit import GuestKit

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
