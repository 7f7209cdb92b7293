"""The API in-process (FastAPI's TestClient over a real catalog and repository).

``api_ctx`` is the context a ``stasis serve`` would build: a migrated catalog with
the built-in roles, one served repository, the test libvirt URI, the catalog's own
accounts. ``client(role, tenant=None, user=None)`` gives a client that authenticates
as a new real user of ``role`` (bound to ``tenant`` when given, its row made if need
be) with a real token, through the same Authorization header a script sends
(``real_client`` is the same fixture).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stasis.api.app import create_app
from stasis.api.context import ApiContext
from stasis.app import accounts as acc
from stasis.app import passwords
from stasis.app.auth import Tenant
from stasis.catalog import Catalog
from stasis.repository import Repository
from stasis.service.runner import Service

TEST_URI = "test:///default"


# A user's password is hashed at the cost the documented setting asks for; tests ask
# for a cheap one, as a small host might.
CHEAP_PASSWORDS = "m=1024,t=1,p=1"
PASSWORD = b"a test password"


@pytest.fixture
def api_ctx(tmp_path: Path, repo: Repository, migrated_catalog_url: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiContext]:
    monkeypatch.setenv(passwords.COST_ENV, CHEAP_PASSWORDS)
    with Catalog.open(migrated_catalog_url) as c:
        acc.sync_roles(c)
        yield ApiContext(catalog=c, repositories={"main": repo}, default_repository="main",
                         connect=TEST_URI, authenticator=acc.CatalogAuthenticator(c))


@pytest.fixture
def real_ctx(api_ctx: ApiContext) -> ApiContext:
    """``api_ctx`` (it authenticates by the catalog's own accounts)."""
    return api_ctx


@pytest.fixture
def client(real_ctx: ApiContext) -> Iterator[Callable[..., TestClient]]:
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


@pytest.fixture
def real_client(client: Callable[..., TestClient]) -> Callable[..., TestClient]:
    return client


@contextmanager
def serving(api_ctx: ApiContext, service: Service, tick: float = 0.2) -> Iterator[Service]:
    """``service`` (``stasis serve``'s) running in a thread on the API's catalog and woken
    by the API, while the block runs."""
    service.start()
    api_ctx.wake = service.wake
    stop = threading.Event()
    t = threading.Thread(target=service.serve, args=(stop, tick), daemon=True)
    t.start()
    try:
        yield service
    finally:
        stop.set()
        t.join(60)
