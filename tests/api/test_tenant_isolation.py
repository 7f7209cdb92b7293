"""Tenant isolation across every route, generated from the OpenAPI document.

Two tenants, acme and globex, each own VMs (by name and by label), a group, a policy,
points (one held), jobs with logs, users and tokens. A user of one tenant (an admin
and an operator bound to it) then tries every operation of the OpenAPI document with
each of the other tenant's ids of the right kind, in the path, in the query filters
and in the body fields that name objects. Each answer must be exactly the answer for
an id that names nothing (same status, same ``kind``, same body shape, the same
detail but for the id), never a 2xx for a change, and the other tenant's objects
must be as they were. Then every GET the attacker makes with its own ids and every
list, stream, /metrics, /audit and /status must show nothing of the other tenant.

A route added later is attacked the moment it exists: a path parameter, a query
parameter or a body field this file does not know the kind of fails the test.

The product rules these close are documented in docs/accounts.md ("Tenants").
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from stasis.api.app import create_app
from stasis.api.context import ApiContext
from stasis.app import accounts as acc
from stasis.app.auth import Tenant
from stasis.app.kinds import KINDS, Env, Where, opened, parse_params
from stasis.app.policies import find_policy
from stasis.catalog import JobStore
from stasis.catalog.accounts import AccountStore
from stasis.errors import GroupError
from stasis.hypervisor import labels as lb
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Manifest, Repository, VmRecord
from stasis.service.runner import Service
from tests.api.conftest import TEST_URI, serving
from tests.conftest import reopen

Client = Callable[..., TestClient]
RANDOM = "zz-nothing-here"
RANDOM_POINT = "f" * 32
RANDOM_PREFIX = "ffffff"
RANDOM_JOB = "987654"
RANDOM_TOKEN = "987655"


def _xml(name: str) -> str:
    return (f"<domain type='test'><name>{name}</name><memory>65536</memory>"
            "<os><type>hvm</type></os></domain>")


@dataclass
class Side:
    """One tenant and what it owns, with clients of its users."""

    name: str
    tenant: Tenant
    vms: list[str]
    group: str
    policy: str
    points: list[str] = field(default_factory=list)
    held: str = ""
    jobs: list[int] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    admin: TestClient | None = None
    operator: TestClient | None = None

    def ids(self, kind: str) -> list[str]:
        """The ids of this side's objects of ``kind`` (as a path or field holds them)."""
        return {
            "vm": self.vms,
            "group": [self.group],
            "policy": [self.policy],
            "point": [self.points[0], self.points[0][:8], f"{self.vms[0]}@latest",
                      self.held],
            "pointname": [self.vms[0]],
            "job": [str(j) for j in self.jobs],
            "user": self.users,
            "token": [str(t) for t in self.tokens],
            "tenant": [self.name],
            "instant": [self.vms[0], f"{self.name}-instant"],
            "clone": [f"{self.name}-clone"],
            "export": [f"{self.name}-export"],
            "disk": ["vda"],
            "labels": [f"owner={self.name}"],
        }[kind]

    def markers(self) -> list[str]:
        """Strings that only this side's objects put in an answer."""
        return [self.name, *self.points, *self.vms]


# The random id of each kind (an id that names nothing), for the same request.
MISSING = {"point": RANDOM_POINT, "job": RANDOM_JOB, "token": RANDOM_TOKEN,
           "labels": f"owner={RANDOM}", "disk": "vdz"}


def missing(kind: str, value: str) -> str:
    if kind == "point":
        if value.endswith("@latest"):
            return f"{RANDOM}@latest"
        return RANDOM_POINT if len(value) == 32 else RANDOM_PREFIX
    return MISSING.get(kind, RANDOM)


# path parameters: (first segment of the path, parameter) -> the kind of id, or None
# for objects that are the system's (roles, repositories, problem types)
PATH_KINDS: dict[tuple[str, str], str | None] = {
    ("vms", "name"): "vm", ("status", "vm"): "vm", ("attachments", "vm"): "vm",
    ("attachments", "target"): "disk", ("groups", "name"): "group",
    ("policies", "name"): "policy", ("points", "point"): "point",
    ("jobs", "job_id"): "job", ("instant", "name"): "instant",
    ("clones", "name"): "clone", ("exports", "export_id"): "export",
    ("users", "name"): "user", ("tenants", "name"): "tenant", ("tokens", "ident"): "token",
    ("roles", "name"): None, ("repositories", "name"): None, ("problems", "kind"): None,
}

