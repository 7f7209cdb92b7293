"""The catalog on real SQLite files and a real PostgreSQL server: migrations, stored
groups, concurrent openers and writers, and damaged files.

Tests that take ``catalog_url`` run on both databases (see ``tests/postgres.py``)."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from stasis.catalog import Catalog, GroupStore, catalog_url
from stasis.catalog.migrations import HEAD
from stasis.catalog.models import Base
from stasis.errors import CatalogError, GroupError, UsageError
from stasis.protection.consistency import GuestCommand, Hooks
from stasis.protection.groups import Group
from tests.clocks import ManualClock
from tests.conftest import BIN
from tests.postgres import PostgresServer


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))


@pytest.fixture
def store(catalog_url: str, clock: ManualClock) -> Iterator[GroupStore]:
    with Catalog.open(catalog_url, clock=clock) as c:
        yield GroupStore(c)


def execute(url: str, *statements: str) -> None:
    """Statements run on the database behind Stasis's back (one transaction)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    from sqlalchemy import inspect

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def tables(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))


def test_a_fresh_file_is_migrated_to_head(tmp_path: Path) -> None:
    path = tmp_path / "new" / "catalog.db"
    path.parent.mkdir()
    with Catalog.open(str(path)) as c:
        head = c.head()  # what Alembic reads from the shipped scripts
        assert c.revision() == head == HEAD
    schema = tables(path)
    assert {"alembic_version", "groups", "points", "jobs", "job_logs", "policies"} <= set(schema)
    assert "uq_groups_name" in schema["groups"]
    assert "ck_groups_consistency_level" in schema["groups"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # Opening again changes nothing (the schema is not re-created).
    with Catalog.open(str(path)) as c:
        assert c.revision() == head
    assert tables(path) == schema


def test_a_new_postgresql_database_is_migrated_to_head(postgres: PostgresServer) -> None:
    name = postgres.new_database()
    try:
        # postgresql:// names no driver: the one Stasis ships with (psycopg 3) is used.
        url = postgres.url(name).replace("postgresql+psycopg://", "postgresql://")
        with Catalog.open(url) as c:
            assert c.engine.url.drivername == "postgresql+psycopg"
            assert c.revision() == c.head() == HEAD
        assert {"alembic_version", "groups", "points", "jobs", "job_logs", "policies",
                "services"} <= table_names(postgres.url(name))
        checks = postgres.psql("SELECT conname FROM pg_constraint WHERE contype = 'c' "
                               "ORDER BY conname", database=name).split()
        assert "ck_groups_consistency_level" in checks and "ck_jobs_state" in checks
        kinds = postgres.psql("SELECT data_type FROM information_schema.columns WHERE "
                              "table_name = 'jobs' AND column_name = 'queued'", database=name)
        assert kinds == "timestamp with time zone"
        with Catalog.open(url) as c:  # opening again changes nothing
            assert c.revision() == HEAD
    finally:
        postgres.drop_database(name)


def test_commands_opening_a_new_catalog_at_once_do_not_race(catalog_url: str) -> None:
    """Six openers of a new catalog at once (each its own engine, as six processes or
    hosts would be): one migrates, the others wait for it (SQLite: the lock file;
    PostgreSQL: the advisory lock) and find the schema there."""
    barrier = threading.Barrier(6)

    def open_and_write(i: int) -> str | None:
        barrier.wait()
        with Catalog.open(catalog_url) as c:
            GroupStore(c).create(Group(f"g{i}", members=["a"]))
            return c.revision()

    with ThreadPoolExecutor(6) as pool:
        revisions = list(pool.map(open_and_write, range(6)))
    assert revisions == [HEAD] * 6
    with Catalog.open(catalog_url) as c:
        assert [s.name for s in GroupStore(c).list()] == [f"g{i}" for i in range(6)]


def test_processes_opening_a_new_postgresql_catalog_at_once_do_not_race(
        postgres: PostgresServer, tmp_path: Path) -> None:
    """As several hosts starting at once: separate stasis processes, one new database."""
    name = postgres.new_database()
    try:
        env = {"PATH": "/usr/bin:/bin", "STASIS_CATALOG": postgres.url(name),
               "STASIS_STATE_DIR": str(tmp_path / "state")}
        procs = [subprocess.Popen([str(BIN), "jobs", "--json"], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(5)]
        outcomes = [(p.wait(120), *p.communicate()) for p in procs]
        assert [(code, out.strip()) for code, out, _ in outcomes] == [(0, "[]")] * 5, outcomes
        assert postgres.psql("SELECT version_num FROM alembic_version", database=name) == HEAD
    finally:
        postgres.drop_database(name)


def test_writers_that_read_first_wait_for_each_other(catalog_url: str) -> None:
    """Eight edits of one group at once, each reading the members and adding one:
    writers one at a time (SQLite: BEGIN IMMEDIATE; PostgreSQL: the write lock) lose
    none of them, where PostgreSQL's READ COMMITTED alone would."""
    with Catalog.open(catalog_url) as c:
        GroupStore(c).create(Group("shop", members=["db"]))
    barrier = threading.Barrier(8)

    def add(i: int) -> None:
        with Catalog.open(catalog_url) as c:
            store = GroupStore(c)

            def change(g: Group) -> Group:
                time.sleep(0.05)  # between the read and the write: where the others run
                g.members.append(f"vm{i}")
                return g

            barrier.wait()
            store.update("shop", change)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(8)))
    with Catalog.open(catalog_url) as c:
        members = GroupStore(c).must_get("shop").group.members
    assert sorted(members) == sorted(["db"] + [f"vm{i}" for i in range(8)])


