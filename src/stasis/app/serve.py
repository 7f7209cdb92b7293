"""``serve``'s setup: the repositories opened, the policies loaded, the service built,
and where its REST API listens.

The repositories are opened before the service starts, so that a wrong key or a
missing repository fails at once, not at the first job. :func:`api_endpoint` checks
where the API would listen (and with which certificate) before anything is opened, so
a refused address stops ``serve`` before it touches the catalog. Running the service
(:meth:`stasis.service.runner.Service.serve`), its API server, its signals and its
logging are the interfaces'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from stasis.app.listen import Listen, Tls, check_plain_http, parse_listen
from stasis.app.policies import load_policy_file
from stasis.errors import UsageError
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Credentials, Repository
from stasis.settings import run_dir, scratch_dir

if TYPE_CHECKING:
    from stasis.catalog import Catalog
    from stasis.service.runner import Service


def parse_keep_logs(text: str, what: str = "--keep-logs") -> timedelta:
    from stasis.service.duration import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None


@dataclass(frozen=True)
class ApiEndpoint:
    """Where the API listens, and its certificate and key (None: plain HTTP)."""

    listen: Listen
    tls: Tls | None = None


def api_endpoint(listen: str | None, *, tls_certificate: Path | None = None,
                 tls_key: Path | None = None, insecure_http: bool = False
                 ) -> ApiEndpoint | None:
    """Where the API listens, checked (None: no ``listen``, no API): the address's
    form, a certificate and its key given together, both there, the key readable by
    its owner (and group) only, and plain HTTP only on loopback unless
    ``insecure_http``. Each refusal is a :class:`UsageError` saying nothing started."""
    from stasis.app.config import check_private

    if listen is None:
        given = [what for what, value in (("a TLS certificate", tls_certificate),
                                          ("a TLS key", tls_key),
                                          ("insecure HTTP", insecure_http)) if value]
        if given:
            raise UsageError(f"{' and '.join(given)} given, but no address for the API to "
                             "listen on; nothing was started",
                             hint="Add --listen HOST:PORT (or listen in the config file), "
                                  "or leave the TLS and HTTP settings out.")
        return None
    where = parse_listen(listen)
    if (tls_certificate is None) != (tls_key is None):
        raise UsageError("a TLS certificate and its key go together (--tls-cert and "
                         "--tls-key, or tls_certificate and tls_key): give both, or "
                         "neither; nothing was started")
    tls = None
    if tls_certificate is not None and tls_key is not None:
        for f, what in ((tls_certificate, "certificate"), (tls_key, "key")):
            if not f.is_file():
                raise UsageError(f"the TLS {what} {f} does not exist; nothing was started")
        check_private(tls_key, "TLS key file")
        tls = Tls(tls_certificate, tls_key)
    check_plain_http(where, tls, insecure_http)
    return ApiEndpoint(where, tls)


@dataclass
class Serving:
    """A service built and ready to start, and what it serves: for its first words,
    and for the API it serves beside it."""

    service: Service
    policies: int
    repositories: str  # "NAME (URL), ..."
    default: str  # the repository of policies that name none
    catalog: str  # as shown (no password)
    opened: dict[str, Repository]  # the served repositories, by name
    credentials: dict[str, Credentials]  # what opened them (for export processes)
    catalog_db: Catalog  # the service's open catalog
    connect: str  # the libvirt URI
    policy_file: Path | None = None  # the policies come from this file, not the catalog


@dataclass(frozen=True)
class Opened:
    """The repositories to serve, opened, by name; the name of the default one; and
    the credentials each was opened with, made concrete (never a prompt), by name."""

    repositories: dict[str, Repository]
    default: str
    credentials: dict[str, Credentials] = field(default_factory=dict)


Opener = Callable[[], Opened | tuple[dict[str, Repository], str]]


@contextmanager
def service(open_repositories: Opener, *, policies: Path | None,
            catalog: str | None, connect: str, max_jobs: int = 2, max_repo_jobs: int = 1,
            keep_logs: str = "30d") -> Iterator[Serving]:
    """The service of ``catalog`` with the policies of ``policies`` (else the catalog's)
    over the repositories ``open_repositories`` opens, while the block runs; a policy's
    ``repository`` must name one of them (``open_repositories`` may answer the
    repositories and the default's name alone: then it gives no credentials). Without
    a file the catalog's policies (those the REST API stores) are run, and a change to
    them is taken up at the next tick."""
    from stasis.app.accounts import sync_roles
    from stasis.catalog import Catalog
    from stasis.memory import limit_arenas
    from stasis.service.prune import policy_retention
    from stasis.service.runner import Limits, Service

    limit_arenas()  # before the first job's threads: the service's memory stays flat
    keep = parse_keep_logs(keep_logs)
    # Opened now, so that it fails here, not at the first job, when one cannot be.
    got = open_repositories()
    served = got if isinstance(got, Opened) else Opened(*got)
    opened, default = served.repositories, served.default
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
                        retention=policy_retention, credentials=served.credentials)
        if policies is None:
            built.reload_policies()
        shown = ", ".join(f"{n} ({r.url})" for n, r in opened.items())
        yield Serving(built, len(built.policies), shown, default, c.shown, opened=opened,
                      credentials=dict(served.credentials), catalog_db=c, connect=connect,
                      policy_file=policies)


def _opener(r: Repository) -> Callable[[], Repository]:
    return lambda: r
