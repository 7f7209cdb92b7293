"""The fixed cost of a command: what it loads. Each test runs a Python process of its
own (this process has loaded everything already) and looks at its ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stasis.catalog import Catalog, JobStore, PointIndex
from stasis.repository import Repository
from tests.conftest import Cli, mixed_image

# Libraries no backup needs to load before it works (the catalog's ORM and migrations,
# the REST side, S3, file-level restore), and parts of Stasis it needs only later.
NEVER = ("sqlalchemy", "alembic", "fastapi", "uvicorn", "boto3", "botocore", "dissect",
         "psycopg", "stasis.catalog.db", "stasis.recovery")
NOT_YET = ("libvirt", "rich.progress", "stasis.protection", "stasis.service.runner")


def loaded(code: str, env: dict[str, str]) -> set[str]:
    """The modules loaded by ``code`` and by the time its process exits."""
    script = ("import atexit, json, sys\n"
              "atexit.register(lambda: sys.__stderr__.write('\\nMODULES ' + json.dumps("
              "sorted(sys.modules)) + '\\n'))\n" + code)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.startswith("MODULES ")][-1]
    return set(json.loads(line.removeprefix("MODULES ")))


def among(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".")
                                            for p in prefixes))


def test_resolving_backup_vm_loads_no_catalog_libvirt_or_progress_bars(cli: Cli) -> None:
    modules = loaded("from stasis.cli import main\n"
                     "group = main.COMMANDS['backup']('backup')\n"
                     "assert group.commands['vm'].name == 'vm'\n", cli.env)
    assert "stasis.cli.backup" in modules
    assert among(modules, NEVER + NOT_YET) == []


def test_a_recorded_backup_loads_no_orm_and_its_job_and_point_are_in_the_catalog(
        cli_repo: Cli, tmp_path: Path) -> None:
    image = mixed_image(tmp_path / "d.raw", size=2 << 20)
    modules = loaded("import sys\n"
                     f"sys.argv = ['stasis', 'backup', 'image', {str(image)!r}, '--name', 'd']\n"
                     "from stasis.cli.main import run\n"
                     "run()\n", cli_repo.env)
    assert "stasis.catalog.quick" in modules  # the job was recorded ...
    assert among(modules, NEVER) == []  # ... without SQLAlchemy
    catalog = Path(cli_repo.env["STASIS_STATE_DIR"]) / "catalog.db"
    with Catalog.open(str(catalog)) as c:
        [job] = JobStore(c).list()
        [point] = PointIndex(c).list()
        log = [line.text for line in JobStore(c).logs(job.id)]
    assert (job.kind, job.name, job.state, job.exit_code) == ("backup", "d", "succeeded", None)
    assert job.result["d"]["point"] == point.id and point.name == "d"
    assert job.started is not None and job.ended is not None and job.pid is not None
    assert any("committed" in text for text in log) and log[-1] == "backup d succeeded"


def test_queueing_for_the_service_loads_no_orm(cli_repo: Cli) -> None:
    from stasis.service.jobs import this_runner

    catalog = Path(cli_repo.env["STASIS_STATE_DIR"]) / "catalog.db"
    with Catalog.open(str(catalog)) as c:  # a live service: this test's process
        JobStore(c).register_service(this_runner(), None)
    modules = loaded("import sys\n"
                     "sys.argv = ['stasis', 'backup', 'vm', 'web', '--queue', '--json']\n"
                     "from stasis.cli.main import run\n"
                     "run()\n", cli_repo.env)
    assert among(modules, NEVER) == []
    with Catalog.open(str(catalog)) as c:
        [job] = JobStore(c).list()
        log = [line.text for line in JobStore(c).logs(job.id)]
    assert (job.kind, job.name, job.state, job.params["vms"]) == ("backup", "web", "queued",
                                                                  ["web"])
    assert log == ["queued by 'stasis backup vm'"]


# ------------------------------------------------------------------ the early opener


def test_the_early_opener_derives_the_key_in_a_thread_and_raises_at_its_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stasis.cli import common
    from stasis.errors import WrongPassphrase
    from tests.conftest import PASSPHRASE, init_repo

    made = init_repo(tmp_path / "r")
    opened_in: list[str] = []
    real_open = Repository.open

    def open_recorded(*args: Any, **kw: Any) -> Repository:
        opened_in.append(threading.current_thread().name)
        return real_open(*args, **kw)

    monkeypatch.setattr(Repository, "open", open_recorded)
    monkeypatch.setenv("STASIS_PASSPHRASE", PASSPHRASE)
    opener = common.repo_opener(str(tmp_path / "r"), None, None)
    first = opener()
    assert first.id == made.id and opened_in == ["open-repo"]
    assert opener() is not first and opened_in[-1] == threading.current_thread().name

    # A failure is raised by the call, not when the opener is made.
    monkeypatch.setenv("STASIS_PASSPHRASE", "wrong")
    opener = common.repo_opener(str(tmp_path / "r"), None, None)
    with pytest.raises(WrongPassphrase):
        opener()


def test_the_early_opener_asks_for_a_passphrase_only_when_called_and_in_its_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stasis.cli import common
    from tests.conftest import PASSPHRASE, init_repo

    init_repo(tmp_path / "r")
    asked_in: list[str] = []

    def prompt() -> bytes:
        asked_in.append(threading.current_thread().name)
        return PASSPHRASE.encode()

    monkeypatch.setattr(common, "_prompt_once", prompt)
    opener = common.repo_opener(str(tmp_path / "r"), None, None)  # no passphrase given
    time.sleep(0.2)  # whatever the thread would do, it has had time to
    assert asked_in == []
    assert opener().url and asked_in == [threading.current_thread().name]
