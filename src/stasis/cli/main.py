"""The ``stasis`` entry point: command tree, signals, errors and exit codes."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import typer

from stasis import __version__
from stasis.cli import backup, groups, points, repo, restore, verify, vms
from stasis.cli import catalog as catalog_cli
from stasis.cli import files as files_cli
from stasis.cli import jobs as jobs_cli
from stasis.cli import policy as policy_cli
from stasis.cli import prune as prune_cli
from stasis.cli import service as service_cli
from stasis.cli.common import err
from stasis.cli.gc import gc as gc_command
from stasis.cli.instant import register as register_instant
from stasis.errors import StasisError, exit_code_table
from stasis.memory import tune_allocator


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so every ``finally`` cleans up."""


_signal_seen: list[str] = []


def _exit_codes_help() -> str:
    rows = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in exit_code_table())
    return f"\b\nExit codes:\n{rows}"


app = typer.Typer(
    name="stasis",
    help="Backup and disaster recovery for libvirt/KVM virtual machines.\n\n" + _exit_codes_help(),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(repo.app, name="repo")
app.add_typer(backup.app, name="backup")
app.add_typer(restore.app, name="restore")
app.add_typer(groups.app, name="group")
app.add_typer(files_cli.app, name="files")
app.add_typer(policy_cli.app, name="policy")
app.add_typer(catalog_cli.app, name="catalog")
app.add_typer(jobs_cli.app, name="job")
app.command("jobs")(jobs_cli.jobs)
app.command("serve")(service_cli.serve)
app.command("status")(service_cli.status)
policy_cli.app.command("run")(service_cli.policy_run)
app.command("list")(points.list_points)
app.command("show")(points.show)
app.command("verify")(verify.verify)
app.command("gc")(gc_command)
app.command("vms")(vms.vms)
app.command("doctor")(vms.doctor)
app.command("label")(groups.label)
app.command("prune")(prune_cli.prune)
app.command("hold")(prune_cli.hold)
app.command("release")(prune_cli.release)
app.command("holds")(prune_cli.holds)
backup.app.command("vm")(vms.backup_vm)
backup.app.command("group")(groups.backup_group)
restore.app.command("vm")(vms.restore_vm_cmd)
restore.app.command("group")(restore.restore_group_cmd)
register_instant(app)  # export, instant, attach, detach


@app.command("version")
def version() -> None:
    """Print the version."""
    print(__version__)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _signal_seen:
        return  # already stopping: let the cleanup finish
    _signal_seen.append("SIGTERM" if signum == signal.SIGTERM else "Ctrl-C")
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


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
        err.print(f"[bold red]error:[/] {e.message}", highlight=False, soft_wrap=True)
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
