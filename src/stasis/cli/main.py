"""The ``stasis`` entry point: command tree, signals, errors and exit codes."""

from __future__ import annotations

import atexit
import gc
import importlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, ClassVar

import rich.markup
import typer
import typer.main
from typer.core import TyperGroup

from stasis import __version__
from stasis.cli.common import ConfigContext, err, use_config, use_config_context
from stasis.errors import StasisError, exit_code_table, warning_code_table
from stasis.memory import tune_allocator
from stasis.signals import Terminated, deliver

_signal_seen: list[str] = []

# At exit the interpreter's last garbage collection walks every object the imports
# made (SQLAlchemy, pydantic, libvirt...): 0.15-0.2 s of an unchanged backup's 1 s,
# spent after the point was committed and the job recorded. Freezing them skips that
# walk; what must reach the disk (points, the catalog) was synced before, and the
# standard streams are flushed by the interpreter all the same.
atexit.register(gc.freeze)


def _exit_codes_help() -> str:
    rows = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in exit_code_table())
    warnings = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in warning_code_table())
    return (f"\b\nExit codes:\n{rows}\n\b\nWarnings (printed; the command still exits 0):\n"
            f"{warnings}")


# The command tree as data: name -> how to build it. A command's module (and what
# it imports: libvirt, the catalog's SQLAlchemy, pydantic, dissect...) is loaded only
# when that command runs (or when help lists every command), so that every command
# does not pay for all of them at start-up.
Part = tuple[str, str, str]  # (subcommand name, module in stasis.cli, attribute)


def _noop() -> None:
    pass


def _group(module: str, *parts: Part) -> Callable[[str], Any]:
    """A Typer app of ``module`` (its ``app``), with commands of other modules added."""
    def load(name: str) -> Any:
        sub = importlib.import_module(f"stasis.cli.{module}").app
        for part, mod, attr in parts:
            sub.command(part)(getattr(importlib.import_module(f"stasis.cli.{mod}"), attr))
        if sub.registered_callback is None:
            sub.callback()(_noop)  # stays a group even with one command
        cmd = typer.main.get_command(sub)
        cmd.name = name
        return cmd
    return load


def _command(module: str, attr: str) -> Callable[[str], Any]:
    def load(name: str) -> Any:
        one = typer.Typer()
        one.command(name)(getattr(importlib.import_module(f"stasis.cli.{module}"), attr))
        return typer.main.get_command(one)
    return load


def _registered(module: str) -> Callable[[str], Any]:
    """A command that ``module.register(app)`` adds to a command tree."""
    def load(name: str) -> Any:
        tree = typer.Typer()
        importlib.import_module(f"stasis.cli.{module}").register(tree)
        return typer.main.get_command(tree).commands[name]  # type: ignore[attr-defined]
    return load


COMMANDS: dict[str, Callable[[str], Any]] = {
    "repo": _group("repo"),
    "backup": _group("backup"),
    "restore": _group("restore"),
    "list": _command("points", "list_points"),
    "show": _command("points", "show"),
    "verify": _command("verify", "verify"),
    "vms": _command("vms", "vms"),
    "group": _group("groups"),
    "label": _command("groups", "label"),
    "files": _group("files"),
    "export": _registered("instant"),
    "instant": _registered("instant"),
    "attach": _registered("instant"),
    "detach": _registered("instant"),
    "clone": _registered("clone"),
    "drill": _command("drill", "drill"),
    "policy": _group("policy", ("run", "service", "policy_run")),
    "serve": _command("service", "serve"),
    "status": _command("service", "status"),
    "jobs": _command("jobs", "jobs"),
    "job": _group("jobs"),
    "catalog": _group("catalog"),
    "prune": _command("prune", "prune"),
    "hold": _command("prune", "hold"),
    "release": _command("prune", "release"),
    "holds": _command("prune", "holds"),
    "gc": _command("gc", "gc"),
    "copy": _command("copy", "copy"),
    "doctor": _command("vms", "doctor"),
    "config": _group("config"),
    "user": _registered("accounts"),
    "token": _registered("accounts"),
    "tenant": _registered("accounts"),
    "role": _registered("accounts"),
    "audit": _registered("accounts"),
}


class LazyGroup(TyperGroup):
    """The ``stasis`` group: :data:`COMMANDS` are built on first use."""

    _built: ClassVar[dict[str, Any]] = {}
    context_class = ConfigContext

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *super().list_commands(ctx)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in COMMANDS:
            if cmd_name not in self._built:
                from stasis.cli.remote import guard

                self._built[cmd_name] = guard(use_config_context(COMMANDS[cmd_name](cmd_name)),
                                              cmd_name)
            return self._built[cmd_name]
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="stasis",
    cls=LazyGroup,
    help="Backup and disaster recovery for libvirt/KVM virtual machines.\n\n" + _exit_codes_help(),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "--config", show_default=False, help="The config file (TOML; docs/config.md) "
        "($STASIS_CONFIG; default /etc/stasis/stasis.toml when it exists).")] = None,
    server: Annotated[str | None, typer.Option(
        "--server", envvar="STASIS_SERVER", show_default=False,
        help="Run the command on this Stasis server, through its API: https://HOST:PORT, "
             "http://127.0.0.1:PORT (loopback only) or unix:/PATH ($STASIS_SERVER).")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", envvar="STASIS_TOKEN_FILE", show_default=False,
        help="With --server: the API token, from this file ($STASIS_TOKEN_FILE; else "
             "$STASIS_TOKEN, else a prompt).")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(
        "--ca-bundle", envvar="STASIS_CA_BUNDLE", show_default=False,
        help="With --server: trust the server's certificate if this CA bundle (PEM) "
             "signed it ($STASIS_CA_BUNDLE).")] = None,
) -> None:
    # Flags and environment variables beat the file's values (docs/config.md).
    use_config(ctx, config)
    if server:
        from stasis.cli.remote import META, RemoteOptions

        ctx.meta[META] = RemoteOptions(server, token_file, ca_bundle)


@app.command("version")
def version() -> None:
    """Print the version."""
    print(__version__)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _signal_seen:
        return  # already stopping: let the cleanup finish
    _signal_seen.append("SIGTERM" if signum == signal.SIGTERM else "Ctrl-C")
    deliver(Terminated() if signum == signal.SIGTERM else KeyboardInterrupt())


def _interrupted() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    what = _signal_seen[0] if _signal_seen else "Ctrl-C"
    err.print(f"[bold red]interrupted[/] by {what}: nothing was committed; the repository "
              "is usable and a restore target was left as it was.", highlight=False)
    sys.exit(143 if what == "SIGTERM" else 130)


def run() -> None:
    tune_allocator()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        # Typer answers an interrupt inside a command by returning 130, and a
        # typer.Exit raised by a command by returning its code.
        code = app(standalone_mode=False)
        if code == 130 and _signal_seen:
            _interrupted()
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except StasisError as e:
        # The message (what failed, what was kept safe), then what to do, in CLI words.
        # Escaped: a message may hold brackets (a URL grammar) that are not markup.
        err.print(f"[bold red]error:[/] {rich.markup.escape(e.full_text)}", highlight=False,
                  soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # usage errors: bad options or arguments
        show = getattr(e, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {e.format_message()}", highlight=False)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    run()