def test_the_migrations_build_exactly_the_models(catalog_url: str) -> None:
    """The schema the migrations make is the one the models describe, on each
    database: a model changed without its migration fails here."""
    with Catalog.open(catalog_url) as c, c.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_times_are_aware_utc_on_every_database(catalog_url: str) -> None:
    from zoneinfo import ZoneInfo

    berlin = datetime(2025, 3, 30, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # just past DST
    with Catalog.open(catalog_url, clock=ManualClock(berlin)) as c:
        GroupStore(c).create(Group("g", members=["a"]))
    with Catalog.open(catalog_url) as c:
        created = GroupStore(c).must_get("g").created
    assert created == berlin and created.tzinfo == UTC
    assert created.isoformat() == "2025-03-30T01:30:00+00:00"


def test_default_location_and_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"  # STASIS_STATE_DIR of the autouse fixture
    monkeypatch.delenv("STASIS_CATALOG", raising=False)
    assert catalog_url() == f"sqlite:///{state}/catalog.db"
    with Catalog.open() as c:
        GroupStore(c).create(Group("g", members=["a"]))
    assert (state / "catalog.db").is_file()
    elsewhere = tmp_path / "other.db"
    monkeypatch.setenv("STASIS_CATALOG", f"sqlite:///{elsewhere}")
    with Catalog.open() as c:
        assert GroupStore(c).list() == []
    assert elsewhere.is_file()
    assert catalog_url("rel.db") == f"sqlite:///{Path('rel.db').absolute()}"
    assert catalog_url("postgresql://u:secret@db/stasis") == "postgresql://u:secret@db/stasis"


def test_create_list_edit_delete(store: GroupStore, clock: ManualClock) -> None:
    hooks = Hooks(pre_host=["/usr/local/bin/flush"], post_guest=[GuestCommand("db", "sync")],
                  timeout_s=12.5)
    created = store.create(Group("shop", members=["db", "web"], name_globs=["worker-*"],
                                 labels={"app": "shop", "tier": "back"},
                                 consistency="application", require="filesystem",
                                 hooks=hooks, description="the shop"))
    assert created.created == created.updated == clock.now()
    store.create(Group("alpha", labels={"app": "alpha"}))
    assert [s.name for s in store.list()] == ["alpha", "shop"]
    # A new catalog object on the same file reads back exactly what was stored.
    again = GroupStore(Catalog.open(store.catalog.url.render_as_string(hide_password=False)))
    shop = again.must_get("shop")
    assert shop.group == created.group and shop.group.hooks == hooks
    assert shop.created == clock.now() and shop.created.tzinfo is not None
    assert shop.to_dict()["hooks"]["post_guest"] == [{"vm": "db", "command": "sync"}]

    clock.tick(seconds=60)

    def change(g: Group) -> Group:
        g.members.remove("web")
        g.members.append("cache")
        g.labels.pop("tier")
        g.require = None
        return g

    changed = store.update("shop", change)
    assert changed.group.members == ["db", "cache"] and changed.group.labels == {"app": "shop"}
    assert changed.group.require is None
    assert changed.created == created.created and changed.updated == clock.now()
    assert store.must_get("shop").group == changed.group
    clock.tick(seconds=60)
    same = store.update("shop", lambda g: g)
    assert same.updated == changed.updated  # nothing changed: not touched

    assert store.delete("alpha").name == "alpha"
    assert store.get("alpha") is None
    assert [s.name for s in store.list()] == ["shop"]


def test_refusals_change_nothing(store: GroupStore) -> None:
    store.create(Group("shop", members=["db"]))
    before = store.must_get("shop")
    with pytest.raises(GroupError, match="exists already") as e:
        store.create(Group("shop", members=["other"]))
    assert e.value.exit_code == 26 and "Nothing was changed" in str(e.value)
    for missing in (store.must_get, store.delete):
        with pytest.raises(GroupError, match="no group named 'nope'"):
            missing("nope")
    with pytest.raises(GroupError, match="no group named 'nope'"):
        store.update("nope", lambda g: g)

    def refuse(g: Group) -> Group:
        g.members.append("half-done")  # a change made, then refused: must not be written
        raise GroupError("refused")

    with pytest.raises(GroupError, match="refused"):
        store.update("shop", refuse)
    with pytest.raises(UsageError, match="not a consistency level"):
        store.update("shop", lambda g: Group(**{**g.__dict__, "consistency": "strong"}))
    with pytest.raises(UsageError, match="hooks run only at the application"):
        store.update("shop", lambda g: Group(**{**g.__dict__,
                                                "hooks": Hooks(pre_host=["true"])}))
    with pytest.raises(UsageError, match="not a group name"):
        store.create(Group("no spaces please", members=["a"]))
    with pytest.raises(UsageError, match="not a label key"):
        store.create(Group("lbl", labels={"bad key": "x"}))
    with pytest.raises(UsageError, match="named twice"):
        store.create(Group("dup", members=["a", "a"]))
    assert store.must_get("shop") == before
    assert [s.name for s in store.list()] == ["shop"]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_catalog_is_a_catalog_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "catalog.db"
    if damage == "garbage":
        path.write_bytes(b"this is not a database\n" * 200)
    else:
        with Catalog.open(str(path)) as c:
            GroupStore(c).create(Group("shop", members=["db"]))
        data = path.read_bytes()
        for side in tmp_path.glob("catalog.db-*"):
            side.unlink()  # the WAL was checkpointed at close
        path.write_bytes(b"\0" * 100 + data[100:])  # the header is gone
    before = path.read_bytes()
    with pytest.raises(CatalogError) as e:
        Catalog.open(str(path))
    assert e.value.exit_code == 27
    assert str(path) in str(e.value) and "Nothing was changed" in str(e.value)
    assert path.read_bytes() == before


def test_a_catalog_of_a_newer_stasis_is_refused(catalog_url: str) -> None:
    Catalog.open(catalog_url).close()
    execute(catalog_url, "UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(CatalogError, match="newer Stasis") as e:
        Catalog.open(catalog_url)
    assert e.value.exit_code == 27


def test_another_database_is_not_taken_over(catalog_url: str) -> None:
    execute(catalog_url, "CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    with pytest.raises(CatalogError, match=r"not a Stasis catalog.*customers"):
        Catalog.open(catalog_url)
    assert table_names(catalog_url) == {"customers"}


def test_an_unopenable_location_and_a_bad_url(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot be opened") as e:
        Catalog.open(str(tmp_path / "no" / "such" / "dir" / "catalog.db"))
    assert e.value.exit_code == 27
    with pytest.raises(CatalogError, match="not a catalog URL"):
        Catalog.open("not a url://x")
    with pytest.raises(CatalogError, match="cannot use the catalog"):
        Catalog.open("nosuchdb://host/x")


def test_a_postgresql_server_that_is_not_there(postgres: PostgresServer, tmp_path: Path) -> None:
    nobody = tmp_path / "no-server"
    nobody.mkdir()
    url = f"postgresql+psycopg://postgres@/stasis?host={nobody}"
    with pytest.raises(CatalogError, match="server is up") as e:
        Catalog.open(url)
    assert e.value.exit_code == 27 and "Nothing was changed" in e.value.message
    with pytest.raises(CatalogError, match="cannot be opened"):
        Catalog.open(postgres.url("no_such_database"))
    # The password never shows in a message.
    with pytest.raises(CatalogError) as e:
        Catalog.open(f"postgresql://postgres:s3cret@/stasis?host={nobody}")
    assert "s3cret" not in e.value.message


def test_a_catalog_at_the_head_is_opened_without_migrating(
        tmp_path: Path, catalog_template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One query of the revision, and neither Alembic's scripts nor an upgrade: those are
    for a catalog whose revision differs."""
    from tests.conftest import seed_catalog

    def never(*_args: object) -> None:
        raise AssertionError("migrations were looked at")

    path = seed_catalog(catalog_template, tmp_path / "c.db")
    monkeypatch.setattr(Catalog, "_upgrade", never)
    monkeypatch.setattr(Catalog, "_scripts", never)
    with Catalog.open(str(path)) as c:
        assert c.revision() == HEAD
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '0003_jobs_repo_id'")
    with pytest.raises(AssertionError, match="migrations were looked at"):
        Catalog.open(str(path))  # another revision: migrated