# query parameters that name objects: name -> kind ("name" depends on the route)
QUERY_KINDS: dict[str, str | None] = {
    "vm": "vm", "policy": "policy", "user": "user", "label": "labels",
    "limit": None, "cursor": None, "sort": None, "repository": None, "repo": None,
    "state": None, "protected": None, "kind": None, "since": None, "until": None,
    "held": None, "template": None, "after": None, "all": None, "action": None,
    "offset": None, "last_event_id": None, "path": None, "pattern": None, "disk": None,
    "format": None, "passed": None, "days": None,
}
QUERY_NAME = {"vms": "vm", "points": "pointname"}

# body fields that name objects: (first segment, field) or field -> kind; None: a
# field that names no object of a tenant (a new object's name, a setting)
FIELD_KINDS: dict[tuple[str, str] | str, str | None] = {
    "vms": "vm", "add_vms": "vm", "remove_vms": "vm", "order": "vm", "vm": "vm",
    "group": "group", "policy": "policy", "point": "point", "points": "point",
    "user": "user", "tenant": "tenant", "labels": "labels", "add_labels": "labels",
    "set": "labels", "remove": None, "remove_labels": None,
    ("attachments", "to"): "vm", ("prunes", "name"): "pointname",
    ("copies", "name"): "pointname",
    ("drills", "mode"): None, ("drills", "checks"): None, ("drills", "check_timeout"): None,
}

# a change a PATCH or PUT makes when nothing in it names an object
EXAMPLES: dict[str, dict[str, Any]] = {
    "GroupPatch": {"description": "changed by an intruder"},
    "LabelsPatch": {"set": {"color": "red"}},
    "LabelsPut": {"labels": {}},
    "UserChange": {"disabled": True},
    "TenantChange": {"description": "changed by an intruder"},
    "HoldBody": {"reason": "held by an intruder"},
}


# ------------------------------------------------------------------ the two tenants


@pytest.fixture
def world(api_ctx: ApiContext, client: Client, tmp_path: Path
          ) -> Iterator[tuple[Side, Side]]:
    conn = libvirt.open(TEST_URI)
    made = []
    sides = []
    for name in ("acme", "globex"):
        vms = {f"{name}-web": {}, f"{name}-app": {"owner": name}}
        for vm, labels in vms.items():
            dom = conn.defineXML(_xml(vm))
            made.append(dom)
            if labels:
                lb.update_labels(dom, labels, [])
        restore = tmp_path / name
        restore.mkdir()
        t = Tenant(name, vms=frozenset({f"{name}-web"}), labels={"owner": name},
                   restore_dirs=(str(restore),))
        s = Side(name, t, list(vms), group=f"{name}-group", policy=f"{name}-nightly")
        s.admin = client("admin", t, user=f"{name}-admin")
        s.operator = client("operator", t, user=f"{name}-operator")
        s.users = [f"{name}-admin", f"{name}-operator"]
        s.tokens = [tk.id for u in s.users for tk in AccountStore(api_ctx.catalog).tokens(u)]
        op = s.operator
        r = op.post("/api/v1/groups", json={"name": s.group, "vms": [f"{name}-web"],
                                            "labels": {"owner": name}})
        assert r.status_code == 201, r.text
        r = op.post("/api/v1/policies", json={"name": s.policy, "vms": [f"{name}-web"],
                                              "groups": [s.group], "every": "1h"})
        assert r.status_code == 201, r.text
        repo = api_ctx.repository()
        base = 1 if name == "acme" else 5
        for i, vm in enumerate(s.vms):
            m = Manifest(id=f"{'a' if name == 'acme' else 'b'}{i + 1:031x}", name=vm,
                         time=f"2026-01-{base + i:02d}T00:00:00+00:00",
                         vms=[VmRecord(name=vm, kind="vm", domain_xml=_xml(vm))])
            repo.commit(m)
            s.points.append(m.id)
        s.held = s.points[1]
        assert op.post(f"/api/v1/points/{s.held}/hold",
                       json={"reason": "keep"}).status_code == 200
        r = op.post("/api/v1/backups", json={"vms": [s.vms[0]]})
        assert r.status_code == 202, r.text
        s.jobs.append(r.json()["job"]["id"])
        store = JobStore(api_ctx.catalog)
        ended = store.create("restore", s.points[0], vms=[s.vms[1]], tenant=name)
        store.log(ended.id, "info", f"a log line of {name}'s restore")
        store.finish(ended.id, "succeeded", bytes_read=7)
        s.jobs.append(ended.id)
        sides.append(s)
    yield sides[0], sides[1]
    for dom in conn.listAllDomains():
        if dom.name().startswith(("acme", "globex")):
            dom.undefine()
    conn.close()


