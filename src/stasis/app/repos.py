"""Repositories: created, described, and their key slots added and removed.

A new repository is protected by a passphrase or by a new key file (written only
once the repository exists, and never over an existing file); ``encryption
"none"`` needs neither. A key slot added from a key file that exists reuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stasis.app.models import (
    KeySlot,
    KeySlotAdded,
    KeySlotRemoved,
    LocksRenewed,
    RepoCreated,
    RepoInfoModel,
    RepoUpgraded,
    ServedRepository,
)
from stasis.backends import open_backend
from stasis.errors import KeyMismatch, StasisError, UsageError
from stasis.repository import Repository, crypto
from stasis.repository.immutability import MODES, Immutability, default_margin
from stasis.repository.keyfile import read_key_file, write_key_file
from stasis.repository.stats import repo_info

RepoOpener = Callable[[], Repository]
# Asked only when needed (a prompt, twice): a passphrase for a new key slot.
NewPassphrase = Callable[[], bytes]


def init_repository(location: str, *, encryption: str = "aes-256-gcm", chunk_size: int,
                    compression: str = "zstd-1", passphrase: NewPassphrase,
                    key_file: Path | None = None,
                    copy_key_from: RepoOpener | None = None,
                    immutable_days: int | None = None,
                    lock_mode: str = "compliance") -> RepoCreated:
    """Create a repository at ``location`` (a path or a URL), opened by ``key_file``
    (a new key file written there) or else by ``passphrase()``; with
    ``copy_key_from``, one sharing that repository's master key and chunk size (a
    copy's destination that takes its objects as they are)."""
    immutability = None
    if immutable_days is not None:
        if immutable_days < 1 or lock_mode not in MODES:
            raise UsageError(f"--immutable takes a number of days (1 or more) and --lock-mode "
                             f"one of {', '.join(MODES)}; nothing was written")
        retain = immutable_days * 86400
        immutability = Immutability(lock_mode, retain, default_margin(retain))
    source = None
    if copy_key_from is not None:
        source = copy_key_from()
        encryption, chunk_size = str(source.config["encryption"]), source.chunk_size
        _refuse_other_key(location, source)
    secret = keyfile = None
    if encryption != "none":
        if key_file is not None:
            keyfile = crypto.new_keyfile_material()
        else:
            secret = passphrase()
    r = Repository.init(open_backend(location), encryption=encryption, chunk_size=chunk_size,
                        compression=compression, passphrase=secret, keyfile=keyfile,
                        key_from=source, immutability=immutability)
    if keyfile is not None and key_file is not None:
        write_key_file(key_file, keyfile)
    return RepoCreated(path=location, url=r.url, id=r.id, encryption=encryption,
                       chunk_size=chunk_size, immutability=None if immutability is None
                       else immutability.to_config())


def lock_extend(open_repo: RepoOpener) -> LocksRenewed:
    """Extend the locks of every committed point of an immutable repository to this
    epoch's target (held points: to their hold's end when later)."""
    r = open_repo()
    with r.shared_lock("lock-extend"):  # gc does not sweep what this walks
        return LocksRenewed.model_validate(r.renew_locks())


def _refuse_other_key(location: str, source: Repository) -> None:
    """A repository at ``location`` already: :class:`KeyMismatch` when its config says
    its key is not ``source``'s (else init refuses it as any existing repository)."""
    try:
        config = Repository.read_config(open_backend(location))
    except StasisError:
        return  # nothing there, or not a repository: init decides
    if config.get("key_id") not in (None, source.key_id):
        raise KeyMismatch(
            f"{location} is a repository already ({str(config['id'])[:12]}) with a key of "
            f"its own, not the key of {source.id[:12]} that --copy-key-from expects; "
            "nothing was written. Copies to it re-encrypt every chunk; to get a "
            "destination that shares the key, init one at a new location.")


def info(open_repo: RepoOpener) -> RepoInfoModel:
    """Sizes, deduplication and compression of the repository."""
    return RepoInfoModel.model_validate(repo_info(open_repo()).to_dict())


def without_secrets(url: str) -> str:
    """``url`` without a user or password it may carry (``s3://key:secret@...``)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def served(name: str, repo: Repository, *, default: bool) -> ServedRepository:
    """A repository a server serves under ``name``, with its info."""
    return ServedRepository(name=name, url=without_secrets(repo.url), id=repo.id,
                            default=default, info=info(lambda: repo))


def upgrade(open_repo: RepoOpener) -> RepoUpgraded:
    """Move the repository to the newest format (only its config is rewritten)."""
    r = open_repo()
    before, after = r.upgrade_format()
    return RepoUpgraded(id=r.id, format_before=before, format_after=after)


def key_slots(open_repo: RepoOpener) -> list[KeySlot]:
    return [KeySlot.model_validate(s) for s in open_repo().key_slots()]


def add_key_slot(open_repo: RepoOpener, *, new_key_file: Path | None = None,
                 new_passphrase: NewPassphrase | None = None, label: str = "") -> KeySlotAdded:
    """A slot for ``new_key_file`` (reused when it exists, else written) or else for
    ``new_passphrase()``."""
    r = open_repo()
    if new_key_file is not None:
        if new_key_file.exists():
            material = read_key_file(new_key_file)  # reused, never overwritten
        else:
            material = crypto.new_keyfile_material()
            write_key_file(new_key_file, material)
        slot = r.add_key_slot(kind="keyfile", secret=material, label=label or str(new_key_file))
    else:
        if new_passphrase is None:
            raise UsageError("give a new passphrase or a new key file; nothing was written")
        slot = r.add_key_slot(kind="passphrase", secret=new_passphrase(),
                              label=label or "passphrase")
    return KeySlotAdded(id=slot)


def remove_key_slot(open_repo: RepoOpener, slot: str) -> KeySlotRemoved:
    """Remove a key slot (never the last one)."""
    if not slot:
        raise UsageError("name the slot to remove")
    open_repo().remove_key_slot(slot)
    return KeySlotRemoved(id=slot)
