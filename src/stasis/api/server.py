"""The API's HTTP server inside ``stasis serve``: uvicorn in a thread of its own,
listening where :mod:`stasis.app.listen` says.

:func:`serve_api` starts it over what serve opened (:class:`~stasis.app.serve.Serving`):
the service's catalog, its repositories and their credentials, its libvirt URI, the
catalog's accounts, and the service's wake-up, so that a job an API request queues
starts at once. :meth:`ApiServer.stop` lets requests in flight finish for a few
seconds, then ends what still runs (an event stream, a download).
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from stasis.app.listen import Listen, Tls
from stasis.errors import UsageError

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from stasis.api.context import ApiContext
    from stasis.app.serve import ApiEndpoint, Serving


class ApiServer:
    """The API served by uvicorn in a background thread until :meth:`stop`."""

    def __init__(self, app: FastAPI, listen: Listen, tls: Tls | None = None) -> None:
        import uvicorn

        if tls is not None:
            for f in (tls.certificate, tls.key):
                if not f.is_file():
                    raise UsageError(f"the TLS file {f} does not exist; nothing was started")
        self.listen = listen
        self.tls = tls
        config = uvicorn.Config(
            app, host=listen.host or "127.0.0.1", port=listen.port or 0,
            uds=str(listen.socket) if listen.socket else None,
            ssl_certfile=str(tls.certificate) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            log_level="warning", access_log=False, lifespan="off",
            server_header=False, timeout_graceful_shutdown=5)
        self._server: uvicorn.Server = uvicorn.Server(config)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stasis-api", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run()
        except BaseException as e:  # uvicorn exits (SystemExit) when it cannot bind
            self._failure = e

    @property
    def url(self) -> str:
        """Where it listens (with the port the system chose, for port 0, once started)."""
        listen = self.listen
        if listen.port == 0 and self.port is not None:
            listen = replace(listen, port=self.port)
        return listen.url(self.tls is not None)

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once the socket listens (or raises if it cannot)."""
        if self.listen.socket is not None and self.listen.socket.is_socket():
            os.unlink(self.listen.socket)  # a socket left by a service that died
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive():
                why = f": {self._failure}" if self._failure is not None and str(
                    self._failure) not in ("", "1") else ""
                raise UsageError(f"the API could not listen at {self.url} (in use, or not "
                                 f"allowed){why}; nothing was started")
            deadline.wait(0.02)
            waited += 0.02
            if waited > timeout:
                raise UsageError(f"the API did not start listening at {self.url} within "
                                 f"{timeout:.0f} s; nothing was started")
        if self.listen.socket is not None:
            os.chmod(self.listen.socket, 0o660)  # the socket's group may connect

    @property
    def port(self) -> int | None:
        """The port it listens on (the one the system chose for port 0)."""
        for server in self._server.servers:
            for sock in server.sockets:
                name = sock.getsockname()
                if isinstance(name, tuple):
                    return int(name[1])
        return None

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def serve_context(run: Serving) -> ApiContext:
    """The API's context over what ``serve`` opened."""
    from stasis.api.context import ApiContext
    from stasis.app.accounts import CatalogAuthenticator

    return ApiContext(catalog=run.catalog_db, repositories=run.opened,
                      default_repository=run.default, connect=run.connect,
                      authenticator=CatalogAuthenticator(run.catalog_db),
                      wake=run.service.wake, credentials=run.credentials,
                      policy_file=run.policy_file)


def serve_api(run: Serving, endpoint: ApiEndpoint) -> ApiServer:
    """The API of ``run`` served at ``endpoint``, listening once this returns."""
    from stasis.api.app import create_app

    server = ApiServer(create_app(serve_context(run)), endpoint.listen, endpoint.tls)
    server.start()
    return server
