"""The quick catalog (sqlite3 alone) writes the very rows the ORM writes, and is used
only on a SQLite file at the newest revision (anything else is Catalog.open's)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stasis.catalog import Catalog, JobStore, PointIndex
from stasis.catalog.quick import QuickCatalog, sqlite_file
from stasis.errors import CatalogError, UsageError
from stasis.repository import Manifest, Repository, VmRecord
from tests.clocks import ManualClock
from tests.conftest import seed_catalog

TABLES = ("jobs", "job_logs", "points", "repositories", "vms")


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}


def manifest(pid: str, *, uuid: str, parent: str | None = None) -> Manifest:
    return Manifest(id=pid, name="web", time="2026-01-02T03:04:05.000006+00:00", kind="vm",
                    parent=parent, tags={"env": "prod", "ü": "ß"},
                    vms=[VmRecord(name="web", kind="vm", uuid=uuid, consistency="crash"),
                         VmRecord(name="img", kind="images")])


def write_a_job(store: Any, add_point: Any, clock: ManualClock) -> None:
    """One job's life as a command records it: created running, logged, points, ended;
    and a queued job, a point indexed again, a VM whose UUID changed, then went unsaid."""
    job = store.create("backup", "web", vms=["web"], repo="r1", params={"op": "backup.vms"},
                       state="running", runner=("host", 42, 4242))
    clock.tick(microseconds=1500)
    store.log(job.id, "info", "started — with a dash")
    store.log(job.id, "critical", "an odd level is written as info")
    store.set_vms(job.id, ["web", "db"])
    add_point(manifest("a" * 32, uuid="u-1"))
    clock.tick(seconds=1)
    add_point(manifest("a" * 32, uuid="u-1"))  # again: merged, not doubled
    add_point(manifest("b" * 32, uuid="u-2", parent="a" * 32))
    add_point(manifest("c" * 32, uuid="", parent="b" * 32))  # no UUID: the last one kept
    store.finish(job.id, "failed", result={"web": {"point": "b" * 32, "error": None}},
                 error="db: no such VM", exit_code=3, bytes_read=10, bytes_written=5)
    store.create("verify", "all points", repo="r1", state="queued", runner=("h", 1, 1))


def test_the_rows_are_the_orms_rows(tmp_path: Path, catalog_template: Path,
                                    repo: Repository) -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    orm_path = seed_catalog(catalog_template, tmp_path / "orm.db")
    quick_path = seed_catalog(catalog_template, tmp_path / "quick.db")

    clock = ManualClock(start)
    with Catalog.open(str(orm_path), clock=clock) as c:
        write_a_job(JobStore(c), lambda m: PointIndex(c).add(repo, m), clock)
    clock = ManualClock(start)
    quick = QuickCatalog.open(str(quick_path), clock=clock)
    assert quick is not None
    with quick:
        write_a_job(quick, lambda m: quick.add_point(repo, m), clock)

    written = rows(quick_path)
    assert written == rows(orm_path)
    assert len(written["jobs"]) == 2 and len(written["job_logs"]) == 2
    assert len(written["points"]) == 3 and len(written["vms"]) == 1
    assert written["vms"][0][1:3] == ("web", "u-2")
    # The services the ORM registered, as the quick catalog reads them.
    with Catalog.open(str(orm_path), clock=ManualClock(start)) as c:
        JobStore(c).register_service(("host", 7, 77), "r1")
        services = JobStore(c).services()
    quick = QuickCatalog.open(str(orm_path))
    assert quick is not None
    with quick:
        assert quick.services() == services and services[0].started == start
    # And what the ORM reads back of them is what it wrote itself.
    with Catalog.open(str(quick_path)) as c, Catalog.open(str(orm_path)) as o:
        assert [j.to_dict() for j in JobStore(c).list()] == [
            j.to_dict() for j in JobStore(o).list()]
        assert JobStore(c).list()[1].pid_start == 4242
        assert [p.to_dict() for p in PointIndex(c).list()] == [
            p.to_dict() for p in PointIndex(o).list()]


def test_it_refuses_what_the_orm_refuses(tmp_path: Path, catalog_template: Path) -> None:
    quick = QuickCatalog.open(str(seed_catalog(catalog_template, tmp_path / "c.db")))
    assert quick is not None
    with quick:
        with pytest.raises(UsageError):
            quick.create("dance", "x")
        job = quick.create("gc", "gc", state="running")
        with pytest.raises(UsageError):
            quick.finish(job.id, "running")
    # A database failure is a CatalogError naming the catalog (the job goes on unrecorded).
    quick = QuickCatalog.open(str(tmp_path / "c.db"))
    assert quick is not None
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("DROP TABLE job_logs")
    with quick, pytest.raises(CatalogError, match=r"c\.db failed"):
        quick.log(job.id, "info", "x")


def test_it_is_used_only_on_a_sqlite_file_at_the_newest_revision(
        tmp_path: Path, catalog_template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = seed_catalog(catalog_template, tmp_path / "c.db")
    for url in (str(path), f"sqlite:///{path}"):
        opened = QuickCatalog.open(url)
        assert opened is not None
        opened.close()
    monkeypatch.setenv("STASIS_CATALOG", str(path))
    opened = QuickCatalog.open(None)
    assert opened is not None and opened.shown == str(path)
    opened.close()

    assert QuickCatalog.open(str(tmp_path / "new.db")) is None  # made and migrated by the ORM
    assert not (tmp_path / "new.db").exists()
    assert QuickCatalog.open("postgresql://u@h/stasis") is None
    assert QuickCatalog.open("sqlite://") is None
    assert QuickCatalog.open(f"sqlite:///{path}?mode=ro") is None
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    assert QuickCatalog.open(str(tmp_path / "junk.db")) is None
    for revision in ("0003_jobs_repo_id", "9999_from_the_future"):  # migrate / refuse: ORM's
        older = seed_catalog(catalog_template, tmp_path / f"{revision}.db")
        with sqlite3.connect(older) as db:
            db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        assert QuickCatalog.open(str(older)) is None


def test_the_catalog_file_is_named_as_catalog_url_names_it(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from stasis.catalog import catalog_url

    monkeypatch.chdir(tmp_path)
    for value in (None, "rel.db", str(tmp_path / "abs.db"), "sqlite:///rel.db",
                  f"sqlite:////{tmp_path}/abs.db"):
        url = catalog_url(value)
        found = sqlite_file(value)
        assert found is not None
        assert url.removeprefix("sqlite:///") in (str(found), str(found).lstrip("/"))
        if value is not None and value.startswith("sqlite:"):
            assert url == value
