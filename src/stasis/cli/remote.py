"""The CLI against a remote server: ``stasis --server URL`` runs a command through the
REST API instead of on this host.

The server is ``--server`` / ``$STASIS_SERVER``: an ``https://`` URL, an ``http://`` one
on a loopback address only, or ``unix:/PATH`` (the API's unix socket). The token comes
from ``--token-file`` / ``$STASIS_TOKEN_FILE``, else ``$STASIS_TOKEN``, else a prompt on a
terminal (never from a command-line value); ``--ca-bundle`` / ``$STASIS_CA_BUNDLE``
trusts a private CA. A command that works remotely asks :func:`remote` for the
:class:`Remote` client and, when there is one, gets its result model from the API
instead of from :mod:`stasis.app`; it renders that model as it renders the local one.
Commands not in :data:`SUPPORTED` refuse to run remotely (exit 2) rather than act on
this host by accident.

An answer that is a problem (RFC 9457) is raised as the error class its ``kind``
names (the same exit code and words as the local run); an unknown kind is an error
with exit code 1 and the problem's detail. Listings follow their ``next`` cursor to
the end; a job is followed through its event stream to its ``end``.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from stasis import errors
from stasis.errors import ServerUnreachable, StasisError, UsageError

if TYPE_CHECKING:
    import httpx

    from stasis.app.models import JobModel
    from stasis.progress import Progress

T = TypeVar("T")
META = "stasis.remote"  # ctx.meta: the RemoteOptions of the root command
API = "/api/v1"
PAGE = 1000  # items asked per page of a listing (the API's most)
TIMEOUT_S = 60.0

# The commands that run against a server (their path in the command tree). The others
# refuse to, naming themselves, rather than run on this host by accident.
SUPPORTED = frozenset({
    "vms", "list", "show", "status", "jobs", "job show", "job cancel",
    "backup vm", "backup group", "backup image", "restore vm", "hold", "release",
    "files ls", "files find", "files get", "verify", "prune", "group list", "group show",
    "policy list",
    "token create", "token list", "token revoke", "version",
})


@dataclass(frozen=True)
class RemoteOptions:
    """The root command's ``--server``, ``--token-file`` and ``--ca-bundle``."""

    server: str
    token_file: Path | None
    ca_bundle: Path | None


def options_of(meta: dict[str, Any]) -> RemoteOptions | None:
    found: RemoteOptions | None = meta.get(META)
    return found


def _current_meta() -> dict[str, Any]:
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    return {} if ctx is None else ctx.meta


def remote() -> Remote | None:
    """The client of the server this command runs against (None: it runs here)."""
    chosen = options_of(_current_meta())
    return None if chosen is None else Remote.connect(chosen)


def guard(command: Any, path: str = "") -> Any:
    """``command`` (and its subcommands), each refusing to run against a server unless
    :data:`SUPPORTED` names it."""
    subs = getattr(command, "commands", None)
    if subs is not None:
        for name, sub in subs.items():
            guard(sub, f"{path} {name}".strip())
        return command
    callback = command.callback
    if callback is None or path in SUPPORTED:
        return command

    @functools.wraps(callback)
    def refused(*args: Any, **kwargs: Any) -> Any:
        chosen = options_of(_current_meta())
        if chosen is not None:
            raise UsageError(f"'stasis {path}' does not run against a server "
                             f"({chosen.server}); nothing was done",
                             hint="Run it on the server's host, without --server.")
        return callback(*args, **kwargs)

    command.callback = refused
    return command


# ------------------------------------------------------------------ the server's address


