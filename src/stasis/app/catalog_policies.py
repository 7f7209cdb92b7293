"""Policies stored in the catalog: listed, shown, created, imported, edited, exported,
deleted, and their retention previewed.

A stored policy is its TOML source (one ``[[policy]]`` table), checked with
:func:`stasis.service.policy.check_text` — the check ``stasis policy check`` and the
service make — before anything is written: a refused change writes nothing and names
every problem with its line and key. A policy given as fields (the keys of a
``[[policy]]`` table, as JSON) is written out as TOML and checked the same way.

Who sees what (with a :class:`~stasis.app.scope.Scope`): the system sees every policy; a
tenant sees the policies it defined (``tenant`` = its name) and the templates the
system published (``template``), which it may copy into a policy of its own with
members it owns (:func:`create_from_template`). Only a principal that manages users
(``users:admin``) publishes, edits or deletes templates. A tenant's policy may name
only its own VMs and groups, and label selectors only when they include the tenant's
labels (no name globs: they select whatever matches).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stasis.app.catalogs import using
from stasis.app.models import DraftPreview, PointDecision, RetentionPreview, StoredPolicy
from stasis.app.policies import summary
from stasis.app.scope import Scope
from stasis.errors import PermissionDenied, PolicyError, PolicyNotFound, UsageError

if TYPE_CHECKING:
    from stasis.catalog import Catalog
    from stasis.catalog.policies import PolicyState
    from stasis.repository import Repository
    from stasis.service.policy import Policy

ADMIN = "users:admin"
MEMBER_KEYS = ("vms", "groups", "select", "labels")


@dataclass(frozen=True)
class Rules:
    """What a policy's repositories are checked against: the served names and the
    default one (the keyword arguments of :func:`stasis.service.policy.check_text`)."""

    repositories: Collection[str] | None = None
    default_repository: str | None = None


# ------------------------------------------------------------------ TOML out of fields

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE.fullmatch(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float | str):
        return json.dumps(v)  # a JSON string or number is a TOML one
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        inner = ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items()
                          if x is not None)
        return "{ " + inner + " }" if inner else "{}"
    raise UsageError(f"{type(v).__name__} is not a value a policy holds. Nothing was "
                     "changed.")


def policy_toml(fields: Mapping[str, Any]) -> str:
    """One ``[[policy]]`` table holding ``fields`` (a JSON null: the key left out)."""
    lines = ["[[policy]]"]
    lines += [f"{_key(str(k))} = {_value(v)}" for k, v in fields.items() if v is not None]
    return "\n".join(lines) + "\n"


def policy_fields(source: str) -> dict[str, Any]:
    """The fields of the one ``[[policy]]`` table of ``source``."""
    return dict(tomllib.loads(source)["policy"][0])


# ------------------------------------------------------------------ checks


def checked(text: str, rules: Rules, *, where: str = "the request") -> list[Policy]:
    """The policies of ``text``; PolicyError naming every problem otherwise."""
    from stasis.service.policy import check_text

    policies, problems = check_text(text, repositories=rules.repositories,
                                    default_repository=rules.default_repository)
    if problems:
        rendered = [p.render(where) for p in problems]
        count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
        raise PolicyError(where, count, "\n".join(rendered), problems=rendered)
    return policies


def _check_members(scope: Scope | None, catalog: Catalog, policy: Policy) -> None:
    """Refuse a tenant's policy whose members could be VMs the tenant does not own."""
    if scope is None or scope.everything or scope.tenant is None:
        return
    from stasis.catalog import GroupStore

    t, m = scope.tenant, policy.members
    foreign = [vm for vm in m.vms if not scope.owns_vm(vm)]
    if foreign:
        raise PolicyError("the request", "a member is not the tenant's",
                          f"policy '{policy.name}' names {', '.join(map(repr, foreign))}, "
                          f"not a VM of tenant '{t.name}'",
                          problems=[f"vms: {v!r} is not a VM of tenant '{t.name}'"
                                    for v in foreign])
    groups = GroupStore(catalog)
    others = [g for g in m.groups
              if (found := groups.get(g)) is None or found.tenant != t.name]
    if others:
        raise PolicyError("the request", "a group is not the tenant's",
                          f"policy '{policy.name}' names {', '.join(map(repr, others))}, "
                          f"not a group of tenant '{t.name}'",
                          problems=[f"groups: {g!r} is not a group of tenant '{t.name}'"
                                    for g in others])
    if m.select or (m.labels and (not t.labels or any(
            m.labels.get(k) != v for k, v in t.labels.items()))):
        raise PolicyError("the request", "its selectors could select others' VMs",
                          f"policy '{policy.name}' selects VMs by name, or by labels "
                          f"that do not include those of tenant '{t.name}'",
                          problems=["select, labels: a tenant's policy names its VMs, or "
                                    "selects them by labels that include its own ("
                                    f"{' '.join(f'{k}={v}' for k, v in t.labels.items())})"])


def _may_see(scope: Scope | None, s: PolicyState) -> bool:
    return scope is None or scope.owns_defined(s.tenant) or (s.template and s.tenant is None)


