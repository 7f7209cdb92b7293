"""The catalog an operation works on: one already open (the server's), or one opened
for the operation by its URL (a CLI command's)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stasis.catalog import Catalog



@contextmanager
def using(catalog: str | Catalog | None) -> Iterator[Catalog]:
    """``catalog`` itself when it is open (and left open), else the catalog at that URL,
    opened for the block and closed after it."""
    from stasis.catalog import Catalog

    if isinstance(catalog, Catalog):
        yield catalog
        return
    with Catalog.open(catalog) as c:
        yield c
