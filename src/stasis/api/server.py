"""The API's HTTP server inside ``stasis serve``: uvicorn in a thread of its own.

:func:`parse_listen` reads where to listen (``HOST:PORT``, ``[IPV6]:PORT`` or
``unix:/path``). Plain HTTP is refused anywhere but on a loopback address or a unix
socket unless asked for (``insecure_http``): a token or a password sent over a
network in clear is a token or a password given away. With a certificate and its
key the server speaks TLS only.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stasis.errors import UsageError

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI


@dataclass(frozen=True)
class Listen:
    """Where the API listens: a host and port, or a unix socket's path."""

    host: str | None = None
    port: int | None = None
    socket: Path | None = None

    @property
    def loopback(self) -> bool:
        if self.socket is not None:
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host or "").is_loopback
        except ValueError:
            return False

    def url(self, tls: bool) -> str:
        if self.socket is not None:
            return f"unix:{self.socket}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{'https' if tls else 'http'}://{host}:{self.port}"


def parse_listen(text: str) -> Listen:
    """``127.0.0.1:8080``, ``[::1]:8080``, ``0.0.0.0:8443`` or ``unix:/run/stasis.sock``."""
    if text.startswith("unix:"):
        path = Path(text.removeprefix("unix:"))
        if not path.is_absolute():
            raise UsageError(f"--listen {text!r}: a unix socket is an absolute path "
                             "(unix:/run/stasis/api.sock); nothing was started")
        return Listen(socket=path)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, [IPV6]:PORT or "
                         "unix:/PATH; nothing was started")
    host = host.removeprefix("[").removesuffix("]")
    return Listen(host=host, port=int(port))


@dataclass(frozen=True)
class Tls:
    certificate: Path
    key: Path


def check_plain_http(listen: Listen, tls: Tls | None, insecure_http: bool) -> None:
    """Refuse plain HTTP on a non-loopback address unless ``insecure_http``."""
    if tls is None and not listen.loopback and not insecure_http:
        raise UsageError(
            f"the API would listen on {listen.host}:{listen.port} in plain HTTP, where "
            "tokens and passwords cross the network in clear; nothing was started",
            hint="Give a certificate and its key (--tls-cert, --tls-key, or tls_certificate "
                 "and tls_key in the config file), listen on a loopback address or a unix "
                 "socket, or pass --insecure-http if a proxy in front does TLS.")


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
        return self.listen.url(self.tls is not None)

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