def _may_change(scope: Scope | None, s: PolicyState) -> bool:
    """Whether ``scope`` may edit or delete ``s`` (it sees it; a template: admins only)."""
    if scope is None:
        return True
    if s.template:
        return scope.everything and scope.principal.can(ADMIN)
    return scope.owns_defined(s.tenant)


def _missing(name: str) -> PolicyNotFound:
    return PolicyNotFound(f"no policy named '{name}' in the catalog. Nothing was changed; "
                          "GET /api/v1/policies lists the policies.")


def _seen(c: Catalog, name: str, scope: Scope | None) -> PolicyState:
    from stasis.catalog import PolicyStore

    s = PolicyStore(c).get(name)
    if s is None or not _may_see(scope, s):
        raise _missing(name)
    return s


def _changeable(c: Catalog, name: str, scope: Scope | None) -> PolicyState:
    s = _seen(c, name, scope)
    if not _may_change(scope, s):
        raise PermissionDenied(ADMIN, f"{scope.principal.shown if scope else 'this'} "
                               f"(templates such as '{name}' are changed by admins only)")
    return s


def _tenant(scope: Scope | None) -> str | None:
    return scope.tenant.name if scope is not None and scope.tenant is not None else None


def _check_template(scope: Scope | None, template: bool) -> None:
    if template and scope is not None and not (scope.everything
                                                and scope.principal.can(ADMIN)):
        raise PermissionDenied(ADMIN, f"{scope.principal.shown} (only admins publish "
                                      "policy templates)")


# ------------------------------------------------------------------ the model


def stored_policy(s: PolicyState, after: datetime | None = None) -> StoredPolicy:
    """``s`` as shown: with the policy's next runs after ``after`` (now)."""
    from stasis.service.policy import parse_policies

    p = parse_policies(s.source, file=f"catalog:{s.name}")[0]
    return StoredPolicy(
        name=s.name, tenant=s.tenant, template=s.template, updated=s.updated.isoformat(),
        last_run=s.last_run.isoformat() if s.last_run else None,
        next_run=s.next_run.isoformat() if s.next_run else None,
        policy=summary(p, after or datetime.now(UTC)))


def _readable(s: PolicyState) -> bool:
    from stasis.service.policy import parse_policies

    try:
        parse_policies(s.source, file=f"catalog:{s.name}")
    except (PolicyError, UsageError):
        return False
    return True


# ------------------------------------------------------------------ operations


def list_policies(catalog: str | Catalog | None, *, scope: Scope | None = None,
                  after: datetime | None = None,
                  template: bool | None = None) -> list[StoredPolicy]:
    """The stored policies ``scope`` sees (only templates, or none, with ``template``),
    each with its next runs after ``after``; a source this Stasis cannot read any more
    is left out, as the service leaves it."""
    from stasis.catalog import PolicyStore

    with using(catalog) as c:
        states = PolicyStore(c).list()
    return [stored_policy(s, after) for s in states
            if _may_see(scope, s) and (template is None or s.template == template)
            and _readable(s)]


def show_policy(catalog: str | Catalog | None, name: str, *, scope: Scope | None = None,
                after: datetime | None = None) -> StoredPolicy:
    with using(catalog) as c:
        return stored_policy(_seen(c, name, scope), after)


def export_policy(catalog: str | Catalog | None, name: str, *,
                  scope: Scope | None = None) -> str:
    """The TOML source of policy ``name`` (a policy file of that one policy)."""
    with using(catalog) as c:
        return _seen(c, name, scope).source


def create_policies(catalog: str | Catalog | None, text: str, *, rules: Rules,
                    scope: Scope | None = None, template: bool = False) -> list[StoredPolicy]:
    """Store every policy of the policy file ``text`` (none when any is wrong, or one
    of the names exists already)."""
    from stasis.catalog import PolicyStore

    _check_template(scope, template)
    policies = checked(text, rules)
    with using(catalog) as c:
        store = PolicyStore(c)
        taken = [p.name for p in policies if store.get(p.name) is not None]
        if taken:
            raise PolicyError("the request", "a policy of that name exists",
                              f"the catalog has a policy named {', '.join(map(repr, taken))} "
                              "already; change it with PUT or PATCH",
                              problems=[f"name: a policy named {n!r} exists" for n in taken])
        for p in policies:
            _check_members(scope, c, p)
        made = []
        for p in policies:
            s = store.create(p.name, p.source, tenant=_tenant(scope), template=template)
            if s is None:
                raise PolicyError("the request", "a policy of that name exists",
                                  f"policy '{p.name}' was created meanwhile",
                                  problems=[f"name: a policy named {p.name!r} exists"])
            made.append(s)
        return [stored_policy(s) for s in made]


def create_from_template(catalog: str | Catalog | None, template: str,
                         fields: Mapping[str, Any], *, rules: Rules,
                         scope: Scope | None = None) -> StoredPolicy:
    """A new policy: template ``template``'s settings, with ``fields`` (its ``name``
    and its members, at least) in place of the template's."""
    if "name" not in fields:
        raise PolicyError("the request", "it has no name", "a policy made from a template "
                          "needs a name of its own", problems=["name: missing"])
    with using(catalog) as c:
        t = _seen(c, template, scope)
        if not t.template:
            raise _missing(template)
        base = policy_fields(t.source)
        for k in MEMBER_KEYS:
            base.pop(k, None)
        text = policy_toml({**base, **fields})
        return create_policies(c, text, rules=rules, scope=scope)[0]