def _checked_server(url: str) -> tuple[str, str | None]:
    """(base URL, unix socket path or None) of a ``--server`` value."""
    from stasis.app.listen import Listen

    if url.startswith("unix:"):
        path = url.removeprefix("unix:")
        if not path.startswith("/"):
            raise UsageError(f"--server {url}: a unix socket is named by its absolute path "
                             "(unix:/run/stasis/api.sock); nothing was done")
        return "http://stasis", path
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--server {url!r} is not a server URL: https://HOST[:PORT], "
                         "http://127.0.0.1:PORT (loopback only) or unix:/PATH; nothing was "
                         "done")
    if parts.scheme == "http" and not Listen(host=parts.hostname).loopback:
        raise UsageError(f"--server {url}: plain HTTP is refused off the loopback (the token "
                         "would cross the network in clear); use https; nothing was done")
    return url.rstrip("/"), None


def _token(token_file: Path | None) -> str:
    """The token: its file, ``$STASIS_TOKEN_FILE``, ``$STASIS_TOKEN``, or a prompt."""
    path = token_file or (Path(os.environ["STASIS_TOKEN_FILE"])
                          if os.environ.get("STASIS_TOKEN_FILE") else None)
    if path is not None:
        try:
            text = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not text"
            raise UsageError(f"cannot read the token file {path}: {why}; nothing was "
                             "done") from None
    elif os.environ.get("STASIS_TOKEN"):
        text = os.environ["STASIS_TOKEN"].strip()
    elif sys.stdin.isatty():
        text = getpass.getpass("API token: ").strip()
    else:
        raise UsageError("no API token for the server: pass --token-file, or set "
                         "$STASIS_TOKEN_FILE or $STASIS_TOKEN; nothing was done")
    if not text:
        raise UsageError("the API token is empty; nothing was done")
    return text


# ------------------------------------------------------------------ problems as errors


_TOLD: dict[str, type[StasisError]] = {}


def _as_told(cls: type[StasisError]) -> type[StasisError]:
    """``cls`` whose message is the text the server sent (its template already filled
    there), with the same exit code and ``isinstance`` as the local error."""
    told = _TOLD.get(cls.__name__)
    if told is None:
        told = _TOLD[cls.__name__] = type(cls.__name__, (cls,), {
            "__doc__": "{}", "__module__": __name__, "__qualname__": cls.__qualname__})
    return told


