"""Opening a catalog: its URL, the engine, sessions, and the schema's migrations.

:meth:`Catalog.open` connects, checks that the database is a Stasis catalog of a
revision this Stasis knows, and upgrades it to the newest revision (a new file is
created at the newest). Work is done in :meth:`Catalog.session`, one transaction
each: committed when the block ends, rolled back when it raises. Every database
failure surfaces as a :class:`~stasis.errors.CatalogError` that names the catalog
and says that nothing was changed.

SQLite specifics: the driver's own transaction handling is switched off so that
every transaction, DDL included, is a real ``BEGIN``…``COMMIT`` (a migration that
fails half way leaves nothing behind); migrations of one file are serialized by a
lock file beside it, so two commands opening a new catalog at once do not race;
WAL lets readers go on while a writer commits, with ``synchronous = NORMAL`` (a
commit is not fsynced, a checkpoint is: a host crash may lose the last commits,
never the database); writing transactions begin IMMEDIATE and wait up to 30 s for
each other.

PostgreSQL (``postgresql+psycopg://user@host/db``, or ``postgresql://`` which
means the same: psycopg 3 is the driver Stasis ships with): DDL is transactional
there too; migrations are serialized by a session advisory lock, so several hosts
opening a new catalog at once do not race; writing transactions take a
transaction advisory lock first, which makes them one at a time as SQLite's
IMMEDIATE does (a read followed by a write never works on a stale view), waiting
up to 30 s. Readers never wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from stasis.catalog.migrations import HEAD
from stasis.catalog.quick import sqlite_error
from stasis.catalog.records import CATALOG_FILE
from stasis.clock import SYSTEM_CLOCK, Clock
from stasis.errors import CatalogError, StasisError
from stasis.settings import state_dir

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
WRITE_OPTION = "stasis_write"
BUSY_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10
# PostgreSQL advisory lock keys (any two 64-bit numbers no other application uses):
# one held while the schema is migrated, one by each writing transaction.
PG_MIGRATE_LOCK = 0x5354_4153_4953_0001
PG_WRITE_LOCK = 0x5354_4153_4953_0002

def catalog_url(value: str | None = None) -> str:
    """The catalog to use: ``value`` (a SQLAlchemy URL or a file path), else
    ``$STASIS_CATALOG``, else ``<state dir>/catalog.db``."""
    value = value or os.environ.get("STASIS_CATALOG") or None
    if value is None:
        return str(URL.create("sqlite", database=str(state_dir() / CATALOG_FILE)))
    if "://" not in value:  # a plain path is a SQLite file
        return str(URL.create("sqlite", database=str(Path(value).absolute())))
    return value


def _shown(url: URL) -> str:
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def _reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    return str(orig if orig is not None else e).strip().splitlines()[0]


class Catalog:
    """An open catalog. Use :meth:`open`; close it (or use it as a context manager)."""

    def __init__(self, engine: Engine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.engine = engine
        self.url = engine.url
        self.shown = _shown(engine.url)
        self.clock = clock
        # Writers say so when they begin (SQLite: BEGIN IMMEDIATE), so that a
        # transaction that reads and then writes waits for another writer instead of
        # failing on a snapshot that writer made stale.
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, url: str | None = None, *, clock: Clock = SYSTEM_CLOCK) -> Catalog:
        """Open (creating if need be) the catalog at ``url`` and migrate it to the newest
        revision. See :func:`catalog_url` for what ``url`` may be."""
        text = catalog_url(url)
        try:
            parsed = make_url(text)
        except ArgumentError:
            raise CatalogError(f"'{text}' is not a catalog URL (examples: "
                               "sqlite:////var/lib/stasis/catalog.db, "
                               "postgresql://user@host/stasis). Nothing was changed.") from None
        catalog = cls(_engine(parsed), clock=clock)
        try:
            catalog._migrate()
        except BaseException:
            catalog.close()
            raise
        return catalog

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def error(self, what: str, e: BaseException) -> CatalogError:
        if self.url.get_backend_name() != "sqlite":
            return CatalogError(
                f"The catalog {self.shown} {what} ({_reason(e)}). Nothing was changed. "
                "Check that the database server is up and that the URL, user and "
                "database are right (--catalog / $STASIS_CATALOG).")
        return sqlite_error(self.shown, what, _reason(e))

    def revision(self) -> str | None:
        """The schema revision the database holds (None: not a catalog yet)."""
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table(VERSION_TABLE):
                    return None
                rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        except SQLAlchemyError as e:
            raise self.error("cannot be opened or is damaged", e) from None
        if len(rows) != 1:
            raise CatalogError(f"The catalog {self.shown} holds {len(rows)} schema revisions "
                               "instead of one: it is damaged. Nothing was changed.")
        return str(rows[0][0])

    def head(self) -> str:
        """The newest revision the shipped migrations reach (read with Alembic)."""
        return str(self._scripts().get_current_head())

    def _config(self) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        return config

    def _scripts(self) -> Any:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._config())

    def _migrate(self) -> None:
        # The common case, a catalog already at the head, costs one query and no
        # import of Alembic (HEAD is checked against the scripts by the tests).
        if self.revision() == HEAD:
            return
        head = self.head()
        with self._migration_lock():
            current = self.revision()  # another process may have migrated meanwhile
            if current == head:
                return
            known = {s.revision for s in self._scripts().walk_revisions()}
            if current is not None and current not in known:
                raise CatalogError(
                    f"The catalog {self.shown} has schema revision '{current}', which this "
                    "Stasis does not know: a newer Stasis made it. Nothing was changed; use "
                    "that Stasis, or another catalog (--catalog / $STASIS_CATALOG).")
            self._upgrade(current)

    def _upgrade(self, current: str | None) -> None:
        from alembic import command

        config = self._config()
        try:
            with self._writer.begin() as conn:
                if current is None and _foreign_tables(conn):
                    raise CatalogError(
                        f"{self.shown} is a database but not a Stasis catalog (it has tables "
                        f"and no schema revision: {', '.join(_foreign_tables(conn))}). "
                        "Nothing was changed; point --catalog / $STASIS_CATALOG elsewhere.")
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except StasisError:
            raise
        except SQLAlchemyError as e:
            raise self.error("cannot be opened or upgraded", e) from None

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.url.get_backend_name() == "postgresql":
            with self._advisory_lock(PG_MIGRATE_LOCK):
                yield
            return
        database = self.url.database
        if self.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            yield
            return
        try:
            fd = os.open(f"{database}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise self.error("cannot be opened", e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _advisory_lock(self, key: int) -> Iterator[None]:
        """A PostgreSQL session advisory lock, held on a connection of its own (the
        server releases it if this process dies)."""
        try:
            conn = self.engine.connect()
        except SQLAlchemyError as e:
            raise self.error("cannot be opened", e) from None
        try:
            try:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                conn.commit()
            except SQLAlchemyError as e:
                raise self.error("cannot be opened (waiting for its migration lock)",
                                 e) from None
            yield
            with contextlib.suppress(SQLAlchemyError):  # closing the connection frees it
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
        finally:
            conn.close()

    # ------------------------------------------------------------ work

    @contextlib.contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """One transaction: committed at the end of the block, rolled back on an error.

        ``write=False`` for one that only reads (it never waits for a writer).
        """
        sessions = self._write_sessions if write else self._sessions
        try:
            with sessions() as session, session.begin():
                yield session
        except SQLAlchemyError as e:
            raise self.error("failed", e) from None


def _foreign_tables(conn: Connection) -> list[str]:
    return sorted(t for t in inspect(conn).get_table_names() if t != "alembic_version")


def _engine(url: URL) -> Engine:
    try:
        if url.get_backend_name() == "postgresql":
            return _postgresql_engine(url)
        if url.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
    except (ArgumentError, NoSuchModuleError, ImportError) as e:
        raise CatalogError(f"cannot use the catalog {_shown(url)}: {e}. Nothing was "
                           "changed.") from None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Our own BEGIN (below) instead of the driver's, which commits before DDL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            if url.database and url.database != ":memory:":
                cursor.execute("PRAGMA journal_mode = WAL")
                # WAL's own recommendation: a commit is not fsynced, checkpoints are. A
                # host crash may lose the last few commits (a job's last log lines; the
                # points index is rebuilt from the repository), never the database. With
                # FULL every log line was an fsync queued behind the backup's own writes:
                # 2 s of a 7 s full backup went to the catalog's commits.
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _postgresql_engine(url: URL) -> Engine:
    if url.drivername == "postgresql":  # no driver named: the one Stasis ships with
        url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    if url.get_driver_name() == "psycopg" and "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S  # a host that is down
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers one at a time, as on SQLite; the lock goes with the transaction.
        if conn.get_execution_options().get(WRITE_OPTION, False):
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(BUSY_TIMEOUT_S)}s'")
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})")

    return engine
