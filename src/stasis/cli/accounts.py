"""``stasis user``, ``token``, ``tenant``, ``role`` and ``audit``: the server's accounts,
administered on the host.

These run locally on the catalog (``--catalog`` / ``$STASIS_CATALOG``) as the host's
own admin, with no server: they make the first admin and its token. Passwords come
from ``--password-file`` or are asked twice on a terminal, never from an argument; a
token's secret is printed once, when it is made.
"""

from __future__ import annotations

import getpass
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from stasis.app import accounts as ops
from stasis.app.models import TenantModel, TokenCreated, TokenModel
from stasis.cli.common import CatalogOpt, JsonOpt, err, out, print_model
from stasis.cli.remote import remote
from stasis.errors import UsageError

if TYPE_CHECKING:
    from stasis.catalog import Catalog

users = typer.Typer(help="Users of the server: local accounts, each with one role over "
                         "the whole system or one tenant.", no_args_is_help=True)
tokens = typer.Typer(help="API tokens: named, scoped, expiring, shown once.",
                     no_args_is_help=True)
tenants = typer.Typer(help="Tenants: owners of VMs (by name or label), of what they "
                           "define, and of their points and jobs.", no_args_is_help=True)
roles = typer.Typer(help="Roles: named sets of permissions (built-in and custom).",
                    no_args_is_help=True)

PasswordFileOpt = Annotated[Path | None, typer.Option(
    "--password-file", help="Read the password from this file (else it is asked twice "
                            "on the terminal).")]
TenantOpt = Annotated[str | None, typer.Option(
    "--tenant", help="Bind to this tenant (default: the whole system).")]


@contextmanager
def _catalog(url: str | None) -> Iterator[Catalog]:
    from stasis.catalog import Catalog

    with Catalog.open(url) as c:
        ops.sync_roles(c)
        yield c


def _password(path: Path | None) -> bytes:
    if path is not None:
        try:
            value = path.read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise UsageError(f"cannot read the password file {path}: {e.strerror}. Nothing "
                             "was changed.") from None
    elif sys.stdin.isatty():
        value = getpass.getpass("New password: ").encode()
        if getpass.getpass("Repeat it: ").encode() != value:
            raise UsageError("the two passwords differ. Nothing was changed.")
    else:
        raise UsageError("no password: pass --password-file, or run on a terminal to be "
                         "asked. Nothing was changed.")
    return value


def _t(text: str | None) -> str:
    return "-" if text is None else datetime.fromisoformat(text).isoformat(timespec="seconds")


# ------------------------------------------------------------------ users


