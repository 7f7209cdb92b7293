"""``stasis backup``: make recovery points."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    human,
    open_repo,
    out,
    print_json,
    print_warning,
    progress_for,
)
from stasis.cli.jobs import CatalogOpt, cli_job
from stasis.errors import UsageError
from stasis.protection.backup import back_up_images
from stasis.repository import Manifest
from stasis.settings import run_dir

app = typer.Typer(help="Make recovery points.", no_args_is_help=True)


def parse_tags(tags: list[str]) -> dict[str, str]:
    parsed = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag takes KEY=VALUE, not '{tag}'")
        parsed[key] = value
    return parsed


def backup_result(m: Manifest) -> dict[str, Any]:
    return {
        "id": m.id,
        "name": m.name,
        "time": m.time,
        "kind": m.kind,
        "parent": m.parent,
        "tags": m.tags,
        "duration_s": m.timings.get("duration_s"),
        "frozen_ms": m.timings.get("frozen_ms"),
        "bytes_read": m.bytes_read,
        "size": m.virtual_size,
        "consistency": m.extra.get("consistency", {}),
        "hooks": m.extra.get("hooks", []),
        "hook_failures": [h for h in m.extra.get("hooks", []) if h.get("error")],
        "warnings": [w.to_dict() for w in m.run_warnings],
        **({k: m.extra["group"].get(k, []) for k in ("members", "joined", "left")}
           if "group" in m.extra else {}),
        "vms": [
            {
                "name": vm.name,
                "kind": vm.kind,
                "state": vm.state,
                "consistency": vm.consistency,
                "consistency_note": vm.extra.get("consistency_note", ""),
                "frozen_filesystems": vm.extra.get("frozen_filesystems", 0),
                "disks_removed": vm.extra.get("disks_removed", []),
                "disks": [
                    {
                        "target": d.name,
                        "name": d.name,
                        "format": d.format,
                        "mode": d.mode,
                        "bytes_read": d.bytes_read,
                        "bytes_new": d.bytes_new,
                        "stored_new": d.stored_new,
                        "virtual_size": d.virtual_size,
                        "reason": d.reason,
                    }
                    for d in vm.disks
                ],
            }
            for vm in m.vms
        ],
    }


def print_backup(m: Manifest) -> None:
    stored = sum(d.stored_new for _, d in m.disks())
    out.print(f"Point [bold]{m.id[:12]}[/] '{m.name}' committed in "
              f"{m.timings.get('duration_s', 0):.1f} s: read {human(m.bytes_read)} of "
              f"{human(m.virtual_size)}, stored {human(stored)} new.")
    for vm, d in m.disks():
        out.print(f"  {vm.name}/{d.name}: {d.mode}, read {human(d.bytes_read)}, "
                  f"new {human(d.stored_new)}" + (f" ({d.reason})" if d.mode == "full" else ""))
    for vm in m.vms:
        for gone in vm.extra.get("disks_removed", []):
            out.print(f"  {vm.name}/{gone}: removed from the VM since the last point")
        if vm.kind == "vm":
            note = vm.extra.get("consistency_note", "")
            out.print(f"  {vm.name}: {vm.consistency} consistent" + (f" ({note})" if note else ""))
    for warning in m.run_warnings:  # a failed post hook among them
        print_warning(warning)


@app.command("image")
def image(
    paths: Annotated[list[Path], typer.Argument(help="Images (any format QEMU reads) or block "
                                                "devices; all go into one point.")],
    repo: RepoOpt,
    name: Annotated[str | None, typer.Option(help="Point name (default: the first file's "
                                             "name). Points of one name form a chain.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Source format (default: "
                                            "probed by qemu-img).")] = None,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Back up disk images or block devices (recorded as a job)."""
    tags = parse_tags(tag or [])
    r = open_repo(repo, passphrase_file, key_file)
    progress = progress_for(json_output)
    try:
        with cli_job(catalog, "backup", name or (paths[0].name if paths else "images"),
                     repo=r.id, params={"paths": [str(p) for p in paths]}) as job:
            m = back_up_images(r, paths, name=name, tags=tags, fmt=fmt, progress=progress,
                               run_dir=run_dir())
            job.set_vms([vm.name for vm in m.vms])
            job.point(m, r)
    finally:
        progress.finish()
    if json_output:
        print_json(backup_result(m))
    else:
        print_backup(m)
