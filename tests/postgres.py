"""A throwaway PostgreSQL server for the tests, and catalog URLs on both databases.

:func:`postgres` (session-scoped) runs ``initdb`` in a temporary directory owned by
the ``postgres`` user and starts the server with ``pg_ctl`` on a unix socket in that
directory (no TCP port, so parallel runs cannot collide); it is stopped and removed
at the end. fsync is off: the data is thrown away anyway.

:func:`catalog_url` is parametrized: each test that takes it runs once on a new
SQLite file and once on a new PostgreSQL database (``migrated_catalog_url`` in
``tests/conftest.py`` is the same at the newest schema already). Registered as a
plugin by ``tests/conftest.py``.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BACKENDS = ("sqlite", "postgresql")


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    bindir: Path
    root: Path  # data/, the socket, the log
    socket_dir: Path
    names = itertools.count(1)

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@/{database}?host={self.socket_dir}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        proc = subprocess.run(
            [str(self.bindir / "psql"), "-h", str(self.socket_dir), "-U", "postgres",
             "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def new_database(self) -> str:
        name = f"stasis_test_{os.getpid()}_{next(self.names)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_postgres(*args: str, log: Path | None = None) -> None:
    proc = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        extra = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()}\n{extra}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test session (skipped where it is not installed)."""
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; "
                    "./scripts/setup installs Debian's postgresql)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("there is no 'postgres' user to run the server as")
    if os.geteuid() != 0:
        pytest.skip("starting a PostgreSQL server as the postgres user needs root")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install "
                        "-e '.[postgresql]'; ./scripts/setup does)")
    # Not under pytest's temp root: that is root's alone (0700), the server runs as
    # postgres. A short path, too: a unix socket path has at most 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="stasis-pg-"))
    data, log = root / "data", root / "server.log"
    shutil.chown(root, "postgres", "postgres")
    server = PostgresServer(bindir, root, root)
    started = False
    try:
        _as_postgres(str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                     "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C.UTF-8")
        options = (f"-k {root} -c listen_addresses='' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                     "-w", "-t", "60", "start", log=log)
        started = True
        yield server
    finally:
        if started:
            _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty catalog: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.new_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)
