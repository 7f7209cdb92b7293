"""Idempotency keys: what a POST that started work answered, by user and key.

A client that sends ``Idempotency-Key`` with a POST and sends it again (it did not
hear the answer) gets the same answer instead of a second job. A key is kept with a
digest of the request it came with, so that the same key with another request is
told apart (and refused by the API).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from stasis.catalog.db import Catalog
from stasis.catalog.models import IdempotencyRow
from stasis.errors import CatalogError


@dataclass(frozen=True)
class Remembered:
    """What a request with a key answered."""

    user: str
    key: str
    request: str  # sha256 of method, path and body
    status: int
    response: dict[str, Any]
    created: datetime


class IdempotencyStore:
    """The idempotency keys of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def get(self, user: str, key: str) -> Remembered | None:
        with self.catalog.session(write=False) as session:
            r = session.scalars(select(IdempotencyRow).where(
                IdempotencyRow.user == user, IdempotencyRow.key == key)).first()
            if r is None:
                return None
            return Remembered(r.user, r.key, r.request, r.status, dict(r.response),
                              r.created)

    def remember(self, user: str, key: str, request: str, status: int,
                 response: dict[str, Any]) -> Remembered:
        """Keep what ``key`` answered; when another request kept it first (a race of
        two requests with one key), what that one kept."""
        try:
            with self.catalog.session() as session:
                session.add(IdempotencyRow(user=user, key=key, request=request,
                                           status=status, response=dict(response),
                                           created=self.catalog.clock.now()))
        except CatalogError:  # the unique (user, key): kept by the other request
            found = self.get(user, key)
            if found is None:
                raise
            return found
        return Remembered(user, key, request, status, dict(response),
                          self.catalog.clock.now())
