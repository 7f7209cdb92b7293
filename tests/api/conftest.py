"""The API in-process (FastAPI's TestClient over a real catalog and repository).

``api_ctx`` is the context a ``stasis serve`` would build: a migrated catalog, one
served repository, the test libvirt URI. ``client(role, tenant=None)`` gives a client
that authenticates as a user of ``role`` (bound to ``tenant`` when given), through
the same Authorization header a script sends. ``real_client(role, tenant=None)`` does
the same through the catalog's real accounts (a user, its tenant's row, a token made by
:mod:`stasis.app.accounts`, checked by a :class:`CatalogAuthenticator`).
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
from stasis.app import accounts as acc
from stasis.app import passwords
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


# A user's password is hashed at the cost the documented setting asks for; tests ask
# for a cheap one, as a small host might.
CHEAP_PASSWORDS = "m=1024,t=1,p=1"
PASSWORD = b"a test password"


@pytest.fixture
def real_ctx(api_ctx: ApiContext, monkeypatch: pytest.MonkeyPatch) -> ApiContext:
    """``api_ctx`` authenticating by the catalog's own accounts."""
    monkeypatch.setenv(passwords.COST_ENV, CHEAP_PASSWORDS)
    api_ctx.authenticator = acc.CatalogAuthenticator(api_ctx.catalog)
    return api_ctx


@pytest.fixture
def real_client(real_ctx: ApiContext) -> Iterator[Callable[..., TestClient]]:
    """``real_client(role="admin", tenant=None, user=None)``: a client with a real
    token of a new user of ``role`` (bound to ``tenant``, a :class:`Tenant` whose row is
    made if need be); ``real_client(None)`` sends no credentials."""
    app = create_app(real_ctx)
    made: list[TestClient] = []
    count = [0]

    def make(role: str | None = "admin", tenant: Tenant | None = None,
             user: str | None = None) -> TestClient:
        c = TestClient(app, raise_server_exceptions=False)
        if role is not None:
            catalog = real_ctx.catalog
            if tenant is not None and tenant.name not in {
                    t.name for t in acc.list_tenants(catalog)}:
                acc.add_tenant(catalog, tenant.name, vms=sorted(tenant.vms),
                               labels=dict(tenant.labels),
                               restore_pools=tenant.restore_pools,
                               restore_networks=tenant.restore_networks,
                               restore_dirs=tenant.restore_dirs)
            count[0] += 1
            name = user or f"{role}-{count[0]}"
            acc.add_user(catalog, name, role=role, password=PASSWORD,
                         tenant=None if tenant is None else tenant.name)
            secret = acc.create_token(catalog, name, "test").secret
            c.headers["Authorization"] = f"Bearer {secret}"
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
