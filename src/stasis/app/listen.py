"""Where ``stasis serve``'s API listens, and whether it may speak plain HTTP there.

:func:`parse_listen` reads ``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:/path``. Plain HTTP
is refused anywhere but on a loopback address or a unix socket unless asked for
(``insecure_http``): a token or a password sent over a network in clear is a token or
a password given away. With a certificate and its key the server speaks TLS only.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from stasis.errors import UsageError

# sockaddr_un.sun_path holds 108 bytes with the terminating NUL
MAX_SOCKET_PATH = 107


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
    """``127.0.0.1:8080``, ``[::1]:8080``, ``0.0.0.0:8443`` or ``unix:/run/stasis.sock``;
    port 0 lets the system choose a free port (``serve`` says which in its first words)."""
    if text.startswith("unix:"):
        path = Path(text.removeprefix("unix:"))
        if not path.is_absolute():
            raise UsageError(f"--listen {text!r}: a unix socket is an absolute path "
                             "(unix:/run/stasis/api.sock); nothing was started")
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise UsageError(f"--listen {text!r}: a unix socket's path is at most "
                             f"{MAX_SOCKET_PATH} bytes (the kernel's limit), this one has "
                             f"{len(os.fsencode(path))}; nothing was started")
        return Listen(socket=path)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or not host:
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
