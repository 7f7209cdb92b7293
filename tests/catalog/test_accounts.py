"""The server's accounts over a real catalog: users, passwords, sign-in and its rate
limit, sessions, tokens (shown once, stored hashed, never more than their user),
tenants, roles, and the audit lines they write."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from stasis.app import accounts as acc
from stasis.app import passwords
from stasis.app.auth import BUILTIN_ROLES, PERMISSIONS
from stasis.catalog import Catalog
from stasis.catalog.audit import AuditLog
from stasis.errors import (
    AccountError,
    AccountNotFound,
    NotAuthenticated,
    PermissionDenied,
    TooManyAttempts,
    UsageError,
)
from tests.clocks import ManualClock

PASSWORD = b"correct horse battery"


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    # The documented setting, lowered as on a small host (see stasis.app.passwords).
    monkeypatch.setenv(passwords.COST_ENV, "m=1024,t=1,p=1")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def catalog(migrated_catalog_url: str, clock: ManualClock) -> Iterator[Catalog]:
    with Catalog.open(migrated_catalog_url, clock=clock) as c:
        acc.sync_roles(c)
        yield c


def actions(c: Catalog) -> list[tuple[str, str, str | None]]:
    return [(e.action, e.result, e.user) for e in reversed(AuditLog(c).list(limit=1000))]


def test_password_hashes_carry_their_cost_and_are_rehashed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = passwords.hash_password(b"s3cret-pass")
    assert encoded.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert passwords.verify_password(b"s3cret-pass", encoded)
    assert not passwords.verify_password(b"s3cret-pasS", encoded)
    assert not passwords.verify_password(b"s3cret-pass", None)  # the decoy
    assert not passwords.needs_rehash(encoded)
    monkeypatch.setenv(passwords.COST_ENV, "m=2048,t=1,p=1")
    assert passwords.needs_rehash(encoded)
    assert passwords.verify_password(b"s3cret-pass", encoded)  # its own cost
    monkeypatch.delenv(passwords.COST_ENV)
    assert passwords.current_cost() == passwords.Cost(65536, 3, 2)
    monkeypatch.setenv(passwords.COST_ENV, "m=lots")
    with pytest.raises(UsageError, match="m=KIB"):
        passwords.current_cost()


def test_builtin_roles_are_synced_and_custom_ones_are_data(catalog: Catalog) -> None:
    names = {r.name: r for r in acc.list_roles(catalog)}
    assert set(BUILTIN_ROLES) <= set(names)
    assert set(names["admin"].permissions) == set(PERMISSIONS) and names["admin"].builtin
    made = acc.add_role(catalog, "reader", ["points:read", "vms:read"], description="reads")
    assert made.permissions == ["points:read", "vms:read"] and not made.builtin
    with pytest.raises(UsageError, match="unknown permission"):
        acc.add_role(catalog, "bad", ["points:read", "points:steal"])
    with pytest.raises(AccountError, match="exists already"):
        acc.add_role(catalog, "reader", ["vms:read"])
    with pytest.raises(AccountError, match="built-in"):
        acc.remove_role(catalog, "admin")
    acc.add_user(catalog, "rita", role="reader", password=PASSWORD)
    with pytest.raises(AccountError, match="in use"):
        acc.remove_role(catalog, "reader")
    acc.remove_user(catalog, "rita")
    assert acc.remove_role(catalog, "reader").name == "reader"
    assert "reader" not in {r.name for r in acc.list_roles(catalog)}


def test_users_are_added_listed_changed_and_removed(catalog: Catalog) -> None:
    acc.add_tenant(catalog, "acme", vms=["web1"], labels=["owner=acme"],
                   restore_pools=["acme-pool"], restore_dirs=["/srv/acme"])
    made = acc.add_user(catalog, "ann", role="restore", tenant="acme", password=PASSWORD)
    assert (made.name, made.role, made.tenant, made.disabled) == ("ann", "restore", "acme",
                                                                  False)
    with pytest.raises(AccountError, match="exists already"):
        acc.add_user(catalog, "ann", role="viewer", password=PASSWORD)
    with pytest.raises(AccountNotFound, match="no role"):
        acc.add_user(catalog, "bob", role="superuser", password=PASSWORD)
    with pytest.raises(AccountNotFound, match="no tenant"):
        acc.add_user(catalog, "bob", role="viewer", tenant="nobody", password=PASSWORD)
    with pytest.raises(UsageError, match="shorter than 8"):
        acc.add_user(catalog, "bob", role="viewer", password=b"short")
    with pytest.raises(UsageError, match="not a valid user name"):
        acc.add_user(catalog, "bob smith", role="viewer", password=PASSWORD)
    assert [u.name for u in acc.list_users(catalog)] == ["ann"]
    assert acc.edit_user(catalog, "ann", role="viewer", tenant=None).tenant is None
    assert acc.set_disabled(catalog, "ann").disabled
    with pytest.raises(AccountError, match="users"):
        acc.add_user(catalog, "carl", role="viewer", tenant="acme", password=PASSWORD)
        acc.remove_tenant(catalog, "acme")
    acc.remove_user(catalog, "ann")
    assert [u.name for u in acc.list_users(catalog)] == ["carl"]
    # the password hash is never in a model
    assert "password" not in acc.show_user(catalog, "carl").to_json()


def test_sign_in_wrong_password_and_unknown_user_answer_alike(catalog: Catalog) -> None:
    acc.add_user(catalog, "ann", role="operator", password=PASSWORD)
    signed = acc.sign_in(catalog, "ann", PASSWORD, "10.0.0.1")
    assert signed.principal.user == "ann" and signed.principal.session is not None
    assert signed.principal.permissions == BUILTIN_ROLES["operator"][1]
    answers = []
    for user, password in (("ann", b"wrong password"), ("nobody", PASSWORD)):
        with pytest.raises(NotAuthenticated) as e:
            acc.sign_in(catalog, user, password, "10.0.0.1")
        answers.append((e.value.message, e.value.hint, e.value.exit_code))
    assert answers[0] == answers[1]
    acc.set_disabled(catalog, "ann")
    with pytest.raises(NotAuthenticated) as disabled:
        acc.sign_in(catalog, "ann", PASSWORD, "10.0.0.1")
    assert disabled.value.message == answers[0][0]
    assert actions(catalog)[-4:] == [("login", "failed", "ann"), ("login", "failed", "nobody"),
                                     ("user.edit", "ok", "(host)"),
                                     ("login", "failed", "ann")]


def test_sign_in_rate_limit_per_user_and_address_reset_by_a_success(
        catalog: Catalog, clock: ManualClock) -> None:
    acc.add_user(catalog, "ann", role="viewer", password=PASSWORD)
    for _ in range(acc.MAX_FAILURES - 1):
        with pytest.raises(NotAuthenticated):
            acc.sign_in(catalog, "ann", b"guessing-1", "10.0.0.1")
    acc.sign_in(catalog, "ann", PASSWORD, "10.0.0.1")  # resets the count
    for _ in range(acc.MAX_FAILURES):
        clock.tick(seconds=10)
        with pytest.raises(NotAuthenticated):
            acc.sign_in(catalog, "ann", b"guessing-2", f"10.0.1.{_}")
    with pytest.raises(TooManyAttempts) as limited:
        acc.sign_in(catalog, "ann", PASSWORD, "10.0.0.9")  # even the right password
    assert limited.value.exit_code == 62
    wait = limited.value.kwargs["retry_after"]
    assert 0 < wait <= acc.FAILURE_WINDOW.total_seconds()
    # another user from another address is not limited; the same address is, by address
    acc.add_user(catalog, "bob", role="viewer", password=PASSWORD)
    acc.sign_in(catalog, "bob", PASSWORD, "10.0.0.7")
    for _ in range(acc.MAX_FAILURES):
        with pytest.raises(NotAuthenticated):
            acc.sign_in(catalog, f"guess{_}", b"guessing-3", "10.6.6.6")
    with pytest.raises(TooManyAttempts):
        acc.sign_in(catalog, "bob", PASSWORD, "10.6.6.6")
    clock.tick(seconds=wait)
    assert acc.sign_in(catalog, "ann", PASSWORD, "10.0.0.9").principal.user == "ann"
    assert ("login", "denied", "ann") in actions(catalog)


def test_the_limit_holds_across_catalog_openings(migrated_catalog_url: str,
                                                 clock: ManualClock) -> None:
    with Catalog.open(migrated_catalog_url, clock=clock) as c:
        acc.add_user(c, "ann", role="viewer", password=PASSWORD)
        for _ in range(acc.MAX_FAILURES):
            with pytest.raises(NotAuthenticated):
                acc.sign_in(c, "ann", b"guessing-1", "10.0.0.1")
    with Catalog.open(migrated_catalog_url, clock=clock) as c, \
            pytest.raises(TooManyAttempts):
        acc.sign_in(c, "ann", PASSWORD, "10.0.0.2")


def test_sessions_end_idle_absolute_and_at_sign_out(catalog: Catalog,
                                                    clock: ManualClock) -> None:
    acc.add_user(catalog, "ann", role="viewer", password=PASSWORD)
    auth = acc.CatalogAuthenticator(catalog)
    signed = acc.sign_in(catalog, "ann", PASSWORD, "10.0.0.1")
    p = auth.by_session(signed.cookie, address="10.0.0.1")
    assert (p.user, p.csrf, p.session) == ("ann", signed.csrf, signed.principal.session)
    # used every 20 minutes it lives on, until the absolute limit
    for _ in range(int(acc.SESSION_MAX / (acc.SESSION_IDLE * 2 / 3))):
        clock.tick(seconds=(acc.SESSION_IDLE * 2 / 3).total_seconds())
        if clock.now() >= signed.expires - acc.SESSION_IDLE + acc.SESSION_MAX:
            break
        auth.by_session(signed.cookie, address=None)
    clock.tick(seconds=acc.SESSION_IDLE.total_seconds())
    with pytest.raises(NotAuthenticated, match="sign in again"):
        auth.by_session(signed.cookie, address=None)
    # idle
    second = acc.sign_in(catalog, "ann", PASSWORD, None)
    clock.tick(seconds=acc.SESSION_IDLE.total_seconds() + 1)
    with pytest.raises(NotAuthenticated):
        auth.by_session(second.cookie, address=None)
    # sign-out, and a password change ends the others
    third = acc.sign_in(catalog, "ann", PASSWORD, None)
    fourth = acc.sign_in(catalog, "ann", PASSWORD, None)
    acc.sign_out(catalog, auth.by_session(third.cookie, address=None))
    with pytest.raises(NotAuthenticated):
        auth.by_session(third.cookie, address=None)
    auth.by_session(fourth.cookie, address=None)
    acc.set_password(catalog, "ann", b"another password")
    with pytest.raises(NotAuthenticated):
        auth.by_session(fourth.cookie, address=None)
    assert ("logout", "ok", "ann") in actions(catalog)


def test_tokens_shown_once_stored_hashed_and_limited_to_their_user(
        catalog: Catalog, clock: ManualClock, migrated_catalog_url: str) -> None:
    acc.add_tenant(catalog, "acme", vms=["web1"])
    acc.add_user(catalog, "ann", role="restore", tenant="acme", password=PASSWORD)
    made = acc.create_token(catalog, "ann", "ci", expires="30d")
    secret = made.secret
    assert secret.startswith(f"stasis_{made.token.prefix}_") and len(secret) > 50
    assert made.token.expires == (clock.now() + timedelta(days=30)).isoformat()
    listed = acc.list_tokens(catalog, "ann")
    assert [t.name for t in listed] == ["ci"] and secret not in str(
        [t.to_json() for t in listed])
    with catalog.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT * FROM tokens"))]
    assert hashlib.sha256(secret.encode()).hexdigest() in rows[0]
    assert secret not in str(rows) and secret.split("_")[2][:16] not in str(rows)
    if migrated_catalog_url.startswith("sqlite:///"):
        path = Path(migrated_catalog_url.removeprefix("sqlite:///"))
        catalog.close()  # the WAL checkpointed into the file
        stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert secret.encode() not in stored
        assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored

    auth = acc.CatalogAuthenticator(catalog)
    p = auth.by_token(secret, address="10.0.0.5")
    assert p.user == "ann" and p.token == made.token.id and p.tenant is not None
    assert p.tenant.name == "acme" and p.tenant.vms == frozenset({"web1"})
    assert p.permissions == BUILTIN_ROLES["restore"][1]
    used = acc.list_tokens(catalog, "ann")[0]
    assert used.last_used == clock.now().isoformat() and used.last_address == "10.0.0.5"

    with pytest.raises(AccountError, match=r"exceed it by .*backups:run"):
        acc.create_token(catalog, "ann", "more", permissions=["backups:run"])
    with pytest.raises(AccountError, match="exceed"):
        acc.create_token(catalog, "ann", "more", role="operator")
    narrow = acc.create_token(catalog, "ann", "files", permissions=["files:read"])
    assert auth.by_token(narrow.secret, address=None).permissions == {"files:read"}
    viewer = acc.create_token(catalog, "ann", "view", role="viewer")
    assert auth.by_token(viewer.secret, address=None).role == "viewer"

    # a narrowed token cannot mint a wider one for its user
    narrowed = auth.by_token(narrow.secret, address=None)
    with pytest.raises(AccountError, match="exceed"):
        acc.create_token(catalog, "ann", "wider", permissions=["points:read"], who=narrowed)
    minted = acc.create_token(catalog, "ann", "same", who=narrowed)
    assert auth.by_token(minted.secret, address=None).permissions == {"files:read"}
    # nor act on another user's tokens
    with pytest.raises(PermissionDenied):
        acc.list_tokens(catalog, "root", who=narrowed)

    # demoting the user demotes the token
    acc.edit_user(catalog, "ann", role="viewer")
    assert "files:read" not in auth.by_token(secret, address=None).permissions
    assert auth.by_token(narrow.secret, address=None).permissions == frozenset()

    acc.revoke_token(catalog, made.token.id)
    with pytest.raises(NotAuthenticated, match="unknown, expired or revoked"):
        auth.by_token(secret, address=None)
    assert acc.list_tokens(catalog, "ann")[0].state == "revoked"
    clock.tick(days=91)  # the default life is 90 days
    with pytest.raises(NotAuthenticated):
        auth.by_token(viewer.secret, address=None)
    with pytest.raises(NotAuthenticated):
        auth.by_token("stasis_00000000_" + "x" * 43, address=None)
    assert [a for a, _, _ in actions(catalog)].count("token.create") == 4


def test_a_disabled_or_removed_users_tokens_stop_working(catalog: Catalog) -> None:
    acc.add_user(catalog, "ann", role="backup", password=PASSWORD)
    secret = acc.create_token(catalog, "ann", "ci", expires="never").secret
    auth = acc.CatalogAuthenticator(catalog)
    assert auth.by_token(secret, address=None).user == "ann"
    acc.set_disabled(catalog, "ann")
    with pytest.raises(NotAuthenticated):
        auth.by_token(secret, address=None)
    acc.set_disabled(catalog, "ann", False)
    assert auth.by_token(secret, address=None).user == "ann"
    acc.remove_user(catalog, "ann")
    with pytest.raises(NotAuthenticated):
        auth.by_token(secret, address=None)


def test_expiry_parsing(clock: ManualClock) -> None:
    now = clock.now()
    assert acc.parse_expiry("12h", now) == now + timedelta(hours=12)
    assert acc.parse_expiry("never", now) is None
    assert acc.parse_expiry("2030-01-31", now) == datetime(2030, 1, 31, tzinfo=UTC)
    for bad in ("soon", "0d", "2020-01-01"):
        with pytest.raises(UsageError):
            acc.parse_expiry(bad, now)


def test_tenants_edit_and_their_principal(catalog: Catalog) -> None:
    acc.add_tenant(catalog, "acme", vms=["web1"], labels={"owner": "acme"},
                   restore_networks=["acme-net"], description="ACME Corp")
    with pytest.raises(UsageError, match="absolute"):
        acc.add_tenant(catalog, "beta", restore_dirs=["relative/dir"])
    with pytest.raises(UsageError, match="KEY=VALUE"):
        acc.add_tenant(catalog, "beta", labels=["owner"])
    t = acc.edit_tenant(catalog, "acme", acc.TenantChange(
        add_vms=["db1"], remove_vms=["web1"], restore_pools=["p1"], description="ACME"))
    assert (t.vms, t.labels, t.restore_pools, t.restore_networks, t.description) == (
        ["db1"], {"owner": "acme"}, ["p1"], ["acme-net"], "ACME")
    assert [x.name for x in acc.list_tenants(catalog)] == ["acme"]
    acc.remove_tenant(catalog, "acme")
    with pytest.raises(AccountNotFound, match="no tenant"):
        acc.show_tenant(catalog, "acme")
    assert [a for a, _, _ in actions(catalog)] == ["tenant.add", "tenant.edit",
                                                   "tenant.remove"]


def test_tenant_bound_admins_administer_nothing(catalog: Catalog) -> None:
    acc.add_tenant(catalog, "acme")
    acc.add_user(catalog, "boss", role="admin", tenant="acme", password=PASSWORD)
    secret = acc.create_token(catalog, "boss", "t").secret
    boss = acc.CatalogAuthenticator(catalog).by_token(secret, address=None)
    with pytest.raises(PermissionDenied, match="system-wide"):
        acc.add_user(catalog, "evil", role="admin", password=PASSWORD, who=boss)
    with pytest.raises(PermissionDenied):
        acc.add_tenant(catalog, "other", who=boss)