def error_of(server: str, response: httpx.Response) -> StasisError:
    """The error a non-success answer stands for."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "detail" not in body:
        return ServerUnreachable(server, f"it answered HTTP {response.status_code} with "
                                 "something that is not a Stasis API problem")
    detail, hint = str(body.get("detail") or ""), str(body.get("hint") or "")
    cls = getattr(errors, str(body.get("kind") or ""), None)
    if isinstance(cls, type) and issubclass(cls, StasisError):
        return _as_told(cls)(detail, hint=hint)
    return StasisError(detail, hint=hint)


# ------------------------------------------------------------------ the client


class Remote:
    """A client of one server's API, authenticated by a bearer token."""

    def __init__(self, server: str, http: httpx.Client) -> None:
        self.server = server
        self.http = http

    @classmethod
    def connect(cls, chosen: RemoteOptions) -> Remote:
        import httpx

        base, socket = _checked_server(chosen.server)
        bundle = chosen.ca_bundle or (Path(os.environ["STASIS_CA_BUNDLE"])
                                      if os.environ.get("STASIS_CA_BUNDLE") else None)
        verify: Any = True
        if bundle is not None:
            import ssl

            try:
                verify = ssl.create_default_context(cafile=str(bundle))
            except (OSError, ssl.SSLError) as e:
                raise UsageError(f"cannot use the CA bundle {bundle}: {e}; nothing was "
                                 "done") from None
        token = _token(chosen.token_file)
        transport = httpx.HTTPTransport(uds=socket, verify=verify) if socket else None
        http = httpx.Client(base_url=base + API, verify=verify, transport=transport,
                            timeout=TIMEOUT_S, follow_redirects=False,
                            headers={"Authorization": f"Bearer {token}",
                                     "User-Agent": "stasis-cli"})
        return cls(chosen.server, http)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: Any = None) -> httpx.Response:
        import httpx

        try:
            response = self.http.request(method, path, params=_query(params),
                                         json=body)
        except httpx.HTTPError as e:
            raise ServerUnreachable(self.server, _why(e)) from None
        if response.status_code >= 400:
            raise error_of(self.server, response)
        return response

    def get(self, path: str, parse: Callable[[Any], T], /, **params: Any) -> T:
        return parse(self.request("GET", path, params=params).json())

    def post(self, path: str, parse: Callable[[Any], T], body: Any = None, /,
             **params: Any) -> T:
        return parse(self.request("POST", path, params=params, body=body).json())

    def delete(self, path: str, parse: Callable[[Any], T], /, **params: Any) -> T:
        return parse(self.request("DELETE", path, params=params).json())

    def items(self, path: str, parse: Callable[[Any], T], /, *, most: int | None = None,
              **params: Any) -> list[T]:
        """Every item of a listing (at most ``most``), page after page."""
        found: list[T] = []
        cursor = None
        while True:
            want = PAGE if most is None else min(PAGE, most - len(found))
            page = self.request("GET", path, params={**params, "limit": want,
                                                     "cursor": cursor}).json()
            found.extend(parse(item) for item in page["items"])
            cursor = page.get("next")
            if cursor is None or (most is not None and len(found) >= most):
                return found

    def download(self, path: str, into: Path, /, **params: Any) -> int:
        """Stream a download into the new file ``into``; its size."""
        import httpx

        size = 0
        try:
            with self.http.stream("GET", path, params=_query(params)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_of(self.server, response)
                with into.open("xb") as f:
                    for piece in response.iter_bytes():
                        f.write(piece)
                        size += len(piece)
        except httpx.HTTPError as e:
            into.unlink(missing_ok=True)
            raise ServerUnreachable(self.server, _why(e)) from None
        return size

    @contextlib.contextmanager
    def stream(self, path: str, /, **params: Any) -> Iterator[Iterator[bytes]]:
        """The body of a download as it arrives, piece by piece (an answer that is a
        problem raised before the first piece; a connection lost midway raised as
        ServerUnreachable by the iteration)."""
        import httpx

        def pieces(response: httpx.Response) -> Iterator[bytes]:
            try:
                yield from response.iter_bytes()
            except httpx.HTTPError as e:
                raise ServerUnreachable(self.server, _why(e)) from None

        try:
            with self.http.stream("GET", path, params=_query(params)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_of(self.server, response)
                yield pieces(response)
        except httpx.HTTPError as e:
            raise ServerUnreachable(self.server, _why(e)) from None

    def job(self, job_id: int) -> JobModel:
        from stasis.app.models import job_model

        return self.get(f"/jobs/{job_id}", job_model)

    def follow(self, job_id: int, progress: Progress) -> JobModel:
        """Follow a job's events to its end (progress shown as bytes read), and the job
        as it ended. A stream cut short is taken up again from the last line seen."""
        import httpx

        from stasis.app.models import job_model

        last: int | None = None
        shown = 0
        started = False
        while True:
            try:
                headers = {} if last is None else {"Last-Event-ID": str(last)}
                with self.http.stream("GET", f"/jobs/{job_id}/events", headers=headers,
                                      timeout=httpx.Timeout(TIMEOUT_S, read=None)) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise error_of(self.server, r)
                    for kind, ident, data in _events(r.iter_lines()):
                        if ident is not None:
                            last = ident
                        if kind == "progress":
                            if not started:
                                progress.start(f"job {job_id}", 0)
                                started = True
                            read = int(data.get("bytes_read") or 0)
                            if read > shown:
                                progress.advance(read - shown)
                                shown = read
                        elif kind == "end":
                            progress.finish()
                            return job_model(data)
            except httpx.RemoteProtocolError:
                continue  # the stream was cut: take it up again after ``last``
            except httpx.HTTPError as e:
                progress.finish()
                raise ServerUnreachable(self.server, _why(e)) from None
            # the stream ended without its end event: the job is as the server says
            job = self.job(job_id)
            if job.state in ("succeeded", "failed", "interrupted"):
                progress.finish()
                return job


def _events(lines: Iterator[str]) -> Iterator[tuple[str, int | None, Any]]:
    """(event, id, data) of a Server-Sent Events stream (comments skipped)."""
    kind: str = "message"
    ident: int | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield kind, ident, json.loads("\n".join(data))
            kind, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "id" and value.isdigit():
                ident = int(value)
            elif field == "data":
                data.append(value)


def _query(params: dict[str, Any] | None) -> dict[str, Any]:
    """Query parameters without the ones not given; booleans as the API spells them."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if value is None or value == []:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


def _why(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text.split("\n")[0]


def ended_job_error(job: JobModel) -> StasisError | None:
    """The error a failed or interrupted job ended with, as its exit code says."""
    if job.state == "succeeded":
        return None
    code = job.exit_code or (errors.Interrupted.exit_code if job.state == "interrupted"
                             else 1)
    by_code = [c for c in errors.error_classes() if c.exit_code == code
               and c.__module__ == errors.__name__]
    cls = by_code[0] if by_code else StasisError
    return _as_told(cls)(job.error or f"job {job.id} ended {job.state}", hint=(
        f"'stasis job show {job.id} --log' shows its log."))


# ------------------------------------------------------------------ work done as jobs


def start_job(server: Remote, path: str, body: dict[str, Any], *, wait: bool,
              json_output: bool, repository: str | None = None) -> JobModel | None:
    """POST work to ``path``; unless ``wait`` is False, follow its job to the end and
    return it as it ended (else print the job started, as ``--queue`` does, and None)."""
    from stasis.app.models import JobStarted
    from stasis.cli.common import out, print_model, progress_for

    body = {k: v for k, v in body.items() if v is not None}
    if repository:
        body["repository"] = repository
    started = server.post(path, JobStarted.model_validate, body)
    if not wait:
        if json_output:
            print_model(started)
        else:
            again = " (the same work was queued or running already)" if started.existing \
                else ""
            out.print(f"Job {started.job.id} queued on {server.server}{again}; 'stasis job "
                      f"show {started.job.id} --log' follows it.", highlight=False)
        return None
    return server.follow(started.job.id, progress_for(json_output))


def show_ended_job(job: JobModel, json_output: bool) -> None:
    """A job that ended, as ``stasis job show`` shows it; its failure raised with the
    exit code the job ended with."""
    from stasis.cli.common import print_model
    from stasis.cli.render import print_job

    if json_output:
        print_model(job)
    else:
        print_job(job)
    failure = ended_job_error(job)
    if failure is not None:
        raise failure


def backup_results(server: Remote, job: JobModel, repository: str | None
                   ) -> list[tuple[str, Any]]:
    """Each VM (or point) of a backup job that ended: (name, its point as a backup
    reports it, or the error it failed with)."""
    from stasis.app.models import BackupResult, PointDetail, WarningModel
    from stasis.repository import Manifest

    found: list[tuple[str, Any]] = []
    for name, part in job.result.items():
        data = part.to_json()
        if not isinstance(data, dict) or "point" not in data:
            continue  # a policy run's retention step
        if data.get("point") is None:
            code = int(data.get("exit_code") or 1)
            cls = next((c for c in errors.error_classes() if c.exit_code == code
                        and c.__module__ == errors.__name__), StasisError)
            found.append((name, _as_told(cls)(str(data.get("error") or "failed"))))
            continue
        detail = server.get(f"/points/{data['point']}", PointDetail.model_validate,
                            repository=repository or None)
        raw = detail.to_json()
        raw.pop("size", None)
        for vm in raw["vms"]:
            for disk in vm["disks"]:
                disk.pop("target", None)
        result = BackupResult.of(Manifest.from_dict(raw))
        result.warnings = [WarningModel.model_validate(w) for w in data.get("warnings") or []]
        found.append((name, result))
    return found
