"""``serve``'s setup: the policies loaded, the repository opened, the service built.

The repository is opened before the service starts, so that a wrong key or a
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
    repository: str  # its URL
    catalog: str  # as shown (no password)


@contextmanager
def service(open_repo: Callable[[], Repository], *, policies: Path | None,
            catalog: str | None, connect: str, max_jobs: int = 2, max_repo_jobs: int = 1,
            keep_logs: str = "30d") -> Iterator[Serving]:
    """The service of ``catalog`` with the policies of ``policies`` (else the catalog's)
    over the repository ``open_repo`` opens, while the block runs."""
    from stasis.catalog import Catalog
    from stasis.service.prune import policy_retention
    from stasis.service.runner import Limits, Service

    keep = parse_keep_logs(keep_logs)
    loaded = load_policy_file(policies)
    # Opened now, so that it fails here, not at the first job, when it cannot be.
    r = open_repo()
    with Catalog.open(catalog) as c:
        built = Service(c, loaded, open_repo=lambda: r, connect=lambda: lv.connect(connect),
                        run_dir=run_dir(), scratch_dir=scratch_dir(),
                        limits=Limits(max_jobs, max_repo_jobs), keep_logs=keep,
                        retention=policy_retention)
        yield Serving(built, len(loaded), r.url, c.shown)
