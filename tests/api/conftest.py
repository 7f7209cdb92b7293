"""The API in-process (FastAPI's TestClient over a real catalog and repository).

``api_ctx`` is the context a ``stasis serve`` would build: a migrated catalog, one
served repository, the test libvirt URI. ``client(role, tenant=None)`` gives a client
that authenticates as a user of ``role`` (bound to ``tenant`` when given), through
the same Authorization header a script sends.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stasis.api.app import create_app
from stasis.api.context import ApiContext
from stasis.app.auth import BUILTIN_ROLES, Principal, Tenant
from stasis.catalog import Catalog
from stasis.errors import NotAuthenticated
from stasis.repository import Repository

TEST_URI = "test:///default"


@dataclass
class Accounts:
    """The principals that tokens stand for (replaced by the catalog's own accounts
    when those are built: the fixtures below keep their shape)."""

    tokens: dict[str, Principal] = field(default_factory=dict)

    def add(self, role: str, tenant: Tenant | None = None, user: str | None = None) -> str:
        secret = "stasis_" + secrets.token_urlsafe(24)
        name = user or f"{role}-{len(self.tokens)}"
        self.tokens[secret] = Principal(user=name, role=role,
                                        permissions=BUILTIN_ROLES[role][1], tenant=tenant,
                                        token=len(self.tokens) + 1)
        return secret

    def by_token(self, secret: str, *, address: str | None) -> Principal:
        try:
            return self.tokens[secret]
        except KeyError:
            raise NotAuthenticated("the token is unknown, expired or revoked.") from None

    def by_session(self, cookie: str, *, address: str | None) -> Principal:
        raise NotAuthenticated("the session is unknown or expired.")


@pytest.fixture
def accounts() -> Accounts:
    return Accounts()


@pytest.fixture
def api_ctx(tmp_path: Path, repo: Repository, migrated_catalog_url: str,
            accounts: Accounts) -> Iterator[ApiContext]:
    with Catalog.open(migrated_catalog_url) as c:
        yield ApiContext(catalog=c, repositories={"main": repo}, default_repository="main",
                         connect=TEST_URI, authenticator=accounts)


@pytest.fixture
def client(api_ctx: ApiContext, accounts: Accounts) -> Iterator[Callable[..., TestClient]]:
    app = create_app(api_ctx)
    made: list[TestClient] = []

    def make(role: str | None = "admin", tenant: Tenant | None = None) -> TestClient:
        c = TestClient(app, raise_server_exceptions=False)
        if role is not None:
            c.headers["Authorization"] = f"Bearer {accounts.add(role, tenant)}"
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
