"""``stasis user|token|tenant|role|audit`` on the host: the first admin and its token,
with no server; passwords from a file only, secrets printed once, bad input refused
with a stable code and nothing changed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stasis.app import passwords
from tests.conftest import Cli


@pytest.fixture
def acli(cli: Cli, tmp_path: Path) -> Cli:
    cli.env[passwords.COST_ENV] = "m=1024,t=1,p=1"
    (tmp_path / "pw").write_text("a long password\n")
    return cli


def refused(r: object, code: int, *words: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)  # type: ignore[attr-defined]
    assert "Traceback" not in r.err  # type: ignore[attr-defined]
    for w in words:
        assert w in r.err, r.err  # type: ignore[attr-defined]


def test_bootstrap_an_admin_and_its_token(acli: Cli, tmp_path: Path) -> None:
    pw = str(tmp_path / "pw")
    made = acli.ok("user", "add", "root", "--role", "admin", "--password-file", pw,
                   "--json").json()
    assert made == {**made, "name": "root", "role": "admin", "tenant": None}
    created = acli.ok("token", "create", "ci", "--user", "root", "--expires", "30d",
                      "--permission", "vms:read", "--permission", "points:read")
    secret = created.out.strip()
    assert secret.startswith("stasis_") and "shown this once" in created.err
    listed = acli.ok("token", "list", "--json").json()
    assert isinstance(listed, list) and listed[0]["permissions"] == ["points:read",
                                                                     "vms:read"]
    assert secret not in acli.ok("token", "list").out
    db = Path(acli.env["STASIS_STATE_DIR"]) / "catalog.db"
    with sqlite3.connect(db) as conn:
        assert secret not in str(conn.execute("SELECT * FROM tokens").fetchall())
        password = conn.execute("SELECT password FROM users").fetchone()[0]
    assert password.startswith("$argon2id$") and "a long password" not in password
    assert db.read_bytes().find(secret.encode()) == -1
    revoked = acli.ok("token", "revoke", str(listed[0]["id"]), "--json").json()
    assert isinstance(revoked, dict) and revoked["state"] == "revoked"
    actions = [a["action"] for a in acli.ok("audit", "--json").json()]  # type: ignore[union-attr]
    assert actions == ["token.revoke", "token.create", "user.add"]
    assert [a["action"] for a in acli.ok("audit", "--action", "user.", "--since", "1h",
                                         "--json").json()] == ["user.add"]  # type: ignore[union-attr]


def test_users_tenants_and_roles(acli: Cli, tmp_path: Path) -> None:
    pw = str(tmp_path / "pw")
    t = acli.ok("tenant", "add", "acme", "--vm", "web1", "--label", "owner=acme",
                "--restore-pool", "acme", "--restore-dir", "/srv/acme", "--json").json()
    assert isinstance(t, dict) and t["labels"] == {"owner": "acme"}
    acli.ok("user", "add", "ann", "--role", "restore", "--tenant", "acme",
            "--password-file", pw)
    edited = acli.ok("tenant", "edit", "acme", "--add-vm", "db1", "--no-labels",
                     "--json").json()
    assert isinstance(edited, dict)
    assert edited["vms"] == ["web1", "db1"] and edited["labels"] == {}
    assert edited["users"] == ["ann"]
    assert "acme" in acli.ok("tenant", "list").out
    refused(acli("tenant", "remove", "acme"), 65, "still has users", "Nothing was changed")
    acli.ok("user", "passwd", "ann", "--password-file", pw)
    assert acli.ok("user", "disable", "ann", "--json").json()["disabled"] is True  # type: ignore[index,call-overload]
    assert acli.ok("user", "disable", "ann", "--enable", "--json").json()[  # type: ignore[index,call-overload]
        "disabled"] is False
    users = acli.ok("user", "list", "--json").json()
    assert isinstance(users, list) and [u["name"] for u in users] == ["ann"]
    acli.ok("role", "add", "peek", "--permission", "vms:read", "--description", "looks")
    roles = acli.ok("role", "list", "--json").json()
    assert isinstance(roles, list) and {"admin", "peek"} <= {r["name"] for r in roles}
    refused(acli("role", "remove", "admin"), 65, "built-in")
    acli.ok("role", "remove", "peek")
    acli.ok("user", "remove", "ann")
    acli.ok("tenant", "remove", "acme")
    assert acli.ok("tenant", "list", "--json").json() == []


def test_bad_input_is_refused_and_changes_nothing(acli: Cli, tmp_path: Path) -> None:
    pw = str(tmp_path / "pw")
    # no password file and no terminal: refused, never read from an argument
    refused(acli("user", "add", "ann", "--role", "admin"), 2, "--password-file")
    refused(acli("user", "add", "ann", "--role", "admin", "--password-file",
                 str(tmp_path / "missing")), 2, "cannot read the password file")
    refused(acli("user", "add", "ann", "--role", "emperor", "--password-file", pw), 66,
            "no role 'emperor'")
    refused(acli("user", "add", "ann", "--role", "viewer", "--tenant", "nope",
                 "--password-file", pw), 66, "no tenant")
    acli.ok("user", "add", "ann", "--role", "viewer", "--password-file", pw)
    refused(acli("token", "create", "x", "--user", "ann", "--role", "admin"), 65,
            "exceed", "Nothing was made")
    refused(acli("token", "create", "x", "--user", "ann", "--expires", "soon"), 2,
            "not an expiry")
    refused(acli("token", "create", "x", "--user", "ann", "--permission", "vms:steal"), 2,
            "unknown permission")
    refused(acli("role", "add", "r", "--permission", "nope"), 2, "unknown permission")
    refused(acli("token", "revoke", "42"), 66, "no token 42")
    refused(acli("audit", "--since", "yesterday-ish"), 2, "not a time")
    assert acli.ok("token", "list", "--json").json() == []
    users = acli.ok("user", "list", "--json").json()
    assert isinstance(users, list) and [u["name"] for u in users] == ["ann"]
