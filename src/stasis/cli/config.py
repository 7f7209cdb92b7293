"""``stasis config show``: the configuration in force and where each value came from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stasis.app.config import NO_CONFIG, effective_config
from stasis.app.models import ConfigSource
from stasis.cli.common import (
    CatalogOpt,
    ConnectOpt,
    JsonOpt,
    config_source,
    current_config,
    out,
    print_model,
)
from stasis.hypervisor import libvirt_api as lv

app = typer.Typer(help="The config file (docs/config.md): what is in force.",
                  no_args_is_help=True)

# Click's names for where a value came from, in the config's words.
_SOURCES: dict[str, ConfigSource] = {"COMMANDLINE": "flag", "ENVIRONMENT": "env",
                                     "DEFAULT_MAP": "file", "DEFAULT": "default"}


def _source(ctx: typer.Context, name: str) -> ConfigSource:
    found = ctx.get_parameter_source(name)
    return _SOURCES.get(found.name if found is not None else "DEFAULT", "default")


@app.command("show")
def show(
    ctx: typer.Context,
    repo: Annotated[str | None, typer.Option(
        "--repo", "-r", envvar="STASIS_REPO", show_default=False,
        help="The repository a command would use ($STASIS_REPO).")] = None,
    catalog: CatalogOpt = None,
    connect: ConnectOpt = lv.DEFAULT_URI,
    policies: Annotated[Path | None, typer.Option(
        "--policies", envvar="STASIS_POLICIES", show_default=False,
        help="The policy file ($STASIS_POLICIES).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Print the configuration in force and where each value came from.

    Each value comes from a flag, the environment (env), the config file (file) or
    the built-in default. Secrets are never printed: only the paths of their files.
    """
    config = current_config(ctx) or NO_CONFIG
    repo_source = _source(ctx, "repo")
    if repo is None and config.default_repository is not None:
        repo, repo_source = config.default_repository, "file"
    source = config_source(ctx)
    shown = effective_config(
        config, file_source=source if source in ("flag", "env", "default") else None,  # type: ignore[arg-type]
        given={"repository": (repo, repo_source),
               "catalog": (catalog, _source(ctx, "catalog")),
               "libvirt": (connect, _source(ctx, "connect")),
               "policies": (None if policies is None else str(policies),
                            _source(ctx, "policies"))})
    if json_output:
        print_model(shown)
        return
    out.print(f"config file: {shown.file or 'none'}"
              + (f" ({shown.file_source})" if shown.file_source else ""), highlight=False)
    table = Table(box=None)
    for col in ("setting", "value", "from"):
        table.add_column(col)
    for name, value in shown.settings.items():
        table.add_row(name, value.value or "-", value.source)
    out.print(table)
    if shown.repositories:
        repos = Table(box=None, title="repositories", title_justify="left")
        for col in ("name", "url", "unlocked by", ""):
            repos.add_column(col)
        for r in shown.repositories:
            repos.add_row(r.name, r.url, f"{r.unlock.replace('_', ' ')} {r.secret_file}",
                          "default" if r.default else "")
        out.print(repos)
