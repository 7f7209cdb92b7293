"""``/metrics`` in the Prometheus text format (scraped with a bearer token of a user
with ``metrics:read``; Prometheus's ``authorization.credentials_file`` sends one)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stasis.api.guard import GuardedRoute, needs, scope
from stasis.app.metrics import RepoSizes, Snapshot, gather
from stasis.app.scope import Scope

router = APIRouter(route_class=GuardedRoute, tags=["metrics"])
RPO_STATES = ("met", "breached", "none")


class _Figures:
    """One scrape's figures as Prometheus metric families."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        jobs = CounterMetricFamily("stasis_jobs", "Jobs in the catalog, by kind and state",
                                   labels=["kind", "state"])
        seconds = SummaryMetricFamily("stasis_job_duration_seconds",
                                      "How long jobs ran (those that started and ended), "
                                      "by kind and state", labels=["kind", "state"])
        read = CounterMetricFamily("stasis_job_read_bytes",
                                   "Bytes jobs read from their sources, by kind",
                                   labels=["kind"])
        stored = CounterMetricFamily("stasis_job_written_bytes",
                                     "Bytes jobs wrote (new data stored, restored), by kind",
                                     labels=["kind"])
        per_kind: dict[str, tuple[int, int]] = {}
        for (kind, state), f in sorted(s.jobs.items()):
            jobs.add_metric([kind, state], f.count)
            seconds.add_metric([kind, state], count_value=f.timed, sum_value=f.duration_s)
            r, w = per_kind.get(kind, (0, 0))
            per_kind[kind] = (r + f.bytes_read, w + f.bytes_written)
        for kind, (r, w) in sorted(per_kind.items()):
            read.add_metric([kind], r)
            stored.add_metric([kind], w)
        yield from (jobs, seconds, read, stored)
        age = GaugeMetricFamily("stasis_vm_newest_point_age_seconds",
                                "Age of each VM's newest point", labels=["vm"])
        rpo = GaugeMetricFamily("stasis_vm_rpo_state",
                                "1 for the RPO state each VM is in (met, breached, none)",
                                labels=["vm", "state"])
        for v in s.vms:
            if v.age_s is not None:
                age.add_metric([v.vm], v.age_s)
            for state in RPO_STATES:
                rpo.add_metric([v.vm, state], 1.0 if v.rpo == state else 0.0)
        yield from (age, rpo)
        if s.repositories:
            size = GaugeMetricFamily("stasis_repository_stored_bytes",
                                     "Bytes a repository's chunks take in its store",
                                     labels=["repository"])
            logical = GaugeMetricFamily("stasis_repository_logical_bytes",
                                        "Virtual size of every disk of every point",
                                        labels=["repository"])
            points = GaugeMetricFamily("stasis_repository_points", "Points in a repository",
                                       labels=["repository"])
            for repo in s.repositories:
                size.add_metric([repo.name], repo.stored_bytes)
                logical.add_metric([repo.name], repo.logical_bytes)
                points.add_metric([repo.name], repo.points)
            yield from (size, logical, points)


@router.get("/metrics", openapi_extra=needs("metrics:read"), response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request, where: Scope = Depends(scope)) -> Response:
    """The Prometheus metrics a principal may see (a tenant's: its VMs and jobs)."""
    ctx = request.app.state.ctx
    sizes = ctx.extra.setdefault("repo_sizes", RepoSizes())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(gather(ctx.catalog, ctx.repositories, where, sizes)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
