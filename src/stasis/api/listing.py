"""Listings: cursor pagination, sorting and the page every list route answers.

Every list route takes ``limit`` (1-1000, default 100), ``cursor`` (opaque: the
``next`` of the previous page) and ``sort`` (a field name, ``-`` first for
descending, among those the route offers), and answers a :class:`Page`: its items
and the cursor of the next page (None on the last). A cursor names the last item
seen by its sort key and id, not by a position, so a page is right even when items
were added or removed meanwhile. Filters are each route's own typed query
parameters.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from stasis.errors import UsageError

T = TypeVar("T")
MAX_LIMIT = 1000


class Page(BaseModel, Generic[T]):
    """One page of a listing; ``next`` is the cursor of the following page."""

    items: list[T]
    next: str | None = None


@dataclass(frozen=True)
class ListQuery:
    limit: int
    cursor: str | None
    sort: str | None


def list_query(
    limit: int = Query(100, ge=1, le=MAX_LIMIT, description="items per page"),
    cursor: str | None = Query(None, description="the `next` of the previous page"),
    sort: str | None = Query(None, description="a field to sort by; `-field` for "
                                               "descending"),
) -> ListQuery:
    """The dependency of list routes: ``q: ListQuery = Depends(list_query)``."""
    return ListQuery(limit, cursor, sort)


def _key(v: Any) -> list[Any]:
    if v is None:
        return [0, ""]
    if isinstance(v, datetime):
        return [1, v.isoformat()]
    if isinstance(v, bool):
        return [1, int(v)]
    return [1, v]


def _encode(sort: str, key: list[Any], ident: Any) -> str:
    raw = json.dumps([sort, key, ident], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, sort: str) -> tuple[list[Any], Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got_sort, key, ident = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise UsageError("the cursor is not one this server gave: pass the 'next' of "
                         "the previous page, unchanged.") from None
    if got_sort != sort or not isinstance(key, list):
        raise UsageError(f"the cursor belongs to a listing sorted by {got_sort!r}, not by "
                         f"{sort!r}: start again without a cursor.")
    return key, ident


def paginate(items: Sequence[T], q: ListQuery, *, sorts: Mapping[str, Callable[[T], Any]],
             default: str, ident: Callable[[T], Any]) -> Page[T]:
    """A page of ``items`` sorted as ``q`` asks: ``sorts`` maps each sortable field to
    its value in an item, ``default`` is the sort when none is asked (``-`` allowed),
    ``ident`` gives an item's unique id (the tie-breaker)."""
    sort = q.sort or default
    field = sort.removeprefix("-")
    if field not in sorts:
        raise UsageError(f"cannot sort by {field!r}: one of {', '.join(sorted(sorts))}, "
                         "with '-' first for descending.")
    desc = sort.startswith("-")
    of = sorts[field]

    def full(item: T) -> tuple[list[Any], Any]:
        return _key(of(item)), ident(item)

    ordered = sorted(items, key=full, reverse=desc)
    if q.cursor is not None:
        key, last = _decode(q.cursor, sort)
        after = (key, last)
        ordered = [i for i in ordered if (full(i) < after if desc else full(i) > after)]
    page = ordered[:q.limit]
    more = len(ordered) > q.limit
    nxt = _encode(sort, *full(page[-1])) if more and page else None
    return Page[T](items=page, next=nxt)
