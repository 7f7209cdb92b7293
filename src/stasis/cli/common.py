"""Options and helpers every command shares."""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from stasis.backends import open_backend
from stasis.errors import (
    CatalogError,
    StasisWarning,
    UsageError,
    WrongPassphrase,
)
from stasis.progress import NoProgress
from stasis.progress import Progress as ProgressProtocol
from stasis.repository import Credentials, Repository
from stasis.repository.keyfile import read_key_file

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from stasis.app.config import Config, RepositoryConfig

# Piped output (logs, scripts) is not cut at 80 columns: lines stay whole, and tables
# get room enough for point ids and names.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

# ------------------------------------------------------------------ the config file
#
# The config file (stasis.app.config) is the last fallback of the shared options:
# click takes a value from the command line, else from the environment variable,
# else from its context's lookup_default, which ConfigContext answers from the file,
# else the option's default. So flags > environment > file > default holds for every
# command without any command declaring anything.

CONFIG_META = "stasis.config"  # ctx.meta: (Config | None, source of the file)
REPOSITORY_META = "stasis.repository"  # ctx.meta: (name, RepositoryConfig) --repo named


def _current_context() -> typer.Context | None:
    # Typer runs on its own copy of click: the context is that copy's.
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    return ctx if isinstance(ctx, typer.Context) else None


def use_config(ctx: typer.Context, flag: Path | None) -> None:
    """Load the config file in force (``--config``, ``$STASIS_CONFIG``, the default
    path) for the commands of ``ctx``, and hand its paths to :mod:`stasis.settings`."""
    from stasis import settings

    path, source = settings.find_config(flag)
    config = None
    if path is not None:
        from stasis.app.config import load_config

        config = load_config(path)
        settings.configure(state_dir=config.path("state_dir"),
                           scratch_dir=config.path("scratch_dir"))
    ctx.meta[CONFIG_META] = (config, source)


def current_config(ctx: typer.Context | None = None) -> Config | None:
    """The config file loaded for this command (None: there is none)."""
    ctx = ctx or _current_context()
    if ctx is None:
        return None
    loaded = ctx.meta.get(CONFIG_META)
    return None if loaded is None else loaded[0]


def config_source(ctx: typer.Context) -> str | None:
    """What named the config file in force: flag, env, default (None: no file)."""
    loaded = ctx.meta.get(CONFIG_META)
    return None if loaded is None else loaded[1]


def is_remote(ctx: typer.Context | None = None) -> bool:
    """Whether the command runs against a server (``--server``), not on this host."""
    from stasis.cli.remote import META

    ctx = ctx or _current_context()
    return ctx is not None and ctx.meta.get(META) is not None


class ConfigContext(typer.Context):
    """A command context whose defaults come from the config file: ``--catalog``
    (``catalog``), ``--connect`` (``libvirt``), ``--policies`` (``policies``) and a
    required ``--repo`` (``default_repository``)."""

    def lookup_default(self, name: str, call: bool = True) -> Any:
        value = super().lookup_default(name, call=call)  # type: ignore[call-overload]
        if value is not None:
            return value
        config = current_config(self)
        required = name == "repo" and any(p.name == "repo" and p.required
                                          for p in self.command.params)
        if config is None:
            # Against a server (--server), no --repo is the server's default repository.
            return "" if required and is_remote(self) else None
        if name == "repo":
            if required and config.default_repository is None and is_remote(self):
                return ""
            return config.default_repository if required else None
        key = {"catalog": "catalog", "connect": "libvirt", "policies": "policies"}.get(name)
        return None if key is None else getattr(config.values, key)


def use_config_context(command: Any) -> Any:
    """``command`` and its subcommands, with :class:`ConfigContext`."""
    command.context_class = ConfigContext
    for sub in getattr(command, "commands", {}).values():
        use_config_context(sub)
    return command


