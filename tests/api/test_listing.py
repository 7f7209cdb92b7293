"""Cursor pagination: every item once across pages, in order, stable under changes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from stasis.api.listing import ListQuery, paginate
from stasis.errors import UsageError


@dataclass
class Item:
    id: int
    name: str
    size: int | None


SORTS = {"name": lambda i: i.name, "size": lambda i: i.size}


def walk(items: list[Item], sort: str | None, limit: int) -> list[int]:
    seen: list[int] = []
    cursor = None
    while True:
        page = paginate(items, ListQuery(limit, cursor, sort), sorts=SORTS, default="name",
                        ident=lambda i: i.id)
        seen += [i.id for i in page.items]
        if page.next is None:
            return seen
        cursor = page.next


@pytest.mark.parametrize("sort", [None, "name", "-name", "size", "-size"])
@pytest.mark.parametrize("limit", [1, 3, 100])
def test_pages_cover_every_item_once_in_order(sort: str | None, limit: int) -> None:
    items = [Item(i, f"vm{i % 4}", None if i % 5 == 0 else i % 3) for i in range(17)]
    got = walk(items, sort, limit)
    assert sorted(got) == list(range(17))
    field = (sort or "name").removeprefix("-")
    expect = sorted(items, key=lambda i: ((getattr(i, field) is not None,
                                           getattr(i, field) or 0), i.id),
                    reverse=bool(sort and sort.startswith("-")))
    if field == "name":
        expect = sorted(items, key=lambda i: (i.name, i.id),
                        reverse=bool(sort and sort.startswith("-")))
    assert got == [i.id for i in expect]


def test_an_item_added_meanwhile_does_not_shift_a_page() -> None:
    items = [Item(i, f"vm{i:02d}", 0) for i in range(6)]
    first = paginate(items, ListQuery(3, None, None), sorts=SORTS, default="name",
                     ident=lambda i: i.id)
    items.insert(0, Item(99, "vm00a", 0))  # sorts before the cursor: not seen again
    rest = paginate(items, ListQuery(3, first.next, None), sorts=SORTS, default="name",
                    ident=lambda i: i.id)
    assert [i.id for i in first.items] == [0, 1, 2]
    assert [i.id for i in rest.items] == [3, 4, 5] and rest.next is None


def test_bad_sorts_and_cursors_are_usage_errors() -> None:
    items = [Item(1, "a", 1)]
    with pytest.raises(UsageError, match="cannot sort by 'color'"):
        paginate(items, ListQuery(10, None, "color"), sorts=SORTS, default="name",
                 ident=lambda i: i.id)
    with pytest.raises(UsageError, match="not one this server gave"):
        paginate(items, ListQuery(10, "%%%", None), sorts=SORTS, default="name",
                 ident=lambda i: i.id)
    other = paginate([Item(i, "a", i) for i in range(3)], ListQuery(1, None, "size"),
                     sorts=SORTS, default="name", ident=lambda i: i.id).next
    assert other is not None
    with pytest.raises(UsageError, match="sorted by 'size'"):
        paginate(items, ListQuery(10, other, "name"), sorts=SORTS, default="name",
                 ident=lambda i: i.id)
