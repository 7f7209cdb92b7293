"""A command's job record on a SQLite catalog, written with the standard library alone.

A command that runs a job (``stasis backup vm``...) writes a handful of rows: the
job, its log lines, its end, and the points it committed; one that queues a job for
the service reads the running services and writes the queued job. Loading SQLAlchemy and
the ORM for that cost about 0.2 s of CPU, more than an unchanged backup's work.
:class:`QuickCatalog` writes exactly the rows :class:`~stasis.catalog.JobStore` and
:class:`~stasis.catalog.PointIndex` write, in the storage formats SQLAlchemy uses
on SQLite (times as UTC ``YYYY-MM-DD HH:MM:SS.ffffff``, JSON as ``json.dumps``,
booleans as 0/1), on the same connection settings as :mod:`stasis.catalog.db`
(WAL, ``synchronous = NORMAL``, foreign keys on, writers ``BEGIN IMMEDIATE``,
waiting up to 30 s for each other).

It is used only where it is sure to be right: a SQLite file that exists and
holds exactly the newest revision (:data:`~stasis.catalog.migrations.HEAD`). Anything
else (a new file, an older revision to migrate, a newer one to refuse, PostgreSQL,
a damaged file) is :meth:`Catalog.open <stasis.catalog.Catalog.open>`'s to handle,
so :meth:`QuickCatalog.open` answers None and the caller opens it that way. A
change to the tables of these rows changes this module too (the tests compare
its rows with the ORM's).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stasis.catalog.migrations import HEAD
from stasis.catalog.records import (
    CATALOG_FILE,
    FINAL_STATES,
    JOB_KINDS,
    LOG_LEVELS,
    Job,
    Service,
    parse_time,
)
from stasis.clock import SYSTEM_CLOCK, Clock
from stasis.errors import CatalogError, UsageError
from stasis.settings import state_dir

if TYPE_CHECKING:
    from stasis.repository import Manifest, Repository

BUSY_TIMEOUT_S = 30.0


def sqlite_file(value: str | None = None) -> Path | None:
    """The SQLite file of the catalog ``value`` names (as :func:`~stasis.catalog.
    catalog_url` reads it: a URL or a path, else ``$STASIS_CATALOG``, else the state
    directory's); None when it is not a plain SQLite file URL."""
    value = value or os.environ.get("STASIS_CATALOG") or None
    if value is None:
        return state_dir() / CATALOG_FILE
    if "://" not in value:
        return Path(value).absolute()
    scheme, _, rest = value.partition("://")
    # sqlite:///relative or sqlite:////absolute; a query or an escape: SQLAlchemy's.
    if scheme not in ("sqlite", "sqlite+pysqlite") or not rest.startswith("/") \
            or "?" in rest or "%" in rest:
        return None
    path = rest[1:]
    if not path or path == ":memory:":
        return None
    return Path(path)


def sqlite_error(shown: str, what: str, reason: str) -> CatalogError:
    """A SQLite catalog's failure, in the words of every catalog error."""
    return CatalogError(
        f"The catalog {shown} {what} ({reason}). Nothing was changed. If the file is "
        "damaged, move it aside: the next command makes a new, empty one (stored groups "
        "must then be created again; the repository is untouched).")


def _time(t: datetime) -> str:
    """A time as SQLAlchemy's SQLite DATETIME stores it (UTC, no zone)."""
    if t.tzinfo is None:
        raise ValueError("the catalog stores aware datetimes only")
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _parse(text: str) -> datetime:
    """A stored time, read back aware (UTC), as the ORM reads it."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _json(value: Any) -> str:
    return json.dumps(value)


class QuickCatalog:
    """An open SQLite catalog at the newest revision; one connection, shared by the
    threads of a job (one transaction at a time). Use :meth:`open`; close it."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, clock: Clock) -> None:
        self._conn = conn
        self.shown = str(path)
        self.clock = clock
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str | None = None, *,
             clock: Clock = SYSTEM_CLOCK) -> QuickCatalog | None:
        """The catalog ``url`` names, if it is a SQLite file at the newest revision;
        else None (open it with :meth:`Catalog.open <stasis.catalog.Catalog.open>`)."""
        path = sqlite_file(url)
        if path is None or not path.is_file():
            return None
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error:
            return None
        try:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            if rows != [(HEAD,)]:
                conn.close()
                return None
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # as stasis.catalog.db, and why
        except sqlite3.Error:
            conn.close()
            return None
        return cls(conn, path, clock=clock)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> QuickCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One writing transaction: committed at the end of the block, rolled back on
        an error (a database failure is a CatalogError)."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            except sqlite3.Error as e:
                raise sqlite_error(self.shown, "failed",
                                   str(e).strip().splitlines()[0]) from None

    # ------------------------------------------------------------ jobs (JobStore's rows)

    def create(self, kind: str, name: str, *, vms: list[str] | None = None,
               policy: str | None = None, repo: str | None = None,
               params: dict[str, Any] | None = None, state: str = "queued",
               runner: tuple[str, int, int] | None = None, tenant: str | None = None,
               by: str | None = None) -> Job:
        """As :meth:`JobStore.create <stasis.catalog.JobStore.create>`."""
        if kind not in JOB_KINDS:
            raise UsageError(f"'{kind}' is not a job kind ({', '.join(JOB_KINDS)})")
        if state not in ("queued", "running"):
            raise UsageError(f"a new job is queued or running, not {state}")
        now = self.clock.now()
        started = now if state == "running" else None
        host, pid, pid_start = (None, None, None) if runner is None or started is None \
            else runner
        job = Job(0, kind, name, policy, list(vms or []), repo, state, now, started,
                  params=dict(params or {}), host=host, pid=pid, pid_start=pid_start,
                  tenant=tenant, by=by)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO jobs (kind, policy, name, vms, repo, state, queued, started, "
                "ended, bytes_read, bytes_written, result, error, exit_code, params, host, "
                "pid, pid_start, cancel_requested, tenant, \"by\") "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, 0, ?, NULL, NULL, ?, ?, ?, ?, 0, ?, ?)",
                (kind, policy, name, _json(job.vms), repo, state, _time(now),
                 None if started is None else _time(started), _json({}), _json(job.params),
                 host, pid, pid_start, tenant, by))
            assert cursor.lastrowid is not None
            job.id = cursor.lastrowid
        return job

    def set_vms(self, job_id: int, vms: list[str]) -> None:
        with self._write() as conn:
            conn.execute("UPDATE jobs SET vms = ? WHERE id = ?", (_json(list(vms)), job_id))

    def finish(self, job_id: int, state: str, *, result: dict[str, Any] | None = None,
               error: str | None = None, exit_code: int | None = None,
               bytes_read: int | None = 0, bytes_written: int | None = 0) -> None:
        """As :meth:`JobStore.finish <stasis.catalog.JobStore.finish>`."""
        if state not in FINAL_STATES:
            raise UsageError(f"a job ends {', '.join(FINAL_STATES)}, not {state}")
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET state = ?, ended = ?, result = ?, error = ?, exit_code = ?, "
                "bytes_read = COALESCE(?, bytes_read), bytes_written = COALESCE(?, "
                "bytes_written) WHERE id = ?",
                (state, _time(self.clock.now()), _json(dict(result or {})), error, exit_code,
                 bytes_read, bytes_written, job_id))

    def log(self, job_id: int, level: str, text: str, time: datetime | None = None) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO job_logs (job, time, level, text) VALUES (?, ?, ?, ?)",
                         (job_id, _time(time or self.clock.now()),
                          level if level in LOG_LEVELS else "info", text))

    def services(self) -> list[Service]:
        """As :meth:`JobStore.services <stasis.catalog.JobStore.services>`."""
        with self._lock:
            try:
                rows = self._conn.execute("SELECT id, host, pid, pid_start, started, repo "
                                          "FROM services ORDER BY id").fetchall()
            except sqlite3.Error as e:
                raise sqlite_error(self.shown, "failed",
                                   str(e).strip().splitlines()[0]) from None
        return [Service(i, host, pid, pid_start, _parse(started), repo)
                for i, host, pid, pid_start, started, repo in rows]

    # ------------------------------------------------------------ points (PointIndex's rows)

    def add_point(self, repo: Repository, m: Manifest) -> None:
        """As :meth:`PointIndex.add <stasis.catalog.PointIndex.add>`: the repository
        (seen first now, or its URL updated), the point, and its VMs as last seen."""
        now = _time(self.clock.now())
        with self._write() as conn:
            found = conn.execute("SELECT url FROM repositories WHERE id = ?",
                                 (repo.id,)).fetchone()
            if found is None:
                conn.execute("INSERT INTO repositories (id, url, first_seen, \"indexed\") "
                             "VALUES (?, ?, ?, NULL)", (repo.id, repo.url, now))
            elif found[0] != repo.url:
                conn.execute("UPDATE repositories SET url = ? WHERE id = ?",
                             (repo.url, repo.id))
            conn.execute(
                "INSERT INTO points (id, repo, name, kind, time, vms, size, bytes_read, "
                "parent, tags, consistency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (repo, id) DO UPDATE SET name = excluded.name, "
                "kind = excluded.kind, time = excluded.time, vms = excluded.vms, "
                "size = excluded.size, bytes_read = excluded.bytes_read, "
                "parent = excluded.parent, tags = excluded.tags, "
                "consistency = excluded.consistency",
                (m.id, repo.id, m.name, m.kind, _time(parse_time(m.time)),
                 _json([vm.name for vm in m.vms]), m.virtual_size, m.bytes_read, m.parent,
                 _json(dict(m.tags)),
                 _json({vm.name: vm.consistency for vm in m.vms if vm.consistency})))
            latest = {vm.name: vm.uuid for vm in m.vms if vm.kind == "vm"}
            for name, uuid in latest.items():
                row = conn.execute("SELECT uuid FROM vms WHERE name = ?", (name,)).fetchone()
                if row is None:
                    conn.execute("INSERT INTO vms (name, uuid, first_seen, last_seen) "
                                 "VALUES (?, ?, ?, ?)", (name, uuid, now, now))
                else:
                    conn.execute("UPDATE vms SET uuid = ?, last_seen = ? WHERE name = ?",
                                 (uuid or row[0], now, name))
