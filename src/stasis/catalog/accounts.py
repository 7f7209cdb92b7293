"""The server's accounts in the catalog: roles, tenants, users, tokens and sessions.

A plain store: it reads and writes rows and answers records; the rules (who may hold
which permission, how a password is checked, when a token or session is valid) are
:mod:`stasis.app.accounts`'. Secrets never reach it: users carry an encoded password
hash, tokens and sessions the SHA-256 of their secret. :meth:`AccountStore.write_builtin_roles`
writes the built-in roles, which are code (``stasis.app.auth.BUILTIN_ROLES``, given by
``stasis.app.accounts.sync_roles``), into the ``roles`` table, so that a catalog gains a
new permission without a migration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from stasis.catalog.db import Catalog
from stasis.catalog.models import AuditRow, RoleRow, SessionRow, TenantRow, TokenRow, UserRow


@dataclass(frozen=True)
class Role:
    name: str
    permissions: frozenset[str]
    builtin: bool
    description: str


@dataclass(frozen=True)
class TenantRecord:
    id: int
    name: str
    vms: tuple[str, ...]
    labels: dict[str, str]
    restore_pools: tuple[str, ...]
    restore_networks: tuple[str, ...]
    restore_dirs: tuple[str, ...]
    description: str
    created: datetime


@dataclass(frozen=True)
class User:
    id: int
    name: str
    password: str  # the encoded hash
    role: str
    tenant: str | None
    created: datetime
    disabled: bool
    last_login: datetime | None


@dataclass(frozen=True)
class Token:
    id: int
    user: str
    name: str
    prefix: str
    role: str | None
    permissions: frozenset[str] | None
    created: datetime
    expires: datetime | None
    revoked: datetime | None
    last_used: datetime | None
    last_address: str | None


@dataclass(frozen=True)
class SessionRecord:
    id: int
    user: str
    csrf: str
    created: datetime
    expires: datetime
    address: str | None


def _role(r: RoleRow) -> Role:
    return Role(r.name, frozenset(r.permissions), r.builtin, r.description)


def _tenant(r: TenantRow) -> TenantRecord:
    return TenantRecord(r.id, r.name, tuple(r.vms), dict(r.labels), tuple(r.restore_pools),
                        tuple(r.restore_networks), tuple(r.restore_dirs), r.description,
                        r.created)


def _user(r: UserRow, tenant: str | None) -> User:
    return User(r.id, r.name, r.password, r.role, tenant, r.created, r.disabled, r.last_login)


def _token(r: TokenRow, user: str) -> Token:
    return Token(r.id, user, r.name, r.prefix, r.role,
                 None if r.permissions is None else frozenset(r.permissions), r.created,
                 r.expires, r.revoked, r.last_used, r.last_address)


def _session(r: SessionRow, user: str) -> SessionRecord:
    return SessionRecord(r.id, user, r.csrf, r.created, r.expires, r.address)


_USERS = select(UserRow, TenantRow.name).outerjoin(TenantRow, UserRow.tenant == TenantRow.id)
_TOKENS = select(TokenRow, UserRow.name).join(UserRow, TokenRow.user == UserRow.id)
_SESSIONS = select(SessionRow, UserRow.name).join(UserRow, SessionRow.user == UserRow.id)


class AccountStore:
    """The accounts of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # ------------------------------------------------------------ roles

    def write_builtin_roles(self, roles: Mapping[str, tuple[str, frozenset[str]]]) -> None:
        """Write ``roles`` (name -> description, permissions) as built-in rows, adding
        the missing ones and updating the changed ones."""
        with self.catalog.session() as s:
            rows = {r.name: r for r in s.scalars(select(RoleRow))}
            for name, (description, permissions) in roles.items():
                row = rows.get(name)
                if row is None:
                    s.add(RoleRow(name=name, permissions=sorted(permissions), builtin=True,
                                  description=description))
                elif (set(row.permissions) != permissions or not row.builtin
                      or row.description != description):
                    row.permissions, row.builtin = sorted(permissions), True
                    row.description = description

    def roles(self) -> list[Role]:
        with self.catalog.session(write=False) as s:
            return [_role(r) for r in s.scalars(select(RoleRow).order_by(RoleRow.name))]

    def role(self, name: str) -> Role | None:
        with self.catalog.session(write=False) as s:
            row = s.get(RoleRow, name)
            return None if row is None else _role(row)

    def add_role(self, name: str, permissions: Iterable[str], description: str) -> Role:
        with self.catalog.session() as s:
            row = RoleRow(name=name, permissions=sorted(permissions), builtin=False,
                          description=description)
            s.add(row)
            s.flush()
            return _role(row)

    def remove_role(self, name: str) -> None:
        with self.catalog.session() as s:
            s.execute(delete(RoleRow).where(RoleRow.name == name))

    def role_users(self, name: str) -> tuple[list[str], int]:
        """The users holding role ``name``, and how many tokens narrow to it."""
        with self.catalog.session(write=False) as s:
            users = list(s.scalars(select(UserRow.name).where(UserRow.role == name)
                                   .order_by(UserRow.name)))
            tokens = s.scalar(select(func.count()).select_from(TokenRow)
                              .where(TokenRow.role == name)) or 0
            return users, int(tokens)

    # ------------------------------------------------------------ tenants

    def tenants(self) -> list[TenantRecord]:
        with self.catalog.session(write=False) as s:
            return [_tenant(r) for r in s.scalars(select(TenantRow).order_by(TenantRow.name))]

    def tenant(self, name: str) -> TenantRecord | None:
        with self.catalog.session(write=False) as s:
            row = s.scalar(select(TenantRow).where(TenantRow.name == name))
            return None if row is None else _tenant(row)

    def add_tenant(self, t: TenantRecord) -> TenantRecord:
        with self.catalog.session() as s:
            row = TenantRow(name=t.name, vms=list(t.vms), labels=dict(t.labels),
                            restore_pools=list(t.restore_pools),
                            restore_networks=list(t.restore_networks),
                            restore_dirs=list(t.restore_dirs), description=t.description,
                            created=t.created)
            s.add(row)
            s.flush()
            return _tenant(row)

    def update_tenant(self, t: TenantRecord) -> TenantRecord:
        with self.catalog.session() as s:
            row = s.get(TenantRow, t.id)
            assert row is not None
            row.vms, row.labels = list(t.vms), dict(t.labels)
            row.restore_pools, row.restore_networks = (list(t.restore_pools),
                                                       list(t.restore_networks))
            row.restore_dirs, row.description = list(t.restore_dirs), t.description
            s.flush()
            return _tenant(row)

    def remove_tenant(self, name: str) -> None:
        with self.catalog.session() as s:
            s.execute(delete(TenantRow).where(TenantRow.name == name))

    def tenant_users(self, name: str) -> list[str]:
        with self.catalog.session(write=False) as s:
            return list(s.scalars(select(UserRow.name).join(TenantRow, UserRow.tenant ==
                                                            TenantRow.id)
                                  .where(TenantRow.name == name).order_by(UserRow.name)))

    # ------------------------------------------------------------ users

    def users(self) -> list[User]:
        with self.catalog.session(write=False) as s:
            return [_user(u, t) for u, t in s.execute(_USERS.order_by(UserRow.name))]

    def user(self, name: str) -> User | None:
        with self.catalog.session(write=False) as s:
            found = s.execute(_USERS.where(UserRow.name == name)).first()
            return None if found is None else _user(found[0], found[1])

    def add_user(self, *, name: str, password: str, role: str, tenant: str | None,
                 created: datetime) -> User:
        with self.catalog.session() as s:
            row = UserRow(name=name, password=password, role=role,
                          tenant=self._tenant_id(s, tenant), created=created, disabled=False)
            s.add(row)
            s.flush()
            return _user(row, tenant)

    def update_user(self, name: str, **changes: Any) -> User:
        """Change ``password``, ``role``, ``tenant`` (a name or None), ``disabled`` or
        ``last_login`` of user ``name``."""
        with self.catalog.session() as s:
            row = s.scalar(select(UserRow).where(UserRow.name == name))
            assert row is not None
            if "tenant" in changes:
                row.tenant = self._tenant_id(s, changes.pop("tenant"))
            for key, value in changes.items():
                setattr(row, key, value)
            s.flush()
            tenant = None if row.tenant is None else s.get(TenantRow, row.tenant)
            return _user(row, None if tenant is None else tenant.name)

    def remove_user(self, name: str) -> None:
        with self.catalog.session() as s:
            uid = s.scalar(select(UserRow.id).where(UserRow.name == name))
            # Explicitly, not only by the foreign keys' cascade: a PostgreSQL catalog
            # and a SQLite one then behave alike whatever their settings.
            s.execute(delete(TokenRow).where(TokenRow.user == uid))
            s.execute(delete(SessionRow).where(SessionRow.user == uid))
            s.execute(delete(UserRow).where(UserRow.id == uid))

    @staticmethod
    def _tenant_id(s: Session, tenant: str | None) -> int | None:
        if tenant is None:
            return None
        tid = s.scalar(select(TenantRow.id).where(TenantRow.name == tenant))
        assert tid is not None, tenant
        return int(tid)

    # ------------------------------------------------------------ tokens

    def tokens(self, user: str | None = None) -> list[Token]:
        q = _TOKENS.order_by(TokenRow.id)
        if user is not None:
            q = q.where(UserRow.name == user)
        with self.catalog.session(write=False) as s:
            return [_token(t, u) for t, u in s.execute(q)]

    def token(self, ident: int) -> Token | None:
        with self.catalog.session(write=False) as s:
            found = s.execute(_TOKENS.where(TokenRow.id == ident)).first()
            return None if found is None else _token(found[0], found[1])

    def token_by_hash(self, digest: str) -> Token | None:
        with self.catalog.session(write=False) as s:
            found = s.execute(_TOKENS.where(TokenRow.hash == digest)).first()
            return None if found is None else _token(found[0], found[1])

    def add_token(self, *, user: str, name: str, prefix: str, digest: str, role: str | None,
                  permissions: Iterable[str] | None, created: datetime,
                  expires: datetime | None) -> Token:
        with self.catalog.session() as s:
            uid = s.scalar(select(UserRow.id).where(UserRow.name == user))
            assert uid is not None
            row = TokenRow(user=uid, name=name, prefix=prefix, hash=digest, role=role,
                           permissions=None if permissions is None else sorted(permissions),
                           created=created, expires=expires)
            s.add(row)
            s.flush()
            return _token(row, user)

    def revoke_token(self, ident: int, when: datetime) -> None:
        with self.catalog.session() as s:
            s.execute(update(TokenRow).where(TokenRow.id == ident, TokenRow.revoked.is_(None))
                      .values(revoked=when))

    def touch_token(self, ident: int, when: datetime, address: str | None) -> None:
        with self.catalog.session() as s:
            s.execute(update(TokenRow).where(TokenRow.id == ident)
                      .values(last_used=when, last_address=address))

    # ------------------------------------------------------------ sessions

    def add_session(self, *, user: str, digest: str, csrf: str, created: datetime,
                    expires: datetime, address: str | None) -> SessionRecord:
        with self.catalog.session() as s:
            uid = s.scalar(select(UserRow.id).where(UserRow.name == user))
            assert uid is not None
            row = SessionRow(user=uid, hash=digest, csrf=csrf, created=created,
                             expires=expires, address=address)
            s.add(row)
            s.flush()
            return _session(row, user)

    def session_by_hash(self, digest: str) -> SessionRecord | None:
        with self.catalog.session(write=False) as s:
            found = s.execute(_SESSIONS.where(SessionRow.hash == digest)).first()
            return None if found is None else _session(found[0], found[1])

    def extend_session(self, ident: int, expires: datetime) -> None:
        with self.catalog.session() as s:
            s.execute(update(SessionRow).where(SessionRow.id == ident)
                      .values(expires=expires))

    def remove_session(self, ident: int) -> None:
        with self.catalog.session() as s:
            s.execute(delete(SessionRow).where(SessionRow.id == ident))

    def remove_sessions(self, user: str, *, expired_before: datetime | None = None) -> None:
        """Sign ``user`` out everywhere (or only drop their sessions that ended)."""
        with self.catalog.session() as s:
            uid = s.scalar(select(UserRow.id).where(UserRow.name == user))
            q = delete(SessionRow).where(SessionRow.user == uid)
            if expired_before is not None:
                q = q.where(SessionRow.expires < expired_before)
            s.execute(q)

    # ------------------------------------------------------------ sign-in attempts

    def failed_sign_ins(self, *, action: str, column: str, value: str,
                        since: datetime) -> list[datetime]:
        """The times of the failed sign-ins (audit lines ``action``, result failed) of
        ``column`` (``"user"``: the name tried, or ``"address"``) equal to ``value``,
        since ``since`` and since its last successful one, oldest first."""
        col = AuditRow.user if column == "user" else AuditRow.address
        with self.catalog.session(write=False) as s:
            last_ok = s.scalar(select(func.max(AuditRow.id)).where(
                AuditRow.action == action, AuditRow.result == "ok", col == value,
                AuditRow.time > since)) or 0
            return list(s.scalars(select(AuditRow.time).where(
                AuditRow.action == action, AuditRow.result == "failed", col == value,
                AuditRow.time > since, AuditRow.id > last_ok).order_by(AuditRow.id)))
