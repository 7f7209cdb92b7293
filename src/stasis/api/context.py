"""What the API's routes work on: the service's catalog, repositories and libvirt."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from stasis.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    import libvirt

    from stasis.app.auth import Principal
    from stasis.catalog import Catalog
    from stasis.repository import Credentials, Repository


def _alive(conn: libvirt.virConnect) -> bool:
    import libvirt

    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


class Authenticator(Protocol):
    """Tells who a request acts for, from a bearer token or a session cookie; raises
    :class:`~stasis.errors.NotAuthenticated` for an unknown, expired or revoked one."""

    def by_token(self, secret: str, *, address: str | None) -> Principal: ...

    def by_session(self, cookie: str, *, address: str | None) -> Principal: ...


@dataclass
class ApiContext:
    """The open catalog, the served repositories by name (opened once, by serve) and
    the libvirt URI; ``wake`` tells the service to look at its queue now.
    ``credentials`` are what serve opened each served repository with, by name: an
    export process (instant VMs, exports, clones) opens the repository again with
    them."""

    catalog: Catalog
    repositories: Mapping[str, Repository]
    default_repository: str
    connect: str
    authenticator: Authenticator
    wake: Callable[[], None] = lambda: None
    credentials: Mapping[str, Credentials] = field(default_factory=dict)
    clock: Clock = SYSTEM_CLOCK
    max_body: int = 1 << 20  # bytes a request body may have (uploads have their own)
    session_cookie: str = "stasis_session"
    extra: dict[str, object] = field(default_factory=dict)
    # serve runs the policies of this file: the API's policy writes are refused, since
    # the file would undo them at the next start
    policy_file: Path | None = None
    _conn: libvirt.virConnect | None = field(default=None, init=False, repr=False)
    _conn_lock: threading.Lock = field(default_factory=threading.Lock, init=False,
                                       repr=False)

    def libvirt(self) -> libvirt.virConnect:
        """One libvirt connection shared by the requests (a connection is thread-safe),
        opened again when libvirtd dropped it: opening one per request cost a listing
        of VMs most of its time."""
        from stasis.hypervisor import libvirt_api as lv

        with self._conn_lock:
            conn = self._conn
            if conn is None or not _alive(conn):
                conn = self._conn = lv.connect(self.connect)
            return conn

    def repository(self, name: str | None = None) -> Repository:
        """The served repository ``name`` (the default one when None)."""
        from stasis.errors import RepositoryNotFound

        key = self.default_repository if name is None else name
        try:
            return self.repositories[key]
        except KeyError:
            raise RepositoryNotFound(
                repr(key), hint="GET /api/v1/repositories lists the served ones.") from None
