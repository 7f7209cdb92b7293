"""``serve``'s setup: the repositories opened, the policies loaded, the service built.

The repositories are opened before the service starts, so that a wrong key or a
missing repository fails at once, not at the first job. Running the service
(:meth:`stasis.service.runner.Service.serve`), its signals and its logging are the
interface's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from stasis.app.policies import load_policy_file
from stasis.errors import UsageError
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Repository
from stasis.settings import run_dir, scratch_dir

if TYPE_CHECKING:
    from stasis.service.runner import Service


def parse_keep_logs(text: str, what: str = "--keep-logs") -> timedelta:
    from stasis.service.duration import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None


@dataclass
class Serving:
    """A service built and ready to start, and what it serves (for its first words)."""

    service: Service
    policies: int
    repositories: str  # "NAME (URL), ..."
    default: str  # the repository of policies that name none
    catalog: str  # as shown (no password)


# The repositories to serve, opened, by name, and the name of the default one.
Opened = tuple[dict[str, Repository], str]


@contextmanager
def service(open_repositories: Callable[[], Opened], *, policies: Path | None,
            catalog: str | None, connect: str, max_jobs: int = 2, max_repo_jobs: int = 1,
            keep_logs: str = "30d") -> Iterator[Serving]:
    """The service of ``catalog`` with the policies of ``policies`` (else the catalog's)
    over the repositories ``open_repositories`` opens, while the block runs; a policy's
    ``repository`` must name one of them. Without a file the catalog's policies (those
    the REST API stores) are run, and a change to them is taken up at the next tick."""
    from stasis.app.accounts import sync_roles
    from stasis.catalog import Catalog
    from stasis.service.prune import policy_retention
    from stasis.service.runner import Limits, Service

    keep = parse_keep_logs(keep_logs)
    # Opened now, so that it fails here, not at the first job, when one cannot be.
    opened, default = open_repositories()
    loaded = load_policy_file(policies, repositories=set(opened), default_repository=default,
                              immutable={n: r.immutability.retain_s for n, r in opened.items()
                                         if r.immutability is not None}
                              ) if policies is not None else []
    with Catalog.open(catalog) as c:
        sync_roles(c)  # the built-in roles as this version defines them
        built = Service(c, loaded, repositories={n: _opener(r) for n, r in opened.items()},
                        policies_from_catalog=policies is None,
                        default_repository=default, connect=lambda: lv.connect(connect),
                        run_dir=run_dir(), scratch_dir=scratch_dir(),
                        limits=Limits(max_jobs, max_repo_jobs), keep_logs=keep,
                        retention=policy_retention)
        if policies is None:
            built.reload_policies()
        served = ", ".join(f"{n} ({r.url})" for n, r in opened.items())
        yield Serving(built, len(built.policies), served, default, c.shown)


def _opener(r: Repository) -> Callable[[], Repository]:
    return lambda: r