def snapshot(ctx: ApiContext, side: Side) -> dict[str, Any]:
    """Everything of ``side``'s as its own admin, the catalog and libvirt see it."""
    c = side.admin
    assert c is not None
    conn = lv.connect(TEST_URI)
    held = ctx.repository().holds()
    jobs = {j.id: (j.state, j.name, j.vms) for j in JobStore(ctx.catalog).list()
            if j.id in side.jobs or j.tenant == side.name}
    store = AccountStore(ctx.catalog)
    return {
        "points": c.get("/api/v1/points?limit=1000").json()["items"],
        "holds": {p: held[p].reason for p in side.points if p in held},
        "groups": c.get("/api/v1/groups").json()["items"],
        "policies": [(p["name"], p.get("policy")) for p in
                     c.get("/api/v1/policies").json()["items"]],
        "jobs": jobs,
        "logs": [c.get(f"/api/v1/jobs/{j}/log").json()["lines"] for j in side.jobs],
        "domains": {vm: (lb.get_labels(conn.lookupByName(vm)),
                         conn.lookupByName(vm).XMLDesc(0)) for vm in side.vms},
        "tenant": store.tenant(side.name),
        "users": [(u.name, u.role, u.tenant, u.disabled) for u in store.users()
                  if u.name in side.users],
        "tokens": [(tk.id, tk.revoked) for u in side.users for tk in store.tokens(u)],
    }


# ------------------------------------------------------------------ the attack


@dataclass
class Attempt:
    method: str
    path: str
    kind: str
    victim: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: str | None = None

    def send(self, c: TestClient, value: str) -> Response:
        def sub(x: Any) -> Any:
            if isinstance(x, str):
                return _word(self.victim).sub(value, x)
            if isinstance(x, list):
                return [sub(v) for v in x]
            if isinstance(x, dict):
                return {sub(k): sub(v) for k, v in x.items()}
            return x

        headers = {"Content-Type": "application/toml"} if self.content is not None else {}
        return c.request(self.method, sub(self.path), params=sub(self.params),
                         json=sub(self.json) if self.content is None else None,
                         content=sub(self.content), headers=headers)


