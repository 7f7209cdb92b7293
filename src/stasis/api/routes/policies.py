"""``/policies``: the policies stored in the catalog, checked as policy files are.

A policy is written as JSON (the keys of a policy file's ``[[policy]]`` table) or as
a policy file (``Content-Type: application/toml``: an import, one policy or several);
either is checked exactly as ``stasis policy check`` checks a file, and a refused one
answers 422 with every problem (its line and key) and writes nothing. ``GET
/policies/{name}/export`` gives the TOML back. Templates (``?template=true``, admins
only) are offered to tenants, who make policies of their own from one with
``{"from_template": NAME, "name": ..., "vms": [...]}``. ``POST /policies/preview``
checks a policy that is not saved (an editor's form) and answers its next runs and its
retention's keep/remove over the existing points, storing nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from stasis.api.guard import GuardedRoute, needs, principal, scope
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.api.routes.common import context, repository
from stasis.app import audit
from stasis.app import catalog_policies as ops
from stasis.app.auth import Principal
from stasis.app.models import DraftPreview, RetentionPreview, StoredPolicy
from stasis.app.scope import Scope
from stasis.errors import PoliciesFromFile, UsageError
from stasis.repository import Repository

router = APIRouter(route_class=GuardedRoute, tags=["policies"])

TOML_TYPES = ("application/toml", "text/toml", "text/x-toml")
SORTS = {"name": lambda p: p.name, "updated": lambda p: p.updated,
         "next_run": lambda p: p.policy.next_runs[0] if p.policy.next_runs else None}


def _body_doc(description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description, "content": {
        "application/json": {"schema": {"type": "object", "additionalProperties": True}},
        "application/toml": {"schema": {"type": "string"}}}}}


def _with_body(permission: str, description: str) -> dict[str, Any]:
    return {**needs(permission), **_body_doc(description)}


class Body:
    """A request's body: the TOML of a policy file, or the fields of one policy."""

    def __init__(self, toml: str | None, fields: dict[str, Any] | None) -> None:
        self.toml, self.fields = toml, fields


async def body(request: Request) -> Body:
    raw = await request.body()
    media = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media.lower() in TOML_TYPES:
        try:
            return Body(raw.decode("utf-8"), None)
        except UnicodeDecodeError:
            raise UsageError("the policy file is not UTF-8 text. Nothing was changed.") from None
    if media.lower() != "application/json":
        raise UsageError(f"a policy is sent as application/json or application/toml, not "
                         f"{media or 'no Content-Type'}. Nothing was changed.")
    try:
        fields = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the body is not JSON. Nothing was changed.") from None
    if not isinstance(fields, dict):
        raise UsageError("the body must be a JSON object: the keys of a [[policy]] table. "
                         "Nothing was changed.")
    return Body(None, fields)


def _writable(request: Request) -> None:
    """Refuse a policy write when the service runs the policies of a file."""
    ctx = context(request)
    if ctx.policy_file is not None:
        raise PoliciesFromFile(ctx.policy_file)


WRITABLE = [Depends(_writable)]


def _rules(request: Request) -> ops.Rules:
    ctx = context(request)
    return ops.Rules(repositories=set(ctx.repositories),
                     default_repository=ctx.default_repository)


@router.get("/policies", openapi_extra=needs("policies:read"),
            response_model=Page[StoredPolicy])
def list_policies(request: Request, where: Scope = Depends(scope),
                  q: ListQuery = Depends(list_query),
                  template: bool | None = Query(None, description="only templates (true) "
                                                "or only policies (false)"),
                  after: datetime | None = Query(None, description="show the runs after "
                                                 "this instant (default: now)"),
                  ) -> Page[StoredPolicy]:
    """The policies (a tenant's own, and the templates), each with its next runs in its
    own time zone."""
    rows = ops.list_policies(context(request).catalog, scope=where, after=after,
                             template=template)
    return paginate(rows, q, sorts=SORTS, default="name", ident=lambda p: p.name)


@router.get("/policies/{name}", openapi_extra=needs("policies:read"),
            response_model=StoredPolicy)
def get_policy(request: Request, name: str = Path(), where: Scope = Depends(scope),
               after: datetime | None = Query(None)) -> StoredPolicy:
    return ops.show_policy(context(request).catalog, name, scope=where, after=after)


@router.get("/policies/{name}/export", openapi_extra=needs("policies:read"),
            response_class=Response,
            responses={200: {"content": {"application/toml": {"schema": {"type": "string"}}}}})
def export_policy(request: Request, name: str = Path(), where: Scope = Depends(scope)
                  ) -> Response:
    """The policy as a policy file (TOML), for ``stasis policy check`` or an import."""
    text = ops.export_policy(context(request).catalog, name, scope=where)
    return Response(text, media_type="application/toml",
                    headers={"Content-Disposition": f'attachment; filename="{name}.toml"'})


@router.get("/policies/{name}/retention-preview", openapi_extra=needs("policies:read"),
            response_model=RetentionPreview)
def retention_preview(request: Request, name: str = Path(), where: Scope = Depends(scope),
                      repo: Repository = Depends(repository),
                      repository_name: str | None = Query(None, alias="repository"),
                      ) -> RetentionPreview:
    """Which existing points of the policy's chains its retention keeps, and which it
    would remove now (nothing is removed)."""
    ctx = context(request)
    return ops.retention_preview(ctx.catalog, name, repo, scope=where,
                                 repository=repository_name or ctx.default_repository)


