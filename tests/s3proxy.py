"""A fault proxy for the S3 tests: a threaded HTTP/1.1 proxy in front of a real server.

It forwards every request and response byte for byte (the Host header included: a
client pointed at the proxy signs the proxy's host with SigV4 and the server checks
the signature against the same header, so signatures verify). On command,
``fail(n, mode)`` makes the next ``n`` requests (or the next ``n`` of one method)
fail the way object storage fails in the field:

- ``"503"``: answered by the proxy with ``503 SlowDown`` and S3's XML error body,
  as a throttling server answers (the request never reaches the server);
- ``"reset"``: the connection is reset (TCP RST) once the request's head is read;
- ``"stall"``: the request is read and never answered; the connection stays open
  until the client gives up.

Standard library only. Each client connection gets a connection to the server of
its own; requests are read by their framing (Content-Length or chunked) so that the
proxy knows where each one starts, while responses stream back untouched.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

MODES = ("503", "reset", "stall")

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
             b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate."
             b"</Message><RequestId>stasis-fault-proxy</RequestId></Error>")


@dataclass
class _Fault:
    mode: str
    left: int
    method: str | None


class _Closed(Exception):
    """The client or the server closed its side."""


class _Reader:
    """Buffered reads from a socket: lines, exact lengths."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise _Closed
        self.buf += data

    def until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            if len(self.buf) > limit:
                raise _Closed
            self._fill()
        out, self.buf = self.buf[:i + len(marker)], self.buf[i + len(marker):]
        return out

    def exactly(self, n: int) -> Iterator[bytes]:
        while n > 0:
            if not self.buf:
                self._fill()
            out, self.buf = self.buf[:n], self.buf[n:]
            n -= len(out)
            yield out


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    return lines[0].split(" ", 1)[0], fields


def _body(reader: _Reader, fields: dict[str, str]) -> Iterator[bytes]:
    """The request body after its head, as it came (chunk framing included)."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        while True:
            size_line = reader.until(b"\r\n")
            yield size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                trailer = reader.until(b"\r\n")
                yield trailer
                while trailer != b"\r\n":
                    trailer = reader.until(b"\r\n")
                    yield trailer
                return
            yield from reader.exactly(size + 2)
    else:
        yield from reader.exactly(int(fields.get("content-length", "0") or 0))


class S3Proxy:
    """The proxy, listening on a free loopback port until :meth:`close`."""

    def __init__(self, target: str, *, profile: str = "") -> None:
        self.profile = profile  # the AWS profile whose keys the target takes
        host, _, port = target.removeprefix("http://").rstrip("/").partition(":")
        self.target = (host, int(port or 80))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.requests = 0  # every request seen, failed ones included
        self.failed = 0
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True, name="s3proxy-accept").start()

    def url(self, bucket: str, prefix: str = "") -> str:
        """A repository URL on ``bucket`` through the proxy."""
        path = f"{bucket}/{prefix.strip('/')}" if prefix.strip("/") else bucket
        return f"s3://{path}?endpoint={self.endpoint}&profile={self.profile}"

    def fail(self, n: int, mode: str, *, method: str | None = None) -> None:
        """Fail the next ``n`` requests (of ``method`` only, if given) in ``mode``."""
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}: one of {', '.join(MODES)}")
        with self._lock:
            self._faults.append(_Fault(mode, n, method.upper() if method else None))

    def heal(self) -> None:
        """Forget the faults not yet used."""
        with self._lock:
            self._faults.clear()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def __enter__(self) -> S3Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the work -------------------------------------------------------------------

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(self._track(client),), daemon=True,
                             name="s3proxy-conn").start()

    def _fault_for(self, method: str) -> str | None:
        with self._lock:
            self.requests += 1
            for fault in self._faults:
                if fault.left > 0 and fault.method in (None, method):
                    fault.left -= 1
                    self.failed += 1
                    self._faults = [f for f in self._faults if f.left > 0]
                    return fault.mode
        return None

    def _serve(self, client: socket.socket) -> None:
        reader = _Reader(client)
        upstream: socket.socket | None = None
        try:
            while True:
                head = reader.until(b"\r\n\r\n")
                method, fields = _headers(head)
                mode = self._fault_for(method)
                if mode == "reset":
                    # SO_LINGER 0: close() sends RST, not FIN
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
                    return
                if mode is None:
                    if upstream is None:
                        upstream = self._track(socket.create_connection(self.target))
                        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        threading.Thread(target=self._pump, args=(upstream, client),
                                         daemon=True, name="s3proxy-pump").start()
                    upstream.sendall(head)
                    for part in _body(reader, fields):
                        upstream.sendall(part)
                    continue
                expects = fields.get("expect", "").lower() == "100-continue"
                if mode == "503" and expects:
                    # refused before the body is sent: the client does not send it
                    self._slow_down(client, method, close=True)
                    return
                if expects:
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                for _ in _body(reader, fields):
                    pass
                if mode == "503":
                    self._slow_down(client, method, close=False)
                    continue
                # stall: hold the connection, answer nothing, until the client leaves
                while reader.sock.recv(65536):
                    pass
                return
        except (_Closed, OSError, ValueError):
            return
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
                    with self._lock:
                        self._sockets.discard(sock)

    @staticmethod
    def _slow_down(client: socket.socket, method: str, *, close: bool) -> None:
        head = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                b"Content-Length: %d\r\nx-amz-request-id: stasis-fault-proxy\r\n"
                % len(SLOW_DOWN))
        if close:
            head += b"Connection: close\r\n"
        client.sendall(head + b"\r\n" + (b"" if method == "HEAD" else SLOW_DOWN))

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        """Server to client, untouched; when the server closes, so does the client's."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)