def replace_policy(catalog: str | Catalog | None, name: str, text: str, *, rules: Rules,
                   scope: Scope | None = None,
                   template: bool | None = None) -> StoredPolicy:
    """Store ``text`` (one policy, named ``name``) as policy ``name``."""
    from stasis.catalog import PolicyStore

    policies = checked(text, rules)
    if len(policies) != 1 or policies[0].name != name:
        got = ", ".join(repr(p.name) for p in policies)
        raise PolicyError("the request", "it is not this one policy",
                          f"the body must hold one policy named '{name}' (it holds {got})",
                          problems=[f"name: must be {name!r}"])
    with using(catalog) as c:
        before = _changeable(c, name, scope)
        if template is not None and template != before.template:
            _check_template(scope, True)
        _check_members(scope, c, policies[0])
        s = PolicyStore(c).store(name, policies[0].source, template=template)
        return stored_policy(s)


def merge_patch(target: Any, patch: Any) -> Any:
    """``patch`` applied to ``target`` as RFC 7396 says (null removes a key)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def patch_policy(catalog: str | Catalog | None, name: str, patch: Mapping[str, Any], *,
                 rules: Rules, scope: Scope | None = None) -> StoredPolicy:
    """Policy ``name`` with ``patch`` merged into its fields (RFC 7396 JSON merge patch),
    checked whole; the name cannot change."""
    if patch.get("name", name) != name:
        raise PolicyError("the request", "it renames the policy",
                          "a policy's name cannot change", problems=["name: cannot change"])
    with using(catalog) as c:
        s = _changeable(c, name, scope)
        fields = merge_patch(policy_fields(s.source), dict(patch))
        return replace_policy(c, name, policy_toml(fields), rules=rules, scope=scope)


def delete_policy(catalog: str | Catalog | None, name: str, *,
                  scope: Scope | None = None) -> StoredPolicy:
    """Forget policy ``name`` (its points stay); return what it was."""
    from stasis.catalog import PolicyStore

    with using(catalog) as c:
        s = _changeable(c, name, scope)
        shown = stored_policy(s)
        PolicyStore(c).delete(name)
        return shown


def retention_preview(catalog: str | Catalog | None, name: str, repo: Repository, *,
                      repository: str, scope: Scope | None = None,
                      now: datetime | None = None) -> RetentionPreview:
    """What policy ``name``'s retention would keep and remove in ``repo`` now, over the
    chains its runs made (nothing is removed)."""
    from stasis.service.policy import parse_policies

    with using(catalog) as c:
        s = _seen(c, name, scope)
    p = parse_policies(s.source, file=f"catalog:{name}")[0]
    return _retention(p, repo, repository=repository, now=now or datetime.now(UTC))


def _retention(p: Policy, repo: Repository, *, repository: str,
               now: datetime) -> RetentionPreview:
    from stasis.service.prune import policy_chains, prune_points

    name, at = p.name, now
    chains = policy_chains(repo, name)
    result = prune_points(repo, p.retention_rules(), now=at, names=chains, dry_run=True) \
        if chains else None
    decisions = [PointDecision.model_validate(d.to_dict())
                 for d in (result.decisions if result else [])]
    return RetentionPreview(policy=name, repository=repository, now=at.isoformat(),
                            chains=chains, points=decisions,
                            kept=[d.id for d in decisions if d.keep],
                            removed=[d.id for d in decisions if not d.keep])


def draft_preview(catalog: str | Catalog | None, text: str, repo: Repository, *,
                  rules: Rules, repository: str, scope: Scope | None = None,
                  now: datetime | None = None) -> DraftPreview:
    """Policy ``text`` (one ``[[policy]]`` table, saved or not) checked as a save checks
    it (PolicyError naming every problem), with its next runs after ``now`` and what its
    retention would keep and remove in ``repo`` of the chains its name's runs made.
    Nothing is stored. To a tenant, only a stored policy of its own has chains (the
    points of a name it does not own are not shown)."""
    from stasis.catalog import PolicyStore

    policies = checked(text, rules)
    if len(policies) != 1:
        raise PolicyError("the request", "it is not one policy",
                          f"a preview is of one policy (the body holds {len(policies)})",
                          problems=["policy: one [[policy]] table"])
    p, at = policies[0], now or datetime.now(UTC)
    with using(catalog) as c:
        _check_members(scope, c, p)
        stored = PolicyStore(c).get(p.name)
    tenant = scope is not None and not scope.everything
    if (stored is None and tenant) or (stored is not None and not _may_see(scope, stored)):
        kept = RetentionPreview(policy=p.name, repository=repository, now=at.isoformat(),
                                chains=[], points=[], kept=[], removed=[])
    else:
        kept = _retention(p, repo, repository=repository, now=at)
    return DraftPreview(policy=summary(p, at), retention=kept)