@router.post("/policies/preview", response_model=DraftPreview,
             openapi_extra=_with_body("policies:read", "one policy as JSON (the keys of a "
                                      "[[policy]] table) or TOML, saved or not"))
def preview_policy(request: Request, got: Body = Depends(body),
                   where: Scope = Depends(scope), repo: Repository = Depends(repository),
                   repository_name: str | None = Query(None, alias="repository"),
                   after: datetime | None = Query(None, description="the runs and the "
                                                  "retention as of this instant (default: "
                                                  "now)"),
                   ) -> DraftPreview:
    """A policy as it would run if saved (edited or new; nothing is stored): checked as a
    save checks it (422 naming each problem), its next runs in its own time zone, and
    which existing points of its chains its retention would keep and which remove."""
    ctx = context(request)
    text = got.toml if got.toml is not None else ops.policy_toml(got.fields or {})
    return ops.draft_preview(ctx.catalog, text, repo, rules=_rules(request), scope=where,
                             repository=repository_name or ctx.default_repository,
                             now=after)


@router.post("/policies", status_code=201, response_model=list[StoredPolicy],
             dependencies=WRITABLE,
             openapi_extra=_with_body("policies:write", "one policy as JSON (the keys of a "
                                      "[[policy]] table; from_template: a template's name "
                                      "to start from), or a policy file as TOML"))
def create_policies(request: Request, got: Body = Depends(body),
                    template: bool = Query(False, description="publish as a template "
                                           "(admins only)"),
                    who: Principal = Depends(principal), where: Scope = Depends(scope),
                    ) -> list[StoredPolicy]:
    """Store new policies (all of the file, or none)."""
    ctx = context(request)
    if got.fields is not None and "from_template" in got.fields:
        fields = dict(got.fields)
        base = fields.pop("from_template")
        if not isinstance(base, str):
            raise UsageError("from_template must be a template's name. Nothing was changed.")
        made = [ops.create_from_template(ctx.catalog, base, fields, rules=_rules(request),
                                         scope=where)]
    else:
        text = got.toml if got.toml is not None else ops.policy_toml(got.fields or {})
        made = ops.create_policies(ctx.catalog, text, rules=_rules(request), scope=where,
                                   template=template)
    for p in made:
        audit.record(ctx.catalog, who, "policy.create", f"policy:{p.name}",
                     detail={"template": p.template})
    return made


@router.put("/policies/{name}", response_model=StoredPolicy, dependencies=WRITABLE,
            openapi_extra=_with_body("policies:write", "the whole policy, as JSON or TOML"))
def put_policy(request: Request, name: str = Path(), got: Body = Depends(body),
               template: bool | None = Query(None, description="make it a template, or "
                                             "not (admins only); default: as it was"),
               who: Principal = Depends(principal), where: Scope = Depends(scope),
               ) -> StoredPolicy:
    """Replace a policy, checked whole."""
    ctx = context(request)
    text = got.toml if got.toml is not None else ops.policy_toml(
        {"name": name, **(got.fields or {})})
    done = ops.replace_policy(ctx.catalog, name, text, rules=_rules(request), scope=where,
                              template=template)
    audit.record(ctx.catalog, who, "policy.replace", f"policy:{name}")
    return done


@router.patch("/policies/{name}", response_model=StoredPolicy, dependencies=WRITABLE,
              openapi_extra={**needs("policies:write"), "requestBody": {
                  "required": True, "description": "a JSON merge patch (RFC 7396) of the "
                  "policy's fields: null removes a key", "content": {
                      "application/merge-patch+json": {"schema": {"type": "object"}},
                      "application/json": {"schema": {"type": "object"}}}}})
async def patch_policy(request: Request, name: str = Path(),
                       who: Principal = Depends(principal), where: Scope = Depends(scope),
                       ) -> StoredPolicy:
    """Change some fields of a policy; the result is checked whole."""
    from starlette.concurrency import run_in_threadpool

    try:
        patch = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the body is not JSON. Nothing was changed.") from None
    if not isinstance(patch, dict):
        raise UsageError("the body must be a JSON object (a merge patch). Nothing was "
                         "changed.")
    ctx = context(request)
    done = await run_in_threadpool(ops.patch_policy, ctx.catalog, name, patch,
                                   rules=_rules(request), scope=where)
    await run_in_threadpool(audit.record, ctx.catalog, who, "policy.edit", f"policy:{name}",
                            detail={"fields": sorted(patch)})
    return done


@router.delete("/policies/{name}", openapi_extra=needs("policies:write"), dependencies=WRITABLE,
                response_model=StoredPolicy)
def delete_policy(request: Request, name: str = Path(), who: Principal = Depends(principal),
                  where: Scope = Depends(scope)) -> StoredPolicy:
    """Forget a policy (its points stay); answer what it was."""
    ctx = context(request)
    gone = ops.delete_policy(ctx.catalog, name, scope=where)
    audit.record(ctx.catalog, who, "policy.delete", f"policy:{name}")
    return gone
