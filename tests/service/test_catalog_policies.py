"""A service that runs the catalog's policies (no policy file) takes up a policy
added, changed or deleted there (as the REST API does) at its next tick."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from stasis.catalog import Catalog, JobStore, PolicyStore
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Repository
from stasis.service.runner import Service
from tests.clocks import ManualClock


def policy(name: str, schedule: str) -> str:
    return f'[[policy]]\nname = "{name}"\nvms = ["test"]\n{schedule}\n'


def test_catalog_policies_are_taken_up_at_the_next_tick(
        migrated_catalog_url: str, repo: Repository, tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC))
    with Catalog.open(migrated_catalog_url, clock=clock) as c:
        store = PolicyStore(c)
        store.create("hourly", policy("hourly", 'every = "1h"'))
        store.create("gold", policy("gold", 'every = "1m"'), template=True)
        s = Service(c, [], repositories={"main": lambda: repo},
                    connect=lambda: lv.connect("test:///default"), run_dir=tmp_path,
                    scratch_dir=tmp_path, policies_from_catalog=True)
        s.reload_policies()
        s.start()
        assert set(s.policies) == {"hourly"}  # a template is not run
        assert store.get("gold") is not None  # nor retired
        store.store("hourly", policy("hourly", 'cron = "*/5 * * * *"'))
        store.create("daily", policy("daily", 'every = "1d"'))
        s.tick()  # nothing is due yet: the tick only takes up the changes
        assert set(s.policies) == {"daily", "hourly"}
        assert s.policies["hourly"].schedule.describe().startswith("cron")
        state = store.get("hourly")
        assert state is not None and state.next_run == datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
        clock.tick(minutes=5)
        s.due()
        assert [j.policy for j in JobStore(c).list(state="queued")] == ["hourly"]
        store.delete("hourly")
        s.reload_policies()
        assert set(s.policies) == {"daily"}
        s.stop()