@users.command("add")
def user_add(name: Annotated[str, typer.Argument(help="The user's name.")],
             role: Annotated[str, typer.Option("--role", help="Its role ('stasis role "
                                                              "list').")],
             tenant: TenantOpt = None, password_file: PasswordFileOpt = None,
             catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """Add a user."""
    password = _password(password_file)
    with _catalog(catalog) as c:
        made = ops.add_user(c, name, role=role, tenant=tenant, password=password)
    if json_output:
        print_model(made)
        return
    bound = f"tenant {made.tenant}" if made.tenant else "the whole system"
    out.print(f"User {made.name} added: role {made.role} over {bound}.", highlight=False)


@users.command("list")
def user_list(catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """List the users."""
    with _catalog(catalog) as c:
        found = ops.list_users(c)
    if json_output:
        print_model(found)
        return
    table = Table(box=None)
    for col in ("name", "role", "tenant", "state", "created", "last sign-in"):
        table.add_column(col)
    for u in found:
        table.add_row(u.name, u.role, u.tenant or "-", "disabled" if u.disabled else "active",
                      _t(u.created), _t(u.last_login))
    out.print(table)


@users.command("remove")
def user_remove(name: str, catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """Remove a user, with its tokens and sessions."""
    with _catalog(catalog) as c:
        gone = ops.remove_user(c, name)
    if json_output:
        print_model(gone)
        return
    out.print(f"User {name} removed, with its tokens and sessions.", highlight=False)


@users.command("passwd")
def user_passwd(name: str, password_file: PasswordFileOpt = None, catalog: CatalogOpt = None,
                json_output: JsonOpt = False) -> None:
    """Give a user a new password (its sessions end)."""
    password = _password(password_file)
    with _catalog(catalog) as c:
        done = ops.set_password(c, name, password)
    if json_output:
        print_model(done)
        return
    out.print(f"New password set for {name}; its sessions have ended.", highlight=False)


@users.command("disable")
def user_disable(name: str, enable: Annotated[bool, typer.Option(
                     "--enable", help="Enable it again instead.")] = False,
                 catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """Disable a user: it cannot sign in, its sessions end and its tokens stop working
    (until ``--enable``)."""
    with _catalog(catalog) as c:
        done = ops.set_disabled(c, name, not enable)
    if json_output:
        print_model(done)
        return
    out.print(f"User {name} {'enabled' if enable else 'disabled'}.", highlight=False)


# ------------------------------------------------------------------ tokens


def _token_row(table: Table, t: TokenModel) -> None:
    scope = t.role or "(user's role)"
    if t.permissions is not None:
        scope += ": " + ", ".join(t.permissions)
    used = "-" if t.last_used is None else f"{_t(t.last_used)} from {t.last_address or '?'}"
    table.add_row(str(t.id), t.user, t.name, f"stasis_{t.prefix}_…", scope, t.state,
                  _t(t.created), _t(t.expires) if t.expires else "never", used)


@tokens.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name saying what the token is for.")],
    user: Annotated[str | None, typer.Option(
        "--user", help="The user it acts for (against a server: default the token's own "
                       "user).")] = None,
    expires: Annotated[str, typer.Option(
        "--expires", help="30d, 12h, 90m, 2w, a date (2027-01-31), or never.")] = "90d",
    role: Annotated[str | None, typer.Option(
        "--role", help="A narrower role than the user's.")] = None,
    permission: Annotated[list[str] | None, typer.Option(
        "--permission", help="Only this permission, repeatable (a subset of the "
                             "user's).")] = None,
    catalog: CatalogOpt = None, json_output: JsonOpt = False,
) -> None:
    """Make a token; its secret is printed now and never again."""
    server = remote()
    if server is not None:
        made = server.post("/tokens", TokenCreated.model_validate, {
            "name": name, "expires": expires, "role": role, "permissions": permission or None,
            "user": user})
        user = made.token.user
    else:
        if user is None:
            raise UsageError("--user: name the user the token acts for; nothing was made")
        with _catalog(catalog) as c:
            made = ops.create_token(c, user, name, expires=expires, role=role,
                                    permissions=permission or None)
    if json_output:
        print_model(made)
        return
    err.print(f"Token {made.token.id} ({name}) for {user}, expiring "
              f"{_t(made.token.expires) if made.token.expires else 'never'}. It is shown "
              "this once; only its hash is kept:", highlight=False)
    sys.stdout.write(made.secret + "\n")


@tokens.command("list")
def token_list(user: Annotated[str | None, typer.Option(
                   "--user", help="Only this user's.")] = None,
               catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """List tokens (never their secrets); against a server, the token's own user's
    unless --user names another."""
    server = remote()
    if server is not None:
        found = server.items("/tokens", TokenModel.model_validate, user=user)
    else:
        with _catalog(catalog) as c:
            found = ops.list_tokens(c, user)
    if json_output:
        print_model(found)
        return
    table = Table(box=None)
    for col in ("id", "user", "name", "token", "scope", "state", "created", "expires",
                "last used"):
        table.add_column(col)
    for t in found:
        _token_row(table, t)
    out.print(table)


@tokens.command("revoke")
def token_revoke(ident: Annotated[int, typer.Argument(help="The token's id.")],
                 catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """Revoke a token: it stops working at once."""
    server = remote()
    if server is not None:
        done = server.delete(f"/tokens/{ident}", TokenModel.model_validate)
    else:
        with _catalog(catalog) as c:
            done = ops.revoke_token(c, ident)
    if json_output:
        print_model(done)
        return
    out.print(f"Token {ident} ({done.name} of {done.user}) revoked.", highlight=False)


# ------------------------------------------------------------------ tenants

VmOpt = Annotated[list[str] | None, typer.Option("--vm", help="A VM it owns, repeatable.")]
LabelOpt = Annotated[list[str] | None, typer.Option(
    "--label", help="KEY=VALUE, repeatable: it owns the VMs carrying every one.")]
PoolOpt = Annotated[list[str] | None, typer.Option(
    "--restore-pool", help="A storage pool its users may restore to, repeatable.")]
NetOpt = Annotated[list[str] | None, typer.Option(
    "--restore-network", help="A network its restored VMs may join, repeatable.")]
DirOpt = Annotated[list[str] | None, typer.Option(
    "--restore-dir", help="A directory its users may restore files to, repeatable.")]
DescriptionOpt = Annotated[str | None, typer.Option("--description", help="Free text.")]


def _print_tenant(t: TenantModel) -> None:
    out.print(f"[bold]{t.name}[/]" + (f": {t.description}" if t.description else ""),
              highlight=False)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(t.labels.items()))
    for title, value in (("vms", ", ".join(t.vms)), ("labels", labels),
                         ("restore pools", ", ".join(t.restore_pools)),
                         ("restore networks", ", ".join(t.restore_networks)),
                         ("restore dirs", ", ".join(t.restore_dirs)),
                         ("users", ", ".join(t.users))):
        out.print(f"  {title + ':':<18}{value or '-'}", highlight=False)


@tenants.command("add")
def tenant_add(name: str, vm: VmOpt = None, label: LabelOpt = None,
               restore_pool: PoolOpt = None, restore_network: NetOpt = None,
               restore_dir: DirOpt = None, description: DescriptionOpt = None,
               catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """Add a tenant."""
    with _catalog(catalog) as c:
        made = ops.add_tenant(c, name, vms=vm or [], labels=label or [],
                              restore_pools=restore_pool or [],
                              restore_networks=restore_network or [],
                              restore_dirs=restore_dir or [], description=description or "")
    if json_output:
        print_model(made)
        return
    _print_tenant(made)


@tenants.command("list")
def tenant_list(catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """List the tenants."""
    with _catalog(catalog) as c:
        found = ops.list_tenants(c)
    if json_output:
        print_model(found)
        return
    for t in found:
        _print_tenant(t)


@tenants.command("edit")
def tenant_edit(
    name: str,
    add_vm: Annotated[list[str] | None, typer.Option("--add-vm", help="Repeatable.")] = None,
    remove_vm: Annotated[list[str] | None, typer.Option("--remove-vm",
                                                        help="Repeatable.")] = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", help="KEY=VALUE, repeatable: replaces the selector.")] = None,
    no_labels: Annotated[bool, typer.Option("--no-labels",
                                            help="Clear the selector.")] = False,
    restore_pool: Annotated[list[str] | None, typer.Option(
        "--restore-pool", help="Repeatable: replaces the list.")] = None,
    restore_network: Annotated[list[str] | None, typer.Option(
        "--restore-network", help="Repeatable: replaces the list.")] = None,
    restore_dir: Annotated[list[str] | None, typer.Option(
        "--restore-dir", help="Repeatable: replaces the list.")] = None,
    description: DescriptionOpt = None,
    catalog: CatalogOpt = None, json_output: JsonOpt = False,
) -> None:
    """Change a tenant."""
    change = ops.TenantChange(
        add_vms=add_vm, remove_vms=remove_vm,
        labels={} if no_labels else (None if label is None else ops.parse_labels(label)),
        restore_pools=restore_pool, restore_networks=restore_network,
        restore_dirs=restore_dir, description=description)
    with _catalog(catalog) as c:
        done = ops.edit_tenant(c, name, change)
    if json_output:
        print_model(done)
        return
    _print_tenant(done)


@tenants.command("remove")
def tenant_remove(name: str, catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """Remove a tenant that no user is bound to."""
    with _catalog(catalog) as c:
        gone = ops.remove_tenant(c, name)
    if json_output:
        print_model(gone)
        return
    out.print(f"Tenant {name} removed.", highlight=False)


# ------------------------------------------------------------------ roles


@roles.command("list")
def role_list(catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """List the roles and their permissions."""
    with _catalog(catalog) as c:
        found = ops.list_roles(c)
    if json_output:
        print_model(found)
        return
    table = Table(box=None)
    for col in ("name", "kind", "description", "permissions"):
        table.add_column(col)
    for r in found:
        table.add_row(r.name, "built-in" if r.builtin else "custom", r.description,
                      ", ".join(r.permissions))
    out.print(table)


@roles.command("add")
def role_add(name: str, permission: Annotated[list[str], typer.Option(
                 "--permission", help="A permission it grants, repeatable.")],
             description: DescriptionOpt = None, catalog: CatalogOpt = None,
             json_output: JsonOpt = False) -> None:
    """Add a custom role."""
    with _catalog(catalog) as c:
        made = ops.add_role(c, name, permission, description=description or "")
    if json_output:
        print_model(made)
        return
    out.print(f"Role {name} added: {', '.join(made.permissions)}.", highlight=False)


@roles.command("remove")
def role_remove(name: str, catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """Remove a custom role no user holds."""
    with _catalog(catalog) as c:
        gone = ops.remove_role(c, name)
    if json_output:
        print_model(gone)
        return
    out.print(f"Role {name} removed.", highlight=False)


# ------------------------------------------------------------------ audit

_AGO = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    m = _AGO.fullmatch(text.strip().lower())
    if m is not None:
        return datetime.now(UTC) - timedelta(**{_UNITS[m[2]]: int(m[1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a time: write 2d, 12h, 30m (ago) or an ISO "
                         "time.") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def audit(user: Annotated[str | None, typer.Option("--user", help="Lines of this user.")]
          = None,
          action: Annotated[str | None, typer.Option(
              "--action", help="Actions starting with this (login, token., user.).")] = None,
          since: Annotated[str | None, typer.Option(
              "--since", help="2d, 12h, 30m ago, or an ISO time.")] = None,
          limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many "
                                                                    "lines.")] = 100,
          catalog: CatalogOpt = None, json_output: JsonOpt = False) -> None:
    """The audit log, newest first: who did what to which object, and how it ended."""
    with _catalog(catalog) as c:
        found = ops.list_audit(c, user=user, action=action, since=_since(since), limit=limit)
    if json_output:
        print_model(found)
        return
    table = Table(box=None)
    for col in ("time", "user", "address", "tenant", "action", "object", "result"):
        table.add_column(col)
    for a in found:
        who = (a.user or "-") + (f" (token {a.token})" if a.token is not None else "")
        table.add_row(_t(a.time), who, a.address or "-", a.tenant or "-", a.action,
                      a.object or "-", a.result)
    out.print(table)


def register(root: typer.Typer) -> None:
    """Add these commands to the ``stasis`` command tree."""
    root.add_typer(users, name="user")
    root.add_typer(tokens, name="token")
    root.add_typer(tenants, name="tenant")
    root.add_typer(roles, name="role")
    root.command("audit")(audit)
