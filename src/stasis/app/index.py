"""The catalog's index of points: rebuilt from a repository, and listed.

Rebuilding makes the index of a repository's points again from its manifests alone
(at a disaster-recovery site the repository is all there is); a damaged manifest is
told to ``on_damaged`` and not indexed. The repository's drill proofs (those of its own
drills and those a copy brought) become the catalog's newest drills where it knows no
newer one. Listing reads the index only: with a
repository, its config is read for its id, and no key is needed.
"""

from __future__ import annotations

from collections.abc import Callable

from stasis.app.models import CatalogRebuilt, IndexedPointModel
from stasis.backends import open_backend
from stasis.repository import Repository

RepoOpener = Callable[[], Repository]
OnDamaged = Callable[[str, Exception], None]


def rebuild_index(open_repo: RepoOpener, *, catalog: str | None,
                  on_damaged: OnDamaged | None = None) -> CatalogRebuilt:
    """Replace the catalog's index of the repository's points with its manifests, and
    learn its drill proofs."""
    from stasis.catalog import Catalog, DrillStore, PointIndex

    r = open_repo()
    damaged: list[str] = []

    def damaged_one(pid: str, e: Exception) -> None:
        damaged.append(pid)
        if on_damaged is not None:
            on_damaged(pid, e)

    with Catalog.open(catalog) as c:
        count = PointIndex(c).rebuild(r, on_damaged=damaged_one)
        bad: list[str] = []
        drills = DrillStore(c).learn(r, on_damaged=lambda name, _e: bad.append(
            f"drills/{name}"))
        shown = c.shown
    result = CatalogRebuilt(repository=r.id, url=r.url, points=count, damaged=damaged,
                            drills=drills, damaged_drills=bad)
    result._catalog = shown
    return result


def indexed_points(*, catalog: str | None, location: str | None = None,
                   name: str | None = None, vm: str | None = None) -> list[IndexedPointModel]:
    """The indexed points (of the repository at ``location``, of ``name``, holding
    ``vm``), oldest first."""
    from stasis.catalog import Catalog, PointIndex

    repo_id = (str(Repository.read_config(open_backend(location))["id"])
               if location is not None else None)
    with Catalog.open(catalog) as c:
        found = PointIndex(c).list(repo_id, name=name, vm=vm)
    return [IndexedPointModel.model_validate(p.to_dict()) for p in found]