def named_repository(ctx: typer.Context, _param: typer.CallbackParam, value: str | None,
                     ) -> str | None:
    """A ``--repo`` value that names a repository of the config file stands for its URL
    (and its key file or passphrase file, used by :func:`credentials`)."""
    config = current_config(ctx)
    found = None if config is None else config.repository(value)
    if found is None or is_remote(ctx):  # a server knows its repositories by name
        return value
    ctx.meta[REPOSITORY_META] = found
    return found[1].url


def configured_names() -> set[str] | None:
    """The names of the config file's repositories (None: no file or none there)."""
    config = current_config()
    return set(config.repositories) if config is not None and config.repositories else None


def chosen_repository() -> tuple[str, RepositoryConfig] | None:
    """The configured repository ``--repo`` named in this command, if it did."""
    ctx = _current_context()
    found: tuple[str, RepositoryConfig] | None = None if ctx is None else ctx.meta.get(
        REPOSITORY_META)
    return found


# A string, not a Path: a URL is parsed by the backend registry (a Path would turn
# s3://bucket/x into the relative path s3:/bucket/x).
RepoOpt = Annotated[
    str,
    typer.Option("--repo", "-r", envvar="STASIS_REPO", callback=named_repository,
                 help="Repository: a path, a file:// or s3:// URL, or the name of a repository of "
                      "the config file ($STASIS_REPO; default: the config's "
                      "default_repository).",
                 show_default=False),
]
PassFileOpt = Annotated[
    Path | None,
    typer.Option("--passphrase-file", help="Read the passphrase from this file "
                 "(else $STASIS_PASSPHRASE, else a prompt)."),
]
KeyFileOpt = Annotated[
    Path | None, typer.Option("--key-file", help="Open the repository with this key file.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
CatalogOpt = Annotated[str | None, typer.Option(
    "--catalog", envvar="STASIS_CATALOG", show_default=False,
    help="The catalog: a SQLite file, or a URL (sqlite:////PATH; "
         "postgresql://USER@HOST/DB when hosts share it) "
         "($STASIS_CATALOG; default <state dir>/catalog.db).")]
ConnectOpt = Annotated[str, typer.Option("--connect", "-c", envvar="STASIS_CONNECT",
                                         help="libvirt URI.")]
PointArg = Annotated[str, typer.Argument(help="Point id, unique prefix, or NAME@latest.")]
VmOpt = Annotated[str | None, typer.Option("--vm", help="VM of the point (if it has several).")]
TagOpt = Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")]
ConsistencyOpt = Annotated[str, typer.Option(
    help="crash, filesystem (guest-agent fsfreeze) or application (hooks too).")]
RequireOpt = Annotated[str | None, typer.Option(
    "--require", help="Fail, committing nothing, where a VM cannot reach this level.")]

QueueOpt = Annotated[bool, typer.Option(
    "--queue", help="Queue it for the service running on the catalog ('stasis serve', with "
                    "its own repository credentials) instead of running it here.")]

NoWaitOpt = Annotated[bool, typer.Option(
    "--no-wait", help="With --server: print the job the server started and return, instead "
                      "of following it to its end.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_model(result: Any) -> None:
    """A result model, or a list of them (always printed as a JSON array), as JSON."""
    if isinstance(result, list):
        print_json([r.to_json() for r in result])
    else:
        print_json(result.to_json())


def print_queued(queued: Any, json_output: bool) -> None:
    """A job handed to the service: its id, and how to follow it."""
    if json_output:
        print_model(queued)
        return
    out.print(f"Job {queued.job} queued for the service (pid {queued.service_pid}); "
              f"'stasis job show {queued.job} --log' follows it.", highlight=False)


def warn_unrecorded(e: CatalogError) -> None:
    """The catalog cannot be used: the command runs, unrecorded, and says so."""
    from stasis.errors import NotRecorded

    print_warning(NotRecorded(e.message))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"'{text}' is not a size (examples: 4M, 1MiB, 65536)")
    exponent = " kmgt".index(m.group(2) or " ")
    return int(m.group(1)) * (1 << (10 * exponent))


def read_passphrase_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the passphrase file {path}: {e.strerror}") from None
    return data.rstrip(b"\r\n")


def _prompt_once() -> bytes:
    if not sys.stdin.isatty():
        raise WrongPassphrase("the repository", "empty passphrase (no $STASIS_PASSPHRASE, "
                              "--passphrase-file or terminal to ask on)")
    return getpass.getpass("Repository passphrase: ").encode()


def credentials(passphrase_file: Path | None, key_file: Path | None) -> Credentials:
    """``--key-file``, else ``--passphrase-file``, else ``$STASIS_PASSPHRASE``, else the
    file of the configured repository ``--repo`` named, else a prompt."""
    return _credentials(passphrase_file, key_file, chosen_repository(),
                        os.environ.get("STASIS_PASSPHRASE"))


def _credentials(passphrase_file: Path | None, key_file: Path | None,
                 chosen: tuple[str, RepositoryConfig] | None, env: str | None) -> Credentials:
    if key_file is not None:
        return Credentials(keyfile=read_key_file(key_file))
    if passphrase_file is not None:
        return Credentials(passphrase=read_passphrase_file(passphrase_file))
    if env is not None:
        return Credentials(passphrase=env.encode())
    if chosen is not None:
        return configured_credentials(chosen[1])
    return Credentials(prompt=_prompt_once)


def configured_credentials(repository: RepositoryConfig) -> Credentials:
    """A configured repository's key, from the file the config names (refused when
    others may read it)."""
    from stasis.app.config import check_private

    if repository.key_file is not None:
        check_private(Path(repository.key_file), "key file")
        return Credentials(keyfile=read_key_file(Path(repository.key_file)))
    path = Path(repository.passphrase_file or "")
    check_private(path, "passphrase file")
    return Credentials(passphrase=read_passphrase_file(path))


def new_passphrase(passphrase_file: Path | None, env_var: str = "STASIS_PASSPHRASE") -> bytes:
    """A passphrase for a new key slot: file, environment, or asked twice."""
    if passphrase_file is not None:
        value = read_passphrase_file(passphrase_file)
    elif os.environ.get(env_var) is not None:
        value = os.environ[env_var].encode()
    elif sys.stdin.isatty():
        value = getpass.getpass("New passphrase: ").encode()
        if getpass.getpass("Repeat it: ").encode() != value:
            raise UsageError("the two passphrases differ; nothing was written")
    else:
        raise UsageError(f"no passphrase: set ${env_var}, pass a passphrase file, or run on a "
                         "terminal; nothing was written")
    if not value:
        raise UsageError("the passphrase is empty; nothing was written")
    return value


def open_repo(repo: str, passphrase_file: Path | None, key_file: Path | None) -> Repository:
    return Repository.open(open_backend(repo), credentials(passphrase_file, key_file))


def repo_opener(repo: str, passphrase_file: Path | None,
                key_file: Path | None) -> Callable[[], Repository]:
    """:func:`open_repo` as an opener whose work starts now, in a thread: the key's
    derivation (Argon2id, 0.15-0.4 s, releasing the GIL) overlaps the loading of the
    command's modules and its checks. Whatever it raises is raised by the opener's
    first call, so errors come in the order they always did; credentials that would
    ask for the passphrase wait for that call (a prompt is never asked from a thread,
    nor before the input was checked). A later call opens the repository again."""
    # The command's context and environment: read here, not in the thread.
    chosen, env = chosen_repository(), os.environ.get("STASIS_PASSPHRASE")
    found: list[Repository | BaseException] = []

    def open_early() -> None:
        try:
            creds = _credentials(passphrase_file, key_file, chosen, env)
            if creds.passphrase is not None or creds.keyfile is not None:
                found.append(Repository.open(open_backend(repo), creds))
        except BaseException as e:  # raised by the opener's call, below
            found.append(e)

    early = threading.Thread(target=open_early, name="open-repo", daemon=True)
    early.start()

    def opener() -> Repository:
        if early.is_alive() or found:
            early.join()
            if found:
                first = found.pop()
                if isinstance(first, BaseException):
                    raise first
                return first
        return open_repo(repo, passphrase_file, key_file)

    return opener


def open_repo_for_export(repo: str, passphrase_file: Path | None,
                         key_file: Path | None) -> tuple[Repository, Credentials]:
    """The repository, and its credentials made concrete (a prompt asked once), for an
    export process, which gets them through a pipe and can ask nothing."""
    creds = credentials(passphrase_file, key_file)
    backend = open_backend(repo)
    if creds.passphrase is None and creds.keyfile is None and creds.prompt is not None:
        config = Repository.read_config(backend)
        if config.get("encryption") != "none":
            creds = Credentials(passphrase=creds.prompt())
    return Repository.open(backend, creds), creds


def print_warning(warning: StasisWarning) -> None:
    """A warning on stderr: its message, then what to do in the CLI's words."""
    err.print(f"[bold yellow]warning:[/] {warning.full_text}", highlight=False)


def _bars() -> Progress:
    # Loaded here: only a terminal shows bars, and rich.progress costs every start.
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(),
                    DownloadColumn(binary_units=True), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=err, transient=False)


class RichProgress:
    """Progress bars on stderr, for terminals."""

    def __init__(self) -> None:
        self._bar = _bars()
        self._task: TaskID | None = None

    def start(self, description: str, total: int) -> None:
        if self._task is None:
            self._bar.start()
        else:
            self._bar.stop_task(self._task)
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, amount)

    def finish(self) -> None:
        if self._task is not None:
            self._bar.stop()
            self._task = None


def progress_for(json_output: bool) -> ProgressProtocol:
    if err.is_terminal and not json_output:
        return RichProgress()
    return NoProgress()


class ProgressBoard:
    """One progress display with a bar per concurrent job (e.g. a VM each)."""

    def __init__(self) -> None:
        self._bar = _bars()
        self._started = False

    def lane(self, _name: str = "") -> ProgressProtocol:
        board = self

        class Lane:
            task: TaskID | None = None

            def start(self, description: str, total: int) -> None:
                if not board._started:
                    board._bar.start()
                    board._started = True
                self.task = board._bar.add_task(description, total=total)

            def advance(self, amount: int) -> None:
                if self.task is not None:
                    board._bar.advance(self.task, amount)

            def finish(self) -> None:
                pass

        return Lane()

    def close(self) -> None:
        if self._started:
            self._bar.stop()
            self._started = False


def other_repository(value: str, passphrase_file: Path | None, key_file: Path | None, *,
                     env_var: str, what: str) -> tuple[str, Callable[[], Repository]]:
    """A second repository of a command (a copy's destination, the source of
    ``--copy-key-from``): its location, and an opener that unlocks it the way
    ``--repo`` is unlocked, from its own options: ``key_file``, else
    ``passphrase_file``, else ``$env_var``, else the files of the configured
    repository ``value`` names, else a prompt naming ``what``."""
    config = current_config()
    found = None if config is None else config.repository(value)
    location = found[1].url if found is not None else value
    env = os.environ.get(env_var)

    def prompt() -> bytes:
        if not sys.stdin.isatty():
            raise WrongPassphrase(location, f"empty passphrase (no ${env_var}, passphrase "
                                  "file or terminal to ask on)")
        return getpass.getpass(f"Passphrase of the {what}: ").encode()

    def opener() -> Repository:
        creds = _credentials(passphrase_file, key_file, found, env)
        if creds.prompt is not None:
            creds = Credentials(prompt=prompt)
        return Repository.open(open_backend(location), creds)

    return location, opener
