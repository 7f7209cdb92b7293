"""``stasis repo``: create a repository, show what it holds, manage its key slots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stasis.app import repos as ops
from stasis.cli.common import (
    JsonOpt,
    KeyFileOpt,
    PassFileOpt,
    RepoOpt,
    human,
    new_passphrase,
    open_repo,
    other_repository,
    out,
    parse_size,
    print_model,
)

app = typer.Typer(help="Create and inspect repositories.", no_args_is_help=True)
key_app = typer.Typer(help="Key slots: passphrases and key files that open the repository.",
                      no_args_is_help=True)
app.add_typer(key_app, name="key")


@app.command("init")
def init(
    repo: RepoOpt,
    encryption: Annotated[str, typer.Option(help="aes-256-gcm or none.")] = "aes-256-gcm",
    chunk_size: Annotated[str, typer.Option(
        help="Chunk size, a power of two from 64KiB to 32MiB.")] = "1MiB",
    compression: Annotated[str, typer.Option(help="zstd-1 … zstd-19, or none.")] = "zstd-1",
    passphrase_file: PassFileOpt = None,
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="Protect the repository with a new key file written here "
        "instead of a passphrase.")] = None,
    copy_key_from: Annotated[str | None, typer.Option(
        "--copy-key-from", help="Share the master key and chunk size of this repository "
        "(a name of the config file, a path or URL): copies from it go as they are. The "
        "new repository gets its own key slot.")] = None,
    from_passphrase_file: Annotated[Path | None, typer.Option(
        "--from-passphrase-file", help="The passphrase of --copy-key-from's repository "
        "(else $STASIS_FROM_PASSPHRASE, else its configured file, else a prompt).")] = None,
    from_key_file: Annotated[Path | None, typer.Option(
        "--from-key-file", help="Open --copy-key-from's repository with this key file.")
    ] = None,
    immutable: Annotated[int | None, typer.Option(
        "--immutable", metavar="DAYS", help="Lock every object a point needs for at least "
        "DAYS after its commit (S3 Object Lock, probed; a new bucket is created with it).")
    ] = None,
    lock_mode: Annotated[str, typer.Option(
        "--lock-mode", help="compliance (nobody can shorten a lock) or governance (users "
        "with the bypass permission can).")] = "compliance",
    json_output: JsonOpt = False,
) -> None:
    """Create a new repository in an empty or new directory."""
    key_from = None
    if copy_key_from is not None:
        key_from = other_repository(copy_key_from, from_passphrase_file, from_key_file,
                                    env_var="STASIS_FROM_PASSPHRASE",
                                    what="repository whose key is copied")[1]
    created = ops.init_repository(repo, encryption=encryption, chunk_size=parse_size(chunk_size),
                                  compression=compression, key_file=key_file,
                                  passphrase=lambda: new_passphrase(passphrase_file),
                                  copy_key_from=key_from, immutable_days=immutable,
                                  lock_mode=lock_mode)
    if json_output:
        print_model(created)
    else:
        out.print(f"Created repository {created.id[:12]} at {repo} ({created.encryption}, "
                  f"{human(created.chunk_size)} chunks"
                  + (f", the key of {copy_key_from}" if copy_key_from else "")
                  + (f", immutable: {lock_mode} lock of {immutable} days" if immutable else "")
                  + ").")


@app.command("lock-extend")
def lock_extend(repo: RepoOpt, passphrase_file: PassFileOpt = None,
                key_file: KeyFileOpt = None, json_output: JsonOpt = False) -> None:
    """Extend the Object Lock of every committed point (an immutable repository)."""
    r = ops.lock_extend(lambda: open_repo(repo, passphrase_file, key_file))
    if json_output:
        print_model(r)
        return
    out.print(f"Locked {r.objects} objects of {r.points} points until {r.until} at least"
              + (f"; {r.damaged} damaged points skipped ('stasis verify')" if r.damaged
                 else "") + ".")


@app.command("info")
def info(repo: RepoOpt, passphrase_file: PassFileOpt = None, key_file: KeyFileOpt = None,
         json_output: JsonOpt = False) -> None:
    """Sizes, deduplication and compression of a repository."""
    i = ops.info(lambda: open_repo(repo, passphrase_file, key_file))
    if json_output:
        print_model(i)
        return
    out.print(f"Repository {i.id[:12]} at {i.path}")
    out.print(f"  format            version {i.format_version}")
    out.print(f"  encryption        {i.encryption}, chunks of {human(i.chunk_size)}")
    out.print(f"  points            {i.points}")
    out.print(f"  logical size      {human(i.logical_size)} (virtual size of every disk)")
    out.print(f"  referenced data   {human(i.referenced_size)}")
    out.print(f"  unique data       {human(i.unique_size)} in {i.chunk_count} chunks")
    out.print(f"  stored size       {human(i.stored_size)}")
    out.print(f"  dedup ratio       {i.dedup_ratio:.2f}")
    out.print(f"  compression ratio {i.compression_ratio:.2f}")


@app.command("upgrade")
def upgrade(repo: RepoOpt, passphrase_file: PassFileOpt = None, key_file: KeyFileOpt = None,
            json_output: JsonOpt = False) -> None:
    """Move a repository to the newest format (format 2: paged disk indexes).

    Nothing stored is rewritten: existing points read as before, new points get the
    new format. Releases older than the newest format refuse the repository afterwards.
    """
    r = ops.upgrade(lambda: open_repo(repo, passphrase_file, key_file))
    if json_output:
        print_model(r)
    elif r.format_before == r.format_after:
        out.print(f"Repository {r.id[:12]} already uses format {r.format_after}; "
                  "nothing was changed.")
    else:
        out.print(f"Repository {r.id[:12]} moved from format {r.format_before} to "
                  f"{r.format_after}. Its points read as before; new points get paged "
                  "disk indexes.")


@key_app.command("list")
def key_list(repo: RepoOpt, passphrase_file: PassFileOpt = None, key_file: KeyFileOpt = None,
             json_output: JsonOpt = False) -> None:
    """List the key slots."""
    slots = ops.key_slots(lambda: open_repo(repo, passphrase_file, key_file))
    if json_output:
        print_model(slots)
        return
    for s in slots:
        out.print(f"{s.id}  {s.kind:<10}  {s.label}")


@key_app.command("add")
def key_add(
    repo: RepoOpt,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
    new_passphrase_file: Annotated[Path | None, typer.Option(
        help="The new passphrase, from a file (else $STASIS_NEW_PASSPHRASE, else a prompt)."
    )] = None,
    new_key_file: Annotated[Path | None, typer.Option(
        help="Write a new key file here and add a slot for it.")] = None,
    label: Annotated[str, typer.Option(help="A note to tell slots apart.")] = "",
    json_output: JsonOpt = False,
) -> None:
    """Add a key slot: another passphrase, or a new key file."""
    slot = ops.add_key_slot(
        lambda: open_repo(repo, passphrase_file, key_file), new_key_file=new_key_file,
        new_passphrase=lambda: new_passphrase(new_passphrase_file,
                                              env_var="STASIS_NEW_PASSPHRASE"),
        label=label)
    if json_output:
        print_model(slot)
    else:
        out.print(f"Added key slot {slot.id}.")


@key_app.command("remove")
def key_remove(
    slot: Annotated[str, typer.Argument(help="Slot id, from 'stasis repo key list'.")],
    repo: RepoOpt,
    passphrase_file: PassFileOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Remove a key slot (never the last one)."""
    removed = ops.remove_key_slot(lambda: open_repo(repo, passphrase_file, key_file), slot)
    out.print(f"Removed key slot {removed.id}.")
