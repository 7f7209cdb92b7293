"""The server's accounts: users, sign-in sessions, API tokens, tenants and roles.

One function per operation, shared by ``stasis user|token|tenant|role`` on the host
and by the API's routes, each answering a model of :mod:`stasis.app.models` and
recording what it changed in the audit log. ``who`` is the principal acting (None:
the host's own admin, the CLI run locally); administering accounts needs
``users:admin`` over the whole system (a tenant-bound principal administers nothing,
so that no tenant can mint itself a system-wide user).

- Passwords: Argon2id (:mod:`stasis.app.passwords`), never taken on a command line.
- Sign-in: a wrong password and an unknown (or disabled) user answer alike, after the
  same work. Failures are counted from the audit log, per name tried and per address,
  so the limit holds across restarts and server processes: :data:`MAX_FAILURES` in
  :data:`FAILURE_WINDOW` refuse further tries (429) until the oldest ages out; a
  success resets the count.
- Sessions: a random cookie stored as its SHA-256, with a CSRF token; it ends after
  :data:`SESSION_IDLE` unused or :data:`SESSION_MAX` after sign-in, at sign-out, and
  when its user is disabled, removed or given a new password.
- Tokens: ``stasis_<prefix>_<secret>`` (256 random bits), shown once, stored as the
  SHA-256 of the whole token. At every use a token's permissions are its own (a
  narrower role, a subset) intersected with its user's current role, so demoting a
  user demotes their tokens; a disabled or removed user's tokens stop working.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from stasis.app.audit import record
from stasis.app.auth import BUILTIN_ROLES, PERMISSIONS, Principal, Tenant
from stasis.app.models import (
    AccountRemoved,
    AuditLine,
    RoleModel,
    TenantModel,
    TokenCreated,
    TokenModel,
    UserModel,
)
from stasis.app.passwords import hash_password, needs_rehash, verify_password
from stasis.errors import (
    AccountError,
    AccountNotFound,
    NotAuthenticated,
    PermissionDenied,
    TooManyAttempts,
    UsageError,
)

if TYPE_CHECKING:
    from stasis.catalog import Catalog
    from stasis.catalog.accounts import AccountStore, Role, TenantRecord, Token, User

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
SESSION_IDLE = timedelta(minutes=30)
SESSION_MAX = timedelta(hours=12)
# last_used and a session's idle expiry are written at most this often per token or
# session, so that a busy script does not make every request a catalog write.
TOUCH_EVERY = timedelta(minutes=1)
DEFAULT_TOKEN_LIFE = "90d"

SIGN_IN = "login"
SIGN_OUT = "logout"
TOKEN_PREFIX = "stasis_"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_FAILED = "the user name or password is wrong."
_UNKNOWN_TOKEN = "the token is unknown, expired or revoked."
_UNKNOWN_SESSION = "the session is unknown or has ended: sign in again."


def _store(catalog: Catalog) -> AccountStore:
    from stasis.catalog.accounts import AccountStore

    return AccountStore(catalog)


def sync_roles(catalog: Catalog) -> None:
    """Write the built-in roles (:data:`~stasis.app.auth.BUILTIN_ROLES`) into the
    catalog's ``roles`` table: done wherever accounts are used, so that a permission
    added to the code reaches every catalog without a migration."""
    _store(catalog).write_builtin_roles(BUILTIN_ROLES)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _audit(catalog: Catalog, who: Principal | None, action: str, obj: str, *,
           result: str = "ok", detail: dict[str, object] | None = None) -> None:
    record(catalog, who, action, obj, result=result, detail=detail,
           user=None if who is not None else "(host)")


def require_admin(who: Principal | None) -> None:
    """Refuse ``who`` unless it may administer accounts (the host always may)."""
    if who is None:
        return
    if not who.can("users:admin"):
        raise PermissionDenied("users:admin", f"{who.shown} (role {who.role})")
    if who.tenant is not None:
        raise PermissionDenied("users:admin", f"{who.shown}, bound to tenant "
                               f"{who.tenant.name!r} (accounts are administered "
                               "system-wide)")


def check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not a valid {kind} name: 1-64 letters, digits and "
                         "'_.@-', starting with a letter or digit. Nothing was changed.")
    return name


def check_permissions(names: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(names)
    unknown = sorted(wanted - set(PERMISSIONS))
    if unknown:
        raise UsageError(f"unknown permission(s) {', '.join(unknown)}: the permissions are "
                         f"{', '.join(PERMISSIONS)}. Nothing was changed.")
    return wanted


# ------------------------------------------------------------------ roles


def _role_model(r: Role) -> RoleModel:
    return RoleModel(name=r.name, description=r.description, builtin=r.builtin,
                     permissions=sorted(r.permissions))


def list_roles(catalog: Catalog) -> list[RoleModel]:
    sync_roles(catalog)
    return [_role_model(r) for r in _store(catalog).roles()]


def _role(store: AccountStore, name: str) -> Role:
    found = store.role(name)
    if found is None:
        known = ", ".join(r.name for r in store.roles())
        raise AccountNotFound(f"there is no role {name!r} (the roles: {known}). Nothing was "
                           "changed.")
    return found


def show_role(catalog: Catalog, name: str) -> RoleModel:
    sync_roles(catalog)
    return _role_model(_role(_store(catalog), name))


def add_role(catalog: Catalog, name: str, permissions: Iterable[str], *,
             description: str = "", who: Principal | None = None) -> RoleModel:
    """A custom role granting ``permissions`` (names of :data:`PERMISSIONS`)."""
    require_admin(who)
    check_name("role", name)
    perms = check_permissions(permissions)
    if not perms:
        raise UsageError("a role needs at least one permission. Nothing was changed.")
    sync_roles(catalog)
    store = _store(catalog)
    if store.role(name) is not None:
        raise AccountError(f"a role named {name!r} exists already. Nothing was changed.")
    made = store.add_role(name, perms, description)
    _audit(catalog, who, "role.add", f"role:{name}", detail={"permissions": sorted(perms)})
    return _role_model(made)


def remove_role(catalog: Catalog, name: str, *, who: Principal | None = None) -> AccountRemoved:
    """Remove a custom role that no user holds and no token narrows to."""
    require_admin(who)
    sync_roles(catalog)
    store = _store(catalog)
    role = _role(store, name)
    if role.builtin:
        raise AccountError(f"{name!r} is a built-in role and cannot be removed. Nothing "
                           "was changed.")
    users, tokens = store.role_users(name)
    if users or tokens:
        held = ", ".join(users) or "none"
        raise AccountError(f"the role {name!r} is in use (users: {held}; tokens: {tokens}): "
                           "give them another role first. Nothing was changed.")
    store.remove_role(name)
    _audit(catalog, who, "role.remove", f"role:{name}")
    return AccountRemoved(kind="role", name=name)


# ------------------------------------------------------------------ tenants


def parse_labels(values: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return dict(values)
    labels: dict[str, str] = {}
    for v in values:
        key, eq, value = v.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"{v!r} is not a label selector: write KEY=VALUE. Nothing was "
                             "changed.")
        labels[key.strip()] = value.strip()
    return labels


def tenant_of(t: TenantRecord) -> Tenant:
    """The tenant as the rules see it (what its principals own, where they restore)."""
    return Tenant(name=t.name, vms=frozenset(t.vms), labels=dict(t.labels),
                  restore_pools=t.restore_pools, restore_networks=t.restore_networks,
                  restore_dirs=t.restore_dirs)


def _tenant_model(store: AccountStore, t: TenantRecord) -> TenantModel:
    return TenantModel(name=t.name, description=t.description, vms=list(t.vms),
                       labels=dict(t.labels), restore_pools=list(t.restore_pools),
                       restore_networks=list(t.restore_networks),
                       restore_dirs=list(t.restore_dirs), created=t.created.isoformat(),
                       users=store.tenant_users(t.name))


def _tenant(store: AccountStore, name: str) -> TenantRecord:
    found = store.tenant(name)
    if found is None:
        raise AccountNotFound(f"there is no tenant {name!r} ('stasis tenant list' lists them). "
                           "Nothing was changed.")
    return found


def _dirs(values: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(values))
    bad = [d for d in out if not d.startswith("/")]
    if bad:
        raise UsageError(f"restore directories must be absolute paths, not "
                         f"{', '.join(map(repr, bad))}. Nothing was changed.")
    return out


def list_tenants(catalog: Catalog) -> list[TenantModel]:
    store = _store(catalog)
    return [_tenant_model(store, t) for t in store.tenants()]


def show_tenant(catalog: Catalog, name: str) -> TenantModel:
    store = _store(catalog)
    return _tenant_model(store, _tenant(store, name))


def add_tenant(catalog: Catalog, name: str, *, vms: Iterable[str] = (),
               labels: Iterable[str] | Mapping[str, str] | None = None,
               restore_pools: Iterable[str] = (), restore_networks: Iterable[str] = (),
               restore_dirs: Iterable[str] = (), description: str = "",
               who: Principal | None = None) -> TenantModel:
    """A tenant owning ``vms`` and the VMs carrying every label of ``labels``."""
    from stasis.catalog.accounts import TenantRecord

    require_admin(who)
    check_name("tenant", name)
    store = _store(catalog)
    if store.tenant(name) is not None:
        raise AccountError(f"a tenant named {name!r} exists already. Nothing was changed.")
    made = store.add_tenant(TenantRecord(
        0, name, tuple(dict.fromkeys(vms)), parse_labels(labels),
        tuple(dict.fromkeys(restore_pools)), tuple(dict.fromkeys(restore_networks)),
        _dirs(restore_dirs), description, catalog.clock.now()))
    _audit(catalog, who, "tenant.add", f"tenant:{name}")
    return _tenant_model(store, made)


@dataclass
class TenantChange:
    """What an edit changes: lists to add to and remove from, or None for the same."""

    add_vms: list[str] | None = None
    remove_vms: list[str] | None = None
    labels: dict[str, str] | None = None  # replaces the selector
    restore_pools: list[str] | None = None  # each replaces its list
    restore_networks: list[str] | None = None
    restore_dirs: list[str] | None = None
    description: str | None = None


def edit_tenant(catalog: Catalog, name: str, change: TenantChange, *,
                who: Principal | None = None) -> TenantModel:
    require_admin(who)
    store = _store(catalog)
    t = _tenant(store, name)
    vms = [v for v in t.vms if v not in set(change.remove_vms or [])]
    vms += [v for v in change.add_vms or [] if v not in vms]
    new = replace(
        t, vms=tuple(dict.fromkeys(vms)),
        labels=t.labels if change.labels is None else dict(change.labels),
        restore_pools=t.restore_pools if change.restore_pools is None
        else tuple(dict.fromkeys(change.restore_pools)),
        restore_networks=t.restore_networks if change.restore_networks is None
        else tuple(dict.fromkeys(change.restore_networks)),
        restore_dirs=t.restore_dirs if change.restore_dirs is None
        else _dirs(change.restore_dirs),
        description=t.description if change.description is None else change.description)
    done = store.update_tenant(new)
    _audit(catalog, who, "tenant.edit", f"tenant:{name}")
    return _tenant_model(store, done)


def remove_tenant(catalog: Catalog, name: str, *, who: Principal | None = None) -> AccountRemoved:
    """Remove a tenant no user is bound to (its groups, policies and jobs stay, owned
    by no tenant: seen by system-wide roles only)."""
    require_admin(who)
    store = _store(catalog)
    _tenant(store, name)
    users = store.tenant_users(name)
    if users:
        raise AccountError(f"the tenant {name!r} still has users ({', '.join(users)}): "
                           "remove them or bind them elsewhere first. Nothing was changed.")
    store.remove_tenant(name)
    _audit(catalog, who, "tenant.remove", f"tenant:{name}")
    return AccountRemoved(kind="tenant", name=name)


# ------------------------------------------------------------------ users


def _user_model(u: User) -> UserModel:
    return UserModel(name=u.name, role=u.role, tenant=u.tenant, disabled=u.disabled,
                     created=u.created.isoformat(), last_login=_iso(u.last_login))


def _user(store: AccountStore, name: str) -> User:
    found = store.user(name)
    if found is None:
        raise AccountNotFound(f"there is no user {name!r} ('stasis user list' lists them). "
                           "Nothing was changed.")
    return found


def _check_password(password: bytes) -> bytes:
    if len(password) < 8:
        raise UsageError("the password is shorter than 8 characters. Nothing was changed.")
    if len(password) > 1024:
        raise UsageError("the password is longer than 1024 bytes. Nothing was changed.")
    return password


def list_users(catalog: Catalog) -> list[UserModel]:
    return [_user_model(u) for u in _store(catalog).users()]


def show_user(catalog: Catalog, name: str) -> UserModel:
    return _user_model(_user(_store(catalog), name))


def add_user(catalog: Catalog, name: str, *, role: str, password: bytes,
             tenant: str | None = None, who: Principal | None = None) -> UserModel:
    """A user of ``role`` over the whole system, or over ``tenant``."""
    require_admin(who)
    check_name("user", name)
    _check_password(password)
    sync_roles(catalog)
    store = _store(catalog)
    _role(store, role)
    if tenant is not None:
        _tenant(store, tenant)
    if store.user(name) is not None:
        raise AccountError(f"a user named {name!r} exists already. Nothing was changed.")
    made = store.add_user(name=name, password=hash_password(password), role=role,
                          tenant=tenant, created=catalog.clock.now())
    _audit(catalog, who, "user.add", f"user:{name}", detail={"role": role, "tenant": tenant})
    return _user_model(made)


_UNSET = object()


def edit_user(catalog: Catalog, name: str, *, role: str | None = None,
              tenant: str | object | None = _UNSET, disabled: bool | None = None,
              password: bytes | None = None, who: Principal | None = None) -> UserModel:
    """Change a user's role, tenant (a name, or None for the whole system), whether it
    is disabled, or its password. Disabling, a new password or a new tenant end the
    user's sessions; a disabled user's tokens stop working until it is enabled."""
    require_admin(who)
    store = _store(catalog)
    _user(store, name)
    changes: dict[str, object] = {}
    detail: dict[str, object] = {}
    if role is not None:
        sync_roles(catalog)
        _role(store, role)
        changes["role"] = detail["role"] = role
    if tenant is not _UNSET:
        if tenant is not None:
            assert isinstance(tenant, str)
            _tenant(store, tenant)
        changes["tenant"] = detail["tenant"] = tenant
    if disabled is not None:
        changes["disabled"] = detail["disabled"] = disabled
    if password is not None:
        changes["password"] = hash_password(_check_password(password))
        detail["password"] = "changed"
    if not changes:
        raise UsageError("nothing to change: give a role, a tenant, disabled or a password.")
    done = store.update_user(name, **changes)
    if password is not None or disabled or "tenant" in changes:
        store.remove_sessions(name)
    _audit(catalog, who, "user.edit", f"user:{name}", detail=detail)
    return _user_model(done)


def set_password(catalog: Catalog, name: str, password: bytes, *,
                 who: Principal | None = None) -> UserModel:
    return edit_user(catalog, name, password=password, who=who)


def set_disabled(catalog: Catalog, name: str, disabled: bool = True, *,
                 who: Principal | None = None) -> UserModel:
    return edit_user(catalog, name, disabled=disabled, who=who)


def remove_user(catalog: Catalog, name: str, *, who: Principal | None = None) -> AccountRemoved:
    """Remove a user with its tokens and sessions."""
    require_admin(who)
    store = _store(catalog)
    _user(store, name)
    store.remove_user(name)
    _audit(catalog, who, "user.remove", f"user:{name}")
    return AccountRemoved(kind="user", name=name)


# ------------------------------------------------------------------ tokens

_DURATION = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str | None, now: datetime) -> datetime | None:
    """``30d``, ``12h``, ``90m``, ``2w`` from now, a date (``2027-01-31``: its start, UTC)
    or an ISO time, or ``never`` (None)."""
    text = (DEFAULT_TOKEN_LIFE if text is None else text).strip().lower()
    if text == "never":
        return None
    m = _DURATION.fullmatch(text)
    if m is not None:
        if int(m[1]) == 0:
            raise UsageError("a token's life must be longer than 0. Nothing was made.")
        return now + timedelta(**{_UNITS[m[2]]: int(m[1])})
    try:
        when = (datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
                if len(text) == 10 else datetime.fromisoformat(text))
    except ValueError:
        raise UsageError(f"{text!r} is not an expiry: write 30d, 12h, 90m, 2w, a date "
                         "(2027-01-31), an ISO time, or never. Nothing was made.") from None
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    if when <= now:
        raise UsageError(f"the expiry {when.isoformat()} is already past. Nothing was made.")
    return when


def _token_state(t: Token, now: datetime) -> str:
    if t.revoked is not None:
        return "revoked"
    if t.expires is not None and t.expires <= now:
        return "expired"
    return "active"


def _token_model(t: Token, now: datetime) -> TokenModel:
    return TokenModel(id=t.id, user=t.user, name=t.name, prefix=t.prefix, role=t.role,
                      permissions=None if t.permissions is None else sorted(t.permissions),
                      created=t.created.isoformat(), expires=_iso(t.expires),
                      revoked=_iso(t.revoked), last_used=_iso(t.last_used),
                      last_address=t.last_address,
                      state=_token_state(t, now))  # type: ignore[arg-type]


def _acting_for(who: Principal | None, user: str) -> None:
    """``who`` may act on ``user``'s tokens: its own, or anyone's as an admin."""
    if who is not None and who.user != user:
        require_admin(who)


def create_token(catalog: Catalog, user: str, name: str, *, expires: str | None = None,
                 role: str | None = None, permissions: Iterable[str] | None = None,
                 who: Principal | None = None) -> TokenCreated:
    """A token for ``user``, narrowed to ``role`` or to ``permissions`` (never more
    than the user has, nor than ``who`` has when it makes a token for itself)."""
    _acting_for(who, user)
    check_name("token", name)
    sync_roles(catalog)
    store = _store(catalog)
    now = catalog.clock.now()
    owner = _user(store, user)
    if owner.disabled:
        raise AccountError(f"the user {user!r} is disabled: enable it before making it "
                           "tokens. Nothing was made.")
    allowed = _role(store, owner.role).permissions
    ceiling = allowed if who is None or who.user != user else allowed & who.permissions
    wanted = ceiling
    if role is not None:
        wanted = _role(store, role).permissions
    if permissions is not None:
        subset = check_permissions(permissions)
        if not subset:
            raise UsageError("a token needs at least one permission. Nothing was made.")
        wanted = subset if role is None else subset & wanted
        if role is not None and subset - wanted:
            raise AccountError(f"the permissions {', '.join(sorted(subset - wanted))} are "
                               f"not in the role {role!r}. Nothing was made.")
    beyond = sorted(wanted - ceiling)
    if beyond:
        whose = (f"the user {user!r} (role {owner.role})" if who is None or who.user != user
                 else f"{who.shown} (role {who.role})")
        raise AccountError(f"a token cannot have more than {whose}: it would exceed it by "
                           f"{', '.join(beyond)}. Nothing was made.")
    if role is None and permissions is None and ceiling != allowed:
        permissions = wanted  # made by a narrowed token: never wider than it
    when = parse_expiry(expires, now)
    prefix = secrets.token_hex(4)
    secret = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    made = store.add_token(user=user, name=name, prefix=prefix, digest=_digest(secret),
                           role=role, permissions=None if permissions is None else wanted,
                           created=now, expires=when)
    _audit(catalog, who, "token.create", f"token:{made.id}",
           detail={"user": user, "name": name, "role": role,
                   "permissions": None if permissions is None else sorted(wanted),
                   "expires": _iso(when)})
    return TokenCreated(token=_token_model(made, now), secret=secret)


def list_tokens(catalog: Catalog, user: str | None = None, *,
                who: Principal | None = None) -> list[TokenModel]:
    """The tokens of ``user`` (all users' when None), never their secrets."""
    if user is None:
        require_admin(who)
    else:
        _acting_for(who, user)
    now = catalog.clock.now()
    return [_token_model(t, now) for t in _store(catalog).tokens(user)]


def revoke_token(catalog: Catalog, ident: int, *, who: Principal | None = None) -> TokenModel:
    """Revoke token ``ident``: one's own, or anyone's as an admin. Another user's token
    answers to a non-admin as a missing one."""
    store = _store(catalog)
    found = store.token(ident)
    if found is None or (who is not None and who.user != found.user
                         and (not who.can("users:admin") or who.tenant is not None)):
        raise AccountNotFound(f"there is no token {ident} ('stasis token list' lists them). "
                           "Nothing was changed.")
    store.revoke_token(ident, catalog.clock.now())
    _audit(catalog, who, "token.revoke", f"token:{ident}", detail={"user": found.user})
    done = store.token(ident)
    assert done is not None
    return _token_model(done, catalog.clock.now())


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# ------------------------------------------------------------------ sign-in, sessions


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    cookie: str  # the session cookie's value (stored only as its hash)
    csrf: str
    expires: datetime


def _principal(store: AccountStore, u: User, permissions: frozenset[str], role: str, *,
               token: int | None = None, session: int | None = None,
               csrf: str | None = None, address: str | None = None) -> Principal:
    tenant = None
    if u.tenant is not None:
        record_ = store.tenant(u.tenant)
        tenant = tenant_of(record_) if record_ is not None else Tenant(u.tenant)
    return Principal(user=u.name, role=role, permissions=permissions, tenant=tenant,
                     token=token, session=session, csrf=csrf, address=address)


def _permissions_of(store: AccountStore, role: str) -> frozenset[str]:
    found = store.role(role)
    return frozenset() if found is None else found.permissions


def _check_rate(catalog: Catalog, store: AccountStore, user: str,
                address: str | None) -> None:
    now = catalog.clock.now()
    since = now - FAILURE_WINDOW
    waits = []
    for column, value in (("user", user), ("address", address)):
        if value is None:
            continue
        times = store.failed_sign_ins(action=SIGN_IN, column=column, value=value,
                                      since=since)
        if len(times) >= MAX_FAILURES:
            waits.append(times[len(times) - MAX_FAILURES] + FAILURE_WINDOW - now)
    if waits:
        seconds = max(1, int(max(waits).total_seconds() + 0.999))
        record(catalog, None, SIGN_IN, f"user:{user}", result="denied", user=user,
               address=address, detail={"reason": "too many failed sign-ins"})
        raise TooManyAttempts(f"too many failed sign-ins for this user or from this address "
                              f"({MAX_FAILURES} in {int(FAILURE_WINDOW.total_seconds() // 60)}"
                              f" minutes): try again in {seconds} s. Nothing was checked.",
                              retry_after=seconds)


def sign_in(catalog: Catalog, user: str, password: str | bytes,
            address: str | None = None) -> SignedIn:
    """Check ``user``'s password and open a session. A wrong password, an unknown user
    and a disabled one answer alike (:class:`NotAuthenticated`), after the same work."""
    user = user[:64]
    secret = password.encode() if isinstance(password, str) else password
    store = _store(catalog)
    _check_rate(catalog, store, user, address)
    found = store.user(user)
    ok = verify_password(secret, None if found is None else found.password)
    if found is None or not ok or found.disabled:
        record(catalog, None, SIGN_IN, f"user:{user}", result="failed", user=user,
               address=address)
        raise NotAuthenticated(_FAILED, hint="Check the name and password; after "
                               f"{MAX_FAILURES} failures sign-in waits a while.")
    now = catalog.clock.now()
    changes: dict[str, object] = {"last_login": now}
    if needs_rehash(found.password):
        changes["password"] = hash_password(secret)
    store.update_user(user, **changes)
    store.remove_sessions(user, expired_before=now)
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = now + min(SESSION_IDLE, SESSION_MAX)
    made = store.add_session(user=user, digest=_digest(cookie), csrf=csrf, created=now,
                             expires=expires, address=address)
    p = _principal(store, found, _permissions_of(store, found.role), found.role,
                   session=made.id, csrf=csrf, address=address)
    record(catalog, p, SIGN_IN, f"user:{user}", detail={"session": made.id})
    return SignedIn(p, cookie, csrf, expires)


def sign_out(catalog: Catalog, who: Principal) -> None:
    """End ``who``'s session."""
    if who.session is None:
        raise UsageError("this request is not signed in by a session (a token is revoked "
                         "with DELETE /api/v1/tokens/{id}). Nothing was changed.")
    _store(catalog).remove_session(who.session)
    record(catalog, who, SIGN_OUT, f"user:{who.user}", detail={"session": who.session})


class CatalogAuthenticator:
    """Tells who a request acts for from the catalog's tokens and sessions
    (:class:`stasis.api.context.Authenticator`)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        sync_roles(catalog)

    def by_token(self, secret: str, *, address: str | None) -> Principal:
        store = _store(self.catalog)
        now = self.catalog.clock.now()
        t = store.token_by_hash(_digest(secret)) if secret.startswith(TOKEN_PREFIX) else None
        if t is None or _token_state(t, now) != "active":
            raise NotAuthenticated(_UNKNOWN_TOKEN,
                                   hint="Create a token with 'stasis token create'.")
        u = store.user(t.user)
        if u is None or u.disabled:
            raise NotAuthenticated(_UNKNOWN_TOKEN,
                                   hint="Create a token with 'stasis token create'.")
        permissions = _permissions_of(store, u.role)
        if t.role is not None:
            permissions &= _permissions_of(store, t.role)
        if t.permissions is not None:
            permissions &= t.permissions
        if t.last_used is None or now - t.last_used >= TOUCH_EVERY or (
                t.last_address != address):
            store.touch_token(t.id, now, address)
        return _principal(store, u, permissions, t.role or u.role, token=t.id,
                          address=address)

    def by_session(self, cookie: str, *, address: str | None) -> Principal:
        store = _store(self.catalog)
        now = self.catalog.clock.now()
        s = store.session_by_hash(_digest(cookie))
        if s is None or s.expires <= now:
            if s is not None:
                store.remove_session(s.id)
            raise NotAuthenticated(_UNKNOWN_SESSION, hint="POST /api/v1/session signs in.")
        u = store.user(s.user)
        if u is None or u.disabled:
            raise NotAuthenticated(_UNKNOWN_SESSION, hint="POST /api/v1/session signs in.")
        later = min(s.created + SESSION_MAX, now + SESSION_IDLE)
        if later - s.expires >= TOUCH_EVERY:
            store.extend_session(s.id, later)
        return _principal(store, u, _permissions_of(store, u.role), u.role, session=s.id,
                          csrf=s.csrf, address=address)


# ------------------------------------------------------------------ the audit log


def list_audit(catalog: Catalog, *, user: str | None = None, action: str | None = None,
               since: datetime | None = None, tenant: str | None = None,
               limit: int = 100) -> list[AuditLine]:
    """The newest ``limit`` lines, newest first, filtered (``action``: a prefix)."""
    from stasis.catalog.audit import AuditLog

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return [AuditLine(id=e.id, time=e.time.isoformat(), user=e.user, token=e.token,
                      address=e.address, tenant=e.tenant, action=e.action, object=e.object,
                      result=e.result, detail=e.detail)
            for e in AuditLog(catalog).list(user=user, action=action, tenant=tenant,
                                             since=since, limit=limit)]
