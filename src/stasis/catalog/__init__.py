"""The catalog: the service layer's SQL index of Stasis's state.

SQLite embedded (``<state dir>/catalog.db``) on one host, any SQLAlchemy URL (such
as PostgreSQL) when several hosts share it. The schema is kept by Alembic
migrations shipped in this package and applied when a catalog is opened, so a
catalog file made by an older Stasis is brought up to date and one made by a newer
Stasis is refused rather than misread.

It holds the stored groups, the index of each repository's points, job history
with its logs, the policies the service runs and when. Everything in it but job
history and the definitions typed into it (groups, policies) can be rebuilt from
the repository.

- :mod:`stasis.catalog.db`: opening a catalog (URL, engine, sessions, migrations);
- :mod:`stasis.catalog.models`: the tables, one model each;
- :mod:`stasis.catalog.groups`: stored groups, read and written;
- :mod:`stasis.catalog.points`: the points index, rebuilt from a repository;
- :mod:`stasis.catalog.jobs`: jobs, their log lines, the running services;
- :mod:`stasis.catalog.policies`: the policies' sources and schedule state;
- :mod:`stasis.catalog.drills`: the newest recovery drill of each VM and group.

The names below are loaded from their module when first used, so that recording a
job does not load the stores it does not use (groups load protection's groups).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stasis.catalog.db import Catalog, catalog_url
    from stasis.catalog.drills import DrillRecord, DrillStore
    from stasis.catalog.groups import GroupStore, StoredGroup
    from stasis.catalog.jobs import Job, JobStore, LogLine
    from stasis.catalog.points import IndexedPoint, PointIndex
    from stasis.catalog.policies import PolicyState, PolicyStore

_MODULES = {
    "Catalog": "db", "catalog_url": "db", "GroupStore": "groups", "StoredGroup": "groups",
    "Job": "jobs", "JobStore": "jobs", "LogLine": "jobs", "IndexedPoint": "points",
    "PointIndex": "points", "PolicyState": "policies", "PolicyStore": "policies",
    "DrillRecord": "drills", "DrillStore": "drills",
}

__all__ = ["Catalog", "DrillRecord", "DrillStore", "GroupStore", "IndexedPoint", "Job",
           "JobStore", "LogLine", "PointIndex", "PolicyState", "PolicyStore", "StoredGroup",
           "catalog_url"]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'stasis.catalog' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stasis.catalog.{module}"), name)
