"""The points of a repository: listed, or one in full."""

from __future__ import annotations

from collections.abc import Callable

from stasis.app.models import PointDetail, PointSummary
from stasis.repository import ObjectDamaged, Repository


def list_points(repo: Repository, *, name: str | None = None,
                on_damaged: Callable[[str, ObjectDamaged], None] | None = None,
                ) -> list[PointSummary]:
    """Every point (of ``name``), oldest first; a damaged manifest is told to
    ``on_damaged`` and left out."""
    points = repo.points(on_damaged=on_damaged)
    return [PointSummary.of(p) for p in points if name is None or p.name == name]


def show_point(repo: Repository, point: str) -> PointDetail:
    """One point (an id, a unique prefix or NAME@latest) in full."""
    return PointDetail.of(repo.resolve(point))