def _schema(doc: dict[str, Any], s: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if "$ref" in s:
        name = s["$ref"].rsplit("/", 1)[1]
        return name, doc["components"]["schemas"][name]
    for option in s.get("anyOf", []):
        if "$ref" in option:
            return _schema(doc, option)
    return "", s


def _filler(prop: dict[str, Any]) -> Any:
    kinds = {prop.get("type")} | {o.get("type") for o in prop.get("anyOf", [])}
    if "array" in kinds:
        return []
    if "object" in kinds:
        return {}
    if "boolean" in kinds:
        return False
    if "integer" in kinds or "number" in kinds:
        return 1
    return "filler"


def _value(kind: str, value: str, prop: dict[str, Any]) -> Any:
    if kind == "labels":
        k, _, v = value.partition("=")
        return {k: v}
    is_list = prop.get("type") == "array" or any(o.get("type") == "array"
                                                 for o in prop.get("anyOf", []))
    return [value] if is_list else value


def attempts(doc: dict[str, Any], me: Side, victim: Side) -> list[Attempt]:
    """Every operation with each of ``victim``'s ids in each place that names one."""
    unknown: list[str] = []
    out: list[Attempt] = []
    for path, ops in doc["paths"].items():
        segment = path.removeprefix("/api/v1/").split("/")[0]
        for method, op in ops.items():
            if op["x-permission"] == "public":
                continue
            m = method.upper()
            own_path = path
            params = [p for p in op.get("parameters", []) if p["in"] == "path"]
            slots: list[tuple[str, str]] = []  # (parameter, kind)
            for p in params:
                if (segment, p["name"]) not in PATH_KINDS:
                    unknown.append(f"path parameter {p['name']} of {m} {path}")
                    continue
                kind = PATH_KINDS[(segment, p["name"])]
                if kind is None:
                    own_path = own_path.replace("{" + p["name"] + "}", RANDOM)
                else:
                    slots.append((p["name"], kind))
            for p, kind in slots:
                own_path = own_path.replace("{" + p + "}", me.ids(kind)[0])
            body, content = _body(doc, op, me, segment)
            for p, kind in slots:
                for v in victim.ids(kind):
                    path_v = path
                    for q, k in slots:
                        path_v = path_v.replace("{" + q + "}", v if q == p else
                                                me.ids(k)[0])
                    for q in params:
                        path_v = path_v.replace("{" + q["name"] + "}", RANDOM)
                    out.append(Attempt(m, path_v, kind, v, json=body, content=content))
            for q in op.get("parameters", []):
                if q["in"] != "query":
                    continue
                kind = QUERY_NAME.get(segment) if q["name"] == "name" else \
                    QUERY_KINDS.get(q["name"], "?")
                if kind == "?":
                    unknown.append(f"query parameter {q['name']} of {m} {path}")
                    continue
                if kind is None:
                    continue
                for v in victim.ids(kind):
                    out.append(Attempt(m, own_path, kind, v, params={q["name"]: v},
                                       json=body, content=content))
            if content is not None or body is None:
                continue
            _name, schema = _schema(doc, op["requestBody"]["content"]["application/json"]
                                    ["schema"])
            for f, prop in schema.get("properties", {}).items():
                key: tuple[str, str] | str = (segment, f) if (segment, f) in FIELD_KINDS else f
                if key not in FIELD_KINDS:
                    if f not in ("name", "repository", "description", "password", "role",
                                 "permissions", "expires", "what", "storage", "network",
                                 "start", "in_place", "disk", "to", "format", "force",
                                 "suffix", "tags", "parallel", "consistency", "require",
                                 "images", "select", "hooks", "add_select", "remove_select",
                                 "no_require", "pre_host", "post_host", "pre_guest",
                                 "post_guest", "clear_hooks", "hook_timeout", "disabled",
                                 "restore_pools", "restore_networks", "restore_dirs",
                                 "reason", "until", "timezone", "deep", "repair_from",
                                 "keep", "within", "min_age", "dry_run", "wait", "all",
                                 "limit_rate", "linked", "target", "pool"):
                        unknown.append(f"body field {f} of {m} {path}")
                    continue
                kind = FIELD_KINDS[key]
                if kind is None:
                    continue
                for v in victim.ids(kind):
                    out.append(Attempt(m, own_path, kind, v,
                                       json={**body, f: _value(kind, v, prop)}))
    assert not unknown, ("a route takes ids this test does not know the kind of; add "
                         "them to PATH_KINDS, QUERY_KINDS or FIELD_KINDS:\n"
                         + "\n".join(unknown))
    return out


def _body(doc: dict[str, Any], op: dict[str, Any], me: Side, segment: str
          ) -> tuple[Any, str | None]:
    """A body of the operation's schema: its required fields, filled with ``me``'s own
    ids where they name objects (so the request is one the attacker could send)."""
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        if "application/toml" in content:
            return None, (f'[[policy]]\nname = "{me.policy}"\nvms = ["{me.vms[0]}"]\n'
                          'every = "1h"\n')
        return None, None
    name, schema = _schema(doc, content["application/json"]["schema"])
    if name in EXAMPLES:
        return dict(EXAMPLES[name]), None
    body: dict[str, Any] = {}
    props = schema.get("properties", {})
    for f in schema.get("required", []):
        key: tuple[str, str] | str = (segment, f) if (segment, f) in FIELD_KINDS else f
        kind = FIELD_KINDS.get(key)
        body[f] = _value(kind, me.ids(kind)[0], props[f]) if kind else _filler(props[f])
    return body, None


def _word(value: str) -> re.Pattern[str]:
    """``value`` as a whole word (a job id 4 is not the 4 of a status 404)."""
    return re.compile(rf"(?<![\w-]){re.escape(value)}(?![\w-])")


def _shape(r: Response, value: str) -> Any:
    """What an answer tells, with the id asked for taken out."""
    if r.headers.get("content-type", "").startswith(("application/json",
                                                     "application/problem+json")):
        body = r.json()
        if isinstance(body, dict):
            body.pop("instance", None)
        text = _word(value).sub("<id>", str(body))
    else:
        text = _word(value).sub("<id>", r.text)
    return r.status_code, text


def _attack(ctx: ApiContext, doc: dict[str, Any], me: Side, victim: Side,
            c: TestClient) -> tuple[list[str], int]:
    wrong = []
    tried = 0
    for a in attempts(doc, me, victim):
        tried += 1
        got = a.send(c, a.victim)
        other = missing(a.kind, a.victim)
        baseline = a.send(c, other)
        what = f"{a.method} {a.path} {a.params} {a.json} [{a.kind}={a.victim}]"
        if got.status_code < 300 and a.method != "GET":
            wrong.append(f"{what} -> {got.status_code}: {got.text[:200]}")
            continue
        if _shape(got, a.victim) != _shape(baseline, other):
            wrong.append(f"{what}: answers {got.status_code} {got.text[:300]} but for an "
                         f"id of nothing {baseline.status_code} {baseline.text[:300]}")
            continue
        leaked = [x for x in victim.markers() if x != a.victim and x in got.text
                  and x not in a.victim]
        if leaked:
            wrong.append(f"{what}: the answer names {leaked}")
    return wrong, tried


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_every_route_with_the_other_tenants_ids_answers_as_for_nothing(
        world: tuple[Side, Side], api_ctx: ApiContext, role: str) -> None:
    acme, globex = world
    me, victim = (acme, globex) if role == "admin" else (globex, acme)
    doc = create_app(api_ctx).openapi()
    before = snapshot(api_ctx, victim)
    c = getattr(me, role)
    wrong, tried = _attack(api_ctx, doc, me, victim, c)
    assert tried > 150
    assert not wrong, f"{len(wrong)} of {tried}:\n" + "\n".join(wrong[:40])
    assert snapshot(api_ctx, victim) == before


def _own_gets(doc: dict[str, Any], me: Side) -> list[str]:
    paths = []
    for path, ops in doc["paths"].items():
        if "get" not in ops or ops["get"]["x-permission"] == "public":
            continue
        segment = path.removeprefix("/api/v1/").split("/")[0]
        filled = path
        for p in re.findall(r"\{([^}]+)\}", path):
            kind = PATH_KINDS.get((segment, p))
            # the ended job (the stream of a queued one lasts until it ends)
            filled = filled.replace("{" + p + "}", me.ids(kind)[-1 if kind == "job" else 0]
                                    if kind else RANDOM)
        paths.append(filled)
        if "{job_id}" in path and not path.endswith("/events"):
            paths.append(path.replace("{job_id}", me.ids("job")[0]))
    return paths


def test_every_list_stream_and_read_of_ones_own_shows_nothing_of_the_other(
        world: tuple[Side, Side], api_ctx: ApiContext) -> None:
    acme, globex = world
    doc = create_app(api_ctx).openapi()
    for me, other in ((acme, globex), (globex, acme)):
        for c in (me.admin, me.operator):
            assert c is not None
            for path in _own_gets(doc, me):
                r = c.get(path)
                assert r.status_code < 500, (path, r.text)
                seen = [x for x in other.markers() if x in r.text]
                assert not seen, f"GET {path} shows {seen}: {r.text[:400]}"
                if path == "/api/v1/jobs":
                    ids = {j["id"] for j in r.json()["items"]}
                    assert ids == set(me.jobs), r.text
    # the own lists hold one's own things: the check above looked at real answers
    a = acme.admin
    assert a is not None
    assert {p["id"] for p in a.get("/api/v1/points").json()["items"]} == set(acme.points)
    assert [g["name"] for g in a.get("/api/v1/groups").json()["items"]] == [acme.group]
    assert {v["name"] for v in a.get("/api/v1/vms").json()["items"]} == set(acme.vms)
    events = a.get(f"/api/v1/jobs/{acme.jobs[1]}/events").text
    assert "a log line of acme's restore" in events and "event: end" in events
    assert "acme-web" in a.get("/metrics").text
    assert a.get("/api/v1/audit").json()["items"]


def test_a_system_wide_viewer_still_sees_both(world: tuple[Side, Side],
                                             client: Client) -> None:
    acme, globex = world
    text = client("viewer").get("/api/v1/points").text
    assert all(p in text for p in acme.points + globex.points)


def test_a_prefix_shared_with_another_tenants_point_is_ones_own_point(
        world: tuple[Side, Side], api_ctx: ApiContext, client: Client,
        tmp_path: Path) -> None:
    acme, globex = world
    repo = api_ctx.repository()
    mine, theirs = "c0ffee" + "1" * 26, "c0ffee" + "2" * 26
    for pid, vm in ((mine, "acme-web"), (theirs, "globex-web")):
        repo.commit(Manifest(id=pid, name=vm, time="2026-02-01T00:00:00+00:00",
                             vms=[VmRecord(name=vm, kind="vm", domain_xml=_xml(vm))]))
    a, g = acme.operator, globex.operator
    assert a is not None and g is not None
    assert a.get("/api/v1/points/c0ffee").json()["id"] == mine
    assert g.get("/api/v1/points/c0ffee").json()["id"] == theirs
    r = a.post("/api/v1/restores", json={"what": "disk", "point": "c0ffee",
                                         "to": str(tmp_path / "acme" / "x.raw")})
    assert r.status_code == 202, r.text
    assert JobStore(api_ctx.catalog).get(r.json()["job"]["id"]).params["point"] == mine
    assert client("viewer").get("/api/v1/points/c0ffee").json()["kind"] == "AmbiguousPoint"


# ------------------------------------------------------------------ (a) group and policy runs


def _env(ctx: ApiContext, tmp_path: Path) -> Env:
    def unrecorded(*_: Any) -> Any:
        raise AssertionError("planning records nothing")

    return Env(open_repo=ctx.repository, connect=lambda: lv.connect(TEST_URI),
               catalog=lambda: opened(ctx.catalog), record=unrecorded,
               dirs=lambda: Where(tmp_path, tmp_path),
               find_policy=lambda c, name: find_policy(c, name, None, doing="run"))


def test_a_tenants_group_and_policy_back_up_only_the_tenants_vms_of_now(
        world: tuple[Side, Side], api_ctx: ApiContext, tmp_path: Path) -> None:
    acme, _globex = world
    env = _env(api_ctx, tmp_path)

    def planned(op: str, **params: Any) -> list[str]:
        p = parse_params({"op": op, **params})
        return sorted(KINDS[op].plan(p, env).vms)

    assert planned("backup.group", group=acme.group) == ["acme-app", "acme-web"]
    assert planned("policy", policy=acme.policy) == ["acme-app", "acme-web"]
    # the admin narrows acme's selector: acme-app (owner=acme only) is no longer
    # acme's, though the group's stored selector still picks it
    acc.edit_tenant(api_ctx.catalog, "acme", acc.TenantChange(labels={"owner": "acme",
                                                                       "zone": "a"}))
    assert planned("backup.group", group=acme.group) == ["acme-web"]
    assert planned("policy", policy=acme.policy) == ["acme-web"]
    # and takes acme-web from its names: the group's explicit member is, for the
    # run, a VM that does not exist
    acc.edit_tenant(api_ctx.catalog, "acme", acc.TenantChange(remove_vms=["acme-web"]))
    with pytest.raises(GroupError, match="do not exist: acme-web"):
        planned("backup.group", group=acme.group)
    assert planned("policy", policy=acme.policy) == []
    # a group of the system's selects what it selects
    from stasis.app import groups

    groups.create_group(api_ctx.catalog, "all-owned", connect=TEST_URI,
                        labels=["owner=acme"])
    assert planned("backup.group", group="all-owned") == ["acme-app"]


# ------------------------------------------------------------------ (b) restored as new


@pytest.fixture
def service(api_ctx: ApiContext, tmp_path: Path) -> Iterator[Service]:
    for d in ("run", "scratch"):
        (tmp_path / d).mkdir(exist_ok=True)
    repo: Repository = api_ctx.repository()
    s = Service(api_ctx.catalog, [], repositories={"main": lambda: reopen(repo)},
                connect=lambda: lv.connect(TEST_URI), run_dir=tmp_path / "run",
                scratch_dir=tmp_path / "scratch")
    with serving(api_ctx, s):
        yield s


def _ended(c: TestClient, job: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        j: dict[str, Any] = c.get(f"/api/v1/jobs/{job}").json()
        if j["state"] not in ("queued", "running"):
            return j
        assert time.monotonic() < deadline, j
        time.sleep(0.1)


def test_a_vm_a_tenant_restores_as_new_is_the_tenants_afterwards(
        world: tuple[Side, Side], api_ctx: ApiContext, service: Service,
        tmp_path: Path) -> None:
    acme, globex = world
    a = acme.operator
    assert a is not None
    # acme-app is acme's by its label; the copy's labels are not restored
    r = a.post("/api/v1/restores", json={"point": acme.points[1], "name": "acme-copy",
                                         "storage": str(tmp_path / "acme")})
    assert r.status_code == 202, r.text
    job = _ended(a, r.json()["job"]["id"])
    assert job["state"] == "succeeded", job
    assert "acme-copy" in AccountStore(api_ctx.catalog).tenant("acme").vms  # type: ignore[union-attr]
    assert a.get("/api/v1/vms/acme-copy").status_code == 200
    assert "acme-copy" in a.get("/api/v1/vms").text
    g = globex.operator
    assert g is not None
    assert g.get("/api/v1/vms/acme-copy").status_code == 404
    assert "acme-copy" not in g.get("/api/v1/vms").text


# ------------------------------------------------------------------ (c) names are global


def test_a_taken_name_answers_the_same_whoever_took_it(world: tuple[Side, Side]) -> None:
    acme, globex = world
    a = acme.operator
    assert a is not None

    def conflict(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        r = a.post(path, json=body)
        assert r.status_code == 422 and "exists" in r.text, r.text
        shown = r.json()
        shown.pop("instance", None)
        return r.status_code, str(shown).replace(body["name"], "<name>")

    for path, own, theirs, extra in [
            ("/api/v1/groups", acme.group, globex.group, {"vms": ["acme-web"]}),
            ("/api/v1/policies", acme.policy, globex.policy,
             {"vms": ["acme-web"], "every": "1h"})]:
        mine = conflict(path, {"name": own, **extra})
        other = conflict(path, {"name": theirs, **extra})
        assert mine == other
        assert "globex" not in other[1].replace("<name>", "")


# ------------------------------------------------------------------ (d) ownership labels


def test_a_tenant_cannot_change_the_labels_that_make_a_vm_its_own(
        world: tuple[Side, Side], client: Client) -> None:
    acme, globex = world
    a = acme.operator
    assert a is not None
    for method, body in [("PATCH", {"remove": ["owner"]}),
                         ("PATCH", {"set": {"owner": "globex"}}),
                         ("PUT", {"labels": {"color": "red"}}),
                         ("PUT", {"labels": {"owner": "someone"}})]:
        r = a.request(method, "/api/v1/vms/acme-app/labels", json=body)
        assert r.status_code == 403, r.text
        problem = r.json()
        assert problem["kind"] == "PermissionDenied" and problem["permission"] == "vms:write"
        assert "'owner'" in problem["detail"] and "decide which tenant owns it" in \
            problem["detail"]
    # nor give a VM it owns by name an owner label (its own or another's)
    r = a.patch("/api/v1/vms/acme-web/labels", json={"set": {"owner": "globex"}})
    assert r.status_code == 403, r.text
    # the other labels are its to change; the ownership label stays
    r = a.patch("/api/v1/vms/acme-app/labels", json={"set": {"color": "red"}})
    assert r.status_code == 200 and r.json()["labels"] == {"owner": "acme", "color": "red"}
    r = a.put("/api/v1/vms/acme-app/labels", json={"labels": {"owner": "acme"}})
    assert r.status_code == 200 and r.json()["labels"] == {"owner": "acme"}
    assert globex.operator is not None
    assert globex.operator.get("/api/v1/vms/acme-app").status_code == 404
    # a system-wide admin may move a VM between tenants
    r = client("admin").patch("/api/v1/vms/acme-app/labels",
                              json={"set": {"owner": "globex"}})
    assert r.status_code == 200
    assert globex.operator.get("/api/v1/vms/acme-app").status_code == 200
